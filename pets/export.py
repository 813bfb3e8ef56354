"""The file a trained classifier is saved to for inference: what it holds, how it is written and read back.

    learn.export('pets.pth')                 # weights, the model, vocabulary, transforms
    learn = load_learner('pets.pth')         # (pets.learner) an inference Learner built from read_export
    label, index, probabilities = learn.predict('my_cat.jpg')

The file holds only tensors, strings and numbers, and is read with torch.load(weights_only=True): loading
a model file from elsewhere cannot run code (a plain pickle of the Learner, fastai's export.pkl, could).
A model is saved one of two ways:
  - a cnn_learner's by its architecture's name and its weights: load_learner builds the same network from
    pets.models and loads them;
  - any other model as a torch.export program: the graph of torch operators the model runs, written as
    torch.export's JSON (no Python code in it), with its weights. It is checked before it is read back: every
    operation must be one of torch's own (aten or prims) and every shape expression a plain symbol, so a
    crafted file cannot make loading call something else. A model torch.export cannot trace (control flow
    that depends on the data) is refused at export, with torch's reason.
"""
import json
import re
import warnings
from pathlib import Path

import torch

from minigrad.functional import binary_cross_entropy_with_logits, cross_entropy
from pets.augment import AugTransform
from pets.data.images import Resize
from pets.data.loader import DataLoader, DataLoaders, ItemDataset
from pets.inference import loss_kind
from pets.models import arch_config

FORMAT = 'pets-export-2'
READABLE = ('pets-export-1', FORMAT)  # format 1: a cnn_learner's, normalised with its architecture's stats

# The losses whose activation load_learner can restore (what turns outputs into predictions).
LOSSES = {'cross_entropy': cross_entropy, 'binary_cross_entropy_with_logits': binary_cross_entropy_with_logits}


def loss_name(loss_func):
    """The LOSSES name of a learner's loss (pets.inference.loss_kind), or ValueError."""
    kind = loss_kind(loss_func)
    if kind is None:
        raise ValueError(f"export: the loss {loss_func!r} is not cross-entropy or binary cross-entropy on logits, "
                         f"so load_learner could not tell how its outputs become predictions")
    return kind


def export(learn, path, normalization=None):
    """Writes what inference needs: the model (see the module docstring), its input normalisation
    (normalization: (mean, std), else none), and how to prepare an image for it."""
    resizes = [t for t in learn.dls.valid_ds.item_tfms if isinstance(t, Resize)]
    augment = [t for t in learn.dls.valid.batch_tfms if isinstance(t, AugTransform)]
    resize = resizes[0] if resizes else None
    saved = {
        'format': FORMAT,
        'vocab': list(learn.dls.vocab),
        'loss': loss_name(learn.loss_func),
        'normalization': None if normalization is None else [list(normalization[0]), list(normalization[1])],
        'presize': None if resize is None else [resize.height, resize.width, resize.method, resize.pad_mode],
        'size': list(augment[0].size) if augment and augment[0].size else None,
    }
    if learn.arch is not None:
        saved.update(arch=arch_config(learn.arch).name, state_dict=learn.model.state_dict())
    else:
        saved.update(program_parts(learn))
    torch.save(saved, path)
    return Path(path)


def program_parts(learn):
    """The learner's model as a torch.export program (any batch size), in parts torch.load(weights_only)
    reads back: the graph as JSON bytes (a uint8 tensor), its weights and constants, an example input."""
    from torch._export.serde.serialize import serialize
    x = learn.dls.valid.one_batch()
    x = x[0] if isinstance(x, (tuple, list)) else x
    example = learn.normalize(x[:1].expand(2, *x.shape[1:]).contiguous())  # two rows: the batch may vary
    model = learn.model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    except Exception as error:  # torch.export's many ways of failing to trace a model
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"export: torch.export cannot trace this model ({first_line}); a model whose control "
                         f"flow depends on its input cannot be saved as a program: save its weights with "
                         f"learn.save instead") from None
    graph = serialize(program, serialize_state_dict=False, serialize_constants=False,
                      serialize_example_inputs=False).exported_program
    return {'program': torch.frombuffer(bytearray(graph), dtype=torch.uint8), 'state_dict': dict(program.state_dict),
            'constants': dict(program.constants), 'example': example.cpu().contiguous()}


# What a safe program holds: torch's own operators, and shape expressions that are plain symbols.
SAFE_TARGET = re.compile(r"torch\.ops\.(aten|prims)\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+|_operator\.getitem")
SAFE_EXPRESSION = re.compile(r"(Symbol\('[a-z]\d+'(, [a-z]+=(True|False))*\)|Integer\(-?\d+\)|Add|Mul|[(),\s])+")
SAFE_SYMBOL = re.compile(r"[a-z]\d+")


def check_program(graph_json, path):
    """Raises ValueError unless every operation of the program is one of torch's own (aten, prims) and
    every shape expression a plain symbol: torch.export's reader looks targets up by name and parses
    expressions with sympy, so a crafted file could otherwise name any function."""
    unsafe = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'target' and isinstance(value, str) and not SAFE_TARGET.fullmatch(value):
                    unsafe.append(value)
                if key == 'expr_str' and not (isinstance(value, str) and SAFE_EXPRESSION.fullmatch(value)):
                    unsafe.append(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(graph_json)
    unsafe += [k for k in graph_json.get('range_constraints', {}) if not SAFE_SYMBOL.fullmatch(k)]
    if unsafe:
        raise ValueError(f"{path}: its program calls what a pets export never does ({str(unsafe[0])[:80]}); "
                         f"it was not written by learn.export, and is not loaded")


def program_module(saved, path):
    """The model of a program export (an ExportedModel over torch's program module), after check_program."""
    from torch._export.serde.serialize import SerializedArtifact, deserialize
    graph = saved['program'].numpy().tobytes()
    try:
        graph_json = json.loads(graph)
    except ValueError:
        raise ValueError(f"{path}: its program is not torch.export's JSON") from None
    check_program(graph_json, path)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        program = deserialize(SerializedArtifact(graph, saved['state_dict'], saved['constants'],
                                                 ((saved['example'],), {})))
    return ExportedModel(program.module())


class ExportedModel(torch.nn.Module):
    """An exported program as a model: it was traced in evaluation mode (BatchNorm's running statistics,
    no dropout) and stays so; train() and eval() change nothing (torch's program module refuses them)."""

    def __init__(self, program):
        super().__init__()
        self.program = program

    def forward(self, x):
        return self.program(x)

    def train(self, mode=True):
        return self


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
    if not isinstance(saved, dict) or saved.get('format') not in READABLE:
        raise ValueError(not_ours)
    if saved['format'] == 'pets-export-1':  # normalised with its architecture's statistics, by cross-entropy
        config = arch_config(saved['arch'])
        saved.update(format=FORMAT, loss='cross_entropy', normalization=[list(config.mean), list(config.std)])
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
