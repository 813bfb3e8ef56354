r"""fastai's one-line factories over DataBlock, for the common layouts of a folder of images.

    dls = ImageDataLoaders.from_name_re(path, get_image_files(path), r'(.+)_\d+.jpg$', item_tfms=Resize(460))
    dls = ImageDataLoaders.from_name_func(path, files, lambda name: name[0].isupper(), item_tfms=Resize(224))
    dls = ImageDataLoaders.from_folder(my_pets, valid_pct=0.2, seed=42, item_tfms=Resize(224))  # my_pets/cat/...

Each builds the DataBlock the chapter writes out by hand, with fastai's arguments and defaults, and returns
its DataLoaders.
"""
from pathlib import Path

from pets.data.block import CategoryBlock, DataBlock, ImageBlock
from pets.data.items import GrandparentSplitter, RandomSplitter, RegexLabeller, get_image_files, parent_label


class ImageDataLoaders:
    """Namespace of fastai's factory methods (ImageDataLoaders.from_...); each returns DataLoaders."""

    @staticmethod
    def from_name_func(path, fnames, label_func, valid_pct=0.2, seed=None, item_tfms=None, batch_tfms=None,
                       bs=64, val_bs=None, device=None, num_workers=None):
        """Images fnames labelled by label_func(file name), a random valid_pct of them validating."""
        block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=lambda _: list(fnames),
                          splitter=RandomSplitter(valid_pct, seed=seed), get_y=lambda f: label_func(Path(f).name),
                          item_tfms=item_tfms, batch_tfms=batch_tfms)
        return block.dataloaders(path, bs=bs, val_bs=val_bs, device=device, num_workers=num_workers, seed=seed,
                                 path=path)

    @staticmethod
    def from_name_re(path, fnames, pat, valid_pct=0.2, seed=None, item_tfms=None, batch_tfms=None, bs=64,
                     val_bs=None, device=None, num_workers=None):
        """Images fnames labelled by the first group of the regex pat on each file name (the chapter's
        r'(.+)_\\d+.jpg$'), a random valid_pct of them validating."""
        return ImageDataLoaders.from_name_func(path, fnames, RegexLabeller(pat), valid_pct, seed, item_tfms,
                                               batch_tfms, bs, val_bs, device, num_workers)

    @staticmethod
    def from_folder(path, train='train', valid='valid', valid_pct=None, seed=None, item_tfms=None, batch_tfms=None,
                    bs=64, val_bs=None, device=None, num_workers=None):
        """Images labelled by the folder they sit in (path/<class>/<file>, torchvision's ImageFolder layout).

        With valid_pct, a random share of all of them validates; without it, the split is the layout's:
        path/<train>/<class>/<file> train and path/<valid>/<class>/<file> validate (GrandparentSplitter).
        """
        splitter = (RandomSplitter(valid_pct, seed=seed) if valid_pct is not None
                    else GrandparentSplitter(train_name=train, valid_name=valid))
        block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, splitter=splitter,
                          get_y=parent_label, item_tfms=item_tfms, batch_tfms=batch_tfms)
        return block.dataloaders(path, bs=bs, val_bs=val_bs, device=device, num_workers=num_workers, seed=seed,
                                 path=path)
