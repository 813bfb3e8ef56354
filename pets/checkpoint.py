"""Checkpoints: all a run needs to continue exactly where it stopped, written so that a crash never
leaves a half-written file.

    learn = cnn_learner(dls, resnet34, metrics=error_rate, cbs=SaveCheckpoint('checkpoint.pth'))
    learn.fine_tune(4)                      # killed during epoch 3...
    learn.fine_tune(4, resume=True)         # ...a new process continues after epoch 2, to the same weights

At the end of every epoch the SaveCheckpoint callback writes: the weights, the optimizer's state, where
training is (which fit call of the learner's life, which epoch, which step of the schedule), the
recorder's history, every random number generator (Python's, numpy's, torch's, CUDA's, and the private
ones of the loaders and the batch augmentation) of every process of a distributed run, float16's loss
scale, and what the checkpoint fits: architecture, vocabulary, image size, precision, data split and number
of processes.
Restoring all of it at the start of the next epoch makes the rest of the run draw the same batches, the
same augmentations and the same dropout masks as an uninterrupted run: on the CPU the final weights are
equal to the bit.

Writing is atomic: the file is written beside its destination, flushed to the disk (fsync), then renamed
over it (a rename within one folder is atomic on POSIX and Windows). A kill at any moment leaves either
the previous checkpoint or the new one, never a torn file.
"""
import os
import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pets.rng import transform_generators
from pets.distributed import all_gather, rank, world_size
from pets.precision import mixed_precision_callback

FORMAT_VERSION = 2  # 2: precision in the identity, the float16 loss scale


class CheckpointMismatchError(ValueError):
    """A checkpoint made for another model or data set; the message says what differs."""


def atomic_save(obj, path):
    """torch.save(obj, path) such that path holds the old content or the new, whatever happens when."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix='.tmp')
    try:
        with os.fdopen(descriptor, 'wb') as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if hasattr(os, 'O_DIRECTORY'):  # make the rename itself durable (POSIX: fsync the folder)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def private_generators(learn):
    """name -> torch.Generator for the private generators of the data pipeline (loaders, batch transforms
    given a seed); the others draw from torch's global generator, which rng_states saves anyway."""
    loaders = {'train_loader': learn.dls.train.generator, 'valid_loader': learn.dls.valid.generator}
    batch_tfms = transform_generators(learn.dls.train.batch_tfms + learn.dls.valid.batch_tfms)
    return ({name: g for name, g in loaders.items() if g is not None}
            | {f'batch_tfm{i}': generator for i, generator in batch_tfms.items()})


def rng_states(learn):
    """Every random generator's state, in types torch.load(weights_only=True) accepts."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        'python': random.getstate(),
        'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)), 'position': position,
                  'has_gauss': has_gauss, 'cached_gaussian': cached_gaussian},
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state() if torch.cuda.is_available() else None,  # this process's GPU
        'generators': {name: g.get_state() for name, g in private_generators(learn).items()},
    }


def set_rng_states(learn, states):
    version, internal, gauss_next = states['python']
    random.setstate((version, tuple(internal), gauss_next))
    numpy = states['numpy']
    np.random.set_state((numpy['kind'], numpy['keys'].numpy().astype(np.uint32), numpy['position'],
                         numpy['has_gauss'], numpy['cached_gaussian']))
    torch.set_rng_state(states['torch'])
    if states['cuda'] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(states['cuda'])
    for name, generator in private_generators(learn).items():
        generator.set_state(states['generators'][name])


def identity(learn):
    """What a checkpoint must match to be resumed: architecture, vocabulary, image size, precision, number
    of processes, data split (the files as the loaders list them)."""
    sizes = [tuple(t.size) for t in learn.dls.train.batch_tfms if getattr(t, 'size', None)]
    sizes += [(t.height, t.width) for t in learn.dls.train_ds.item_tfms if hasattr(t, 'height')]
    train, valid = [str(f) for f in learn.dls.train_ds.items], [str(f) for f in learn.dls.valid_ds.items]
    # Relative to the folder that holds them all: the data may move, or sit elsewhere on another machine.
    root = os.path.commonpath(train + valid) if len(train + valid) > 1 else ''
    return {
        'architecture': learn.arch if isinstance(learn.arch, str) else type(learn.model).__name__,
        'vocabulary': [str(label) for label in learn.dls.vocab],
        'image size': list(sizes[0]) if sizes else None,
        'precision': learn.precision,
        'processes': world_size(),  # each has its shard and its own random streams
        'training files': [os.path.relpath(f, root) if root else f for f in train],
        'validation files': [os.path.relpath(f, root) if root else f for f in valid],
    }


def describe_difference(name, saved, current):
    """One identity entry that differs, in words: what the checkpoint had and what there is now."""
    if isinstance(saved, list) and isinstance(current, list) and name.endswith('files'):
        added = sorted(set(current) - set(saved))
        removed = sorted(set(saved) - set(current))
        if added or removed:
            examples = ', '.join([f"+{f}" for f in added[:2]] + [f"-{f}" for f in removed[:2]])
            return f"{name}: {len(added)} added, {len(removed)} removed (e.g. {examples})"
        return f"{name}: the same files in another order"
    if name == 'vocabulary':
        extra, missing = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
        return (f"vocabulary: {len(saved)} classes in the checkpoint, {len(current)} now"
                f"{f'; new: {extra[:3]}' if extra else ''}{f'; gone: {missing[:3]}' if missing else ''}")
    return f"{name}: {saved} in the checkpoint, {current} now"


@dataclass(frozen=True)
class FitProgress:
    """Where training is: the fit call of the learner's life (0, 1, ...), the last epoch it completed, of
    how many, and the number of schedule steps taken in it."""
    fit_index: int
    epoch: int
    n_epoch: int
    step: int


class CancelFit(Exception):
    """Raised by a callback's before_fit to skip that fit call altogether (TrainingProgress does)."""


class TrainingProgress:
    """Callback, always the learner's first: counts the fit calls of the learner's life, knows where the
    running one is (a FitProgress after each epoch), and resumes a checkpoint.

    resume(learn, path) reads and checks a checkpoint; from then on, fit calls are counted from 0 again:
    those that had ended before the checkpoint was written are skipped (CancelFit), the one it was written
    in restores it and continues after its last epoch, at its schedule step.
    """

    def __init__(self):
        self.fit_count, self.fit_index, self.progress, self.pending = 0, None, None, None

    @property
    def resuming(self):
        return self.pending is not None

    def resume(self, learn, path):
        self.pending, self.fit_count = load_checkpoint(learn, path), 0
        return self.pending

    def before_fit(self, learn):
        self.fit_index, self.fit_count = self.fit_count, self.fit_count + 1
        saved = self.pending
        if saved is not None and saved['progress']['fit_index'] > self.fit_index:
            raise CancelFit  # this fit call had ended before the checkpoint was written
        if learn.n_epoch == 0:
            raise CancelFit  # nothing to train, so no table either (fine_tune(freeze_epochs=0))
        if saved is not None:
            self.pending = None
            if saved['progress']['fit_index'] == self.fit_index:
                restore_checkpoint(learn, saved)
                learn.start_epoch, learn.step = saved['progress']['epoch'] + 1, saved['progress']['step']

    def after_epoch(self, learn):
        self.progress = FitProgress(self.fit_index, learn.epoch, learn.n_epoch, learn.step)


def checkpoint_state(learn, extra=None, rng=None):
    """The dictionary a checkpoint holds (see the module docstring); rng: every process's random states
    (default: this process's)."""
    recorder = learn.recorder
    return {
        'format': FORMAT_VERSION,
        'identity': identity(learn),
        'progress': asdict(learn.training_progress.progress),
        'model': learn.model.state_dict(),
        'opt': learn.opt.state_dict(),
        'recorder': {'losses': recorder.losses, 'lrs': recorder.lrs, 'moms': recorder.moms,
                     'values': recorder.values},
        'rng': rng if rng is not None else [rng_states(learn)],
        'scaler': mixed_precision_callback(learn).scaler_state() if learn.precision != 'fp32' else None,
        'extra': extra or {},
    }


def save_checkpoint(learn, path, extra=None, rng=None):
    """Writes learn's checkpoint to path, atomically. extra: a dict of the caller's (e.g. the run's options);
    rng: as checkpoint_state."""
    atomic_save(checkpoint_state(learn, extra, rng), path)


def load_checkpoint(learn, path):
    """Reads a checkpoint and checks that it fits learn; returns its dictionary (nothing is restored yet).

    Raises FileNotFoundError if there is none, CheckpointMismatchError naming what differs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: there is nothing to resume (start without resume)")
    saved = torch.load(path, map_location='cpu', weights_only=True)
    if saved.get('format') != FORMAT_VERSION:
        raise CheckpointMismatchError(f"{path}: checkpoint format {saved.get('format')}, this version of pets "
                                      f"reads format {FORMAT_VERSION}")
    current = identity(learn)
    differences = [describe_difference(name, saved['identity'][name], value)
                   for name, value in current.items() if saved['identity'][name] != value]
    if differences:
        raise CheckpointMismatchError(f"{path} was made for another run: " + '; '.join(differences)
                                      + ". Resume with the same data and options, or start afresh elsewhere")
    return saved


def restore_checkpoint(learn, saved):
    """Puts the weights, optimizer, history and random states of a loaded checkpoint into learn."""
    learn.model.load_state_dict(saved['model'])
    learn.opt.load_state_dict(saved['opt'])
    recorder = learn.recorder
    recorder.losses, recorder.lrs = list(saved['recorder']['losses']), list(saved['recorder']['lrs'])
    recorder.moms, recorder.values = list(saved['recorder']['moms']), list(saved['recorder']['values'])
    set_rng_states(learn, saved['rng'][rank()])
    if saved['scaler'] is not None:  # the identity check made sure the learner runs float16 too
        mixed_precision_callback(learn).load_scaler_state(saved['scaler'], learn.dls.device)


class SaveCheckpoint:
    """Callback: a checkpoint at the end of every epoch (atomic; see the module docstring).

    Args:
        path: the file (default: 'models/checkpoint.pth' under the learner's data path, as fastai's
            SaveModelCallback).
        extra: a dict saved alongside, e.g. the options of the run, for whoever resumes.
    """

    def __init__(self, path=None, extra=None):
        self.path, self.extra = path, extra

    def resolve(self, learn):
        return Path(self.path) if self.path is not None else learn.dls.path / 'models' / 'checkpoint.pth'

    def after_epoch(self, learn):
        rng = all_gather(rng_states(learn))  # every process takes part; rank 0 writes
        if learn.is_main_process:
            save_checkpoint(learn, self.resolve(learn), self.extra, rng)
