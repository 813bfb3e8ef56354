"""ImageDataLoaders' factories: the DataBlock each stands for, built in one line."""
from pets.data.block import CategoryBlock, DataBlock, ImageBlock
from pets.data.factories import ImageDataLoaders
from pets.data.images import Resize
from pets.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr


def test_from_folder_takes_labels_from_folders_and_the_split_from_train_and_valid(class_folders):
    dls = ImageDataLoaders.from_folder(class_folders, item_tfms=Resize(32), bs=4, num_workers=0, device='cpu')
    assert list(dls.vocab) == ['cat', 'dog', 'rabbit']
    assert len(dls.train_ds) == 18 and len(dls.valid_ds) == 6
    assert all(f.parent.parent.name == 'valid' for f in dls.valid_ds.items)
    assert [dls.vocab[t] for t in dls.valid_ds.targets] == [f.parent.name for f in dls.valid_ds.items]
    x, y = dls.one_batch()
    assert x.shape == (4, 3, 32, 32) and y.shape == (4,)
    random = ImageDataLoaders.from_folder(class_folders, valid_pct=0.25, seed=0, item_tfms=Resize(32),
                                          num_workers=0, device='cpu')
    assert len(random.valid_ds) == 6 and any(f.parent.parent.name == 'train' for f in random.valid_ds.items)


def test_from_name_re_is_the_chapters_datablock(pet_folder):
    pattern = r'(.+)_\d+.jpg$'
    files = get_image_files(pet_folder)
    dls = ImageDataLoaders.from_name_re(pet_folder, files, pattern, valid_pct=0.25, seed=3, item_tfms=Resize(32),
                                        num_workers=0, device='cpu')
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                      splitter=RandomSplitter(0.25, seed=3), get_y=using_attr(RegexLabeller(pattern), 'name'),
                      item_tfms=Resize(32))
    by_hand = block.dataloaders(pet_folder, num_workers=0, device='cpu', seed=3)
    assert dls.vocab == by_hand.vocab and dls.valid_ds.items == by_hand.valid_ds.items
    assert dls.valid_ds.targets == by_hand.valid_ds.targets


def test_from_name_func_labels_by_the_file_name(pet_folder):
    files = get_image_files(pet_folder)
    dls = ImageDataLoaders.from_name_func(pet_folder, files, lambda name: name[0].isupper(), seed=0,
                                          item_tfms=Resize(32), num_workers=0, device='cpu')
    assert list(dls.vocab) == [False, True]  # only 'Abyssinian' starts with a capital: cats, in the book
    everything = dls.train_ds.items + dls.valid_ds.items
    labels = [dls.vocab[t] for t in dls.train_ds.targets + dls.valid_ds.targets]
    assert labels == [f.name.startswith('Abyssinian') for f in everything]
