"""Timing and memory measurement shared by the benchmark scripts."""
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile


def median_seconds(fn, repeats=50, warmup=5):
    """The median wall-clock time of fn() over `repeats` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_cpu_bytes(fn):
    """The most memory fn() holds at once on the CPU, above what existed before it ran.

    torch's profiler records every CPU allocation and free (the '[memory]' events, with signed sizes);
    their running sum in time order is the memory held, and its maximum is the peak.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]'),
                    key=lambda e: e.start_ns())
    held = peak = 0
    for event in events:
        held += event.nbytes()
        peak = max(peak, held)
    return peak


def print_table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in [header, ['-' * w for w in widths], *rows]:
        print('  '.join(str(cell).rjust(w) for cell, w in zip(row, widths)))
