"""Inference: the model's predictions on a data set, with test-time augmentation, or for one image.

    preds, targets = get_preds(learn)                  # the validation set's probabilities
    preds, targets = learn.tta(n=4)                    # averaged over augmented views
    label, index, probabilities = learn.predict('my_cat.jpg')

The functions take the learner; Learner.get_preds, tta and predict call them. Probabilities come from
minigrad's softmax (minigrad/functional.py), as the chapter derives it. What they hand back is on the CPU,
as in fastai, whatever device the model runs on.
"""
from collections import namedtuple
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigrad.functional import binary_cross_entropy_with_logits, cross_entropy, sigmoid, softmax
from pets.data.images import ImageLoadError
from pets.distributed import gather_in_order
from pets.rng import transform_generators

Preds = namedtuple('Preds', ['probabilities', 'targets'])
Predictions = namedtuple('Predictions', ['probabilities', 'targets', 'losses', 'positions', 'inputs'])


def out_of_memory_error(learn, where, bs):
    """The error to raise when a batch of bs does not fit on learn's device, with what to do about it."""
    half = max(1, bs // 2)
    return torch.OutOfMemoryError(
        f"{where}: out of memory on {learn.dls.device} with batch size {bs}: use a smaller batch size "
        f"(dataloaders(bs={half}), pets.run --bs {half}) or mixed precision (to_fp16, --fp16), which "
        f"halves the activations' memory")


def model_outputs(learn, dl, with_input=False):
    """(logits, targets, positions, inputs) over the batches of dl, in eval mode, gathered from every
    process of a distributed run, on the learner's device: targets None for a loader of unlabelled images;
    positions (on the CPU) the dataset index of each row, None for a plain list of batches; inputs the
    batches' images with with_input, else None."""
    learn.model.eval()
    outputs, targets, positions, inputs = [], [], [], []
    batches = dl.with_positions() if hasattr(dl, 'with_positions') else ((None, batch) for batch in dl)
    with torch.no_grad(), learn.autocast():
        for rows, batch in batches:
            x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
            try:
                outputs.append(learn.model(learn.normalize(x)).float())
            except torch.OutOfMemoryError:
                raise out_of_memory_error(learn, 'predicting', len(x)) from None
            if y is not None:
                targets.append(y)
            if rows is not None:
                positions.append(rows)
            if with_input:
                inputs.append(x)
    if not outputs:  # an empty loader (a process's validation shard may be)
        outputs = [torch.empty(0, learn.dls.c, device=learn.dls.device)]
        if getattr(getattr(dl, 'dataset', None), 'targets', None) is not None:
            targets = [torch.empty(0, dtype=torch.long, device=learn.dls.device)]
        if hasattr(dl, 'with_positions'):
            positions = [torch.empty(0, dtype=torch.long)]
    outputs, targets = torch.cat(outputs), (torch.cat(targets) if targets else None)
    positions = torch.cat(positions) if positions else None
    inputs = torch.cat(inputs) if inputs else None
    sharded = getattr(getattr(dl, 'sampler', None), 'world_size', 1) > 1
    if learn.distributed and sharded:  # each process saw its shard: put the whole set together
        if with_input:
            raise ValueError("get_preds(with_input=True) under distrib_ctx: the inputs are not gathered; "
                             "call it outside the distributed context")
        return (*gather_in_order(outputs, targets, positions), None)
    return outputs, targets, positions, inputs


def loss_kind(loss_func):
    """'cross_entropy', 'binary_cross_entropy_with_logits' or None: which of the two classification losses
    loss_func computes, minigrad's or torch's, as a function, a module or a functools.partial of one."""
    func = getattr(loss_func, 'func', loss_func)
    if func in (cross_entropy, F.cross_entropy) or isinstance(func, nn.CrossEntropyLoss):
        return 'cross_entropy'
    if func in (binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits) \
            or isinstance(func, nn.BCEWithLogitsLoss):
        return 'binary_cross_entropy_with_logits'
    return None


def activation(loss_func):
    """What turns the model's outputs into predictions for this loss, as fastai's loss classes say with
    their .activation: softmax over the classes for cross-entropy, the sigmoid for binary cross-entropy on
    logits (loss_kind), a loss's own .activation if it has one, else the outputs as they are."""
    if hasattr(loss_func, 'activation'):
        return loss_func.activation
    kind = loss_kind(loss_func)
    if kind == 'cross_entropy':
        return lambda x: softmax(x, dim=1)
    return sigmoid if kind == 'binary_cross_entropy_with_logits' else (lambda x: x)


def decodes(loss_func):
    """Predictions -> decoded predictions, as fastai's loss classes' .decodes: the class index (argmax) for
    cross-entropy, probability > 0.5 for binary cross-entropy, a loss's own .decodes, else as they are."""
    if hasattr(loss_func, 'decodes'):
        return loss_func.decodes
    kind = loss_kind(loss_func)
    if kind == 'cross_entropy':
        return lambda p: p.argmax(dim=1)
    return (lambda p: p > 0.5) if kind == 'binary_cross_entropy_with_logits' else (lambda p: p)


def per_sample_losses(loss_func, logits, targets):
    """The loss of each sample: loss_func with reduction 'none', set on a loss module for the call (as
    fastai's loss_not_reduced does, e.g. for nn.CrossEntropyLoss()) or passed to a loss function."""
    if hasattr(loss_func, 'reduction'):
        saved, loss_func.reduction = loss_func.reduction, 'none'
        try:
            return loss_func(logits, targets)
        finally:
            loss_func.reduction = saved
    return loss_func(logits, targets, reduction='none')


def predictions(learn, dl, with_loss=False, act=None, with_input=False):
    """Predictions(probabilities, targets, losses, positions, inputs) over dl, on the CPU: the predictions
    are act (default: the loss's activation) of the outputs; losses per sample with with_loss (else None);
    positions the dataset index of each row (see model_outputs); inputs the batches' images as the loader
    made them with with_input (else None)."""
    logits, targets, positions, inputs = model_outputs(learn, dl, with_input)
    losses = per_sample_losses(learn.loss_func, logits, targets) if with_loss else None
    cpu = lambda t: None if t is None else t.cpu()
    act = act or activation(learn.loss_func)
    return Predictions(cpu(act(logits)), cpu(targets), cpu(losses), positions, cpu(inputs))


def prediction_loader(learn, ds_idx=1, dl=None):
    """The loader get_preds and the interpretation run: dl, else data set ds_idx's items in order with
    every batch kept, under their own transforms (fastai's dls[ds_idx].new(shuffle=False, drop_last=False)):
    the validation loader itself, or for the training set an ordered copy, whose random transforms draw
    from torch's global generator and leave the training loader's own generator as it was."""
    if dl is not None:
        return dl
    loader = learn.dls[ds_idx]
    return loader if ds_idx == 1 else loader.ordered()


def get_preds(learn, ds_idx=1, dl=None, with_input=False, with_decoded=False, with_loss=False, act=None):
    """fastai's get_preds: (predictions, targets) on dataset ds_idx (0 train, 1 valid) or dl, on the CPU,
    with more in fastai's order when asked: (inputs, predictions, targets, decoded, losses).

    predictions: act of the model's outputs (default: the loss's activation, so probabilities whose rows
    sum to 1 for cross-entropy); inputs: the images as the loader made them; decoded: the predicted classes
    (the loss's decodes); losses: per sample. A file that could not be read has no row (see predictions for
    which item each row is)."""
    result = predictions(learn, prediction_loader(learn, ds_idx, dl), with_loss, act, with_input)
    if not (with_input or with_decoded or with_loss):
        return Preds(result.probabilities, result.targets)
    values = [result.inputs] if with_input else []
    values += [result.probabilities, result.targets]
    if with_decoded:
        values.append(decodes(learn.loss_func)(result.probabilities))
    if with_loss:
        values.append(result.losses)
    return tuple(values)


def tta(learn, ds_idx=1, dl=None, n=4, item_tfms=None, batch_tfms=None, beta=0.25, use_max=False, seed=0):
    """Test-time augmentation, fastai's signature: (predictions, targets), each image's prediction averaged
    over views.

    Each of n passes sees every image through the training transforms (a random crop of the presized
    image, then the batch augmentation; item_tfms and batch_tfms replace them); the mean of those n
    predictions is blended with the plain one (the validation transforms) as fastai does:
        p = (1 - beta) mean_k p_k + beta p_plain
    beta=None returns both, ((mean_k p_k, p_plain), targets). use_max takes the elementwise max over the
    n + 1 predictions instead. The views are drawn from `seed`, so tta repeats, and every random stream of
    training is left as it was: the transforms' own generators and torch's global one (which transforms
    without a seed draw from) are put back after.
    """
    loader = dl if dl is not None else learn.dls[ds_idx]
    plain, targets = get_preds(learn, dl=loader.ordered(train=False, seed=seed))
    augmented = loader.ordered(train=True, seed=seed, item_tfms=item_tfms, batch_tfms=batch_tfms)
    generators = list(transform_generators(augmented.batch_tfms).values())
    states = [g.get_state() for g in generators]
    device = learn.dls.device
    try:
        # torch.manual_seed reseeds every device's generator: the learner's device is put back as well.
        with torch.random.fork_rng(devices=[] if device.type == 'cpu' else [device], device_type=device.type):
            torch.manual_seed(seed)
            for g in generators:
                g.manual_seed(seed)
            views = torch.stack([get_preds(learn, dl=augmented)[0] for _ in range(n)])
    finally:
        for g, state in zip(generators, states):
            g.set_state(state)
    if use_max:
        return Preds(torch.cat([views, plain[None]]).amax(0), targets)
    if beta is None:
        return Preds((views.mean(0), plain), targets)
    return Preds(torch.lerp(views.mean(0), plain, beta), targets)


def predict(learn, item):
    """fastai's triple for one image: (label, class index as a 0-d tensor, probabilities), on the CPU. The
    item is what fastai's predict takes: a file path, a PIL image, a uint8 tensor (3, H, W) or array
    (H, W, 3). A file that cannot be read raises ImageLoadError naming it and why."""
    result = predictions(learn, learn.dls.test_dl([item]))
    if len(result.probabilities) == 0:
        raise ImageLoadError(learn.dls.skipped.get(Path(item), f"cannot read {item}"))
    probabilities = result.probabilities[0]
    index = probabilities.argmax()
    return learn.dls.vocab[int(index)], index, probabilities
