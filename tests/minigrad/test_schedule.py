"""minigrad.schedule against the formulas of fastai's fit_one_cycle, LRFinder and Optimizer.set_hyper."""
import math

import pytest
import torch
from hypothesis import given, strategies as st

from minigrad.schedule import cosine_anneal, discriminative_lrs, lr_sweep, one_cycle


def reference_one_cycle(n_steps, lr_max, div, div_final, pct_start, moms):
    """The schedule written out as the issue states it, one step at a time, independent of the code."""
    def cos(start, end, p):
        return start + (1 + math.cos(math.pi * (1 - p))) * (end - start) / 2
    lrs, mom_values = [], []
    for i in range(n_steps):
        pos = i / n_steps
        if pos < pct_start:
            p = pos / pct_start
            lrs.append(cos(lr_max / div, lr_max, p))
            mom_values.append(cos(moms[0], moms[1], p))
        else:
            p = (pos - pct_start) / (1 - pct_start)
            lrs.append(cos(lr_max, lr_max / div_final, p))
            mom_values.append(cos(moms[1], moms[2], p))
    return lrs, mom_values


@given(n_steps=st.integers(1, 500), lr_max=st.floats(1e-6, 1.0), div=st.sampled_from([5.0, 25.0, 100.0]),
       div_final=st.sampled_from([1e4, 1e5]), pct_start=st.sampled_from([0.0, 0.25, 0.3, 0.99, 1.0]),
       moms=st.sampled_from([(0.95, 0.85, 0.95), (0.9, 0.8, 0.99)]))
def test_one_cycle_follows_the_formula(n_steps, lr_max, div, div_final, pct_start, moms):
    lrs, mom_values = one_cycle(n_steps, lr_max, div, div_final, pct_start, moms)
    expected_lrs, expected_moms = reference_one_cycle(n_steps, lr_max, div, div_final, pct_start, moms)
    torch.testing.assert_close(lrs, torch.tensor(expected_lrs, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(mom_values, torch.tensor(expected_moms, dtype=torch.float64), rtol=1e-12, atol=0)
    assert lrs.shape == (n_steps,) and lrs[0] == pytest.approx(lr_max / div if pct_start > 0 else lr_max)


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
