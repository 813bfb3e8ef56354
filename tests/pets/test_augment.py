"""aug_transforms: the batch contract, one warp per batch, per-image draws, determinism, geometry, backends."""
import importlib.util
import math
import os

import pytest
import torch

from minigrad import homographies as H
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
    grid = H.transform_grid(tfm.last_matrices, 9, 9, align_corners=True)
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


def test_cuda_batches_take_the_triton_kernel_when_triton_is_installed():
    choose = augment.choose_backend
    assert choose('cuda', None, triton_available=True) == 'triton'
    assert choose(torch.device('cuda', 1), True, triton_available=True) == 'triton'
    assert choose('cuda', None, triton_available=False) == 'eager'
    assert choose('cuda', False, triton_available=True) == 'eager'
    assert choose('cpu', None, triton_available=True) == 'eager'
    assert choose('cpu', True, triton_available=True) == 'compiled'
    with pytest.raises(ValueError, match="backend='fast'"):
        augment.render(batch(1), torch.eye(3)[None], 8, 'bilinear', 'reflection', True, backend='fast')


@pytest.mark.skipif(importlib.util.find_spec('triton') is None or not (
    torch.cuda.is_available() or os.environ.get('TRITON_INTERPRET') == '1'),
    reason='needs Triton, and a CUDA GPU or its interpreter (TRITON_INTERPRET=1)')
def test_the_triton_backend_renders_what_the_tensor_ops_render():
    device = 'cuda' if torch.cuda.is_available() and os.environ.get('TRITON_INTERPRET') != '1' else 'cpu'
    x = batch(5, size=40)
    tfm = aug_transforms(size=16, min_scale=0.5, max_lighting=0.4, p_lighting=1.0, seed=0)
    matrices, (shift, factor) = tfm.draw_matrices(5), tfm.draw_lighting(5)
    eager = augment.render(x, matrices, 16, 'bilinear', 'reflection', True, shift, factor, backend='eager')
    kernel = augment.render(x.to(device), matrices.to(device), 16, 'bilinear', 'reflection', True, shift, factor,
                            backend='triton')
    torch.testing.assert_close(kernel.cpu(), eager, atol=1e-5, rtol=0)


def compile_fifty_batches(sizes):
    """Fifty batches of fresh draws through aug_transforms(fused=True), the output sizes taking turns, from a
    fresh dynamo. Returns the last output, how many tap groups each batch mixed, dynamo's log messages, and
    how many graphs supersample and adjust compiled."""
    import logging
    from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list
    torch._dynamo.reset()
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger('torch._dynamo').addHandler(handler)
    try:
        x = batch(64, size=92)  # 92 -> 45: the scale of 460 -> 224, so as many images need extra taps
        transforms = {size: aug_transforms(size=size, min_scale=0.75, seed=0, fused=True) for size in sizes}
        group_counts = []
        for i in range(50):
            size = sizes[i % len(sizes)]
            out = transforms[size](x)
            _, taps = W.sampling_plan(x, transforms[size].last_matrices, (size, size), 'bilinear', 'reflection',
                                      True, True)
            group_counts.append(len(taps.unique(dim=0)))
    finally:
        logging.getLogger('torch._dynamo').removeHandler(handler)
    graphs = [len(_debug_get_cache_entry_list(f.__code__)) for f in (W.supersample, augment.adjust)]
    return out, group_counts, messages, graphs


def test_fifty_batches_of_fresh_draws_compile_a_few_graphs_and_never_hit_the_recompile_limit():
    """Images whose mapping shrinks them > 3x take more taps; how many images do changes from batch to
    batch. Compiled code treats that number as dynamic: no recompiling per group size until torch's limit."""
    out, group_counts, messages, (supersample_graphs, adjust_graphs) = compile_fifty_batches((45,))
    assert out.shape == (64, 3, 45, 45)
    assert max(group_counts) > 1 and len(set(group_counts)) > 1  # the batches did mix tap groups
    assert not [m for m in messages if 'recompile_limit' in m or 'cache_size_limit' in m]
    # One sample per pixel; several; once more if the first group of several had as many images as samples.
    assert supersample_graphs <= 3
    assert adjust_graphs == 1


def test_two_output_sizes_taking_turns_compile_a_few_graphs_each():
    """The same with two output sizes taking turns (training and validation sizes, or progressive
    resizing), as a real run's would: a few graphs per output size, not one per group size until torch's
    recompile limit (8 per function) stops compiling."""
    out, group_counts, messages, (supersample_graphs, adjust_graphs) = compile_fifty_batches((38, 45))
    assert out.shape == (64, 3, 45, 45)
    assert max(group_counts) > 1 and len(set(group_counts)) > 1  # the batches did mix tap groups
    assert not [m for m in messages if 'recompile_limit' in m or 'cache_size_limit' in m]
    # Per size: one sample per pixel; several; once more if the first group of several had as many images
    # as samples (torch then assumed the two sizes equal).
    assert supersample_graphs <= 6
    assert adjust_graphs <= 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_on_cuda_the_triton_kernel_matches_the_tensor_op_paths():
    x = batch(16, size=96)
    triton = aug_transforms(size=32, min_scale=0.75, seed=3)(x.cuda())  # fused=None: the Triton kernel on CUDA
    torch.testing.assert_close(triton, aug_transforms(size=32, min_scale=0.75, seed=3, fused=False)(x.cuda()),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(triton.cpu(), aug_transforms(size=32, min_scale=0.75, seed=3)(x), atol=1e-4, rtol=0)
    tfm = aug_transforms(size=32, min_scale=0.75, seed=3)
    matrices, (shift, factor) = tfm.draw_matrices(16).cuda(), tfm.draw_lighting(16)
    compiled = augment.render(x.cuda(), matrices, 32, 'bilinear', 'reflection', True, shift, factor, 'compiled')
    kernel = augment.render(x.cuda(), matrices, 32, 'bilinear', 'reflection', True, shift, factor, 'triton')
    torch.testing.assert_close(kernel, compiled, atol=1e-4, rtol=0)


def largest_gap_to_uniform(values, low, high):
    """The Kolmogorov-Smirnov distance between the values' distribution and U(low, high)."""
    values = values.double().sort().values
    expected = (values - low) / (high - low)
    ranks = torch.arange(1, len(values) + 1, dtype=torch.float64) / len(values)
    return float(torch.maximum((ranks - expected).abs(), (ranks - 1 / len(values) - expected).abs()).max())


def assert_applied_with(chosen, p, n):
    """The share of images a transform was applied to is p, within 4 standard errors."""
    assert abs(chosen.double().mean() - p) < 4 * (p * (1 - p) / n) ** 0.5, (chosen.double().mean(), p)


def test_drawn_parameters_follow_fastais_distributions():
    """Every parameter aug_transforms draws, over 20000 images at settings unlike the defaults (so that a
    hard-coded range shows), against the distributions of fastai's aug_transforms (fastai.vision.augment):
    each transform applied with its own probability, else neutral; flips with 0.5; rotation, zoom, each
    warp axis and the lighting uniform over their ranges (contrast log-uniform); the crop's area uniform
    in [min_scale, 1], its aspect ratio 1 (fastai's ratio=(1, 1)). KS distances below 0.02 (n = 20000: a
    tenth of a percent of chance to fail)."""
    n = 20000
    tfm = aug_transforms(size=32, min_scale=0.5, max_rotate=30, min_zoom=0.9, max_zoom=1.3, max_warp=0.3,
                         max_lighting=0.4, p_affine=0.6, p_lighting=0.8, seed=0)
    g = tfm.draw_geometry(n, aspect=1.5)
    assert_applied_with(g['flip'], 0.5, n)
    for name, low, high, neutral in [('angle', -30, 30, 0.0), ('zoom', 0.9, 1.3, 1.0), ('warp_x', -0.3, 0.3, 0.0),
                                     ('warp_y', -0.3, 0.3, 0.0)]:
        applied = g[name] != neutral
        assert_applied_with(applied, 0.6, n)
        assert largest_gap_to_uniform(g[name][applied], low, high) < 0.02, name
    assert_applied_with((g['warp_x'] != 0) & (g['warp_y'] != 0), 0.36, n)  # two masks, drawn apart
    assert largest_gap_to_uniform(g['zoom_centre'].flatten(), 0, 1) < 0.02
    # The crop: in pixels a square (w 1.5 = h of an image 1.5 times as wide as high), inside the image,
    # and on a square image (as presized items are) a fraction w h of the area uniform in [min_scale, 1].
    width, height = g['crop_width'], g['crop_height']
    torch.testing.assert_close(width * 1.5, height)
    assert (g['crop_centre'].abs() <= torch.stack([1 - width, 1 - height], dim=1) + 1e-6).all()
    square = tfm.draw_geometry(n, aspect=1.0)
    assert largest_gap_to_uniform(square['crop_width'] * square['crop_height'], 0.5, 1) < 0.02
    shift, factor = tfm.draw_lighting(n)
    brightness, contrast = torch.sigmoid(shift.double()), factor.double()
    lit = brightness != 0.5
    assert_applied_with(lit, 0.8, n)
    assert largest_gap_to_uniform(brightness[lit], 0.3, 0.7) < 0.02  # 0.5 (1 -+ max_lighting)
    assert_applied_with(contrast != 1, 0.8, n)
    assert largest_gap_to_uniform(contrast[contrast != 1].log(), math.log(0.6), -math.log(0.6)) < 0.02
