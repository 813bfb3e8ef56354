"""Saving a trained classifier for inference, and loading it back without unpickling code.

    learn.export('pets.pth')                 # weights, architecture name, vocabulary, transforms
    predictor = load_learner('pets.pth')
    label, index, probabilities = predictor.predict('my_cat.jpg')

The file holds only tensors, strings and numbers, and is read with torch.load(weights_only=True): loading
a model file from elsewhere cannot run code (a plain pickle of the Learner could).
"""
import warnings
from pathlib import Path

import torch

from minigrad.functional import softmax
from pets.augment import AugTransform
from pets.data.block import ItemDataset
from pets.data.images import Resize
from pets.models import arch_config, create_cnn_model

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


class Predictor:
    """An exported classifier: predict(image file) -> (label, class index, probabilities)."""

    def __init__(self, model, arch, vocab, presize, size):
        self.model, self.vocab = model.eval(), vocab
        config = arch_config(arch)
        self.mean = torch.tensor(config.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(config.std).view(1, 3, 1, 1)
        resize = [] if presize is None else [Resize(tuple(presize[:2]), method=presize[2], pad_mode=presize[3])]
        # The training loaders' own validation pipeline, so that a prediction sees what validation saw.
        self.items = ItemDataset([], None, vocab, resize, train=False)
        self.resample = AugTransform(size=tuple(size) if size else None, seed=0)

    def prepare(self, files):
        """The validation pipeline: decode, presize (centre), resize to the model's size, normalise."""
        x = torch.stack([self.items.load(f) for f in files])
        return (self.resample(x, train=False) - self.mean) / self.std

    def predict_files(self, files):
        """Probabilities (len(files), C)."""
        with torch.no_grad():
            return softmax(self.model(self.prepare(files)), dim=1)

    def predict(self, item):
        probabilities = self.predict_files([item])[0]
        index = int(probabilities.argmax())
        return self.vocab[index], index, probabilities


def load_learner(path):
    """Loads an exported classifier (weights_only: no code is unpickled). A missing file raises
    FileNotFoundError; any other file that learn.export did not write, ValueError saying so."""
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
    model = create_cnn_model(saved['arch'], len(saved['vocab']), pretrained=False)
    model.load_state_dict(saved['state_dict'])
    return Predictor(model, saved['arch'], saved['vocab'], saved['presize'], saved['size'])
