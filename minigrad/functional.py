"""The losses of classification, from raw tensor ops.

Read top to bottom: logsumexp -> softmax -> log_softmax -> nll_loss -> cross_entropy, then the two-class
case, sigmoid -> binary_cross_entropy_with_logits.

Every function has the name, signature and meaning of its torch.nn.functional twin, and is tested against
it. None of them calls torch.nn.functional. softmax, log_softmax and cross_entropy carry a backward pass
derived by hand (a torch.autograd.Function); the others are differentiated by autograd through the raw ops.

Half-precision inputs (float16, bfloat16) are computed in float32 and the result cast back, the way
torch's own kernels accumulate: a sum of 1000 exponentials in float16 would lose most of its digits.
"""
import torch

REDUCTIONS = ('none', 'mean', 'sum')


def _compute_dtype(x):
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _stable_shift(x, dim):
    """The max m_j along dim, to subtract before exp: exp(x - m) <= 1 never overflows.

    A row whose max is infinite is shifted by 0 instead, since -inf - (-inf) is nan. The shift is
    detached: the result of every caller is exactly independent of m, so its gradient through m is 0.
    """
    m = x.detach().amax(dim, keepdim=True)
    return torch.where(m.isinf(), torch.zeros_like(m), m)


def logsumexp(x, dim=-1, keepdim=False):
    """logsumexp(x) = log sum_j exp(x_j)

    Computed as m + log sum_j exp(x_j - m) with m = max_j x_j: every exponent is <= 0, so no exp
    overflows, and the largest term is exp(0) = 1, so the log never sees 0 unless every x_j is -inf
    (then the result is -inf, as it should be). Logits of +-1e4 are fine.
    Gradient: d logsumexp(x) / d x_k = exp(x_k) / sum_j exp(x_j) = softmax(x)_k.

    Args:
        x: a floating-point tensor.
        dim: the dimension (or tuple of dimensions) to reduce.
        keepdim: keep the reduced dimension with size 1.
    """
    xc = x.to(_compute_dtype(x))
    m = _stable_shift(xc, dim)
    out = m + (xc - m).exp().sum(dim, keepdim=True).log()
    out = out if keepdim else out.squeeze(dim)
    return out.to(x.dtype)


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim):
        xc = x.to(_compute_dtype(x))
        e = (xc - _stable_shift(xc, dim)).exp_()
        y = e.div_(e.sum(dim, keepdim=True)).to(x.dtype)
        ctx.dim = dim
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        yc, gc = y.to(_compute_dtype(y)), g.to(_compute_dtype(y))
        grad_x = yc * (gc - (gc * yc).sum(ctx.dim, keepdim=True))
        return grad_x.to(y.dtype), None


def softmax(x, dim=-1):
    """softmax(x)_i = exp(x_i) / sum_j exp(x_j)

    Turns activations into probabilities: each is in [0, 1] and they sum to 1 along dim. Computed as
    exp(x_i - m) / sum_j exp(x_j - m) with m = max_j x_j (the same value, without overflow). A -inf
    activation gets probability 0; a row that is all -inf has no distribution and gives nan, as in torch.

    Gradient (hand-derived, the Jacobian is diag(y) - y y^T with y = softmax(x)):
        d y_i / d x_k = y_i ([i == k] - y_k), hence grad_x = y * (g - sum_i g_i y_i).

    Args:
        x: a floating-point tensor of activations.
        dim: the dimension along which the probabilities sum to 1.
    """
    return _Softmax.apply(x, dim)


def _log_softmax_forward(x, dim):
    s = x - _stable_shift(x, dim)
    return s - s.exp().sum(dim, keepdim=True).log()


class _LogSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim):
        y = _log_softmax_forward(x.to(_compute_dtype(x)), dim).to(x.dtype)
        ctx.dim = dim
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        yc, gc = y.to(_compute_dtype(y)), g.to(_compute_dtype(y))
        grad_x = gc - yc.exp() * gc.sum(ctx.dim, keepdim=True)
        return grad_x.to(y.dtype), None


def log_softmax(x, dim=-1):
    """log softmax(x)_i = x_i - log sum_j exp(x_j)

    The log of the probabilities, computed without ever forming them: (x - m) - log sum_j exp(x_j - m)
    with m = max_j x_j. log(softmax(x)) instead would give -inf (and then nan gradients) wherever a
    probability underflows to 0, e.g. for logits 1e4 apart.

    Gradient (hand-derived): d/dx_k log softmax(x)_i = [i == k] - softmax(x)_k, hence
        grad_x = g - softmax(x) * sum_i g_i.

    Args:
        x: a floating-point tensor of activations.
        dim: the dimension along which the probabilities sum to 1.
    """
    return _LogSoftmax.apply(x, dim)


def _class_dim_of(input, target, weight, ignore_index, reduction, label_smoothing=0.0):
    """Checks the arguments shared by nll_loss and cross_entropy; returns the class dimension.

    Shapes as torch: input (C,) with a 0-d target, or (N, C, d1, ...) with target (N, d1, ...).
    A bad target is an error that names it, never a silent clamp: gather with an out-of-range index
    would read another sample's memory on some devices, and a clamped label trains the wrong class.
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
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold class indices (an integer tensor), got {target.dtype}; "
                         f"convert labels with .long()")
    expected = input.shape[:class_dim] + input.shape[class_dim + 1:]
    if target.shape != expected:
        raise ValueError(f"target has shape {tuple(target.shape)} but input of shape {tuple(input.shape)} "
                         f"needs a target of shape {tuple(expected)}: one class index per sample")
    if weight is not None and weight.shape != (n_classes,):
        raise ValueError(f"weight has shape {tuple(weight.shape)}, expected ({n_classes},): one weight per class")
    if target.numel() > 0:
        lo, hi = torch.aminmax(target)
        if lo.item() < 0 or hi.item() >= n_classes:  # the slow path runs only when something may be wrong
            bad = ((target < 0) | (target >= n_classes)) & (target != ignore_index)
            if bad.any():
                where = tuple(int(i) for i in bad.nonzero()[0])
                value = int(target[where])
                raise IndexError(f"target {value} at index {where} is out of range: class indices must be in "
                                 f"[0, {n_classes - 1}] for {n_classes} classes (or equal ignore_index="
                                 f"{ignore_index})")
    return class_dim


def _target_weights(target, weight, ignore_index, dtype):
    """w_{t_i}, the weight of each sample's class (1 without class weights), and 0 where ignored.

    Also returns which samples count (target != ignore_index) and the targets with ignored entries
    replaced by 0, so that they can index.
    """
    keep = target != ignore_index
    safe_target = torch.where(keep, target, torch.zeros_like(target)).long()
    if weight is None:
        return keep.to(dtype), keep, safe_target
    return weight.to(dtype)[safe_target] * keep, keep, safe_target


def _reduce(losses, sample_weights, reduction):
    if reduction == 'none':
        return losses
    if reduction == 'sum':
        return losses.sum()
    return losses.sum() / sample_weights.sum()


def nll_loss(input, target, weight=None, ignore_index=-100, reduction='mean'):
    """nll(logp, t)_i = -w_{t_i} logp_{i, t_i}

    The negative log likelihood: pick each sample's log-probability of its true class t_i and negate it.
    `input` must already be log-probabilities (from log_softmax); nll_loss takes no log itself.
    Samples whose target equals ignore_index contribute 0 and do not count.

    Reductions: 'none' keeps one loss per sample; 'sum' adds them; 'mean' divides the sum by the total
    weight sum_i w_{t_i} of the counted samples (a weighted mean, as torch does; with no class weights that
    is their number, and with none counted it is 0/0 = nan).
    Gradient: d nll_i / d logp_{i,c} = -w_{t_i} [c == t_i] (divided by sum_i w_{t_i} for 'mean').

    Args:
        input: log-probabilities, (C,) or (N, C) or (N, C, d1, ...).
        target: class indices, () or (N,) or (N, d1, ...), each in [0, C) or equal to ignore_index.
        weight: optional (C,) tensor of class weights.
        ignore_index: a target value whose samples are skipped.
        reduction: 'none' | 'mean' | 'sum'.
    """
    class_dim = _class_dim_of(input, target, weight, ignore_index, reduction)
    w, keep, safe_target = _target_weights(target, weight, ignore_index, input.dtype)
    picked = input.gather(class_dim, safe_target.unsqueeze(class_dim)).squeeze(class_dim)
    # where, not multiply: an ignored sample's -inf log-probability times 0 would be nan.
    losses = torch.where(keep, -w * picked, torch.zeros_like(picked))
    return _reduce(losses, w, reduction)


class _CrossEntropy(torch.autograd.Function):
    """Forward and hand-derived backward of cross_entropy; the math is in its docstring."""

    @staticmethod
    def forward(ctx, logits, target, weight, ignore_index, reduction, label_smoothing):
        dtype = _compute_dtype(logits)
        class_dim = 0 if logits.dim() == 1 else 1
        n_classes = logits.shape[class_dim]
        w_t, keep, safe_target = _target_weights(target, weight, ignore_index, dtype)
        w_c = None if weight is None else _class_view(weight.to(dtype), logits.dim(), class_dim)

        # s = x - m, and log softmax(x) = s - log sum exp(s). s is overwritten by exp(s) below, so that
        # the forward allocates one tensor of the logits' size, as torch's fused kernel does.
        x = logits.to(dtype)
        s = x - _stable_shift(x, class_dim)
        s_t = s.gather(class_dim, safe_target.unsqueeze(class_dim)).squeeze(class_dim)
        s_weighted_sum = None
        if label_smoothing > 0:
            s_weighted_sum = (s.sum(class_dim) if w_c is None else (s * w_c).sum(class_dim))
        e = s.exp_()
        sum_e = e.sum(class_dim, keepdim=True)
        log_z = sum_e.log().squeeze(class_dim)

        zero = torch.zeros_like(log_z)
        losses = torch.where(keep, -w_t * (s_t - log_z), zero)              # nll_i = -w_t logp_t
        if label_smoothing > 0:
            w_total = n_classes if weight is None else weight.to(dtype).sum()
            smooth = torch.where(keep, log_z * w_total - s_weighted_sum, zero)  # -sum_c w_c logp_c
            losses = (1 - label_smoothing) * losses + (label_smoothing / n_classes) * smooth
        loss = _reduce(losses, w_t, reduction)

        ctx.save_for_backward(e, sum_e, safe_target, w_t, keep, w_c)
        ctx.config = (class_dim, n_classes, reduction, label_smoothing, logits.dtype)
        return loss.to(logits.dtype)

    @staticmethod
    def backward(ctx, g):
        e, sum_e, safe_target, w_t, keep, w_c = ctx.saved_tensors
        class_dim, n_classes, reduction, eps, dtype = ctx.config
        g = g.to(e.dtype)
        if reduction == 'mean':
            g = g / w_t.sum()
        # Ignored samples get no gradient, even when 'mean' divided by a total weight of 0 (as torch).
        g = torch.where(keep, g, torch.zeros_like(g))
        # grad_i = g_i (p_i sum_c q_ic - q_i), built in the buffer of p = e / sum_e.
        # One-hot part of q: (1 - eps) w_t at the target class.
        q_sum = (1 - eps) * w_t
        if eps > 0:
            q_sum = q_sum + (eps / n_classes) * (n_classes if w_c is None else w_c.sum())
        grad = e / sum_e * (g * q_sum).unsqueeze(class_dim)
        grad.scatter_add_(class_dim, safe_target.unsqueeze(class_dim), (-(1 - eps) * g * w_t).unsqueeze(class_dim))
        if eps > 0:  # uniform part of q: (eps / C) w_c at every class
            smooth = (eps / n_classes) * g.unsqueeze(class_dim)
            grad.sub_(smooth if w_c is None else smooth * w_c)
        return grad.to(dtype), None, None, None, None, None


def _class_view(weight, ndim, class_dim):
    """The (C,) class weights reshaped to broadcast along the class dimension of an ndim-d input."""
    shape = [1] * ndim
    shape[class_dim] = -1
    return weight.view(shape)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction='mean', label_smoothing=0.0):
    """CE(x, t)_i = -sum_c q_{i,c} log softmax(x_i)_c

    The loss for single-label classification: log_softmax then nll_loss, fused. The target distribution
    q of sample i is one-hot at its class t_i, weighted by w_{t_i}; with label smoothing eps it is mixed
    with the uniform distribution over the C classes (Szegedy et al. 2016, "Rethinking the Inception
    Architecture"), each class c weighted by its w_c:
        q_{i,c} = (1 - eps) w_{t_i} [c == t_i] + (eps / C) w_c        (q_i = 0 where t_i == ignore_index)
    so CE_i = (1 - eps) nll_i + (eps / C) sum_c -w_c log softmax(x_i)_c, exactly torch's semantics.
    'mean' divides the sum over samples by sum_i w_{t_i} over the counted samples (not by sum q), as torch.

    Gradient (hand-derived). With p = softmax(x_i), d/dx_k of -sum_c q_c log p_c is
        sum_c q_c (p_k - [c == k]) = p_k sum_c q_c - q_k,
    which for a plain one-hot q (sum_c q_c = 1) is the famous p - one_hot(t). The backward pass builds
    exactly that, scaled by the upstream gradient (and 1 / sum_i w_{t_i} for 'mean').

    Args:
        input: logits (unnormalised scores), (C,) or (N, C) or (N, C, d1, ...).
        target: class indices, () or (N,) or (N, d1, ...), each in [0, C) or equal to ignore_index.
        weight: optional (C,) tensor of class weights.
        ignore_index: a target value whose samples are skipped (loss 0, gradient 0, not counted).
        reduction: 'none' | 'mean' | 'sum'.
        label_smoothing: eps in [0, 1].
    """
    _class_dim_of(input, target, weight, ignore_index, reduction, label_smoothing)
    return _CrossEntropy.apply(input, target, weight, ignore_index, reduction, float(label_smoothing))


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
    weight p of the positive class (pos_weight; 1 when absent). Using log sigmoid(x) = -softplus(-x) and
    log(1 - sigmoid(x)) = -x - softplus(-x), it becomes
        BCE = w [(1 - t) x + (1 + (p - 1) t) softplus(-x)],   softplus(-x) = log(1 + exp(-x)),
    and softplus(-x) = log(1 + exp(-|x|)) + max(-x, 0) never overflows, even for |x| = 1e4, where
    log(sigmoid(x)) would give log(0) = -inf.
    Gradient: d BCE / dx = w [(1 - t) - (1 + (p - 1) t) sigmoid(-x)], which is w (sigmoid(x) - t) for p = 1.

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
    dtype = _compute_dtype(input)
    x, t = input.to(dtype), target.to(dtype)
    softplus_neg_x = (1 + _neg_abs(x).exp()).log() + torch.where(x >= 0, torch.zeros_like(x), -x)
    positive_factor = 1 if pos_weight is None else 1 + (pos_weight.to(dtype) - 1) * t
    losses = (1 - t) * x + positive_factor * softplus_neg_x
    if weight is not None:
        losses = losses * weight.to(dtype)
    if reduction == 'none':
        return losses.to(input.dtype)
    return (losses.sum() if reduction == 'sum' else losses.mean()).to(input.dtype)
