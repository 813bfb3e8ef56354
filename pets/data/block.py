"""DataBlock -> datasets -> DataLoaders: from a folder of images to batches on the GPU.

    pets = DataBlock(blocks=(ImageBlock, CategoryBlock),
                     get_items=get_image_files,
                     splitter=RandomSplitter(seed=42),
                     get_y=using_attr(RegexLabeller(r'(.+)_\\d+.jpg$'), 'name'),
                     item_tfms=Resize(460),
                     batch_tfms=aug_transforms(size=224, min_scale=0.75))
    dls = pets.dataloaders(path/'images')

DataBlock is the recipe; datasets() applies it (list, label, split), dataloaders() wraps the two datasets in
loaders (pets.data.loader), summary() traces one item and one batch through it (pets.data.summary).
"""
import torch

from pets.data.items import Categorize, RandomSplitter
from pets.data.loader import (DataLoader, DataLoaders, ItemDataset, as_list, default_device, default_num_workers,
                              estimated_decoded_bytes, memory_cache_budget)
from pets.data.summary import summary
from pets.rng import generator_from


class ImageBlock:
    """The input is an image file: decoded to RGB, presized by the item transforms, a uint8 (3, H, W) tensor."""


class CategoryBlock:
    """The target is one label per item, encoded to a class index by a sorted vocabulary."""


class DataBlock:
    """The recipe for a data set: what the input and target are, how to find, label and split the items,
    and the item and batch transforms. See the module docstring for the chapter's example.

    Args:
        blocks: (ImageBlock, CategoryBlock): image files in, one label out.
        get_items: source -> list of items (file paths), e.g. get_image_files.
        splitter: items -> (train indices, valid indices), e.g. RandomSplitter(seed=42).
        get_y: item -> label, e.g. using_attr(RegexLabeller(pattern), 'name').
        get_x: item -> file path (default: the item itself).
        item_tfms: a transform or list, applied to each decoded image in the workers, e.g. Resize(460):
            tfm(x, train=bool, generator=torch.Generator) -> x, on uint8 (3, H, W) tensors.
        batch_tfms: a transform or list, applied to each batch on the device, e.g. aug_transforms(...).
    """

    def __init__(self, blocks=(ImageBlock, CategoryBlock), get_items=None, splitter=None, get_y=None,
                 get_x=None, item_tfms=None, batch_tfms=None):
        if tuple(blocks) != (ImageBlock, CategoryBlock):
            raise ValueError(f"blocks={blocks}: this DataBlock builds image classifiers, "
                             f"blocks=(ImageBlock, CategoryBlock)")
        if get_items is None or get_y is None:
            raise ValueError("DataBlock needs get_items (e.g. get_image_files) and get_y (e.g. "
                             "using_attr(RegexLabeller(pattern), 'name'))")
        self.blocks, self.get_items, self.get_y, self.get_x = blocks, get_items, get_y, get_x
        if splitter is None:
            splitter = RandomSplitter(seed=None)
        self.splitter = splitter
        self.item_tfms, self.batch_tfms = as_list(item_tfms), as_list(batch_tfms)

    def datasets(self, source):
        """The training and validation ItemDatasets of source, labelled, with a shared vocabulary."""
        items = list(self.get_items(source))
        if not items:
            raise ValueError(f"get_items found no items in {source}: is it the folder that holds the images?")
        labels = [self.get_y(item) for item in items]
        # The vocabulary comes from all labels (fastai uses the training split's): a class seen only in
        # validation is then still a class, not a KeyError.
        vocab = Categorize().setup(labels)
        targets = [vocab.encode(label) for label in labels]
        files = [self.get_x(item) if self.get_x else item for item in items]
        train_idx, valid_idx = self.splitter(files)
        return tuple(ItemDataset([files[i] for i in idx], [targets[i] for i in idx], vocab.vocab,
                                 self.item_tfms, train=train)
                     for idx, train in ((train_idx, True), (valid_idx, False)))

    def dataloaders(self, source, bs=64, num_workers=None, device=None, seed=None, val_bs=None, path='.',
                    cache=None):
        """DataLoaders over source: shuffled training batches, ordered validation batches.

        Args:
            source: what get_items takes, e.g. path/'images'.
            bs: the batch size (val_bs, if given, for validation).
            num_workers: decoding processes (default: on the CPU, none when the images are kept in memory,
                the items then prepared here; else, and on a GPU always, one per core, at most 8).
            cache: keep each decoded image in memory (pets.data.loader). None (the default): when all the
                images fit in 1 GiB (or an eighth of the machine's memory), as the shipped sample does, and
                they are decoded in this process or the loaders are for a GPU. With workers the images are
                decoded here first, and the workers, forked after, share them; their presizing (random crops)
                still runs in the workers, every epoch.
            device: where batches go (default: the GPU if there is one).
            seed: seeds the training order and the items' random crops (default: torch's global generator,
                drawn from as each epoch starts; pets.rng). The batch transforms take their own seed.
            path: where a learner on these loaders saves models (fastai's default: '.').
        """
        train_ds, valid_ds = self.datasets(source)
        # On a GPU the model's step is short, and decoding and presizing in this process would leave the
        # GPU waiting between steps: workers do it there, reading the images decoded here once.
        accelerator = torch.device(device if device is not None else default_device()).type != 'cpu'
        if cache is None:
            files = train_ds.items + valid_ds.items
            cache = ((num_workers in (None, 0) or accelerator)
                     and estimated_decoded_bytes(files) <= memory_cache_budget())
        if cache:
            train_ds.cache, valid_ds.cache = {}, {}
        if num_workers is None:
            num_workers = 0 if cache and not accelerator else default_num_workers()
        if cache and num_workers > 0:
            train_ds.fill_cache()  # decoded here, once: the workers, forked after, share these images
            valid_ds.fill_cache()
        skipped = {}
        common = dict(num_workers=num_workers, device=device, batch_tfms=self.batch_tfms, skipped=skipped)
        # Validation draws nothing (in order, no random crops), so it never shifts the training order.
        train = DataLoader(train_ds, bs=bs, shuffle=True, generator=generator_from(seed), **common)
        valid = DataLoader(valid_ds, bs=val_bs or bs, shuffle=False, **common)
        return DataLoaders(train, valid, path=path)

    def summary(self, source, bs=4):
        """Prints how one sample and one batch are built, step by step; stops at the step that fails."""
        return summary(self, source, bs=bs)
