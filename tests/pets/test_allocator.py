"""pets.allocator: after keep_freed_memory, large tensors freed and allocated again reuse memory the
process already has, instead of new pages from the kernel (counted as minor page faults)."""
import subprocess
import sys
import textwrap

import pytest

from pets import allocator

# In a child process, so that the setting does not carry into the other tests: the pages the kernel hands
# the process while a few 25-100 MB tensors (a batch's activations) are computed and freed, step after
# step, with glibc's defaults and then after keep_freed_memory.
CHILD = textwrap.dedent("""
    import resource, torch
    from pets.allocator import keep_freed_memory

    x = torch.ones(32, 16, 112, 112)
    def new_pages():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = x * 2
        b = torch.cat([a, a], 1)
        (b.relu() + 1).sum()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    returned = [new_pages() for _ in range(6)][2:]
    kept = keep_freed_memory()
    reused = [new_pages() for _ in range(8)][4:]  # the first steps after the change map what they lack
    print(sum(returned), kept, sum(reused))
""")


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc (Linux)')
def test_freed_memory_is_reused_instead_of_mapped_anew():
    done = subprocess.run([sys.executable, '-c', CHILD], capture_output=True, text=True, check=True)
    returned, kept, reused = done.stdout.split()
    assert int(returned) > 4 * 25 * 2**20 // 4096  # glibc's default: each step's tensors are new pages
    assert kept == 'True'
    assert int(reused) < int(returned) / 4


def test_it_changes_nothing_where_there_is_no_glibc(monkeypatch):
    monkeypatch.setattr(allocator.sys, 'platform', 'darwin')
    assert allocator.keep_freed_memory() is False
