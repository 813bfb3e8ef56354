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

from minigrad.functional import softmax
from pets.data.images import ImageLoadError
from pets.distributed import gather_in_order
from pets.rng import transform_generators

Preds = namedtuple('Preds', ['probabilities', 'targets'])
Predictions = namedtuple('Predictions', ['probabilities', 'targets', 'losses', 'positions'])


def out_of_memory_error(learn, where, bs):
    """The error to raise when a batch of bs does not fit on learn's device, with what to do about it."""
    half = max(1, bs // 2)
    return torch.OutOfMemoryError(
        f"{where}: out of memory on {learn.dls.device} with batch size {bs}: use a smaller batch size "
        f"(dataloaders(bs={half}), pets.run --bs {half}) or mixed precision (to_fp16, --fp16), which "
        f"halves the activations' memory")


def model_outputs(learn, dl):
    """(logits, targets, positions) over the batches of dl, in eval mode, gathered from every process of a
    distributed run, on the learner's device: targets None for a loader of unlabelled images; positions
    (on the CPU) the dataset index of each row, None for a plain list of batches."""
    learn.model.eval()
    outputs, targets, positions = [], [], []
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
    if not outputs:  # an empty loader (a process's validation shard may be)
        outputs = [torch.empty(0, learn.dls.c, device=learn.dls.device)]
        if getattr(getattr(dl, 'dataset', None), 'targets', None) is not None:
            targets = [torch.empty(0, dtype=torch.long, device=learn.dls.device)]
        if hasattr(dl, 'with_positions'):
            positions = [torch.empty(0, dtype=torch.long)]
    outputs, targets = torch.cat(outputs), (torch.cat(targets) if targets else None)
    positions = torch.cat(positions) if positions else None
    sharded = getattr(getattr(dl, 'sampler', None), 'world_size', 1) > 1
    if learn.distributed and sharded:  # each process saw its shard: put the whole set together
        return gather_in_order(outputs, targets, positions)
    return outputs, targets, positions


def predictions(learn, dl, with_loss=False):
    """Predictions(probabilities, targets, losses, positions) over dl, on the CPU: losses per sample with
    with_loss (else None), positions the dataset index of each row (see model_outputs)."""
    logits, targets, positions = model_outputs(learn, dl)
    losses = learn.loss_func(logits, targets, reduction='none') if with_loss else None
    cpu = lambda t: None if t is None else t.cpu()
    return Predictions(cpu(softmax(logits, dim=1)), cpu(targets), cpu(losses), positions)


def get_preds(learn, ds_idx=1, dl=None, with_loss=False):
    """(probabilities, targets) on dataset ds_idx (0 train, 1 valid) or dl, on the CPU; rows sum to 1.
    with_loss adds the per-sample losses. A file that could not be read has no row (see predictions for
    which item each row is)."""
    if dl is None:
        loader = learn.dls[ds_idx]
        dl = loader if ds_idx == 1 else loader.ordered()
    result = predictions(learn, dl, with_loss)
    if with_loss:
        return result.probabilities, result.targets, result.losses
    return Preds(result.probabilities, result.targets)


def tta(learn, ds_idx=1, dl=None, n=4, beta=0.25, use_max=False, seed=0):
    """Test-time augmentation: (probabilities, targets), each image's prediction averaged over views.

    Each of n passes sees every image through the training transforms (a random crop of the presized
    image, then the batch augmentation); the mean of those n predictions is blended with the plain one
    (the validation transforms) as fastai does:
        p = (1 - beta) mean_k p_k + beta p_plain
    use_max takes the elementwise max over the n + 1 predictions instead. The views are drawn from
    `seed`, so tta repeats, and every random stream of training is left as it was: the transforms' own
    generators and torch's global one (which transforms without a seed draw from) are put back after.
    """
    loader = dl if dl is not None else learn.dls[ds_idx]
    plain, targets = get_preds(learn, dl=loader.ordered(train=False, seed=seed))
    augmented = loader.ordered(train=True, seed=seed)
    generators = list(transform_generators(loader.batch_tfms).values())
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
    return Preds(torch.lerp(views.mean(0), plain, beta), targets)


def predict(learn, item):
    """fastai's triple for one image file: (label, class index as a 0-d tensor, probabilities), on the CPU.
    A file that cannot be read raises ImageLoadError naming it and why."""
    result = predictions(learn, learn.dls.test_dl([item]))
    if len(result.probabilities) == 0:
        raise ImageLoadError(learn.dls.skipped.get(Path(item), f"cannot read {item}"))
    probabilities = result.probabilities[0]
    index = probabilities.argmax()
    return learn.dls.vocab[int(index)], index, probabilities
