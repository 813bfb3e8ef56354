"""minigrad.functional.cross_entropy against torch.nn.functional.cross_entropy: forward + backward, CPU.

    python benchmarks/bench_cross_entropy.py

Prints, for each (N, C), the median time of one forward+backward and the peak memory it allocates, for
both, and ours / torch. Target: time ratio <= 1.3 for N >= 1024.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import median_seconds, peak_cpu_bytes, print_table  # noqa: E402

from minigrad.functional import cross_entropy  # noqa: E402

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
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU\n")
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
