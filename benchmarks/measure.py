"""Timing and memory measurement shared by the benchmark scripts."""
import statistics
import time

from torch.profiler import ProfilerActivity, profile


def median_seconds(fns, rounds=20, calls_per_round=50, warmup=5):
    """The median time of one call of each function in fns.

    The functions take turns in rounds, each round timing `calls_per_round` back-to-back calls of each
    (so that a function runs warm, as it would in a training loop), and a slow spell of the machine (a
    shared virtual machine has them) falls on all of them alike. The median is over the rounds.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    per_call = [[] for _ in fns]
    for _ in range(rounds):
        for fn, times in zip(fns, per_call):
            start = time.perf_counter()
            for _ in range(calls_per_round):
                fn()
            times.append((time.perf_counter() - start) / calls_per_round)
    return [statistics.median(times) for times in per_call]


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
