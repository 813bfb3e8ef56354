"""The file a trained classifier is saved to for inference: what it holds, how it is written and read back.

    learn.export('pets.pth')                 # weights, architecture name, vocabulary, transforms
    learn = load_learner('pets.pth')         # (pets.learner) an inference Learner built from read_export
    label, index, probabilities = learn.predict('my_cat.jpg')

The file holds only tensors, strings and numbers, and is read with torch.load(weights_only=True): loading
a model file from elsewhere cannot run code (a plain pickle of the Learner could).
"""
import warnings
from pathlib import Path

import torch

from pets.augment import AugTransform
from pets.data.images import Resize
from pets.data.loader import DataLoader, DataLoaders, ItemDataset
from pets.models import arch_config

FORMAT = 'pets-export-1'


def export(learn, path):
    """Writes what inference needs: the model's weights and how to prepare an image for it."""
    resizes = [t for t in learn.dls.valid_ds.item_tfms if isinstance(t, Resize)]
    augment = [t for t in learn.dls.valid.batch_tfms if isinstance(t, AugTransform)]
    resize = resizes[0] if resizes else None
    torch.save({
        'format': FORMAT,
        'arch': arch_config(learn.arch).name,
        'vocab': list(learn.dls.vocab),
        'state_dict': learn.model.state_dict(),
        'presize': None if resize is None else [resize.height, resize.width, resize.method, resize.pad_mode],
        'size': list(augment[0].size) if augment and augment[0].size else None,
    }, path)
    return Path(path)


def read_export(path):
    """What export wrote, read with weights_only (no code is unpickled). A missing file raises
    FileNotFoundError; any other file that export did not write, ValueError saying so."""
    not_ours = f"{path} is not a model exported by pets (learn.export, or the model.pth of python -m pets.run)"
    try:
        with warnings.catch_warnings():  # torch's warnings about a foreign file: the error below says it all
            warnings.simplefilter('ignore')
            saved = torch.load(path, map_location='cpu', weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception:  # torch.load's many ways of refusing a file that is not a weights-only torch file
        raise ValueError(not_ours) from None
    if not isinstance(saved, dict) or saved.get('format') != FORMAT:
        raise ValueError(not_ours)
    return saved


def inference_dataloaders(saved, device):
    """DataLoaders that hold no images, only the validation pipeline export saved (decode, presize, resize)
    and the vocabulary: their test_dl prepares new files exactly as validation saw them."""
    presize, size = saved['presize'], saved['size']
    item_tfms = [] if presize is None else [Resize(tuple(presize[:2]), method=presize[2], pad_mode=presize[3])]
    resize = AugTransform(size=tuple(size) if size else None, seed=0)  # used with train=False: a plain resize

    def empty_loader(train):
        return DataLoader(ItemDataset([], [], saved['vocab'], item_tfms, train=train), device=device,
                          batch_tfms=[resize])

    return DataLoaders(empty_loader(True), empty_loader(False))
