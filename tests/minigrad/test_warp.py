"""minigrad.warp against F.grid_sample / F.affine_grid, and the geometry of the matrix builders."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from minigrad import warp as W

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
    for sample in (W.grid_sample, F.grid_sample):
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
    assert torch.autograd.gradcheck(lambda a, g: W.grid_sample(a, g, 'bilinear', padding_mode, False), (x, grid))


@pytest.mark.parametrize('align_corners', [True, False])
@given(seed=st.integers(0, 2**31 - 1), size=st.tuples(st.integers(1, 12), st.integers(1, 12)))
def test_affine_warp_without_antialias_equals_affine_grid_and_grid_sample(align_corners, seed, size):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 10, 14, generator=gen, dtype=torch.float64)
    theta = torch.randn(2, 2, 3, generator=gen, dtype=torch.float64) * 0.7
    matrices = torch.cat([theta, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(2, 1, 3)], dim=1)
    expected = F.grid_sample(x, F.affine_grid(theta, (2, 3, *size), align_corners=align_corners),
                             mode='bilinear', padding_mode='reflection', align_corners=align_corners)
    got = W.warp(x, matrices, size, align_corners=align_corners, antialias=False)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_identity_reproduces_the_input_exactly():
    x = torch.rand(3, 3, 17, 17)
    assert torch.equal(W.warp(x, torch.eye(3).repeat(3, 1, 1), 17), x)


def test_two_flips_are_the_identity_and_one_flip_mirrors():
    x = torch.rand(2, 3, 8, 8)
    flip = W.flip_matrices(torch.tensor([True, True]))
    assert torch.equal(W.warp(x, flip @ flip, 8), x)
    assert torch.equal(W.warp(x, flip, 8), x.flip(-1))


def test_a_90_degree_rotation_of_a_square_is_rot90():
    x = torch.rand(2, 3, 9, 9)
    out = W.warp(x, W.rotation_matrices(torch.tensor([90.0, -90.0])), 9)
    assert torch.equal(out[0], torch.rot90(x[0], -1, dims=(1, 2)))  # clockwise on screen, as fastai
    assert torch.equal(out[1], torch.rot90(x[1], 1, dims=(1, 2)))


def test_perspective_maps_the_corners_where_asked():
    gen = torch.Generator().manual_seed(0)
    sources = W.CORNERS.expand(5, 4, 2)
    targets = sources + torch.rand(5, 4, 2, generator=gen) * 0.4 - 0.2
    h = W.homography_from_corners(sources, targets)
    mapped = torch.cat([sources, torch.ones(5, 4, 1)], dim=-1) @ h.transpose(1, 2)
    torch.testing.assert_close(mapped[..., :2] / mapped[..., 2:], targets, atol=1e-5, rtol=0)
    fastai = W.perspective_matrices(torch.tensor([0.2]), torch.tensor([-0.1]))
    corner = fastai @ torch.tensor([-1.0, -1.0, 1.0])
    torch.testing.assert_close(corner[0, :2] / corner[0, 2], torch.tensor([-1 + 0.1, -1 - 0.2]))


@given(seed=st.integers(0, 2**31 - 1), min_scale=st.floats(0.05, 1.0))
def test_random_resized_crop_never_samples_outside_the_image(seed, min_scale):
    matrices = W.random_resized_crop_matrices(16, min_scale, generator=torch.Generator().manual_seed(seed))
    grid = W.transform_grid(matrices, 5, 5, align_corners=True)
    assert grid.abs().max() <= 1 + 1e-6
    areas = matrices[:, 0, 0] * matrices[:, 1, 1]
    assert (areas >= min_scale - 1e-6).all() or (areas == 1).any()


def test_zoom_keeps_the_window_inside_and_zooms():
    matrices = W.zoom_matrices(torch.tensor([1.0, 2.0, 2.0]), torch.tensor([[0.5, 0.5], [0.0, 0.0], [1.0, 1.0]]))
    grid = W.transform_grid(matrices, 3, 3, align_corners=True)
    assert grid.abs().max() <= 1 + 1e-6
    torch.testing.assert_close(grid[1, 0, 0], torch.tensor([-1.0, -1.0]))
    torch.testing.assert_close(grid[1, -1, -1], torch.tensor([0.0, 0.0]))


def test_antialias_is_plain_bilinear_at_2x_and_supersamples_beyond():
    x = torch.rand(1, 3, 460, 460)
    crop = torch.eye(3)[None]
    assert torch.equal(W.warp(x, crop, 224), W.warp(x, crop, 224, antialias=False))
    fine = W.warp(x, crop, 112)
    assert not torch.equal(fine, W.warp(x, crop, 112, antialias=False))
    assert W.supersampling_taps(2.05) == 1 and W.supersampling_taps(4.1) == 2 and W.supersampling_taps(8.2) == 4
    scales = torch.tensor([0.3, 1.0, 2.05, 3.0, 3.01, 4.1, 8.2, 9.0])  # the tensor form: no Python numbers
    assert W.supersampling_taps(scales).tolist() == [W.supersampling_taps(s) for s in scales.tolist()]
    # Noise averaged over a 4x4 footprint has a quarter of the spread that 2x2-tap bilinear leaves.
    assert fine.std() < W.warp(x, crop, 112, antialias=False).std() * 0.75


def test_antialias_mixes_images_of_different_scales_in_one_batch():
    x = torch.rand(3, 1, 64, 64, dtype=torch.float64)
    matrices = torch.stack([torch.eye(3), torch.eye(3), torch.diag(torch.tensor([0.25, 0.25, 1.0]))]).double()
    out = W.warp(x, matrices, 8)
    for i in range(3):
        torch.testing.assert_close(out[i:i + 1], W.warp(x[i:i + 1], matrices[i:i + 1], 8))


def test_antialias_takes_more_taps_only_along_the_axis_it_squeezes():
    x = torch.rand(1, 1, 64, 64, dtype=torch.float64)
    squeeze_x = torch.eye(3, dtype=torch.float64)[None]  # 64 -> 8 columns (8x), 64 -> 64 rows (1x)
    assert W.input_pixels_per_output_pixel(squeeze_x, (64, 64), (64, 8)).tolist() == [[8.0, 1.0]]
    assert W.subpixel_offsets(4, 1).tolist() == [[-0.375, 0], [-0.125, 0], [0.125, 0], [0.375, 0]]
    expected = sum(F.grid_sample(x, W.transform_grid(squeeze_x, 64, 8, True, offset=(dx, 0.0)), mode='bilinear',
                                 padding_mode='reflection', align_corners=True)
                   for dx in (-0.375, -0.125, 0.125, 0.375))
    torch.testing.assert_close(W.warp(x, squeeze_x, (64, 8)), expected / 4)


def test_compiled_warp_matches_eager_on_a_batch_of_several_tap_groups():
    x = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    squeeze = [torch.eye(3), torch.eye(3), torch.diag(torch.tensor([0.25, 0.25, 1.0])),
               torch.diag(torch.tensor([1.0, 0.25, 1.0]))]  # taps (4, 4), (4, 4), (1, 1), (4, 1)
    matrices = torch.stack(squeeze) @ W.rotation_matrices(torch.tensor([0.0, 10.0, -5.0, 3.0])).float()
    eager = W.warp(x, matrices, 8)
    assert eager.dtype == torch.float32 and eager.shape == (4, 3, 8, 8)
    torch.testing.assert_close(W.warp(x, matrices, 8, compiled=True), eager, atol=1e-3, rtol=0)
    torch.testing.assert_close(W.warp(x, 2.5 * matrices, 8, compiled=True), eager, atol=1e-3, rtol=0)


@pytest.mark.parametrize('constant', [2.5, -0.5])
def test_a_homography_times_a_constant_is_the_same_map(constant):
    """(c u, c v, c w) is the point (u, v, w): the perspective divide must happen even when the bottom row
    is (0, 0, c), an affine map written with c != 1."""
    x = torch.rand(3, 2, 20, 20, dtype=torch.float64)
    matrices = torch.stack([torch.diag(torch.tensor([0.5, 0.7, 1.0], dtype=torch.float64)),
                            W.rotation_matrices(torch.tensor([10.0]))[0],
                            W.perspective_matrices(torch.tensor([0.2]), torch.tensor([-0.1]))[0].double()])
    for antialias in (True, False):
        torch.testing.assert_close(W.warp(x, constant * matrices, 9, antialias=antialias),
                                   W.warp(x, matrices, 9, antialias=antialias), atol=1e-12, rtol=0)


def test_eager_mode_gives_the_same_batch_whatever_its_chunks(monkeypatch):
    """Eager warp works through a CPU batch a few images at a time; any chunking gives the same values, to
    the bit (an image's result depends on nothing else in its batch)."""
    x = torch.randint(0, 256, (7, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    matrices = W.rotation_matrices(torch.linspace(-40, 40, 7)).float() @ W.perspective_matrices(
        torch.linspace(-0.3, 0.3, 7), torch.linspace(0.3, -0.3, 7))
    matrices[2] = torch.diag(torch.tensor([3.0, 3.0, 1.0]))  # reads far outside, with several taps
    whole = W.warp(x, matrices, 16)
    for images_per_chunk in (1, 3):
        monkeypatch.setattr(W, 'EAGER_CHUNK_PIXELS', images_per_chunk * 16 * 16)
        assert torch.equal(W.warp(x, matrices, 16), whole)
        assert all(torch.equal(W.warp(x[i:i + 1], matrices[i:i + 1], 16), whole[i:i + 1]) for i in range(7))


@pytest.mark.parametrize('padding_mode', ['zeros', 'border', 'reflection'])
def test_uint8_images_come_back_as_float32_in_either_mode(padding_mode):
    x = torch.randint(0, 256, (2, 3, 9, 9), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    matrices = W.rotation_matrices(torch.tensor([0.0, 30.0])).float()
    for mode in ('bilinear', 'nearest'):
        out = W.warp(x, matrices, 5, mode=mode, padding_mode=padding_mode)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, W.warp(x.float(), matrices, 5, mode=mode, padding_mode=padding_mode))
    assert W.warp(x[:0], matrices[:0], 5).shape == (0, 3, 5, 5)


@pytest.mark.parametrize('mode', ['bilinear', 'nearest'])
def test_zeros_padding_reads_zero_far_outside(mode):
    x = torch.rand(1, 2, 5, 5, dtype=torch.float64)
    far = torch.tensor([[[[1e12, 0.0], [0.0, -1e12], [3e9, 3e9], [0.5, 0.5]]]], dtype=torch.float64)
    got = W.grid_sample(x, far, mode=mode, padding_mode='zeros')
    torch.testing.assert_close(got, F.grid_sample(x, far, mode=mode, padding_mode='zeros', align_corners=False))
    assert (got[..., :3] == 0).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode='bicubic'"):
        W.grid_sample(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 2), mode='bicubic')
    with pytest.raises(ValueError, match=r"matrices must be \(N, 3, 3\) with N = 2"):
        W.warp(torch.zeros(2, 1, 4, 4), torch.eye(3)[None], 4)
    with pytest.raises(ValueError, match="padding_mode='wrap'"):
        W.warp(torch.zeros(1, 1, 4, 4), torch.eye(3)[None], 4, padding_mode='wrap')
    assert math.isclose(float(W.reflect(torch.tensor(7.5), 0, 3)), 1.5)
