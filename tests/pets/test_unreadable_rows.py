"""An unreadable file in the validation set: every later row of the predictions still shows its own image
under its own title (the rows carry their items through the loader), and predict names a broken file."""
import warnings

import matplotlib
import pytest
import torch

from pets.data.block import DataBlock
from pets.data.images import ImageLoadError, Resize
from pets.data.items import RegexLabeller, get_image_files, using_attr
from pets.data.loader import UnreadableImageWarning
from pets.data.show import images_for_display
from pets.interpret import ClassificationInterpretation
from pets.learner import cnn_learner

matplotlib.use('Agg')
label_of = using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name')


@pytest.fixture
def learn_with_a_broken_valid_file(pet_folder):
    """A learner whose validation set is images 0 and 1 of each breed, and Abyssinian_9, unreadable, third."""
    (pet_folder / 'Abyssinian_9.jpg').write_bytes(b'not an image, named like one')

    def splitter(items):
        valid = [i for i, f in enumerate(items) if f.stem.split('_')[-1] in ('0', '9', '1')]
        return [i for i in range(len(items)) if i not in valid], valid
    block = DataBlock(get_items=get_image_files, splitter=splitter, get_y=label_of, item_tfms=Resize(32))
    dls = block.dataloaders(pet_folder, bs=4, num_workers=0, device='cpu', seed=0)
    assert any(f.name == 'Abyssinian_9.jpg' for f in dls.valid_ds.items[:3])  # early: rows would shift after it
    torch.manual_seed(0)
    learn = cnn_learner(dls, 'resnet18', pretrained=False, progress=False)
    warnings.simplefilter('ignore', UnreadableImageWarning)
    return learn


def pixels_of(learn, item):
    """What show_images draws for item: the file through the validation pipeline, on its own."""
    return images_for_display(learn.dls.test_dl([item]).one_batch())[0].numpy()


def panels(figure):
    """(title, pixels) of each image a figure shows."""
    return [(axis.get_title(), axis.images[0].get_array()) for axis in figure.axes if axis.images]


def item_shown(learn, pixels):
    """The validation item whose image is exactly these pixels."""
    matches = [f for f in learn.dls.valid_ds.items if f.name != 'Abyssinian_9.jpg'
               and (pixels_of(learn, f) == pixels).all()]
    assert len(matches) == 1
    return matches[0]


def test_interpretation_rows_keep_their_items(learn_with_a_broken_valid_file):
    learn = learn_with_a_broken_valid_file
    interp = ClassificationInterpretation.from_learner(learn)
    readable = [f for f in learn.dls.valid_ds.items if f.name != 'Abyssinian_9.jpg']
    assert sorted(interp.items) == sorted(readable)
    for item, probabilities, target in zip(interp.items, interp.probabilities, interp.targets):
        assert learn.dls.vocab[int(target)] == label_of(item)
        torch.testing.assert_close(probabilities, learn.predict(item)[2])  # the item's own prediction
    figure = interp.plot_top_losses(len(readable))
    for title, pixels in panels(figure):
        predicted, actual, numbers = title.split('\n')
        item = item_shown(learn, pixels)
        assert actual == label_of(item)
        label, _, probabilities = learn.predict(item)
        assert predicted == f"{label} /" and numbers.endswith(f"/ {float(probabilities.max()):.2f}")


def test_show_results_titles_are_each_shown_images_own(learn_with_a_broken_valid_file):
    learn = learn_with_a_broken_valid_file
    figure = learn.show_results(max_n=5)
    shown = panels(figure)
    assert len(shown) == 4  # five items, one unreadable
    for title, pixels in shown:
        actual, predicted = title.split('\n')
        item = item_shown(learn, pixels)
        assert actual == label_of(item) and predicted == learn.predict(item)[0]


def test_predict_names_a_file_it_cannot_read(learn_with_a_broken_valid_file, pet_folder):
    with pytest.raises(ImageLoadError, match='Abyssinian_9.jpg'):
        learn_with_a_broken_valid_file.predict(pet_folder / 'Abyssinian_9.jpg')
