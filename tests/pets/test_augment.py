"""aug_transforms: the batch contract, one warp per batch, per-image draws, determinism, geometry."""
import pytest
import torch

from minigrad import warp as W
from pets import augment
from pets.augment import aug_transforms


def batch(n=6, size=40, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_contract_uint8_in_float_out_with_the_matrices_kept():
    tfm = aug_transforms(size=24, min_scale=0.75, seed=0)
    out = tfm(batch(), train=True)
    assert out.dtype == torch.float32 and out.shape == (6, 3, 24, 24)
    assert 0 <= out.min() and out.max() <= 1
    assert tfm.last_matrices.shape == (6, 3, 3)


def test_every_spatial_change_is_one_warp_call(monkeypatch):
    calls = []
    real_warp = W.warp
    monkeypatch.setattr(augment.W, 'warp', lambda *a, **k: calls.append(1) or real_warp(*a, **k))
    aug_transforms(size=24, min_scale=0.5, flip_vert=True, seed=0)(batch(), train=True)
    assert len(calls) == 1


def test_validation_is_a_plain_resize_without_randomness():
    tfm = aug_transforms(size=20, min_scale=0.5, seed=0)
    x = batch()
    first, second = tfm(x, train=False), tfm(x, train=False)
    assert torch.equal(first, second)
    assert torch.equal(tfm.last_matrices, torch.eye(3).repeat(6, 1, 1))
    torch.testing.assert_close(first, W.warp(x.float(), torch.eye(3).repeat(6, 1, 1), 20) / 255)


def test_identity_settings_reproduce_the_input():
    tfm = aug_transforms(do_flip=False, max_rotate=0, max_zoom=1, max_warp=0, max_lighting=0, seed=0)
    x = batch()
    assert torch.equal(tfm(x, train=True), x.float() / 255)


def test_parameters_differ_across_images_unless_batch():
    x = batch(8)
    per_image = aug_transforms(size=24, min_scale=0.5, p_affine=1.0, seed=1)
    per_image(x)
    assert len({tuple(m.flatten().tolist()) for m in per_image.last_matrices}) == 8
    shared = aug_transforms(size=24, min_scale=0.5, p_affine=1.0, batch=True, seed=1)
    shared(x)
    assert (shared.last_matrices == shared.last_matrices[0]).all()


def test_same_seed_same_output_and_another_seed_differs():
    x = batch()
    a, b, c = (aug_transforms(size=24, min_scale=0.75, seed=s)(x) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(0)
    d = aug_transforms(size=24)(x)
    torch.manual_seed(0)
    assert torch.equal(d, aug_transforms(size=24)(x))  # no seed: torch.manual_seed governs


@pytest.mark.parametrize('seed', range(5))
def test_crop_alone_never_samples_outside_the_image(seed):
    tfm = aug_transforms(size=16, min_scale=0.3, max_rotate=0, max_zoom=1, max_warp=0, seed=seed)
    tfm(batch(16))
    grid = W.transform_grid(tfm.last_matrices, 9, 9, align_corners=True)
    assert grid.abs().max() <= 1 + 1e-5


def test_mult_scales_the_maxima_and_lighting_changes_values():
    tfm = aug_transforms(mult=2.0)
    assert (tfm.max_rotate, tfm.max_warp, tfm.max_lighting) == (20.0, 0.4, 0.4)
    lit = aug_transforms(do_flip=False, max_rotate=0, max_zoom=1, max_warp=0, max_lighting=0.5, p_lighting=1.0, seed=0)
    x = batch()
    out = lit(x)
    assert not torch.allclose(out, x.float() / 255) and 0 <= out.min() and out.max() <= 1


def test_float_input_in_unit_range_is_accepted():
    x = batch().float() / 255
    out = aug_transforms(size=24, seed=0)(x)
    assert out.dtype == torch.float32 and out.shape == (6, 3, 24, 24)


def test_fused_warp_gives_the_same_batch():
    x = batch(4, size=32)
    eager = aug_transforms(size=16, min_scale=0.75, seed=5)(x)
    fused = aug_transforms(size=16, min_scale=0.75, seed=5, fused=True)(x)
    torch.testing.assert_close(fused, eager, atol=1e-4, rtol=0)


def test_by_default_only_cuda_batches_are_compiled(monkeypatch):
    monkeypatch.setattr(W, 'compiled_supersample', lambda: pytest.fail('compiled on the CPU by default'))
    monkeypatch.setattr(augment, 'compiled_adjust', lambda: pytest.fail('compiled on the CPU by default'))
    assert aug_transforms(size=16, seed=0)(batch(2, size=32)).shape == (2, 3, 16, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_on_cuda_the_compiled_triton_path_matches_the_tensor_op_path():
    x = batch(16, size=96)
    triton = aug_transforms(size=32, min_scale=0.75, seed=3)(x.cuda())  # fused=None: compiled on CUDA
    tensor_ops = aug_transforms(size=32, min_scale=0.75, seed=3, fused=False)
    torch.testing.assert_close(triton, tensor_ops(x.cuda()), atol=1e-4, rtol=0)
    torch.testing.assert_close(triton.cpu(), aug_transforms(size=32, min_scale=0.75, seed=3)(x), atol=1e-4, rtol=0)
