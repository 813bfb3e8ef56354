"""minigrad.schedule against facts of fastai's fit_one_cycle, LRFinder and Optimizer.set_hyper: values fastai's
documentation publishes, values at known points, and the shapes the schedules must have."""

import pytest
import torch
from hypothesis import given, strategies as st

from minigrad.schedule import cosine_anneal, discriminative_lrs, lr_sweep, one_cycle


# fastai's documentation (docs.fast.ai/callback.schedule, SchedCos): SchedCos(0, 2) at 0, 1/4, 1/2, 3/4, 1.
FASTAI_SCHED_COS_0_TO_2 = [0.0, 0.29289, 1.0, 1.70711, 2.0]


def test_cosine_anneal_gives_fastais_published_values():
    got = [cosine_anneal(0.0, 2.0, pos) for pos in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert got == pytest.approx(FASTAI_SCHED_COS_0_TO_2, abs=1e-5)


def test_one_cycle_at_known_points():
    """400 steps, a quarter warming up: 100 steps from lr_max / 25 up to lr_max, 300 down to lr_max / 1e5.
    Each phase's quarter, half and end points are fastai's published SchedCos fractions of the way."""
    lr_max, lo, final = 1e-2, 1e-2 / 25, 1e-2 / 1e5
    lrs, moms = one_cycle(400, lr_max, div=25, div_final=1e5, pct_start=0.25, moms=(0.95, 0.85, 0.95))
    fraction = [f / 2 for f in FASTAI_SCHED_COS_0_TO_2]  # of the way from start to end, at 0, 1/4, 1/2, 3/4
    within = 2.6e-6  # the published values' rounding (5 decimals on a span of 2), as a fraction of the way

    def close(value, start, end, f):
        return abs(value - (start + f * (end - start))) <= within * abs(end - start)

    for step, f in zip((0, 25, 50, 75), fraction):  # warm-up: step 25 is a quarter of its 100 steps
        assert close(lrs[step], lo, lr_max, f) and close(moms[step], 0.95, 0.85, f)
    assert lrs[100] == pytest.approx(lr_max) and moms[100] == pytest.approx(0.85)  # the peak at pct_start
    for step, f in zip((175, 250, 325), fraction[1:4]):  # the descent: a quarter of 300 steps is 75
        assert close(lrs[step], lr_max, final, f) and close(moms[step], 0.85, 0.95, f)
    assert final < lrs[-1] < final + 1e-4 * lr_max  # one step short of the end: just above the final rate


@given(n_steps=st.integers(2, 500), lr_max=st.floats(1e-6, 1.0), div=st.sampled_from([5.0, 25.0, 100.0]),
       div_final=st.sampled_from([1e4, 1e5]), pct_start=st.sampled_from([0.0, 0.25, 0.3, 0.99, 1.0]),
       moms=st.sampled_from([(0.95, 0.85, 0.95), (0.9, 0.8, 0.99)]))
def test_one_cycle_rises_then_falls_with_momentum_mirrored(n_steps, lr_max, div, div_final, pct_start, moms):
    lrs, mom_values = one_cycle(n_steps, lr_max, div, div_final, pct_start, moms)
    assert lrs.shape == mom_values.shape == (n_steps,)
    warm = sum(1 for i in range(n_steps) if i / n_steps < pct_start)  # the warm-up's steps
    assert lrs[0] == pytest.approx(lr_max / div if warm else lr_max)
    assert (lrs[:warm].diff() > 0).all() and (lrs[warm:].diff() < 0).all()
    assert lrs.max() <= lr_max * (1 + 1e-12) and lrs.min() >= min(lr_max / div, lr_max / div_final) * (1 - 1e-12)
    # Momentum is the same cosine, so it has gone the same fraction of its way as the rate, in each phase.
    lo, final = lr_max / div, lr_max / div_final
    lr_way = torch.cat([(lrs[:warm] - lo) / (lr_max - lo), (lr_max - lrs[warm:]) / (lr_max - final)])
    mom_way = torch.cat([(mom_values[:warm] - moms[0]) / (moms[1] - moms[0]),
                         (mom_values[warm:] - moms[1]) / (moms[2] - moms[1])])
    torch.testing.assert_close(mom_way, lr_way, atol=1e-9, rtol=0)


def test_one_cycle_shape_of_the_curve():
    lrs, moms = one_cycle(1000, 1e-2)
    assert lrs[0] == pytest.approx(1e-2 / 25) and moms[0] == pytest.approx(0.95)
    assert lrs.argmax() == 250 and lrs.max() == pytest.approx(1e-2) and moms[250] == pytest.approx(0.85)
    # The last step is at pos = 999/1000, just short of the end: lr_max / div_final plus a sliver.
    assert 1e-7 < lrs[-1] < 1.5e-7 and moms[-1] == pytest.approx(0.95, rel=1e-4)
    assert (lrs[:250].diff() > 0).all() and (lrs[250:].diff() < 0).all()


def test_one_cycle_with_one_peak_per_group():
    peaks = [1e-5, 1e-4, 1e-3]
    lrs, moms = one_cycle(40, peaks)
    assert lrs.shape == (40, 3)
    for g, peak in enumerate(peaks):
        torch.testing.assert_close(lrs[:, g], one_cycle(40, peak).lrs)
    torch.testing.assert_close(moms, one_cycle(40, 1.0).moms)


def test_one_cycle_bad_arguments():
    with pytest.raises(ValueError, match="n_steps >= 1"):
        one_cycle(0, 1e-3)
    with pytest.raises(ValueError, match="pct_start=1.5"):
        one_cycle(10, 1e-3, pct_start=1.5)


def test_cosine_anneal_endpoints_and_midpoint():
    assert cosine_anneal(1.0, 3.0, 0.0) == 1.0
    assert cosine_anneal(1.0, 3.0, 1.0) == pytest.approx(3.0)
    assert cosine_anneal(1.0, 3.0, 0.5) == pytest.approx(2.0)


@given(start=st.floats(1e-8, 1e-3), end=st.floats(1e-1, 100.0), num_it=st.integers(1, 300))
def test_lr_sweep_is_geometric(start, end, num_it):
    lrs = lr_sweep(start, end, num_it)
    expected = [start * (end / start) ** (i / num_it) for i in range(num_it)]
    torch.testing.assert_close(lrs, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    if num_it > 2:
        ratios = lrs[1:] / lrs[:-1]
        torch.testing.assert_close(ratios, torch.full_like(ratios, (end / start) ** (1 / num_it)))


def test_lr_sweep_defaults_are_fastais():
    lrs = lr_sweep()
    assert len(lrs) == 100 and lrs[0] == pytest.approx(1e-7) and lrs[-1] == pytest.approx(10 * (1e8) ** (-1 / 100))


def test_discriminative_lrs():
    assert discriminative_lrs(slice(1e-6, 1e-4), 3) == pytest.approx([1e-6, 1e-5, 1e-4])
    assert discriminative_lrs(slice(1e-6, 1e-4), 1) == [1e-4]
    assert discriminative_lrs(slice(3e-3), 3) == pytest.approx([3e-4, 3e-4, 3e-3])
    assert discriminative_lrs(slice(None, 3e-3), 1) == [3e-3]
    assert discriminative_lrs(2e-3, 3) == [2e-3] * 3
    assert discriminative_lrs([1e-3, 2e-3], 2) == [1e-3, 2e-3]
    with pytest.raises(ValueError, match="3 learning rates for 2"):
        discriminative_lrs([1, 2, 3], 2)
    with pytest.raises(ValueError, match="needs a stop"):
        discriminative_lrs(slice(1e-3, None), 2)


@given(lo=st.floats(1e-7, 1e-4), hi=st.floats(1e-3, 1.0), n=st.integers(2, 10))
def test_discriminative_lrs_are_multiplicatively_equidistant(lo, hi, n):
    lrs = torch.tensor(discriminative_lrs(slice(lo, hi), n), dtype=torch.float64)
    assert lrs[0] == pytest.approx(lo) and lrs[-1] == pytest.approx(hi)
    ratios = lrs[1:] / lrs[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, ratios[0].item()))
