"""The losses of classification, from raw tensor ops.

Part 1 reads in the chapter's order, the path a classifier trains on:
    logsumexp -> softmax -> log_softmax -> nll_loss -> cross_entropy, which is nll_loss(log_softmax(x))
Log-sum-exp is written once (_log_sum_exp_parts); softmax, log_softmax and cross_entropy start from it.
Part 2 adds what real use needs and the chapter does not: class weights, ignore_index, label smoothing,
class-probability targets (soft labels), spatial targets (N, C, d1, ...), and the checks that turn a bad
target into an error that names it.
Part 3 is the two-class case: sigmoid -> binary_cross_entropy_with_logits.

Every function has the name, signature and meaning of its torch.nn.functional twin, and is tested against
it, on our own inputs and on torch's (its OpInfo samples). None of them calls torch.nn.functional.
softmax, log_softmax and cross_entropy carry a backward pass derived by hand (a torch.autograd.Function);
the others are differentiated by autograd through the raw ops. Each hand-written backward is itself made of
tensor ops that autograd records when asked to (create_graph=True), so a gradient can be differentiated
again, as torch's own backward passes can.

Half-precision inputs (float16, bfloat16) are computed in float32 and the result cast back, the way
torch's own kernels accumulate: a sum of 1000 exponentials in float16 would lose most of its digits.
Under torch.autocast the functions follow autocast's policy: those on its float32 list (the losses on every
device; softmax and log_softmax on CUDA) take a 16-bit input as float32 and return float32, as torch's do.
"""
from typing import NamedTuple, Optional

import torch

REDUCTIONS = ('none', 'mean', 'sum')
HALF = (torch.float16, torch.bfloat16)


def _compute_dtype(x):
    return torch.float32 if x.dtype in HALF else x.dtype


def _autocast_float32(x, devices=('cpu', 'cuda')):
    """x as float32 where torch's autocast computes the op in float32 (its float32 list): a 16-bit x inside
    an autocast region of its device type, for an op on that device's list. Elsewhere x as it is.

    A mixed-precision loss then stays float32, as torch's does: in float16, a GradScaler's 65536 x loss
    would overflow, and a bfloat16 loss keeps 2-3 digits."""
    if x.dtype in HALF and x.device.type in devices and torch.is_autocast_enabled(x.device.type):
        return x.float()
    return x


def _log_sum_exp_parts(x, dim):
    """log sum_j exp(x_j) = m + log sum_j exp(x_j - m), with m = max_j x_j along dim.

    Returns the parts the functions below are built from, each with the reduced dimension kept:
        m      the shift, max_j x_j;
        e      exp(x - m), x's shape;
        sum_e  sum_j e_j, in [1, n]: logsumexp(x) = m + log(sum_e), softmax(x) = e / sum_e.
    Every e_j is <= 1, so no exp overflows, and the largest is exp(0) = 1, so sum_e never underflows to 0
    unless every x_j is -inf. m is detached: every result built from these parts is independent of m (it
    cancels), so its gradient through m is exactly 0 and needs no recording. A row whose max is infinite is
    shifted by 0 instead (-inf - (-inf) is nan), and so is an empty tensor, which has no max.
    """
    if x.numel() == 0:
        m = torch.zeros_like(x.detach().sum(dim, keepdim=True))
    else:
        m = x.detach().amax(dim, keepdim=True)
        m = m.masked_fill_(m.isinf(), 0.0)
    e = (x - m).exp_()  # in place: x - m is this function's own buffer (exp_ keeps autograd's record right)
    return m, e, e.sum(dim, keepdim=True)


def logsumexp(x, dim=-1, keepdim=False):
    """logsumexp(x) = log sum_j exp(x_j)

    Computed as m + log sum_j exp(x_j - m) with m = max_j x_j (_log_sum_exp_parts): every exponent is <= 0,
    so no exp overflows, and the largest term is exp(0) = 1, so the log never sees 0 unless every x_j is
    -inf (then the result is -inf, as it should be; over an empty dimension too). Logits of +-1e4 are fine.
    Gradient: d logsumexp(x) / d x_k = exp(x_k) / sum_j exp(x_j) = softmax(x)_k.

    Args:
        x: a floating-point tensor.
        dim: the dimension (or tuple of dimensions) to reduce.
        keepdim: keep the reduced dimension with size 1.
    """
    xc = x.to(_compute_dtype(x))
    m, _, sum_e = _log_sum_exp_parts(xc, dim)
    out = m + sum_e.log()
    return (out if keepdim else out.squeeze(dim)).to(x.dtype)


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim):
        _, e, sum_e = _log_sum_exp_parts(x.to(_compute_dtype(x)), dim)
        y = e.div_(sum_e).to(x.dtype)  # in e's own buffer
        ctx.dim = dim
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        # y is this function's output: with create_graph=True it carries autograd's record back to x, so this
        # backward, made of tensor ops on y and g, can be differentiated again.
        (y,) = ctx.saved_tensors
        yc, gc = y.to(_compute_dtype(y)), g.to(_compute_dtype(y))
        grad_x = yc * (gc - (gc * yc).sum(ctx.dim, keepdim=True))
        return grad_x.to(y.dtype), None


def softmax(x, dim=-1, dtype=None):
    """softmax(x)_i = exp(x_i) / sum_j exp(x_j) = exp(x_i - logsumexp(x))

    Turns activations into probabilities: each is in [0, 1] and they sum to 1 along dim. Computed as
    exp(x_i - m) / sum_j exp(x_j - m) with m = max_j x_j (_log_sum_exp_parts: the same value, without
    overflow). A -inf activation gets probability 0; a row that is all -inf has no distribution and
    gives nan, as in torch.

    Gradient (hand-derived, the Jacobian is diag(y) - y y^T with y = softmax(x)):
        d y_i / d x_k = y_i ([i == k] - y_k), hence grad_x = y * (g - sum_i g_i y_i).

    Args:
        x: a floating-point tensor of activations.
        dim: the dimension along which the probabilities sum to 1.
        dtype: if given, x is cast to it first (and the result has it), as in torch.
    """
    x = _autocast_float32(x, devices=('cuda',)) if dtype is None else x.to(dtype)
    return _Softmax.apply(x, dim)


class _LogSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim):
        xc = x.to(_compute_dtype(x))
        m, _, sum_e = _log_sum_exp_parts(xc, dim)
        # x - logsumexp(x) = (x - m) - log(sum_e), m taken off first: logits of 1e4 keep every digit.
        y = ((xc - m) - sum_e.log()).to(x.dtype)
        ctx.dim = dim
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors  # the output, differentiable again as in _Softmax
        yc, gc = y.to(_compute_dtype(y)), g.to(_compute_dtype(y))
        grad_x = gc - yc.exp() * gc.sum(ctx.dim, keepdim=True)
        return grad_x.to(y.dtype), None


def log_softmax(x, dim=-1, dtype=None):
    """log softmax(x)_i = x_i - logsumexp(x) = x_i - log sum_j exp(x_j)

    The log of the probabilities, computed without ever forming them: (x - m) - log sum_j exp(x_j - m)
    with m = max_j x_j. log(softmax(x)) instead would give -inf (and then nan gradients) wherever a
    probability underflows to 0, e.g. for logits 1e4 apart.

    Gradient (hand-derived): d/dx_k log softmax(x)_i = [i == k] - softmax(x)_k, hence
        grad_x = g - softmax(x) * sum_i g_i.

    Args:
        x: a floating-point tensor of activations.
        dim: the dimension along which the probabilities sum to 1.
        dtype: if given, x is cast to it first (and the result has it), as in torch.
    """
    x = _autocast_float32(x, devices=('cuda',)) if dtype is None else x.to(dtype)
    return _LogSoftmax.apply(x, dim)


def _reduce(losses, count, reduction):
    """'none': the losses as they are; 'sum': their sum; 'mean': their sum over count."""
    if reduction == 'none':
        return losses
    if reduction == 'sum':
        return losses.sum()
    return losses.sum() / count


def nll_loss(input, target, weight=None, ignore_index=-100, reduction='mean'):
    """nll(logp, t)_i = -logp_{i, t_i}

    The negative log likelihood: pick each sample's log-probability of its true class t_i and negate it.
    `input` must already be log-probabilities (from log_softmax); nll_loss takes no log itself. 'mean'
    averages over the samples, 'sum' adds them, 'none' keeps one loss per sample.
    Gradient: d nll_i / d logp_{i,c} = -[c == t_i] (divided by N for 'mean').
    With class weights w each loss is multiplied by w_{t_i} and 'mean' divides by sum_i w_{t_i}; samples
    whose target is ignore_index count for nothing (see class_index_weights in Part 2).

    Args:
        input: log-probabilities, (C,) or (N, C) or (N, C, d1, ...).
        target: class indices, () or (N,) or (N, d1, ...), each in [0, C) or equal to ignore_index.
        weight: optional (C,) tensor of class weights.
        ignore_index: a target value whose samples are skipped.
        reduction: 'none' | 'mean' | 'sum'.
    """
    input = _autocast_float32(input)
    class_dim = check_class_targets(input, target, weight, ignore_index, reduction)
    dtype = _compute_dtype(input)
    index, w_t, counted = class_index_weights(target, weight, ignore_index, dtype)
    logp_t = input.gather(class_dim, index.unsqueeze(class_dim)).squeeze(class_dim).to(dtype)
    losses = torch.where(counted, -w_t * logp_t, 0.0)  # where, not w_t = 0: 0 * -inf would be nan
    return _reduce(losses, w_t.sum(), reduction).to(input.dtype)


class _CrossEntropy(torch.autograd.Function):
    """cross_entropy(x, t) = nll_loss(log_softmax(x), t), forward and ONE backward pass for the pair,
    derived by hand. The chapter's case first: one class t_i per sample, p = softmax(x_i). log_softmax's
    Jacobian is [c == k] - p_k and nll's gradient -[c == t_i], so by the chain rule
        d CE_i / d x_{i,k} = sum_c -[c == t_i] ([c == k] - p_k) = p_k - [k == t_i],
    softmax minus one-hot (divided by N for 'mean').

    That case (class indices, no weights, no smoothing) runs as written: the forward pass is log_softmax at
    t, negated (nll_loss), the backward pass _chapter_backward's softmax minus one-hot.

    The same derivation covers every option, written with the target distribution q_i (Part 2,
    target_distribution: one-hot at t_i, weighted, smoothed, or given as probabilities):
        CE_i = -sum_c q_ic log p_ic,
        d CE_i / d x_{i,k} = sum_c q_ic (p_k - [c == k]) = p_k sum_c q_ic - q_ik,
    and, where the target is a probability tensor, d CE_i / d target_ic = -(1 - eps) w_c log p_ic and, for
    learnt class weights, d CE_i / d w_c = -((1 - eps) target_ic + eps / C) log p_ic.
    """

    @staticmethod
    def forward(ctx, logits, target, weight, ignore_index, reduction, eps):
        dtype, class_dim = _compute_dtype(logits), (0 if logits.dim() == 1 else 1)
        x = logits.to(dtype)
        m, e, sum_e = _log_sum_exp_parts(x, class_dim)
        log_sum = sum_e.log()
        ctx.chapter = weight is None and eps == 0 and not target.is_floating_point()
        if ctx.chapter:  # the chapter's case: nll_loss(log_softmax(x), t), one class per sample
            index, counted = _chapter_targets(target, ignore_index, class_dim)
            log_p_t = (x.gather(class_dim, index) - m) - log_sum  # log_softmax(x) at t
            losses = torch.where(counted, -log_p_t.squeeze(class_dim), 0.0)  # nll_loss of it
            count = counted.sum()
            ctx.save_for_backward(logits, target, weight, m, e, sum_e)
            ctx.options, ctx.targets = (ignore_index, reduction, eps, class_dim), (index, counted, count)
            return _reduce(losses, count, reduction).to(logits.dtype)
        q = target_distribution(target, weight, ignore_index, eps, class_dim, logits.shape[class_dim], dtype)
        # log p = (x - m) - log_sum, so -sum_c q_c log p_c = sum_c q_c (log_sum - (x_c - m)):
        if q.index is None:
            losses = (q.spread * (log_sum - (x - m))).sum(class_dim)
        else:  # the one-hot part reads log p at the targets only
            x_t = x.gather(class_dim, q.index)
            losses = (q.at_target * (log_sum - (x_t - m))).squeeze(class_dim)
            if q.spread is not None:
                losses = losses + (q.spread * (log_sum - (x - m))).sum(class_dim)
            losses = torch.where(q.counted, losses, 0.0)  # 0, not 0 * inf, for an ignored -inf logit
        ctx.save_for_backward(logits, target, weight, m, e, sum_e)
        ctx.options, ctx.target_distribution = (ignore_index, reduction, eps, class_dim), q
        return _reduce(losses, q.count, reduction).to(logits.dtype)

    @staticmethod
    def backward(ctx, g):
        logits, target, weight, m, e, sum_e = ctx.saved_tensors
        ignore_index, reduction, eps, class_dim = ctx.options
        dtype = e.dtype
        x = logits.to(dtype)
        if ctx.chapter:
            return _chapter_backward(ctx, g, logits, x, e, sum_e), None, None, None, None, None
        q = ctx.target_distribution
        if torch.is_grad_enabled():
            # create_graph=True: autograd records this backward to differentiate it again. What the forward
            # computed has no record of the inputs; recomputed from the inputs, which have one, it does (m
            # needs none: see _log_sum_exp_parts).
            _, e, sum_e = _log_sum_exp_parts(x, class_dim)
            q = target_distribution(target, weight, ignore_index, eps, class_dim, x.shape[class_dim], dtype)
        g = g.to(dtype)
        if reduction == 'mean':
            g = g / q.count
        if q.counted is not None:  # ignored samples get no gradient, even where 'mean' divided 0 by 0
            g = torch.where(q.counted, g, 0.0)
        g = g.unsqueeze(class_dim) if g.dim() > 0 else g  # per-sample g of 'none', against the logits

        # g (p sum_c q_c - q), with p = e / sum_e; q = at_target one_hot(t) + spread.
        q_sum = q.at_target if q.index is not None else 0.0
        if q.spread is not None:
            q_sum = q_sum + q.spread.sum(class_dim, keepdim=True)
        grad_x = e * (g * q_sum / sum_e)
        if q.spread is not None:
            grad_x = grad_x - g * q.spread
        if q.index is not None:
            grad_x.scatter_add_(class_dim, q.index, (-g * q.at_target).expand(q.index.shape))

        grad_target = grad_weight = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:  # probability targets only (see cross_entropy)
            log_p = (x - m) - sum_e.log()
            if ctx.needs_input_grad[1]:  # d CE_i / d target_ic = -(1 - eps) w_c log p_ic
                w_c = 1.0 if weight is None else _class_view(weight.to(dtype), x.dim(), class_dim)
                grad_target = (-(1 - eps) * g * w_c * log_p).to(target.dtype)
            if ctx.needs_input_grad[2]:  # d CE_i / d w_c = -((1 - eps) target_ic + eps / C) log p_ic
                n_classes = x.shape[class_dim]
                per_sample = -g * ((1 - eps) * target.to(dtype) + eps / n_classes) * log_p
                other_dims = [d for d in range(x.dim()) if d != class_dim]
                grad_weight = (per_sample.sum(other_dims) if other_dims else per_sample).to(weight.dtype)
        return grad_x.to(logits.dtype), grad_target, grad_weight, None, None, None


def _chapter_targets(target, ignore_index, class_dim):
    """t as an index along the class dimension (size 1 there; ignored samples pointed at class 0), and
    which samples count (t_i != ignore_index)."""
    counted = target != ignore_index
    return torch.where(counted, target.long(), 0).unsqueeze(class_dim), counted


def _chapter_backward(ctx, g, logits, x, e, sum_e):
    """The chapter's gradient, d CE / d x_i = g_i (softmax(x_i) - one_hot(t_i)), with softmax(x) = e / sum_e:
    g e / sum_e, minus g at the target's class (g divided by the count for 'mean', 0 for ignored samples)."""
    _, reduction, _, class_dim = ctx.options
    index, counted, count = ctx.targets
    if torch.is_grad_enabled():  # create_graph=True: recomputed from the inputs, so that it has a record
        _, e, sum_e = _log_sum_exp_parts(x, class_dim)
    g = g.to(e.dtype)
    if reduction == 'mean':
        g = g / count
    g = torch.where(counted, g, 0.0)  # ignored samples get no gradient, even where 'mean' divided 0 by 0
    g = g.unsqueeze(class_dim) if g.dim() > 0 else g
    grad_x = e * (g / sum_e)                                        # g softmax(x)
    grad_x.scatter_add_(class_dim, index, (-g).expand(index.shape))  # - g one_hot(t)
    return grad_x.to(logits.dtype)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction='mean', label_smoothing=0.0):
    """CE(x, t)_i = -log softmax(x_i)_{t_i} = nll_loss(log_softmax(x), t)_i

    The loss for single-label classification: the negative log of the probability softmax gives the true
    class. It is exactly nll_loss(log_softmax(x), t), with the backward pass of the pair derived by hand:
    d CE / d x = softmax(x) - one_hot(t) (divided by N for 'mean'), see _CrossEntropy. The options (class
    weights, ignore_index, label smoothing, class probabilities as targets) change the target distribution
    q_i the loss is measured against, CE_i = -sum_c q_ic log softmax(x_i)_c: see target_distribution.

    Args:
        input: logits (unnormalised scores), (C,) or (N, C) or (N, C, d1, ...).
        target: class indices, () or (N,) or (N, d1, ...), each in [0, C) or equal to ignore_index; or
            class probabilities, a float tensor of input's shape (soft labels, from mixup for instance).
        weight: optional (C,) tensor of class weights.
        ignore_index: a target value whose samples are skipped (loss 0, gradient 0, not counted).
        reduction: 'none' | 'mean' | 'sum'.
        label_smoothing: eps in [0, 1].
    """
    input = _autocast_float32(input)
    check_class_targets(input, target, weight, ignore_index, reduction, label_smoothing, probabilities=True)
    if weight is not None and weight.requires_grad and not target.is_floating_point():
        # 'mean' divides by sum_i w_{t_i}, which torch does not differentiate for class indices either.
        raise RuntimeError("cross_entropy: with class-index targets the class weights cannot be learnt "
                           "(weight.requires_grad is True), as in torch; detach them, or give class probabilities")
    return _CrossEntropy.apply(input, target, weight, ignore_index, reduction, float(label_smoothing))


# ---------------------------------------------------------------------------------------------------------
# Part 2. What real use adds: class weights, ignore_index, label smoothing, class-probability targets,
# spatial targets (N, C, d1, ...), reduction='none', and the checks that turn a bad target into an error
# that names it. The chapter needs none of these options, but every call passes through them.
# ---------------------------------------------------------------------------------------------------------


def check_class_targets(input, target, weight, ignore_index, reduction, label_smoothing=0.0,
                        probabilities=False):
    """Checks the arguments of nll_loss and cross_entropy, for every call, and returns the class dimension.

    Shapes as torch: input (C,) with a 0-d target, or (N, C, d1, ...) with target (N, d1, ...); with
    probabilities=True (cross_entropy) a float target of input's own shape holds class probabilities.
    A bad class index is an error that names it, never a silent clamp: gather with an out-of-range index
    would read another sample's memory on some devices, and a clamped label trains the wrong class. The range
    is checked on the CPU, where reading it is free; on a GPU that read would make the host wait for the
    device at every call, so a bad index is left to the device's own check (CUDA's gather stops with a
    device-side assert, as torch's own losses do).
    """
    if not input.is_floating_point():
        raise ValueError(f"input must be floating point (log-probabilities or logits), got {input.dtype}")
    if input.dim() == 0:
        raise ValueError("input must have a class dimension: shape (C,) or (N, C, d1, ...), got a 0-d tensor")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {REDUCTIONS}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1]")
    class_dim = 0 if input.dim() == 1 else 1
    n_classes = input.shape[class_dim]
    if weight is not None and weight.shape != (n_classes,):
        raise ValueError(f"weight has shape {tuple(weight.shape)}, expected ({n_classes},): one weight per class")
    if probabilities and target.is_floating_point():
        if target.shape != input.shape:
            raise ValueError(f"a float target holds class probabilities and needs input's shape "
                             f"{tuple(input.shape)}, got {tuple(target.shape)}; for class indices use .long()")
        if ignore_index >= 0:
            raise ValueError(f"ignore_index={ignore_index} is for class indices; a target of class "
                             f"probabilities has no class to ignore (as torch)")
        return class_dim
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold class indices (an integer tensor), got {target.dtype}; "
                         f"convert labels with .long()")
    expected = input.shape[:class_dim] + input.shape[class_dim + 1:]
    if target.shape != expected:
        raise ValueError(f"target has shape {tuple(target.shape)} but input of shape {tuple(input.shape)} "
                         f"needs a target of shape {tuple(expected)}: one class index per sample")
    if target.numel() == 0 or target.device.type != 'cpu':
        return class_dim
    lo, hi = (int(v) for v in torch.aminmax(target))
    if lo < 0 or hi >= n_classes:  # the slow search runs only when something may be wrong
        bad = ((target < 0) | (target >= n_classes)) & (target != ignore_index)
        if bad.any():
            where = tuple(int(i) for i in bad.nonzero()[0])
            raise IndexError(f"target {int(target[where])} at index {where} is out of range: class indices "
                             f"must be in [0, {n_classes - 1}] for {n_classes} classes (or equal "
                             f"ignore_index={ignore_index})")
    return class_dim


def class_index_weights(target, weight, ignore_index, dtype):
    """Each sample's class as an index, its weight w_{t_i}, and whether it counts (t_i != ignore_index).

    Returns (index, w_t, counted): index is t as int64 with ignored samples pointed at class 0 (any valid
    class would do: their weight w_t is 0); w_t is 1 for every counted sample without class weights.
    """
    counted = target != ignore_index
    index = torch.where(counted, target.long(), 0)
    w_t = counted.to(dtype) if weight is None else torch.where(counted, weight.to(dtype)[index], 0.0)
    return index, w_t, counted


class TargetDistribution(NamedTuple):
    """cross_entropy's target distribution, weighted: q_ic = at_target_i [c == t_i] + spread_ic.

    index:     t as an index along the class dimension, size 1 there (None for probability targets);
    at_target: the one-hot part's weight, per sample (None for probability targets);
    spread:    the part spread over the classes, broadcastable to the logits (None without smoothing);
    counted:   which samples count (t_i != ignore_index; None for probability targets);
    count:     what 'mean' divides the sum of the losses by.
    """
    index: Optional[torch.Tensor]
    at_target: Optional[torch.Tensor]
    spread: Optional[torch.Tensor]
    counted: Optional[torch.Tensor]
    count: object


def target_distribution(target, weight, ignore_index, eps, class_dim, n_classes, dtype):
    """q_ic, the distribution cross_entropy compares softmax(x_i) with, weighted by the class weights w.

    For class indices t_i, one-hot at t_i; with label smoothing eps (Szegedy et al. 2016, "Rethinking the
    Inception Architecture") mixed with the uniform distribution over the C classes:
        q_ic = (1 - eps) w_{t_i} [c == t_i] + (eps / C) w_c            (q_i = 0 where t_i == ignore_index),
    and 'mean' divides by sum_i w_{t_i} over the counted samples (not by sum q), as torch.
    For class probabilities (a float target of the logits' shape, torch's soft labels):
        q_ic = w_c ((1 - eps) target_ic + eps / C),
    and 'mean' divides by the number of samples. Without weights w = 1; with eps = 0 and no weights q is
    the one-hot target itself, the chapter's case.
    """
    if target.is_floating_point():
        spread = (1 - eps) * target.to(dtype) + eps / n_classes
        if weight is not None:
            spread = spread * _class_view(weight.to(dtype), target.dim(), class_dim)
        return TargetDistribution(None, None, spread, None, target.numel() // n_classes)
    index, w_t, counted = class_index_weights(target, weight, ignore_index, dtype)
    index, w_t = index.unsqueeze(class_dim), w_t.unsqueeze(class_dim)
    spread = None
    if eps > 0:
        w_c = torch.ones(n_classes, dtype=dtype, device=target.device) if weight is None else weight.to(dtype)
        spread = torch.where(counted.unsqueeze(class_dim), _class_view((eps / n_classes) * w_c, w_t.dim(), class_dim),
                             0.0)
    at_target = w_t if eps == 0 else (1 - eps) * w_t
    return TargetDistribution(index, at_target, spread, counted, w_t.sum())


def _class_view(weight, ndim, class_dim):
    """The (C,) class weights reshaped to broadcast along the class dimension of an ndim-d tensor."""
    shape = [1] * ndim
    shape[class_dim] = -1
    return weight.view(shape)


# ---------------------------------------------------------------------------------------------------------
# Part 3. Two classes: sigmoid and binary cross-entropy.
# ---------------------------------------------------------------------------------------------------------


def _neg_abs(x):
    """-|x|, written with where so that at x = 0 its gradient is -1 (the x >= 0 branch), not abs's 0.

    Both users below pick their x >= 0 branch at 0 too, so the subgradients agree and the sum is exact.
    """
    return torch.where(x >= 0, -x, x)


def sigmoid(x):
    """sigmoid(x) = 1 / (1 + exp(-x))

    The two-class softmax: sigmoid(x) = softmax([x, 0])_0. Computed with e = exp(-|x|), which is in (0, 1]
    and so never overflows: 1 / (1 + e) for x >= 0, and e / (1 + e) for x < 0 (multiply above and below
    by exp(x)).
    Gradient: d sigmoid(x) / dx = sigmoid(x) (1 - sigmoid(x)).

    Args:
        x: a floating-point tensor.
    """
    xc = x.to(_compute_dtype(x))
    e = _neg_abs(xc).exp()
    return (torch.where(xc >= 0, torch.ones_like(e), e) / (1 + e)).to(x.dtype)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction='mean', pos_weight=None):
    """BCE(x, t) = -w [p t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]

    The loss for yes/no targets (t in [0, 1]) from logits x, with optional per-element weight w and
    weight p of the positive class (pos_weight; 1 when absent). With log sigmoid(x) = -softplus(-x),
    log(1 - sigmoid(x)) = -x - softplus(-x) and L = 1 + (p - 1) t it becomes
        BCE = w [(1 - t) x + L softplus(-x)],   softplus(-x) = log(1 + exp(-x)) = log1p(exp(-|x|)) + max(-x, 0).
    Never log(sigmoid(x)), which is log(0) = -inf for x = -1e4. The two cases of max(-x, 0) are written out
        x >= 0:  (1 - t) x + L log1p(exp(-|x|))
        x <  0:  -p t x    + L log1p(exp(-|x|))
    so that no two large terms cancel (torch's (1 - t) x + max(-x, 0) loses digits for x = -1e4, t small).
    Gradient: d BCE / dx = w [(1 - t) - L sigmoid(-x)], which is w (sigmoid(x) - t) for p = 1.

    Args:
        input: logits, any shape.
        target: probabilities of the positive class, same shape as input.
        weight: optional tensor broadcast to the loss (a rescaling per element).
        reduction: 'none' | 'mean' | 'sum'.
        pos_weight: optional weight of the positive class, broadcast along the last dimension.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {REDUCTIONS}")
    if target.shape != input.shape:
        raise ValueError(f"target has shape {tuple(target.shape)} but input has shape {tuple(input.shape)}; "
                         f"binary cross-entropy needs one target per logit")
    input = _autocast_float32(input)
    dtype = _compute_dtype(input)
    x, t = input.to(dtype), target.to(dtype)
    p = 1 if pos_weight is None else pos_weight.to(dtype)
    linear_part = torch.where(x >= 0, (1 - t) * x, -p * t * x)
    losses = linear_part + (1 + (p - 1) * t) * _neg_abs(x).exp().log1p()
    if weight is not None:
        losses = losses * weight.to(dtype)
    if reduction == 'none':
        return losses.to(input.dtype)
    return (losses.sum() if reduction == 'sum' else losses.mean()).to(input.dtype)
