"""Test set-up shared by every test: hypothesis profiles, Triton's interpreter where there is no GPU, and the
pretend GPU (the `fakegpu` fixture, tests/fakegpu.py) that lets a CPU run catch device mistakes.

PETS_HYPOTHESIS_PROFILE picks how hard the property tests search:
  ci (default)  a few dozen examples per property; the whole suite stays fast.
  thorough      thousands of examples per property, for a deliberate hunt (minutes to hours).

Without a CUDA GPU, the hand-written Triton kernels (minigrad.warp_triton) run on CPU tensors under
Triton's interpreter. @triton.jit reads TRITON_INTERPRET when a kernel is defined, so it is set here, before
any test module imports them; it changes nothing else (torch.compile on the CPU writes C++, not Triton).
On a machine with a GPU the variable stays unset and the same tests run the kernels compiled, on the GPU.
"""
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

settings.register_profile('ci', max_examples=30, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile('thorough', max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get('PETS_HYPOTHESIS_PROFILE', 'ci'))


def _load_fakegpu():
    """tests/fakegpu.py, registered now, before any test runs a backward pass: autograd's engine sizes its
    per-device queues at its first backward, and a device registered after that would find none."""
    spec = importlib.util.spec_from_file_location('fakegpu', Path(__file__).with_name('fakegpu.py'))
    module = sys.modules['fakegpu'] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FAKEGPU = _load_fakegpu()


@pytest.fixture
def fakegpu():
    """tests/fakegpu.py, the pretend GPU: fakegpu.DEVICE holds CPU data but is not the CPU,
    fakegpu.counting_waits() collects what a GPU would wait for; pinned host memory works inside."""
    with FAKEGPU.pinned_memory():
        yield FAKEGPU
