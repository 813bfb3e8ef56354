"""minigrad.functional.cross_entropy against torch.nn.functional.cross_entropy: forward + backward, CPU.

    python benchmarks/bench_cross_entropy.py [--no-keep-freed-memory]

Prints, for each (N, C), the median time of one forward+backward and the peak memory it allocates, for
both, and ours / torch. Target: time ratio <= 1.3 for N >= 1024.

Freed memory is kept for reuse by default, as pets.run trains (pets/allocator.py). With glibc's defaults
a (4096, 1000) buffer is 16 MB, half its trim threshold once its first free raises that: whether each call
maps its buffers anew (and the kernel zero-fills every page) then turns on where small tensors happen to lie
on the heap, so the same code times 2x apart from one process to the next. Kept, both run from reused
memory and the table compares the arithmetic.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import median_seconds, peak_cpu_bytes, print_table  # noqa: E402

from minigrad.functional import cross_entropy  # noqa: E402
from pets.allocator import keep_freed_memory  # noqa: E402

SHAPES = [(64, 37), (1024, 37), (4096, 1000)]


def forward_backward(loss_fn, logits, target):
    def run():
        logits.grad = None
        loss_fn(logits, target).backward()
    return run


def peak_forward_backward_bytes(loss_fn, logits, target):
    logits.grad = None  # free the last gradient first: the peak counts what one call holds, the new gradient included
    return peak_cpu_bytes(lambda: loss_fn(logits, target).backward())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--keep-freed-memory', action=argparse.BooleanOptionalAction, default=True,
                        help="as pets.run (pets.allocator); --no-keep-freed-memory measures glibc's defaults")
    kept = keep_freed_memory() if parser.parse_args().keep_freed_memory else False
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU, "
          f"freed memory {'kept' if kept else 'returned to the system'}\n")
    rows = []
    for n, c in SHAPES:
        logits = torch.randn(n, c, requires_grad=True)
        target = torch.randint(0, c, (n,))
        calls_per_round = 100 if n * c < 1e5 else 3
        runs = [forward_backward(loss_fn, logits, target) for loss_fn in (F.cross_entropy, cross_entropy)]
        t_torch, t_ours = median_seconds(runs, rounds=20, calls_per_round=calls_per_round)
        m_torch, m_ours = (peak_forward_backward_bytes(loss_fn, logits, target)
                           for loss_fn in (F.cross_entropy, cross_entropy))
        rows.append([f"({n}, {c})", f"{t_torch * 1e6:.0f}", f"{t_ours * 1e6:.0f}", f"{t_ours / t_torch:.2f}",
                     f"{m_torch / 2**20:.2f}", f"{m_ours / 2**20:.2f}", f"{m_ours / m_torch:.2f}"])
    print_table(['(N, C)', 'torch us', 'minigrad us', 'time ratio', 'torch MiB', 'minigrad MiB', 'memory ratio'],
                rows)


if __name__ == '__main__':
    main()
