"""Learning-rate schedules: the one-cycle policy, the sweep behind lr_find, and discriminative rates.

These are plain functions from a step number to numbers; the learner writes their values into the
optimizer's param_groups before each step.
"""
import math
from collections import namedtuple

import torch

OneCycle = namedtuple('OneCycle', ['lrs', 'moms'])


def cosine_anneal(start, end, pos):
    """start + (1 + cos(pi (1 - pos))) (end - start) / 2,  for pos in [0, 1]

    Half a cosine wave from `start` (pos = 0) to `end` (pos = 1): it leaves and arrives flat, so the
    value changes slowly at both ends and fastest in the middle. fastai's SchedCos.
    """
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def one_cycle(n_steps, lr_max, div=25.0, div_final=1e5, pct_start=0.25, moms=(0.95, 0.85, 0.95)):
    """The learning rate and momentum of each step of fastai's fit_one_cycle (Smith 2018, "A disciplined
    approach to neural network hyper-parameters").

    With pos = i / n_steps for step i:
        pos <  pct_start:  lr  = cos-anneal(lr_max / div -> lr_max),         mom = cos-anneal(m0 -> m1)
        pos >= pct_start:  lr  = cos-anneal(lr_max -> lr_max / div_final),   mom = cos-anneal(m1 -> m2)
    each phase's own progress p in [0, 1) feeding cosine_anneal. The warm-up lets a randomly initialised
    head settle before large steps; the long descent to a tiny rate lets the weights settle into a minimum.
    Momentum moves opposite to the rate: low while the steps are large, high while they are small.

    Args:
        n_steps: the total number of optimizer steps (epochs x batches per epoch).
        lr_max: the peak learning rate, or a list with one peak per parameter group.
        div: the starting rate is lr_max / div.
        div_final: the final rate is lr_max / div_final.
        pct_start: the fraction of the steps spent warming up.
        moms: (m0, m1, m2), the momentum at the start, at the peak, and at the end.

    Returns:
        OneCycle(lrs, moms): float64 tensors; lrs has shape (n_steps,), or (n_steps, n_groups) when
        lr_max is a list; moms has shape (n_steps,).
    """
    if n_steps < 1:
        raise ValueError(f"one_cycle needs n_steps >= 1, got {n_steps}")
    if not 0 <= pct_start <= 1:
        raise ValueError(f"pct_start={pct_start} must be in [0, 1]")
    peaks = [float(v) for v in lr_max] if isinstance(lr_max, (list, tuple)) else [float(lr_max)]
    lrs, mom_values = [], []
    for i in range(n_steps):
        pos = i / n_steps
        if pos < pct_start:
            p = pos / pct_start
            lrs.append([cosine_anneal(peak / div, peak, p) for peak in peaks])
            mom_values.append(cosine_anneal(moms[0], moms[1], p))
        else:
            p = (pos - pct_start) / (1 - pct_start)
            lrs.append([cosine_anneal(peak, peak / div_final, p) for peak in peaks])
            mom_values.append(cosine_anneal(moms[1], moms[2], p))
    lrs = torch.tensor(lrs, dtype=torch.float64)
    if not isinstance(lr_max, (list, tuple)):
        lrs = lrs[:, 0]
    return OneCycle(lrs, torch.tensor(mom_values, dtype=torch.float64))


def lr_sweep(start_lr=1e-7, end_lr=10.0, num_it=100):
    """lr_i = start_lr * (end_lr / start_lr) ** (i / num_it),  i = 0 .. num_it - 1

    The exponentially growing learning rates of the learning-rate finder (Smith 2015, "Cyclical Learning
    Rates"): equal steps on a log scale, so each decade between 1e-7 and 10 gets the same number of
    batches. fastai's LRFinder (SchedExp at train_iter / num_it).

    Returns:
        a float64 tensor of shape (num_it,).
    """
    if num_it < 1 or start_lr <= 0 or end_lr <= 0:
        raise ValueError(f"lr_sweep needs num_it >= 1 and positive rates; got start_lr={start_lr}, "
                         f"end_lr={end_lr}, num_it={num_it}")
    pos = torch.arange(num_it, dtype=torch.float64) / num_it
    return start_lr * (end_lr / start_lr) ** pos


def discriminative_lrs(lr, n_groups):
    """One learning rate per parameter group, from a float, a list, or a slice (fastai's rule).

        float lr          -> [lr] * n_groups
        slice(lo, hi)     -> lo * (hi / lo) ** (k / (n_groups - 1)), k = 0 .. n_groups - 1:
                             geometric from the first group (the earliest layers) to the last (the head);
                             hi alone when n_groups = 1
        slice(hi)         -> [hi / 10] * (n_groups - 1) + [hi]; so is slice(0, hi): fastai reads a start of
                             0 as no start (a geometric series cannot start at 0)
        list              -> itself, if it has n_groups entries

    Early layers hold general features (edges, textures) that pretraining got right, so they get the
    smallest rates; the new head gets the largest (Yosinski et al. 2014; Howard & Ruder 2018, ULMFiT).
    """
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    if isinstance(lr, slice):
        if lr.stop is None:
            raise ValueError(f"a learning-rate slice needs a stop (the last group's rate), got {lr}")
        if not lr.start:
            return [lr.stop / 10] * (n_groups - 1) + [lr.stop]
        if n_groups == 1:
            return [lr.stop]
        ratio = (lr.stop / lr.start) ** (1 / (n_groups - 1))
        return [lr.start * ratio ** k for k in range(n_groups)]
    if isinstance(lr, (list, tuple)):
        if len(lr) != n_groups:
            raise ValueError(f"got {len(lr)} learning rates for {n_groups} parameter groups")
        return [float(v) for v in lr]
    return [float(lr)] * n_groups
