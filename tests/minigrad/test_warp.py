"""minigrad.warp against F.affine_grid + F.grid_sample, and its antialiasing, batching, compiling and dtypes."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from minigrad import homographies as H
from minigrad import warp as W


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
    expected = sum(F.grid_sample(x, H.transform_grid(squeeze_x, 64, 8, True, offset=(dx, 0.0)), mode='bilinear',
                                 padding_mode='reflection', align_corners=True)
                   for dx in (-0.375, -0.125, 0.125, 0.375))
    torch.testing.assert_close(W.warp(x, squeeze_x, (64, 8)), expected / 4)


def test_compiled_warp_matches_eager_on_a_batch_of_several_tap_groups():
    x = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    squeeze = [torch.eye(3), torch.eye(3), torch.diag(torch.tensor([0.25, 0.25, 1.0])),
               torch.diag(torch.tensor([1.0, 0.25, 1.0]))]  # taps (4, 4), (4, 4), (1, 1), (4, 1)
    matrices = torch.stack(squeeze) @ H.rotation_matrices(torch.tensor([0.0, 10.0, -5.0, 3.0])).float()
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
                            H.rotation_matrices(torch.tensor([10.0]))[0],
                            H.perspective_matrices(torch.tensor([0.2]), torch.tensor([-0.1]))[0].double()])
    for antialias in (True, False):
        torch.testing.assert_close(W.warp(x, constant * matrices, 9, antialias=antialias),
                                   W.warp(x, matrices, 9, antialias=antialias), atol=1e-12, rtol=0)


def test_eager_mode_gives_the_same_batch_whatever_its_chunks(monkeypatch):
    """Eager warp works through a CPU batch a few images at a time; any chunking gives the same values, to
    the bit (an image's result depends on nothing else in its batch)."""
    x = torch.randint(0, 256, (7, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    matrices = H.rotation_matrices(torch.linspace(-40, 40, 7)).float() @ H.perspective_matrices(
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
    matrices = H.rotation_matrices(torch.tensor([0.0, 30.0])).float()
    for mode in ('bilinear', 'nearest'):
        out = W.warp(x, matrices, 5, mode=mode, padding_mode=padding_mode)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, W.warp(x.float(), matrices, 5, mode=mode, padding_mode=padding_mode))
    assert W.warp(x[:0], matrices[:0], 5).shape == (0, 3, 5, 5)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"matrices must be \(N, 3, 3\) with N = 2"):
        W.warp(torch.zeros(2, 1, 4, 4), torch.eye(3)[None], 4)
    with pytest.raises(ValueError, match="padding_mode='wrap'"):
        W.warp(torch.zeros(1, 1, 4, 4), torch.eye(3)[None], 4, padding_mode='wrap')
