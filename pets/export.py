"""Saving a trained classifier for inference, and loading it back without unpickling code.

    learn.export('pets.pth')                 # weights, architecture name, vocabulary, transforms
    learn = load_learner('pets.pth')         # an inference Learner: learn.dls.vocab, test_dl, get_preds
    label, index, probabilities = learn.predict('my_cat.jpg')

The file holds only tensors, strings and numbers, and is read with torch.load(weights_only=True): loading
a model file from elsewhere cannot run code (a plain pickle of the Learner could).
"""
import warnings
from pathlib import Path

import torch

from pets.augment import AugTransform
from pets.data.block import DataLoader, DataLoaders, ItemDataset, default_device
from pets.data.images import Resize
from pets.learner import Learner
from pets.models import arch_config, create_cnn_model, layer_groups

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


def load_learner(path, cpu=True):
    """The exported classifier as an inference Learner (weights_only: no code is unpickled), fastai's way:

        learn = load_learner('model.pth')
        learn.dls.vocab                                   # the classes
        preds, _ = learn.get_preds(dl=learn.dls.test_dl(files))
        label, index, probabilities = learn.predict('my_cat.jpg')

    Its DataLoaders hold no images, only the validation pipeline (decode, presize, resize) and the
    vocabulary, so test_dl prepares new files exactly as validation saw them. cpu: load onto the CPU (else
    the GPU when there is one). A missing file raises FileNotFoundError; any other file that learn.export
    did not write, ValueError saying so.
    """
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
    arch, vocab, presize, size = saved['arch'], saved['vocab'], saved['presize'], saved['size']
    model = create_cnn_model(arch, len(vocab), pretrained=False)
    model.load_state_dict(saved['state_dict'])
    item_tfms = [] if presize is None else [Resize(tuple(presize[:2]), method=presize[2], pad_mode=presize[3])]
    resize = AugTransform(size=tuple(size) if size else None, seed=0)  # used with train=False: a plain resize
    device = torch.device('cpu') if cpu else default_device()

    def empty_loader(train):
        return DataLoader(ItemDataset([], [], vocab, item_tfms, train=train), device=device, batch_tfms=[resize])

    config = arch_config(arch)
    learn = Learner(DataLoaders(empty_loader(True), empty_loader(False)), model, layer_groups(model, arch),
                    mean=config.mean, std=config.std, progress=False)
    learn.arch = arch
    learn.model.eval()
    return learn
