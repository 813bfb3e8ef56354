"""minigrad.homographies: the geometry of the matrix builders, checked where it can be seen (corners, flips,
quarter turns, windows that stay inside the image)."""
import torch
from hypothesis import given, strategies as st

from minigrad import homographies as H
from minigrad import warp as W


def test_two_flips_are_the_identity_and_one_flip_mirrors():
    x = torch.rand(2, 3, 8, 8)
    flip = H.flip_matrices(torch.tensor([True, True]))
    assert torch.equal(W.warp(x, flip @ flip, 8), x)
    assert torch.equal(W.warp(x, flip, 8), x.flip(-1))


def test_a_90_degree_rotation_of_a_square_is_rot90():
    x = torch.rand(2, 3, 9, 9)
    out = W.warp(x, H.rotation_matrices(torch.tensor([90.0, -90.0])), 9)
    assert torch.equal(out[0], torch.rot90(x[0], -1, dims=(1, 2)))  # clockwise on screen, as fastai
    assert torch.equal(out[1], torch.rot90(x[1], 1, dims=(1, 2)))


def test_perspective_maps_the_corners_where_asked():
    gen = torch.Generator().manual_seed(0)
    sources = H.CORNERS.expand(5, 4, 2)
    targets = sources + torch.rand(5, 4, 2, generator=gen) * 0.4 - 0.2
    h = H.homography_from_corners(sources, targets)
    mapped = torch.cat([sources, torch.ones(5, 4, 1)], dim=-1) @ h.transpose(1, 2)
    torch.testing.assert_close(mapped[..., :2] / mapped[..., 2:], targets, atol=1e-5, rtol=0)
    # fastai's direction: the output point at the moved corner (-1 - my, -1 - mx) reads the input's corner.
    # (Checked against fastai's own _WarpCoord in tests/pets/test_fastai_parity.py.)
    fastai = H.perspective_matrices(torch.tensor([0.2]), torch.tensor([-0.1]))
    corner = fastai @ torch.tensor([-1 + 0.1, -1 - 0.2, 1.0])
    torch.testing.assert_close(corner[0, :2] / corner[0, 2], torch.tensor([-1.0, -1.0]))


@given(seed=st.integers(0, 2**31 - 1), min_scale=st.floats(0.05, 1.0))
def test_random_resized_crop_never_samples_outside_the_image(seed, min_scale):
    matrices = H.random_resized_crop_matrices(16, min_scale, generator=torch.Generator().manual_seed(seed))
    grid = H.transform_grid(matrices, 5, 5, align_corners=True)
    assert grid.abs().max() <= 1 + 1e-6
    areas = matrices[:, 0, 0] * matrices[:, 1, 1]
    assert (areas >= min_scale - 1e-6).all() or (areas == 1).any()


def test_zoom_keeps_the_window_inside_and_zooms():
    matrices = H.zoom_matrices(torch.tensor([1.0, 2.0, 2.0]), torch.tensor([[0.5, 0.5], [0.0, 0.0], [1.0, 1.0]]))
    grid = H.transform_grid(matrices, 3, 3, align_corners=True)
    assert grid.abs().max() <= 1 + 1e-6
    torch.testing.assert_close(grid[1, 0, 0], torch.tensor([-1.0, -1.0]))
    torch.testing.assert_close(grid[1, -1, -1], torch.tensor([0.0, 0.0]))
