"""Items, labels and the split: which files there are, what breed each shows, which ones we validate on.

    files = get_image_files(path/'images')                        # sorted: the same on every machine
    label = using_attr(RegexLabeller(r'(.+)_\\d+.jpg$'), 'name')   # Path -> 'great_pyrenees'
    label = parent_label                                           # or my_pets/cat/IMG_1.jpg -> 'cat'
    train_idx, valid_idx = RandomSplitter(valid_pct=0.2, seed=42)(files)
    train_idx, valid_idx = GrandparentSplitter()(files)            # or train/<class>/..., valid/<class>/...
    vocab = Categorize(); vocab.setup(labels)                       # sorted breed names <-> 0..36
"""
import os
import re
from pathlib import Path

import torch

from pets.rng import generator_from

IMAGE_EXTENSIONS = frozenset({'.jpg', '.jpeg', '.png', '.gif', '.bmp', '.tif', '.tiff', '.webp'})


def get_image_files(path, recurse=True, folders=None):
    """The image files under path (by extension, any case), hidden files and folders skipped, SORTED.

    fastai lists files in whatever order the file system gives, so the same seed can split differently on
    two machines; sorting makes the split a function of the file names alone.

    Args:
        path: a folder.
        recurse: also look in sub-folders.
        folders: if given, only these sub-folders of path (names), at the top level.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder: pass the folder that holds the images "
                                f"(for the pets data, path/'images')")
    roots = [path / folder for folder in folders] if folders else [path]
    files = []
    for root in roots:
        # followlinks=False: a symlink loop in the folder cannot send the walk round forever.
        for folder, subfolders, names in os.walk(root, followlinks=False):
            subfolders[:] = [] if not recurse else [d for d in subfolders if not d.startswith('.')]
            files += [Path(folder) / name for name in names
                      if not name.startswith('.') and Path(name).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files)


class RegexLabeller:
    """Labels a string with the first group of a regular expression: re.search(pat, s).group(1).

    A string that does not match is an error naming it and the pattern: a silently mislabelled file
    would train the wrong class.
    """

    def __init__(self, pat):
        self.pattern = re.compile(pat)

    def __call__(self, text):
        match = self.pattern.search(str(text))
        if match is None:
            raise ValueError(f"RegexLabeller: {str(text)!r} does not match the pattern "
                             f"{self.pattern.pattern!r}; fix the pattern or leave that file out")
        return match.group(1)

    def __repr__(self):
        return f"RegexLabeller({self.pattern.pattern!r})"


def parent_label(item):
    """The name of the folder an item sits in: my_pets/cat/IMG_1.jpg -> 'cat'. fastai's labeller for the
    folder-per-class layout (torchvision's ImageFolder convention)."""
    return Path(item).parent.name


class using_attr:  # noqa: N801 -- fastai's name, used by the chapter
    """using_attr(f, 'name')(x) = f(x.name): label a Path by its file name, say."""

    def __init__(self, f, attr):
        self.f, self.attr = f, attr

    def __call__(self, x):
        try:
            return self.f(getattr(x, self.attr))
        except ValueError as error:
            raise ValueError(f"{error} (file: {x})") from None

    def __repr__(self):
        return f"using_attr({self.f!r}, {self.attr!r})"


class RandomSplitter:
    """A random validation set of int(valid_pct * n) items; the rest train.

    fastai's rule exactly (torch.manual_seed(seed), then torch.randperm(n); the first cut are validation),
    so a split here equals fastai's for the same sorted file list. The seed is applied to a private
    torch.Generator, not the global one, so splitting does not disturb any other randomness. Without a
    seed, the split draws from torch's global generator when it splits (pets.rng's rule), so that
    torch.manual_seed beforehand repeats it, as in fastai.
    """

    def __init__(self, valid_pct=0.2, seed=None):
        if not 0 <= valid_pct < 1:
            raise ValueError(f"valid_pct={valid_pct} must be in [0, 1)")
        self.valid_pct, self.seed = valid_pct, seed

    def __call__(self, items):
        order = torch.randperm(len(items), generator=generator_from(self.seed)).tolist()
        cut = int(self.valid_pct * len(items))
        return order[cut:], order[:cut]

    def __repr__(self):
        return f"RandomSplitter(valid_pct={self.valid_pct}, seed={self.seed})"


class Categorize:
    """Labels <-> class indices: the vocabulary is the sorted set of the labels given to setup. DataBlock
    gives it every item's label, training and validation alike (fastai uses the training split's only), so
    that a class seen only in validation is still a class."""

    def __init__(self, vocab=None):
        self.vocab = list(vocab) if vocab is not None else None

    def setup(self, labels):
        if self.vocab is None:
            self.vocab = sorted(set(labels))
        self._index = {label: i for i, label in enumerate(self.vocab)}
        return self

    def encode(self, label):
        try:
            return self._index[label]
        except KeyError:
            raise KeyError(f"label {label!r} is not in the vocabulary ({len(self.vocab)} labels: "
                           f"{self.vocab[:5]}{' ...' if len(self.vocab) > 5 else ''})") from None

    def decode(self, index):
        return self.vocab[int(index)]

    def __repr__(self):
        return f"Categorize(vocab=({len(self.vocab)} classes))" if self.vocab else "Categorize()"


class GrandparentSplitter:
    """The split a folder layout already gives: items under a folder named train_name (two levels up:
    train/cat/IMG_1.jpg) train, those under valid_name validate, any others are in neither. fastai's."""

    def __init__(self, train_name='train', valid_name='valid'):
        self.train_name, self.valid_name = train_name, valid_name

    def __call__(self, items):
        grandparents = [Path(item).parent.parent.name for item in items]
        train = [i for i, name in enumerate(grandparents) if name == self.train_name]
        valid = [i for i, name in enumerate(grandparents) if name == self.valid_name]
        if not train or not valid:
            found = sorted(set(grandparents))[:5]
            raise ValueError(f"GrandparentSplitter found {len(train)} items under a {self.train_name!r} folder and "
                             f"{len(valid)} under a {self.valid_name!r} folder (two levels up from each file; "
                             f"found {found}): the layout must be {self.train_name}/<class>/<file> and "
                             f"{self.valid_name}/<class>/<file>")
        return train, valid

    def __repr__(self):
        return f"GrandparentSplitter(train_name={self.train_name!r}, valid_name={self.valid_name!r})"
