"""minigrad.sampling against torch.nn.functional.grid_sample: values and gradients, every mode and padding."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from minigrad import sampling as S


TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=1e-4)}


@st.composite
def sampling_problems(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    ho, wo = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    spread = draw(st.sampled_from([0.9, 1.5, 4.0]))  # 4: far outside, to exercise repeated reflections
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    grid = (torch.rand(n, ho, wo, 2, generator=gen, dtype=torch.float64) * 2 - 1) * spread
    return x, grid


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('mode', ['bilinear', 'nearest'])
@pytest.mark.parametrize('padding_mode', ['zeros', 'border', 'reflection'])
@pytest.mark.parametrize('align_corners', [True, False])
@given(problem=sampling_problems())
def test_grid_sample_matches_torch_values_and_gradients(dtype, mode, padding_mode, align_corners, problem):
    x, grid = (t.to(dtype) for t in problem)
    results = []
    for sample in (S.grid_sample, F.grid_sample):
        xi, gi = x.clone().requires_grad_(), grid.clone().requires_grad_(mode == 'bilinear')
        out = sample(xi, gi, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
        inputs = [xi, gi] if mode == 'bilinear' else [xi]
        results.append((out.detach(), *torch.autograd.grad(out, inputs, upstream)))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, **TOLERANCE[dtype])


@pytest.mark.parametrize('padding_mode', ['zeros', 'border', 'reflection'])
def test_grid_sample_gradcheck(padding_mode):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    grid = ((torch.rand(1, 4, 3, 2, generator=gen, dtype=torch.float64) * 2 - 1) * 1.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, g: S.grid_sample(a, g, 'bilinear', padding_mode, False), (x, grid))


@pytest.mark.parametrize('mode', ['bilinear', 'nearest'])
def test_zeros_padding_reads_zero_far_outside(mode):
    x = torch.rand(1, 2, 5, 5, dtype=torch.float64)
    far = torch.tensor([[[[1e12, 0.0], [0.0, -1e12], [3e9, 3e9], [0.5, 0.5]]]], dtype=torch.float64)
    got = S.grid_sample(x, far, mode=mode, padding_mode='zeros')
    torch.testing.assert_close(got, F.grid_sample(x, far, mode=mode, padding_mode='zeros', align_corners=False))
    assert (got[..., :3] == 0).all()


def test_bad_arguments_and_reflection():
    with pytest.raises(ValueError, match="mode='bicubic'"):
        S.grid_sample(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 2), mode='bicubic')
    with pytest.raises(ValueError, match="padding_mode='wrap'"):
        S.grid_sample(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 2), padding_mode='wrap')
    assert math.isclose(float(S.reflect(torch.tensor(7.5), 0, 3)), 1.5)  # 7.5 -> -1.5 (from 3) -> 1.5 (from 0)
