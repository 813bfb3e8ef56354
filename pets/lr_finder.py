"""The learning-rate finder (Smith 2015): train briefly with an exponentially growing rate, watch the loss.

    suggestions = learn.lr_find()                                   # SuggestedLRs(valley=...)
    lr_min, lr_steep = learn.lr_find(suggest_funcs=(minimum, steep))

Each batch uses the next rate of minigrad.schedule.lr_sweep (1e-7 to 10 by default); the loss is smoothed
(an exponential moving average, debiased, as fastai's recorder) and the sweep stops once it exceeds four
times its minimum. The model and optimizer are put back as they were afterwards. The suggestion rules
are fastai's, with its signature, f(lrs, losses, num_it) -> (lr, (lr, loss)): they read the smoothed curve
without its first tenth and last five points, and return the rate with the point to mark on the plot.
"""
import copy
import math
from collections import namedtuple

import numpy as np
import torch

from minigrad.schedule import lr_sweep
from pets.precision import own_scaler


def _loss_at(lrs, losses, lr):
    """The loss at the rate of the curve nearest to lr: where a suggestion is marked on the plot."""
    return float(losses[int(torch.argmin((lrs - lr).abs()))])


def minimum(lrs, losses, num_it):
    """The rate at the lowest loss, divided by 10: still on the descending part, a safe step back. The point
    marked on the plot is the minimum itself."""
    lr_min = float(lrs[int(torch.argmin(losses))])
    return lr_min / 10, (lr_min, _loss_at(lrs, losses, lr_min))


def steep(lrs, losses, num_it):
    """The rate where the loss falls fastest per decade: the most negative d loss / d log(lr)."""
    slopes = (losses[1:] - losses[:-1]) / (torch.log(lrs[1:]) - torch.log(lrs[:-1]))
    lr_steep = float(lrs[int(torch.argmin(slopes))])
    return lr_steep, (lr_steep, _loss_at(lrs, losses, lr_steep))


def valley(lrs, losses, num_it):
    """fastai's default. The valley is the longest decreasing subsequence of the losses: points each lower
    than the one before it in the subsequence, not necessarily adjacent, so that noise does not cut it
    short. With n its number of points and `end` its last one, the valley is taken to span start = end - n
    to end (fastai's rule: the subsequence itself may begin later), and the suggestion is the rate at
    start + int(t) + int(t / 2), t = (end - start) / 3: halfway through the middle third, well inside the
    valley, before its bottom, where training is fast but stable."""
    n = len(losses)
    run = [1] * n  # run[i]: the longest decreasing subsequence ending at point i
    best_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[i] > run[best_end]:
            best_end = i
    start = best_end - run[best_end]
    third = (best_end - start) / 3
    index = start + int(third) + int(third / 2)
    return float(lrs[index]), (float(lrs[index]), float(losses[index]))


def slide(lrs, losses, num_it, lr_diff=15, thresh=0.005, adjust_value=1.0):
    """fastai's slide: walk a window of lr_diff points left from the end until the loss's gradient at its
    two ends agrees within thresh; the rate at the window's left end (times adjust_value)."""
    gradient = torch.gradient(losses)[0]
    right, left = len(losses) - 1, len(losses) - 1 - lr_diff
    suggestion = lrs[max(left, 0)]
    while left >= 0 and abs(gradient[right] - gradient[left]) > thresh:
        suggestion = lrs[left]
        right, left = right - 1, left - 1
    lr = float(suggestion) * adjust_value
    loss = float(np.interp(math.log10(lr), np.log10(lrs.numpy()), losses.numpy()))
    return lr, (lr, loss)


class LRFinderResult:
    """The sweep: rates, raw and smoothed losses."""

    def __init__(self):
        self.lrs, self.losses, self.smooth_losses = [], [], []


class SmoothedLoss:
    """fastai's smoothed training loss: an exponential moving average of the raw losses, debiased.

        a_i = beta a_{i-1} + (1 - beta) loss_i  (a_0 = 0),    smooth_i = a_i / (1 - beta^i)

    The division takes out the weight the average still gives its starting 0 (as Adam's bias correction
    does), so the first smoothed value is the first loss itself. Call it with each raw loss in turn.
    """

    def __init__(self, beta=0.98):
        self.beta, self.average, self.count = beta, 0.0, 0

    def __call__(self, loss):
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * loss
        return self.average / (1 - self.beta ** self.count)


def diverged(smooth, best, stop_div=True):
    """Whether the sweep stops at this smoothed loss: it is not finite, or (stop_div) it is above four times
    the best so far, fastai's sign that the rate has passed the point where training falls apart."""
    return not math.isfinite(smooth) or (stop_div and smooth > 4 * best)


def run_sweep(learn, start_lr=1e-7, end_lr=10.0, num_it=100, stop_div=True, beta=0.98):
    """Trains num_it batches at the sweep's rates (all groups alike); returns the LRFinderResult.
    The learner's model and optimizer state are restored at the end, whatever happens."""
    if learn.opt is None:
        learn.create_opt()
    saved_model = copy.deepcopy(learn.model.state_dict())
    saved_opt = learn.opt.state_dict()
    result, smoothed, best = LRFinderResult(), SmoothedLoss(beta), math.inf
    with own_scaler(learn):  # float16: the sweep scales its losses on its own
        try:
            learn.train_mode()
            batches = iter(learn.dls.train)
            for lr in lr_sweep(start_lr, end_lr, num_it).tolist():
                try:
                    x, y = next(batches)
                except StopIteration:
                    batches = iter(learn.dls.train)
                    x, y = next(batches)
                for group in learn.opt.param_groups:
                    group['lr'] = lr
                try:
                    learn.train_step(x, y)
                except FloatingPointError:  # diverged: the end of the sweep
                    break
                smooth = smoothed(learn.loss_value)
                result.lrs.append(lr)
                result.losses.append(learn.loss_value)
                result.smooth_losses.append(smooth)
                best = min(best, smooth)
                if diverged(smooth, best, stop_div):
                    break
        finally:
            learn.model.load_state_dict(saved_model)
            learn.opt.load_state_dict(saved_opt)
    return result


def suggest(result, suggest_funcs, num_it):
    """(SuggestedLRs, points): the suggestions of each rule as a named tuple, and the (lr, loss) point each
    marks on the plot. The rules are fastai's: f(lrs, losses, num_it) -> (lr, (lr, loss)), given the
    smoothed curve without its first num_it // 10 and last 5 points, cut before its first NaN, as fastai
    trims it (a sweep too short for that gets the whole curve)."""
    start, end = num_it // 10, len(result.lrs) - 5
    if end - start < 3:
        start, end = 0, len(result.lrs)
    lrs = torch.tensor(result.lrs[start:end], dtype=torch.float64)
    losses = torch.tensor(result.smooth_losses[start:end], dtype=torch.float64)
    finite = torch.isnan(losses).cumsum(0) == 0
    lrs, losses = lrs[finite], losses[finite]
    names = [getattr(f, '__name__', None) or f.func.__name__ for f in suggest_funcs]  # a partial: its function's
    answers = [f(lrs, losses, num_it) for f in suggest_funcs]
    SuggestedLRs = namedtuple('SuggestedLRs', names)
    return SuggestedLRs(*(float(lr) for lr, _ in answers)), [point for _, point in answers]


def plot_lr_find(result, suggestions=None, points=None):
    """Smoothed loss against learning rate on a log scale, with each suggestion's point marked."""
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(result.lrs, result.smooth_losses)
    axis.set_xscale('log')
    axis.set_xlabel('Learning Rate')
    axis.set_ylabel('Loss')
    if suggestions:
        for name, (lr, loss), colour in zip(suggestions._fields, points, 'rgbcm'):
            axis.plot(lr, loss, 'o', color=colour, label=f"{name}: {lr:.2e}")
        axis.legend()
    return figure
