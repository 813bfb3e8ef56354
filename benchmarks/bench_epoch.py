"""Where an epoch of the default pets.run goes, next to the machine's limit.

    python benchmarks/bench_epoch.py [--epochs 2] [-- pets.run options...]

Builds the learner `python -m pets.run` builds (with the given options), then trains --epochs head epochs
(the body frozen) and --epochs of the recipe's second phase (the body unfrozen, from the recipe's
first_group on) at the run's rates, timing each part by the Learner's events:

    data          waiting for the loader's next batch: decoding and presizing (in the workers, or here
                  with --workers 0), collating, moving to the device
    augmentation  the batch transform (aug_transforms), timed apart from the loader's other work
    forward       the forward pass and the loss (under the run's autocast)
    backward      loss.backward()
    step          the optimizer's step
    validation    the validation pass, its decoding included
    other         the rest: zeroing gradients, the progress bar, the table, the checkpoint

The last epoch of each phase is reported (the first ones warm up caches and start the workers). Beside it,
the limit: the floating-point operations an epoch needs over the machine's peak, measured on a 4096 x 4096
matrix product in the same precision. The forward pass's FLOPs are counted by torch's FlopCounterMode on a
real batch; a backward pass through the layers that train costs twice its forward (a gradient for the
inputs and one for the weights; FlopCounterMode itself over-counts grouped convolutions' backward by
their group count). The network's depthwise convolutions cannot run at matmul speed, so the limit is a
floor no real epoch reaches; how far above it an epoch sits is what there is to win.
"""
import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import print_table  # noqa: E402

from pets.allocator import keep_freed_memory  # noqa: E402
from pets.precision import DTYPES  # noqa: E402
from pets.recipes import LR, RECIPES  # noqa: E402
from pets.run import build_learner, parse_args, seed_everything  # noqa: E402

PARTS = ['data', 'augmentation', 'forward', 'backward', 'step', 'validation', 'other']


class TimedTransform:
    """A batch transform that adds the seconds it takes to `seconds['augmentation']`."""

    def __init__(self, tfm, seconds):
        self.tfm, self.seconds = tfm, seconds

    def __call__(self, x, train=True):
        start = time.perf_counter()
        out = self.tfm(x, train=train)
        self.seconds['augmentation'] += time.perf_counter() - start
        return out

    def __getattr__(self, name):  # generator, size, ...: what checkpoints and the learner ask of the transform
        return getattr(self.tfm, name)


class EpochTimer:
    """Callback: the seconds of each part of every epoch (PARTS), from the times its events fire (on a GPU,
    after waiting for its queued work, so that each part's kernels count in that part)."""

    def __init__(self, seconds, device):
        self.seconds, self.epochs = seconds, []
        self.synchronize = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)

    def _now(self):
        self.synchronize()
        return time.perf_counter()

    def before_epoch(self, learn):
        self.seconds.clear()
        self.start = self.mark = self._now()

    def before_batch(self, learn):  # since the last batch ended: the loader's work, augmentation included
        self.seconds['data'] += self._now() - self.mark
        self.mark = self._now()

    def _lap(self, part):
        now = self._now()
        self.seconds[part] += now - self.mark
        self.mark = now

    def before_backward(self, learn):
        self._lap('forward')

    def after_backward(self, learn):
        self._lap('backward')

    def before_step(self, learn):
        self._lap('other')

    def after_step(self, learn):
        self._lap('step')

    def after_batch(self, learn):
        self._lap('other')

    def before_validate(self, learn):
        self._lap('data')  # the loader's end of epoch (its last partial batch, workers)

    def after_validate(self, learn):
        self._lap('validation')

    def after_epoch(self, learn):
        total = self._now() - self.start
        parts = dict(self.seconds)
        parts['data'] -= parts.get('augmentation', 0.0)  # the loader ran the augmentation too
        parts['other'] = total - sum(v for k, v in parts.items() if k != 'other')
        self.epochs.append((total, parts))


def matmul_peak(dtype, device, n=4096, repeats=5):
    """FLOP/s of an n x n matrix product in dtype on device (the best of `repeats`)."""
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n ** 3 / best


def timed(fn, device):
    synchronize = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def flops_per_image(learn, first_trained_group):
    """(training FLOPs, validation FLOPs) per image: the forward pass counted on a real batch; training adds
    a backward pass of twice the forward FLOPs of the layer groups that train, first_trained_group on (None:
    the body is frozen and only the head trains, a few MFLOPs, left out). The optimizer's step, a few FLOPs
    per weight, is left out too."""
    x, _ = learn.dls.valid.one_batch()
    x = learn.normalize(x)
    learn.model.eval()

    def forward_flops(module):
        with FlopCounterMode(display=False) as counter, torch.no_grad(), learn.autocast():
            module(x)
        return counter.get_total_flops() / len(x)

    forward = forward_flops(learn.model)
    if first_trained_group is None:
        return forward, forward
    frozen = forward_flops(torch.nn.Sequential(*learn.groups[:first_trained_group])) if first_trained_group else 0
    return forward + 2 * (forward - frozen), forward


def phase_rows(name, timer, flops, peak):
    total, parts = timer.epochs[-1]
    limit = flops / peak
    rows = [[f"{name}: {part}", f"{parts.get(part, 0.0):.2f}", f"{100 * parts.get(part, 0.0) / total:.0f}%"]
            for part in PARTS]
    rows.append([f"{name}: epoch", f"{total:.2f}", '100%'])
    rows.append([f"{name}: limit ({flops / 1e12:.2f} TFLOP at peak)", f"{limit:.2f}", f"{100 * limit / total:.0f}%"])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--epochs', type=int, default=2, help='epochs per phase; the last is reported')
    parser.add_argument('--keep-freed-memory', action=argparse.BooleanOptionalAction, default=True,
                        help="as pets.run (pets.allocator); --no-keep-freed-memory measures glibc's defaults")
    parser.add_argument('options', nargs=argparse.REMAINDER, help='pets.run options (after --)')
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error(f"--epochs {args.epochs}: give 1 or more")
    options = [o for o in args.options if o != '--']
    with tempfile.TemporaryDirectory() as out:
        run_args = parse_args([*options, '--out', out])
        seed_everything(run_args.seed, run_args.deterministic)
        kept = keep_freed_memory() if args.keep_freed_memory else False
        seconds = defaultdict(float)
        learn, _, _ = build_learner(run_args, Path(out), ())
        learn.recorder.progress = False
        learn.dls.train.batch_tfms = [TimedTransform(t, seconds) for t in learn.dls.train.batch_tfms]
        timer = EpochTimer(seconds, learn.dls.device)
        learn.add_cb(timer)
        dtype = DTYPES.get(learn.precision, torch.float32)
        print(f"pets.run {' '.join(options) or '(defaults)'}: precision {learn.precision}, "
              f"{torch.get_num_threads()} threads, workers {learn.dls.train.num_workers}, "
              f"freed memory {'kept' if kept else 'returned to the system'}")
        device = learn.dls.device
        peak = matmul_peak(dtype, device)
        line = f"peak: {peak / 1e9:.0f} GFLOP/s ({dtype}, 4096 x 4096 matmul on {device})"
        if dtype != torch.float32:
            line += f"; float32: {matmul_peak(torch.float32, device) / 1e9:.0f} GFLOP/s"
        print(line)

        rows = []
        recipe, lr = RECIPES[run_args.recipe], run_args.lr if run_args.lr != 'find' else LR
        phases = [('head', None, lambda: learn.freeze(train_bn=recipe.train_bn), slice(lr)),
                  ('unfrozen', recipe.first_group,
                   lambda: learn.unfreeze(train_bn=recipe.train_bn, first_group=recipe.first_group),
                   recipe.phase_two_lr(lr, run_args.lr_mult))]
        for name, first_trained_group, setup, rate in phases:
            setup()
            train_flops, valid_flops = flops_per_image(learn, first_trained_group)
            learn.fit_one_cycle(args.epochs, rate)
            images = len(learn.dls.train) * learn.dls.train.bs, len(learn.dls.valid_ds)
            rows += phase_rows(name, timer, train_flops * images[0] + valid_flops * images[1], peak)
            print(f"{name}: {train_flops / 1e9:.2f} GFLOP per training image, {valid_flops / 1e9:.2f} per "
                  f"validation image")
        print_table(['part', 'seconds', 'share'], rows)


if __name__ == '__main__':
    main()
