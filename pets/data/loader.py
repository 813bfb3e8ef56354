"""Datasets and loaders: from labelled image files to batches on the device.

In worker processes, per item: decode, presize (the item transforms), hand over a uint8 tensor. In the
main process, per batch: move to the device, then the batch transforms there (converting to float), e.g.
one augmentation warp of the whole batch on the GPU.

Randomness is reproducible and independent of the number of workers (pets.rng): each epoch, the loader's
generator (its own, from a seed, or torch's global one) draws the order and, when the items' transforms are
random (training), one seed per item, and every item's random crop is drawn from its seed.
A file that fails to decode costs one item, not the epoch: it is left out of its batch and reported once.

Decoding a JPEG is most of an item's cost (about 80% here: 2.8 ms of 3.5 ms for a pet photo presized to
256). When the decoded images fit in memory (a small data set such as the shipped sample), the datasets keep
each one after its first decode (ItemDataset's cache), and the items' transforms, random crops included, run
on the kept image every epoch: the same values as decoding afresh, at a fifth of the cost, in this process,
so no worker processes compete with the model for the cores.
"""
import math
import os
import warnings
from pathlib import Path

import torch
from PIL import Image

from minigrad.warp import pinned
from pets.data.images import UNREADABLE, ImageFailure, ImageLoadError, image_from
from pets.data.show import show_batch
from pets.distributed import processes_per_machine
from pets.rng import generator_from


def load_item(path, item_tfms=(), train=False, seed=0):
    """One image file decoded and put through the item transforms: a uint8 (3, H, W) tensor. train: which
    of each transform's behaviours applies (random crops when training); seed: for those random parts.
    Raises ImageLoadError naming the file when it cannot be decoded."""
    return transform_item(decode_item(path, item_tfms), item_tfms, train, seed)


def decode_item(item, item_tfms=()):
    """The image file decoded as a uint8 (3, H, W) tensor, at the smallest size the item transforms need
    (a JPEG decodes at 1/2, 1/4 or 1/8 of its size when a single Resize says that is enough). An item may
    also be an image already in memory (pets.data.images.image_from: a PIL image, a uint8 tensor or array)."""
    drafts = [tfm.draft_size for tfm in item_tfms if hasattr(tfm, 'draft_size')]
    return image_from(item, draft=drafts[0] if len(drafts) == 1 else None)


def transform_item(x, item_tfms, train, seed):
    """The item transforms applied to a decoded image (which they leave unchanged: it may be kept)."""
    generator = torch.Generator().manual_seed(seed)
    for tfm in item_tfms:
        x = tfm(x, train=train, generator=generator)
    return x


def estimated_decoded_bytes(paths, sample=100):
    """What decoding every file would take in memory, at most: width x height x 3 bytes each, estimated
    from the headers of up to `sample` files spread over the list (files that fail to open count 0)."""
    paths = list(paths)
    if not paths:
        return 0
    step = max(1, len(paths) // sample)
    sizes = []
    for path in paths[::step]:
        try:
            with Image.open(path) as image:  # reads the header only
                sizes.append(image.size[0] * image.size[1] * 3)
        except UNREADABLE:
            sizes.append(0)
    return sum(sizes) / len(sizes) * len(paths)


def memory_cache_budget():
    """Bytes of decoded images worth keeping: 1 GiB, or an eighth of the machine's memory if less."""
    try:
        physical = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (AttributeError, ValueError, OSError):
        physical = 8 << 30
    return min(1 << 30, physical // 8)


class UnreadableImageWarning(UserWarning):
    """An image file that could not be decoded was left out of its batch."""


class ItemDataset(torch.utils.data.Dataset):
    """Items (file paths) with their class indices; an item becomes (uint8 image tensor, class index).

    Indexing takes (index, seed): the seed feeds the random parts of the item transforms. A file that
    fails to decode gives an ImageFailure instead of raising, so that one bad file costs one item, not
    the epoch; the loader leaves it out and reports it. cache=True keeps each decoded image in memory
    (self.cache, path -> tensor) after its first decode; the item transforms still run on every load.
    cache may also be another dataset's cache (a dict), shared: the same files in other transforms.
    """

    def __init__(self, items, targets, vocab, item_tfms=(), train=False, cache=False):
        self.items, self.targets, self.vocab = list(items), targets, vocab
        self.item_tfms, self.train = list(item_tfms), train
        self.cache = cache if isinstance(cache, dict) else {} if cache else None

    def __len__(self):
        return len(self.items)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, 0)
        path = self.items[index]
        try:
            image = self.load(path, seed)
        except ImageLoadError as error:  # only a file fails to decode
            return ImageFailure(Path(path), str(error))
        return image if self.targets is None else (image, self.targets[index])

    def load(self, path, seed=0):
        """Decodes one file (or takes it from the cache) and applies the item transforms: a uint8 (3, H, W)
        tensor."""
        if self.cache is None or not isinstance(path, (str, Path)):  # an image in memory is not decoded
            return load_item(path, self.item_tfms, self.train, seed)
        decoded = self.cache.get(path)
        if decoded is None:
            decoded = self.cache[path] = decode_item(path, self.item_tfms)
        return transform_item(decoded, self.item_tfms, self.train, seed)

    def label(self, index):
        return self.vocab[self.targets[index]]

    def fill_cache(self):
        """Decodes every file not in the cache yet (one that fails is left for its load to report): done in
        this process before worker processes start, so that they share the decoded images (a forked
        worker reads its parent's memory) instead of each decoding and keeping its own copies."""
        for path in self.items:
            if isinstance(path, (str, Path)) and path not in self.cache:
                try:
                    self.cache[path] = decode_item(path, self.item_tfms)
                except ImageLoadError:
                    pass


class EpochSampler(torch.utils.data.Sampler):
    """Yields (index, seed) for each item of an epoch: shuffled or in order, one fresh seed per item when
    draw_seeds (else 0: the items' transforms draw nothing). generator: a torch.Generator, or None for
    torch's global one, drawn from when an epoch starts.

    Sharded (see shard), it yields only every world_size-th pair from position rank: the processes of a
    distributed run draw the same order from the same generator and split it between them.
    """

    def __init__(self, n_items, shuffle, generator, draw_seeds=True):
        self.n_items, self.shuffle, self.generator, self.draw_seeds = n_items, shuffle, generator, draw_seeds
        self.shard(0, 1)

    def shard(self, rank, world_size, pad=False):
        """This process's share of each epoch; pad: repeat the first items so every share is as long."""
        self.rank, self.world_size, self.pad = rank, world_size, pad

    def __len__(self):
        if self.pad:
            return math.ceil(self.n_items / self.world_size)
        return len(range(self.rank, self.n_items, self.world_size))

    def __iter__(self):
        order = torch.randperm(self.n_items, generator=self.generator) if self.shuffle else torch.arange(self.n_items)
        seeds = (torch.randint(0, 2**62, (self.n_items,), generator=self.generator) if self.draw_seeds
                 else torch.zeros(self.n_items, dtype=torch.long))
        pairs = list(zip(order.tolist(), seeds.tolist()))
        if self.pad:
            pairs = (pairs * self.world_size)[:len(self) * self.world_size]
        return iter(pairs[self.rank::self.world_size])


class PositionedDataset(torch.utils.data.Dataset):
    """A dataset whose samples come with their position in it: dataset[key] -> (index, sample)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        return (key[0] if isinstance(key, tuple) else key), self.dataset[key]


def collate(positioned_samples):
    """Stacks the good samples into (images, labels, positions): positions are the dataset indices of the
    batch's rows. Returns the failures beside them (an unreadable file has no row)."""
    failures = [s for _, s in positioned_samples if isinstance(s, ImageFailure)]
    good = [(i, s) for i, s in positioned_samples if not isinstance(s, ImageFailure)]
    if not good:
        return None, None, None, failures
    positions = torch.tensor([i for i, _ in good])
    if not isinstance(good[0][1], tuple):
        return stack_images([s for _, s in good]), None, positions, failures
    return stack_images([s[0] for _, s in good]), torch.tensor([s[1] for _, s in good]), positions, failures


def stack_images(images):
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise RuntimeError(f"cannot collate images of different sizes into a batch: {sorted(shapes)}. Add an "
                           f"item transform that gives every image the same size, e.g. item_tfms=Resize(460)")
    return torch.stack(images)


class DataLoader:
    """Batches of one dataset: (images, labels) on the device, after the batch transforms.

    Args:
        dataset: an ItemDataset.
        bs: the batch size.
        shuffle: a new random order each epoch (training).
        num_workers: processes decoding in parallel (0: decode in this process).
        device: where batches go; batch transforms run there.
        batch_tfms: callables tfm(x, train=bool) -> x applied to each batch, in order. The first receives
            uint8 images; whatever is still uint8 at the end is converted to float in [0, 1].
        generator: the torch.Generator that draws the order and the per-item seeds; None (the default):
            torch's global generator, when each epoch starts (pets.rng).
        skipped: a dict shared by the loaders of one DataLoaders, file -> reason, so that each unreadable
            file is reported once.
    """

    def __init__(self, dataset, bs=64, shuffle=False, num_workers=0, device=None, batch_tfms=(),
                 generator=None, skipped=None, drop_last=None):
        self.dataset, self.bs, self.shuffle = dataset, bs, shuffle
        self.device = torch.device(device) if device is not None else default_device()
        self.batch_tfms = list(batch_tfms)
        self.skipped = skipped if skipped is not None else {}
        # Validation items are presized the same way every time: their seeds would be drawn for nothing.
        self.sampler = EpochSampler(len(dataset), shuffle, generator, draw_seeds=dataset.train)
        self.num_workers, self.drop_last_option = num_workers, drop_last
        self._make_loader()

    def _make_loader(self):
        # As fastai, training drops the last partial batch (a batch of 3 would make BatchNorm's statistics
        # noise), but only when there is at least one full batch to keep (in this process's shard).
        self.drop_last = (self.shuffle and len(self.sampler) >= self.bs if self.drop_last_option is None
                          else self.drop_last_option)
        self._loader = torch.utils.data.DataLoader(
            PositionedDataset(self.dataset), batch_size=self.bs, sampler=self.sampler,
            num_workers=self.num_workers, collate_fn=collate, drop_last=self.drop_last,
            pin_memory=self.device.type == 'cuda', persistent_workers=self.num_workers > 0,
            # torch draws its workers' base seed from this generator, not from torch's global one, so that
            # starting an iterator (once per run with persistent workers) never shifts the global stream
            # (dropout): a resumed run then draws what an uninterrupted one does. Items carry their own seeds.
            generator=torch.Generator().manual_seed(0))

    @property
    def items(self):
        return self.dataset.items

    @property
    def vocab(self):
        return self.dataset.vocab

    def __len__(self):
        return len(self._loader)

    def __iter__(self):
        for _, batch in self.with_positions():
            yield batch

    def with_positions(self):
        """(positions, batch) for each batch: positions (on the CPU) are the dataset indices of the batch's
        rows, so that a prediction is matched to its item even where an unreadable file left a row out.

        For a GPU the batches are sent one ahead: batch k + 1's copy is queued (on a stream of its own, on
        CUDA) before batch k is handed over, so that it travels while batch k's step computes."""
        batches = self._readable_batches()
        if self.device.type == 'cpu':
            for positions, images, labels in batches:
                yield positions, self._finish(images, labels)
            return
        ahead = None
        for positions, images, labels in batches:
            sent = (positions, *self._send(images, labels))
            if ahead is not None:
                yield ahead[0], self._finish(*ahead[1:])
            ahead = sent
        if ahead is not None:
            yield ahead[0], self._finish(*ahead[1:])

    def _readable_batches(self):
        """(positions, uint8 images, labels) of each batch on the host, its unreadable files reported; a batch
        whose every file failed is skipped."""
        for images, labels, positions, failures in self._loader:
            self._report(failures)
            if images is not None:
                yield positions, images, labels

    def _send(self, images, labels):
        """Queues the copies of a batch to the device (from pinned memory, non_blocking; on CUDA on the
        loader's copy stream); returns (images, labels, event), event None where nothing need be waited for."""
        if self.device.type != 'cuda':
            return self.to_device(images), labels if labels is None else self.to_device(labels), None
        if getattr(self, '_copy_stream', None) is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            images = self.to_device(images)
            labels = labels if labels is None else self.to_device(labels)
        return images, labels, self._copy_stream.record_event()

    def _finish(self, images, labels, event=None):
        """The batch as handed over: the compute stream waits (on the device) for its copy, then the batch
        transforms run."""
        if event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            for tensor in (images, labels):
                if tensor is not None:
                    tensor.record_stream(stream)  # its memory is not reused until the compute stream is done
        x = self.after_collate(images)
        return x if labels is None else (x, self.to_device(labels))

    def ordered(self, train=None, seed=None, item_tfms=None, batch_tfms=None):
        """A loader of the same items in order with every batch kept, for predictions. train: which
        transforms the items get (default: this loader's); seed: for their random crops; item_tfms,
        batch_tfms: other transforms instead of this loader's."""
        dataset = self.dataset
        if (train is not None and train != dataset.train) or item_tfms is not None:
            # The same files: the decoded images are shared (the cache holds them before any item transform).
            dataset = ItemDataset(dataset.items, dataset.targets, dataset.vocab,
                                  dataset.item_tfms if item_tfms is None else as_list(item_tfms),
                                  train=dataset.train if train is None else train,
                                  cache=dataset.cache if dataset.cache is not None else False)
        return DataLoader(dataset, bs=self.bs, num_workers=self.num_workers, device=self.device,
                          batch_tfms=self.batch_tfms if batch_tfms is None else as_list(batch_tfms),
                          generator=generator_from(seed), skipped=self.skipped)

    @property
    def generator(self):
        """What the sampler draws each epoch's order and seeds from (None: torch's global generator)."""
        return self.sampler.generator

    def use_generator(self, generator):
        """Draws each epoch's order and seeds from `generator` from now on (None: torch's global one)."""
        self.sampler.generator = generator

    def shard(self, rank, world_size, pad=False):
        """Only this process's share of each epoch from now on (see EpochSampler.shard); shard(0, 1): all."""
        self.sampler.shard(rank, world_size, pad)
        self._make_loader()  # the shard's length decides whether the last partial batch is dropped

    def to_device(self, tensor):
        """tensor on the loader's device by a copy that does not make the host wait: from pinned host memory
        (torch's loader pins CUDA batches, in a thread of its own when there are workers), non_blocking.
        A copy from ordinary memory, or a blocking one, waits until the device has finished all it was given."""
        if self.device.type == 'cpu' or tensor.device == self.device:
            return tensor
        return pinned(tensor).to(self.device, non_blocking=True)

    def after_collate(self, images):
        """Moves a uint8 batch to the device and applies the batch transforms there."""
        x = self.to_device(images)
        for tfm in self.batch_tfms:
            x = tfm(x, train=self.dataset.train)
        return x.float().div_(255) if x.dtype == torch.uint8 else x

    def decode(self, x):
        """A batch of this loader as images in [0, 1] to show: each batch transform that can undo what it
        did (a normalisation) undoes it, the last first."""
        for tfm in reversed(self.batch_tfms):
            if hasattr(tfm, 'decode'):
                x = tfm.decode(x)
        return x

    def _report(self, failures):
        """Warns of each unreadable file once (and records it in skipped)."""
        for failure in failures:
            if failure.path not in self.skipped:
                self.skipped[failure.path] = failure.reason
                warnings.warn(f"left out an unreadable image: {failure.reason}", UnreadableImageWarning,
                              stacklevel=3)

    def one_batch(self):
        """The first batch of an epoch."""
        for batch in self:
            return batch
        raise ValueError(f"this loader has no batch: {len(self.dataset)} items, batch size {self.bs}"
                         f"{', the last partial batch dropped' if self.drop_last else ''}")

    def show_batch(self, nrows=3, ncols=3, figsize=None, **kwargs):
        """A matplotlib figure of the first images of a batch, each titled with its label."""
        return show_batch(self, nrows=nrows, ncols=ncols, figsize=figsize, **kwargs)


class DataLoaders:
    """The training and validation loaders of a data set, with its vocabulary.

    dls.train / dls.valid are DataLoaders, dls.train_ds / dls.valid_ds their datasets (with .items, the
    file paths of each split in order), dls.vocab the class names and dls.c their number.
    """

    def __init__(self, train, valid, path=None):
        self.train, self.valid, self.path = train, valid, Path(path) if path is not None else Path('.')

    def __getitem__(self, i):
        return (self.train, self.valid)[i]

    train_ds = property(lambda self: self.train.dataset)
    valid_ds = property(lambda self: self.valid.dataset)
    vocab = property(lambda self: self.train.vocab)
    c = property(lambda self: len(self.vocab))
    device = property(lambda self: self.train.device)
    skipped = property(lambda self: self.train.skipped)

    def one_batch(self):
        return self.train.one_batch()

    def show_batch(self, nrows=3, ncols=3, figsize=None, **kwargs):
        return self.train.show_batch(nrows=nrows, ncols=ncols, figsize=figsize, **kwargs)

    def test_dl(self, files, bs=None, num_workers=None):
        """A loader over new files, transformed as the validation set (no labels: batches are images).
        num_workers: decoding processes (default: the validation loader's, for more than a batch of files;
        none for a batch or less, which starting workers would only delay)."""
        valid = self.valid_ds
        bs = bs or self.valid.bs
        if num_workers is None:
            num_workers = self.valid.num_workers if len(files) > bs else 0
        dataset = ItemDataset(files, None, valid.vocab, valid.item_tfms, train=False)
        return DataLoader(dataset, bs=bs, num_workers=num_workers, device=self.device,
                          batch_tfms=self.valid.batch_tfms, skipped=self.skipped)


def as_list(tfms):
    """Transforms given as None, one, or a list/tuple of them, as a list."""
    if tfms is None:
        return []
    return list(tfms) if isinstance(tfms, (list, tuple)) else [tfms]


def default_device():
    """The GPU when there is one, else the CPU."""
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def default_num_workers():
    """One decoding process per core (at most 8), the cores shared by the processes torchrun started on
    this machine (LOCAL_WORLD_SIZE): decoding JPEGs is the loader's bottleneck."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    return max(1, min(cores, 8) // processes_per_machine())
