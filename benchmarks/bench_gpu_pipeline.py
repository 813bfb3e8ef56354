"""Does the input pipeline keep a GPU busy? One short run of the default pets.run, nothing synchronised.

    python benchmarks/bench_gpu_pipeline.py [--epochs 2] [-- pets.run options...]

Builds the learner `python -m pets.run` builds (with the given options, on CUDA) and trains --epochs head
epochs at the recipe's rate. For every training step it records, without making the host wait:
    data wait   host seconds from the end of a step to the start of the next: the loader's work the host
                does or waits for (the next batch from the workers, its copy queued, the augmentation queued)
    compute     the GPU's seconds for the step itself (CUDA events around it, read at the epoch's end)
and per epoch the GPU's busy share: the steps' GPU seconds over the epoch's wall-clock seconds. A share
near 100% says the pipeline keeps up; a data wait near the compute time says the GPU idles for data.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import print_table  # noqa: E402

from pets.recipes import RECIPES  # noqa: E402
from pets.run import build_learner, parse_args, seed_everything  # noqa: E402


class StepTimes:
    """Callback: per training step the host's wait for data and the GPU's time, per epoch the busy share."""

    def __init__(self):
        self.epochs = []

    def before_train(self, learn):
        torch.cuda.synchronize()
        self.start = self.step_end = time.perf_counter()
        self.waits, self.events = [], []

    def before_batch(self, learn):
        self.waits.append(time.perf_counter() - self.step_end)
        self.events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
        self.events[-1][0].record()

    def after_batch(self, learn):
        self.events[-1][1].record()
        self.step_end = time.perf_counter()

    def after_train(self, learn):
        torch.cuda.synchronize()
        wall = time.perf_counter() - self.start
        compute = [start.elapsed_time(end) / 1000 for start, end in self.events]
        self.epochs.append((wall, self.waits, compute))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--epochs', type=int, default=2, help='head epochs; the first warms up')
    parser.add_argument('options', nargs=argparse.REMAINDER, help='pets.run options (after --)')
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu_pipeline.py measures a CUDA GPU: none is visible to torch here")
    options = [o for o in args.options if o != '--']
    with tempfile.TemporaryDirectory() as out:
        run_args = parse_args(['--device', 'cuda', *options, '--out', out])
        seed_everything(run_args.seed, run_args.deterministic)
        learn, _, _ = build_learner(run_args, Path(out), ())
        learn.recorder.progress = False
        timer = StepTimes()
        learn.add_cb(timer)
        recipe = RECIPES[run_args.recipe]
        learn.freeze(train_bn=recipe.train_bn)
        learn.fit_one_cycle(args.epochs, slice(run_args.lr if run_args.lr != 'find' else recipe.lr))
    print(f"pets.run {' '.join(options) or '(defaults)'} on {torch.cuda.get_device_name()}: precision "
          f"{learn.precision}, batch size {learn.dls.train.bs}, workers {learn.dls.train.num_workers}")
    rows = []
    for epoch, (wall, waits, compute) in enumerate(timer.epochs):
        rows.append([epoch, f"{1000 * statistics.median(waits):.1f}", f"{1000 * statistics.median(compute):.1f}",
                     f"{100 * sum(compute) / wall:.0f}%", f"{wall:.2f}"])
    print_table(['epoch', 'data wait per step (ms, median)', 'GPU compute per step (ms, median)',
                 'GPU busy share', 'epoch seconds'], rows)


if __name__ == '__main__':
    main()
