"""minigrad.warp_triton, the hand-written Triton kernels, against minigrad.warp and torch's own ops.

Without a GPU the kernels run on CPU tensors under Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before they are defined); with one, compiled on the GPU. The interpreter runs every
program as NumPy calls, so the images here are small.
"""
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, strategies as st

pytest.importorskip('triton')
ON_GPU = torch.cuda.is_available() and os.environ.get('TRITON_INTERPRET') != '1'
if not ON_GPU and os.environ.get('TRITON_INTERPRET') != '1':
    pytest.skip('needs a CUDA GPU, or TRITON_INTERPRET=1 set before the kernels are defined',
                allow_module_level=True)

from minigrad import homographies as H  # noqa: E402
from minigrad import warp as W  # noqa: E402
from minigrad import warp_triton as T  # noqa: E402

DEVICE = 'cuda' if ON_GPU else 'cpu'
# The kernel computes in float32; warp.py computes in the input's precision (float16 weights for float16).
TOLERANCE = {torch.uint8: 2e-3, torch.float32: 1e-5, torch.float64: 1e-5, torch.float16: 4e-3}


def random_images(n, c, h, w, dtype, generator):
    if dtype == torch.uint8:
        return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=generator)
    return torch.rand(n, c, h, w, generator=generator, dtype=torch.float64).to(dtype)


def uniform(generator, n, low, high):
    return torch.rand(n, generator=generator, dtype=torch.float64) * (high - low) + low


@st.composite
def matrices_for(draw, n, generator):
    """Output->input maps of one kind for n images, times a constant (the same homography)."""
    kind = draw(st.sampled_from(['identity', 'affine', 'perspective', 'minify', 'zoom out']))
    m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    if kind in ('affine', 'perspective'):
        m = H.rotation_matrices(uniform(generator, n, -45, 45)).double()
        m[:, :2, :2] *= uniform(generator, n, 0.6, 1.4).view(n, 1, 1)
        m[:, :2, 2] = torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5
    if kind == 'perspective':
        m = m @ H.perspective_matrices(uniform(generator, n, -0.4, 0.4), uniform(generator, n, -0.4, 0.4)).double()
    if kind == 'zoom out':  # the output frame reaches past the input's edges: padding is read
        m[:, 0, 0], m[:, 1, 1] = uniform(generator, n, 1.3, 3.0), uniform(generator, n, 1.3, 3.0)
    constant = draw(st.sampled_from([1.0, 2.5, -0.5]))
    return kind, (m * constant).float()


def away_from_the_horizon(matrices):
    """Whether each map's w keeps one sign, well away from 0, over the output and a margin around it (the
    footprint of a tiny output's edge pixels). Where w crosses 0 a map reads points at infinity: the
    tensor ops and the kernel both return rounding noise there, not an image."""
    corners = torch.tensor([[-3.0, -3.0, 1.0], [3.0, -3.0, 1.0], [-3.0, 3.0, 1.0], [3.0, 3.0, 1.0]])
    w = corners @ matrices[:, 2].T.float()  # (4, N): w is affine in (x, y), so its extremes are at corners
    return bool(((w.amin(0) > 0) | (w.amax(0) < 0)).all() and (w.abs().amin(0) > 0.25 * w.abs().amax(0)).all())


@st.composite
def warp_problems(draw):
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    kind, matrices = draw(matrices_for(n, generator))
    assume(away_from_the_horizon(matrices))
    if kind == 'minify':  # many input pixels per output pixel: several taps per axis
        h, w = draw(st.integers(10, 20)), draw(st.integers(10, 20))
        size = (draw(st.integers(2, 4)), draw(st.integers(2, 4)))
    else:
        h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        size = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    dtype = draw(st.sampled_from([torch.uint8, torch.float32, torch.float64, torch.float16]))
    options = dict(mode=draw(st.sampled_from(['bilinear', 'nearest'])),
                   padding_mode=draw(st.sampled_from(['zeros', 'border', 'reflection'])),
                   align_corners=draw(st.booleans()))
    return random_images(n, c, h, w, dtype, generator), matrices, size, options


@given(problem=warp_problems())
def test_warp_equals_the_tensor_op_warp(problem):
    x, matrices, size, options = problem
    expected = W.warp(x, matrices, size, **options)
    got = T.warp(x.to(DEVICE), matrices.to(DEVICE), size, **options)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    torch.testing.assert_close(got.cpu().double(), expected.double(), atol=TOLERANCE[x.dtype], rtol=0)


def test_identity_is_an_exact_copy_and_a_scaled_identity_too():
    x = random_images(2, 3, 7, 11, torch.uint8, torch.Generator().manual_seed(0)).to(DEVICE)
    for constant in (1.0, 2.5, -3.0):
        assert torch.equal(T.warp(x, constant * torch.eye(3, device=DEVICE).repeat(2, 1, 1), (7, 11)), x.float())


def test_a_scaled_homography_is_the_same_map():
    generator = torch.Generator().manual_seed(1)
    x = random_images(3, 3, 12, 12, torch.float32, generator)
    matrices = H.rotation_matrices(torch.tensor([0.0, 20.0, -10.0])).float()
    matrices[0] = torch.diag(torch.tensor([0.5, 0.7, 1.0]))  # affine: the eager path skips its divide
    plain = T.warp(x.to(DEVICE), matrices.to(DEVICE), 8).cpu()
    torch.testing.assert_close(T.warp(x.to(DEVICE), 2.5 * matrices.to(DEVICE), 8).cpu(), plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(plain, W.warp(x, matrices, 8), atol=1e-5, rtol=0)


def test_any_strides_are_read_in_place():
    x = random_images(2, 3, 14, 15, torch.uint8, torch.Generator().manual_seed(2))
    matrices = H.rotation_matrices(torch.tensor([15.0, -30.0])).float()
    expected = W.warp(x, matrices, 6)
    channels_last = x.to(memory_format=torch.channels_last)
    assert not channels_last.is_contiguous()
    torch.testing.assert_close(T.warp(channels_last.to(DEVICE), matrices.to(DEVICE), 6).cpu(), expected,
                               atol=2e-3, rtol=0)
    every_other_column = random_images(2, 3, 14, 30, torch.uint8, torch.Generator().manual_seed(2))[..., ::2]
    torch.testing.assert_close(T.warp(every_other_column.to(DEVICE), matrices.to(DEVICE), 6).cpu(),
                               W.warp(every_other_column.contiguous(), matrices, 6), atol=2e-3, rtol=0)


@pytest.fixture
def launches(monkeypatch):
    """The grid of every launch of the warp kernel, in order."""
    grids = []
    kernel = T._warp_kernel

    class Counting:
        def __getitem__(self, grid):
            grids.append(grid)
            return kernel[grid]

    monkeypatch.setattr(T, '_warp_kernel', Counting())
    return grids


def test_one_launch_for_a_batch_whose_images_take_different_taps(launches):
    x = random_images(4, 3, 32, 32, torch.uint8, torch.Generator().manual_seed(3))
    matrices = torch.stack([torch.eye(3), torch.diag(torch.tensor([0.25, 0.25, 1.0])),
                            torch.diag(torch.tensor([1.0, 0.25, 1.0])), torch.eye(3)])
    _, taps = W.sampling_plan(x, matrices, (4, 4), 'bilinear', 'reflection', True, True)
    assert len(taps.unique(dim=0)) == 3  # (4, 4), (1, 1) and (4, 1) taps
    got = T.warp(x.to(DEVICE), matrices.to(DEVICE), 4)
    assert launches == [(1, 4)]  # one tile of 16 pixels per image, 4 images, one launch
    torch.testing.assert_close(got.cpu(), W.warp(x, matrices, 4), atol=2e-3, rtol=0)


@st.composite
def render_problems(draw):
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    n, c = draw(st.integers(1, 3)), draw(st.sampled_from([1, 3]))
    x = random_images(n, c, draw(st.integers(2, 12)), draw(st.integers(2, 12)),
                      draw(st.sampled_from([torch.uint8, torch.float32])), generator)
    _, matrices = draw(matrices_for(n, generator))
    assume(away_from_the_horizon(matrices))
    lighting = draw(st.booleans())
    shift = (torch.randn(n, generator=generator) * 0.5) if lighting else None
    factor = torch.exp(torch.randn(n, generator=generator) * 0.3) if lighting else None
    normalise = draw(st.booleans())
    mean = torch.rand(c, generator=generator) if normalise else None
    std = torch.rand(c, generator=generator) + 0.2 if normalise else None
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    return x, matrices, (draw(st.integers(1, 8)), draw(st.integers(1, 8))), shift, factor, mean, std, dtype


@given(problem=render_problems())
def test_render_is_warp_then_lighting_then_normalisation(problem):
    x, matrices, size, shift, factor, mean, std, dtype = problem
    # The formulas, from torch's own ops: v = warp / 255; sigmoid((logit(v) + shift) factor); clamp; normalise.
    v = W.warp(x, matrices, size).float() / (255 if x.dtype == torch.uint8 else 1)
    if shift is not None:
        v = torch.sigmoid((torch.logit(v.clamp(1e-6, 1 - 1e-6)) + shift.view(-1, 1, 1, 1)) * factor.view(-1, 1, 1, 1))
    v = v.clamp(0, 1)
    if mean is not None:
        v = (v - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    got = T.render(x.to(DEVICE), matrices.to(DEVICE), size, shift=shift, factor=factor, mean=mean, std=std,
                   dtype=dtype).cpu()
    assert got.dtype == dtype and got.shape == v.shape
    tolerance = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(got.float(), v, atol=tolerance * (1 + v.abs().max().item()), rtol=0)
    # Channels last, as a channels-last model reads it: the same values, laid out (N, H, W, C) in memory.
    last = T.render(x.to(DEVICE), matrices.to(DEVICE), size, shift=shift, factor=factor, mean=mean, std=std,
                    dtype=dtype, memory_format=torch.channels_last).cpu()
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(last, got)


def test_empty_batches_and_bad_arguments():
    x = torch.zeros(0, 3, 8, 8, dtype=torch.uint8, device=DEVICE)
    assert T.warp(x, torch.zeros(0, 3, 3, device=DEVICE), 4).shape == (0, 3, 4, 4)
    assert T.render(x, torch.zeros(0, 3, 3, device=DEVICE), 4).shape == (0, 3, 4, 4)
    one = torch.zeros(1, 3, 8, 8, device=DEVICE)
    with pytest.raises(ValueError, match="mode='bicubic'"):
        T.warp(one, torch.eye(3, device=DEVICE)[None], 4, mode='bicubic')
    with pytest.raises(ValueError, match="padding_mode='wrap'"):
        T.warp(one, torch.eye(3, device=DEVICE)[None], 4, padding_mode='wrap')
    with pytest.raises(ValueError, match=r"matrices must be \(N, 3, 3\) with N = 1"):
        T.warp(one, torch.eye(3, device=DEVICE).repeat(2, 1, 1), 4)
    with pytest.raises(ValueError, match='dtype=torch.float64'):
        T.render(one, torch.eye(3, device=DEVICE)[None], 4, dtype=torch.float64)
    with pytest.raises(ValueError, match='shift and factor go together'):
        T.render(one, torch.eye(3, device=DEVICE)[None], 4, shift=torch.zeros(1))
    with pytest.raises(ValueError, match='expected 3 values'):
        T.render(one, torch.eye(3, device=DEVICE)[None], 4, mean=[0.5], std=[0.5])
    with pytest.raises(ValueError, match='memory_format=torch.preserve_format'):
        T.render(one, torch.eye(3, device=DEVICE)[None], 4, memory_format=torch.preserve_format)


def grid_sample_reference(x, theta, size, mode, align_corners):
    """torch's own affine warp with reflection padding: affine_grid, then grid_sample."""
    grid = F.affine_grid(theta, (len(x), x.shape[1], *size), align_corners=align_corners)
    return F.grid_sample(x, grid, mode=mode, padding_mode='reflection', align_corners=align_corners)


def as_homographies(theta):
    return torch.cat([theta, torch.tensor([0.0, 0.0, 1.0]).expand(len(theta), 1, 3)], dim=1)


@pytest.mark.parametrize('size, tiles', [((23, 19), (7, 2)), ((16, 32), (8, 2))])
def test_every_tile_of_an_image_is_its_own(monkeypatch, launches, size, tiles):
    """Outputs of 437 and 512 pixels in tiles of 64 (the interpreter, lowered here) or 256 (a GPU): 437 takes
    seven or two programs per image, the last one masked; 512 fills its tiles exactly, so a tile that
    started anywhere but at its own offset would leave pixels unwritten. Each must write its own pixels."""
    monkeypatch.setattr(T, 'INTERPRETER_BLOCK', 64)
    generator = torch.Generator().manual_seed(7)
    x = random_images(2, 3, 30, 26, torch.float32, generator)
    theta = torch.tensor([[[0.9, 0.2, 0.05], [-0.15, 1.1, 0.0]], [[1.2, 0.0, -0.1], [0.1, 0.8, 0.2]]])
    got = T.warp(x.to(DEVICE), as_homographies(theta).to(DEVICE), size, antialias=False).cpu()
    assert launches == [tiles if not ON_GPU else (-(-size[0] * size[1] // T.GPU_BLOCK), 2)]
    torch.testing.assert_close(got, grid_sample_reference(x, theta, size, 'bilinear', True), atol=1e-5, rtol=0)


@pytest.mark.parametrize('align_corners', [True, False])
@pytest.mark.parametrize('mode', ['bilinear', 'nearest'])
def test_reflection_folds_positions_many_widths_outside(mode, align_corners):
    """A 5-7x zoom out reads up to three image widths past each edge: the reflection must repeat with a
    period of twice the span, as torch's own reflection padding (grid_sample) does."""
    generator = torch.Generator().manual_seed(5)
    x = random_images(2, 3, 5, 7, torch.float32, generator)
    theta = torch.tensor([[[7.0, 0.0, 0.31], [0.0, 6.5, -0.23]], [[5.0, 1.1, 0.07], [-0.9, 7.5, 0.52]]])
    got = T.warp(x.to(DEVICE), as_homographies(theta).to(DEVICE), (9, 11), mode=mode, padding_mode='reflection',
                 align_corners=align_corners, antialias=False).cpu()
    expected = grid_sample_reference(x, theta, (9, 11), mode, align_corners)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(W.warp(x, as_homographies(theta), (9, 11), mode=mode, padding_mode='reflection',
                                      align_corners=align_corners, antialias=False), expected, atol=1e-5, rtol=0)
