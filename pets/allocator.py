"""Keep the memory of freed tensors for the next batch, instead of handing it back to the system each time.

    from pets.allocator import keep_freed_memory
    keep_freed_memory()     # once, before training on the CPU; pets.run does it

A CPU tensor's memory comes from the C library's malloc. glibc serves a request above its mmap threshold
(128 KiB at first, rising with what is freed, at most 32 MiB) with a fresh mapping from the kernel and
unmaps it on free. A batch of 32 images at 224 px has activations of 25-100 MB, so every forward pass maps
them anew, and the kernel zero-fills each page on first touch. On this project's 2-core machine,
benchmarks/bench_epoch.py (two head epochs and two of phase 2, 41 s) spent 11 s in the kernel (`sys`)
that way, and 1.4 s with the memory kept. Kept, a head epoch takes 3.0 s instead of 4.7, a phase-2 epoch
6.1 s instead of 6.9 (9.4 s instead of 12.1 when every layer group trains).

keep_freed_memory raises the threshold to 1 GiB (mallopt's M_MMAP_THRESHOLD; its argument is a C int) and
stops trimming the heap (M_TRIM_THRESHOLD), so freed activations stay in the process and the next batch
reuses them, as PyTorch's GPU caching allocator does on a GPU. The process keeps its peak until it exits,
and the peak grows a little, by the gaps between reused blocks (that benchmark: 1.68 GB -> 1.83 GB).
Setting both is needed: a trim threshold alone turns off glibc's rising threshold and maps every tensor
above 128 KiB (slower still).
The same as the environment variables MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_, set in code.
"""
import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
KEEP_BELOW = 2**30  # bytes: allocations this large or smaller come from the heap and stay there when freed
NEVER_TRIM = 2**31 - 1  # mallopt's largest value: free memory at the heap's top is never given back


def keep_freed_memory():
    """Makes glibc's malloc keep freed memory for reuse (see the module docstring). Returns True when it
    did, False where there is no glibc (macOS, Windows, musl): those allocators need nothing of this."""
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c'))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # no C library found, or one without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
