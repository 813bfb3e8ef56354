"""The chapter's own code, as the user's notes give it, run with `from pets.all import *`.

Only the data set differs: the embedded sample (URLs.PETS_SAMPLE) stands in for the 811 MB download.
Later stages of the chapter (learner, interpretation) join this file as they land.
"""
import matplotlib

matplotlib.use('Agg')


def test_chapter_data_section(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('PETS_DATA', str(tmp_path))
    namespace = {}
    exec('from pets.all import *', namespace)
    exec('''
path = untar_data(URLs.PETS_SAMPLE)
listing = path.ls()
images = (path/"images").ls()
fname = (path/"images").ls()[0]
breed = re.findall(r'(.+)_\\d+.jpg$', fname.name)
pets = DataBlock(blocks = (ImageBlock, CategoryBlock),
                 get_items=get_image_files,
                 splitter=RandomSplitter(seed=42),
                 get_y=using_attr(RegexLabeller(r'(.+)_\\d+.jpg$'), 'name'),
                 item_tfms=Resize(460),
                 batch_tfms=aug_transforms(size=224, min_scale=0.75))
dls = pets.dataloaders(path/"images", num_workers=0)
figure = dls.show_batch(nrows=1, ncols=3)
x,y = dls.one_batch()
pets1 = DataBlock(blocks = (ImageBlock, CategoryBlock),
                 get_items=get_image_files,
                 splitter=RandomSplitter(seed=42),
                 get_y=using_attr(RegexLabeller(r'(.+)_\\d+.jpg$'), 'name'))
try:
    pets1.summary(path/"images")
except Exception as error:
    summary_error = error
''', namespace)
    assert repr(namespace['listing']).startswith('(#2) [') and 'images' in repr(namespace['listing'])
    assert repr(namespace['images']).startswith('(#370) [')
    assert namespace['breed'] == ['Abyssinian']
    assert namespace['x'].shape == (64, 3, 224, 224) and namespace['y'].shape == (64,)
    assert 'item_tfms=Resize' in str(namespace['summary_error'])
    assert 'Found 370 items' in capsys.readouterr().out


def test_chapter_learner_section(tmp_path):
    """The chapter's training calls, on generated images (pretrained=False: no weights download here)."""
    import numpy as np
    from PIL import Image
    folder = tmp_path / 'images'
    folder.mkdir()
    for b, breed in enumerate(['Abyssinian', 'beagle', 'pug']):
        for n in range(8):
            pixels = np.random.default_rng(10 * b + n).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f'{breed}_{n}.jpg')
    namespace = {'folder': folder}
    exec('from pets.all import *', namespace)
    exec('''
pets = DataBlock(blocks = (ImageBlock, CategoryBlock),
                 get_items=get_image_files,
                 splitter=RandomSplitter(seed=42),
                 get_y=using_attr(RegexLabeller(r'(.+)_\\d+.jpg$'), 'name'),
                 item_tfms=Resize(48),
                 batch_tfms=aug_transforms(size=32, min_scale=0.75))
dls = pets.dataloaders(folder, bs=8, num_workers=0)
x,y = dls.one_batch()
learn = cnn_learner(dls, resnet34, metrics=error_rate, pretrained=False, progress=False)
preds,_ = learn.get_preds(dl=[(x,y)])
total = preds[0].sum()
lr_min,lr_steep = learn.lr_find(suggest_funcs=(minimum, steep), num_it=20, show_plot=False)
learn.fine_tune(1, base_lr=3e-3)
learn = cnn_learner(dls, resnet34, metrics=error_rate, pretrained=False, progress=False)
learn.fit_one_cycle(1, 3e-3)
learn.unfreeze()
learn.fit_one_cycle(1, lr_max=slice(1e-6,1e-4))
figure = learn.recorder.plot_loss()
learn = cnn_learner(dls, resnet50, metrics=error_rate, pretrained=False, progress=False).to_fp16()
learn.fine_tune(1, freeze_epochs=1)
interp = ClassificationInterpretation.from_learner(learn)
confused = interp.most_confused(min_val=1)
''', namespace)
    assert abs(float(namespace['total']) - 1) < 1e-5
    assert namespace['lr_min'] > 0 and namespace['lr_steep'] > 0
    assert isinstance(namespace['confused'], list)
