"""The losses of classification, from raw tensor ops.

Part 1 reads in the chapter's order, the path a classifier trains on:
    logsumexp -> softmax -> log_softmax -> nll_loss -> cross_entropy, which is nll_loss(log_softmax(x))
Part 2 adds what real use needs and the chapter does not: class weights, ignore_index, label smoothing,
spatial targets (N, C, d1, ...), and the checks that turn a bad target into an error that names it.
Part 3 is the two-class case: sigmoid -> binary_cross_entropy_with_logits.

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
    return m.masked_fill_(m.isinf(), 0.0)


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


def _log_softmax(x, dim):
    """log_softmax's forward, in the compute dtype: s - log sum_j exp(s_j) with s = x - max_j x_j."""
    xc = x.to(_compute_dtype(x))
    s = xc - _stable_shift(xc, dim)
    return s.sub_(s.exp().sum(dim, keepdim=True).log())  # in place: s is this function's own buffer


class _LogSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim):
        y = _log_softmax(x, dim).to(x.dtype)
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


def _reduce(losses, total_weight, reduction):
    """'none': the losses as they are; 'sum': their sum; 'mean': their sum over total_weight."""
    if reduction == 'none':
        return losses
    if reduction == 'sum':
        return losses.sum()
    return losses.sum() / total_weight


def nll_loss(input, target, weight=None, ignore_index=-100, reduction='mean'):
    """nll(logp, t)_i = -logp_{i, t_i}

    The negative log likelihood: pick each sample's log-probability of its true class t_i and negate it.
    `input` must already be log-probabilities (from log_softmax); nll_loss takes no log itself. 'mean'
    averages over the samples, 'sum' adds them, 'none' keeps one loss per sample.
    Gradient: d nll_i / d logp_{i,c} = -[c == t_i] (divided by N for 'mean').
    With class weights each loss is multiplied by w_{t_i}, and samples whose target is ignore_index count
    for nothing: see weighted_nll_loss in Part 2.

    Args:
        input: log-probabilities, (C,) or (N, C) or (N, C, d1, ...).
        target: class indices, () or (N,) or (N, d1, ...), each in [0, C) or equal to ignore_index.
        weight: optional (C,) tensor of class weights.
        ignore_index: a target value whose samples are skipped.
        reduction: 'none' | 'mean' | 'sum'.
    """
    class_dim, may_ignore = check_class_targets(input, target, weight, ignore_index, reduction)
    if weight is None and not may_ignore:
        return _nll(input, target, class_dim, reduction)
    return weighted_nll_loss(input, target, weight, ignore_index, reduction, class_dim, may_ignore)


def _nll(logp, target, class_dim, reduction):
    """nll_loss's work when every sample counts once: -logp_{i, t_i}, reduced."""
    picked = logp.gather(class_dim, target.long().unsqueeze(class_dim)).squeeze(class_dim)
    return _reduce(-picked.to(_compute_dtype(logp)), target.numel(), reduction).to(logp.dtype)


class _CrossEntropy(torch.autograd.Function):
    """cross_entropy(x, t) = nll_loss(log_softmax(x), t) for (N, C) logits, reduced by 'mean' or 'sum': the
    forward passes of the two, and ONE backward pass for the pair, derived by hand. By the chain rule, with
    p = softmax(x_i) (log_softmax's Jacobian is [c == k] - p_k, nll's gradient -[c == t_i]):
        d CE_i / d x_{i,k} = sum_c -[c == t_i] ([c == k] - p_k) = p_k - [k == t_i],
    softmax minus one-hot, divided by N for 'mean'.
    """

    @staticmethod
    def forward(ctx, logits, target, reduction):
        x = logits.to(_compute_dtype(logits))
        index = target.long().unsqueeze(1)
        # log_softmax(x) = s - log sum_c exp(s_c), s = x - max x (log_softmax's forward). nll_loss reads it at
        # the targets only, so only those entries are formed: log p_t = s_t - log sum_c exp(s_c).
        s = x - x.amax(1, keepdim=True)  # (no guard for rows of -inf: their loss is nan either way, as torch's)
        s_t = s.gather(1, index)
        e = s.exp_()  # in place, s is not needed any more: the only (N, C) buffer of the forward pass
        sum_e = e.sum(1, keepdim=True)
        log_p_t = s_t - sum_e.log()
        loss = _reduce(-log_p_t, len(x), reduction)  # nll_loss: -log p_t, averaged or summed
        ctx.save_for_backward(e, sum_e, index)  # softmax(x) = e / sum_e, for the backward pass
        ctx.reduction, ctx.dtype = reduction, logits.dtype
        return loss.to(logits.dtype)

    @staticmethod
    def backward(ctx, g):
        e, sum_e, index = ctx.saved_tensors
        g = g.to(e.dtype)
        if ctx.reduction == 'mean':
            g = g / len(e)
        grad = e * (g / sum_e)  # g softmax(x)
        grad.scatter_add_(1, index, (-g).expand(index.shape))  # - g one_hot(t)
        return grad.to(ctx.dtype), None, None


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction='mean', label_smoothing=0.0):
    """CE(x, t)_i = -log softmax(x_i)_{t_i} = nll_loss(log_softmax(x), t)_i

    The loss for single-label classification: the negative log of the probability softmax gives the true
    class. For (N, C) logits without options it is exactly nll_loss(log_softmax(x), t), with the backward
    pass of the pair derived by hand: d CE / d x = softmax(x) - one_hot(t) (divided by N for 'mean'), see
    _CrossEntropy. Class weights, ignore_index, label smoothing, spatial targets and reduction='none' go
    through cross_entropy_with_options (Part 2), the same loss with those options.

    Args:
        input: logits (unnormalised scores), (C,) or (N, C) or (N, C, d1, ...).
        target: class indices, () or (N,) or (N, d1, ...), each in [0, C) or equal to ignore_index.
        weight: optional (C,) tensor of class weights.
        ignore_index: a target value whose samples are skipped (loss 0, gradient 0, not counted).
        reduction: 'none' | 'mean' | 'sum'.
        label_smoothing: eps in [0, 1].
    """
    _, may_ignore = check_class_targets(input, target, weight, ignore_index, reduction, label_smoothing)
    if input.dim() == 2 and weight is None and label_smoothing == 0 and reduction != 'none' and not may_ignore:
        return _CrossEntropy.apply(input, target, reduction)
    return cross_entropy_with_options(input, target, weight, ignore_index, reduction, label_smoothing, may_ignore)


# ---------------------------------------------------------------------------------------------------------
# Part 2. What real use adds: class weights, ignore_index, label smoothing, spatial targets (N, C, d1, ...),
# reduction='none', and the checks that turn a bad target into an error that names it. The chapter needs none
# of these options; Part 1 calls only check_class_targets from here.
# ---------------------------------------------------------------------------------------------------------


def check_class_targets(input, target, weight, ignore_index, reduction, label_smoothing=0.0):
    """Checks the arguments of nll_loss and cross_entropy, for every call.

    Shapes as torch: input (C,) with a 0-d target, or (N, C, d1, ...) with target (N, d1, ...).
    A bad target is an error that names it, never a silent clamp: gather with an out-of-range index
    would read another sample's memory on some devices, and a clamped label trains the wrong class.

    Returns the class dimension, and whether any target may equal ignore_index (False lets the common
    case, every sample counted, skip the masking).
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
    if target.numel() == 0:
        return class_dim, False
    lo, hi = (int(v) for v in torch.aminmax(target))
    if lo < 0 or hi >= n_classes:  # the slow search runs only when something may be wrong
        bad = ((target < 0) | (target >= n_classes)) & (target != ignore_index)
        if bad.any():
            where = tuple(int(i) for i in bad.nonzero()[0])
            raise IndexError(f"target {int(target[where])} at index {where} is out of range: class indices "
                             f"must be in [0, {n_classes - 1}] for {n_classes} classes (or equal "
                             f"ignore_index={ignore_index})")
    return class_dim, lo <= ignore_index <= hi


def _target_weights(target, weight, ignore_index, n_classes, dtype, may_ignore=True):
    """w_{t_i}, the weight of each sample's class (1 without class weights), and 0 where ignored.

    Returns (w_t, keep, safe_target): keep says which samples count (target != ignore_index), and
    safe_target is the target clamped into [0, C) so that it can index (the check above left only ignored
    targets outside that range). When no sample is ignored, keep is None; when moreover there are no class
    weights, w_t is None too: all ones, so the common case skips their work.
    """
    if not may_ignore:
        return (None if weight is None else weight.to(dtype)[target]), None, target.long()
    keep = target != ignore_index
    safe_target = target.clamp(0, n_classes - 1).long()
    w_t = keep.to(dtype) if weight is None else weight.to(dtype)[safe_target] * keep
    return w_t, keep, safe_target


def _weigh_and_mask(losses, w_t, keep):
    """w_t * losses, and exactly 0 for ignored samples (where, not multiply: 0 * inf would be nan)."""
    if w_t is not None:
        losses = w_t * losses
    return losses if keep is None else torch.where(keep, losses, 0.0)


def weighted_nll_loss(input, target, weight, ignore_index, reduction, class_dim, may_ignore=True):
    """nll(logp, t)_i = -w_{t_i} logp_{i, t_i}, and 0 where t_i == ignore_index (that sample not counted).

    nll_loss with class weights w or ignored samples. 'mean' divides the sum by the total weight
    sum_i w_{t_i} of the counted samples (a weighted mean, as torch does; with no class weights that is their
    number, and with none counted it is 0/0 = nan).
    Gradient: d nll_i / d logp_{i,c} = -w_{t_i} [c == t_i] (divided by sum_i w_{t_i} for 'mean').
    Arguments as nll_loss (checked by the caller); may_ignore: whether any target may be ignore_index.
    """
    dtype = _compute_dtype(input)
    w_t, keep, safe_target = _target_weights(target, weight, ignore_index, input.shape[class_dim], dtype,
                                             may_ignore)
    picked = input.gather(class_dim, safe_target.unsqueeze(class_dim)).squeeze(class_dim).to(dtype)
    losses = _weigh_and_mask(-picked, w_t, keep)
    return _reduce(losses, w_t.sum(), reduction).to(input.dtype)


def cross_entropy_with_options(input, target, weight=None, ignore_index=-100, reduction='mean',
                               label_smoothing=0.0, may_ignore=True):
    """CE(x, t)_i = -sum_c q_{i,c} log softmax(x_i)_c

    cross_entropy with every option. The target distribution q of sample i is one-hot at its class t_i,
    weighted by w_{t_i}; with label smoothing eps it is mixed with the uniform distribution over the C
    classes (Szegedy et al. 2016, "Rethinking the Inception Architecture"), each class c weighted by its w_c:
        q_{i,c} = (1 - eps) w_{t_i} [c == t_i] + (eps / C) w_c        (q_i = 0 where t_i == ignore_index)
    so CE_i = (1 - eps) nll_i + (eps / C) sum_c -w_c log softmax(x_i)_c, exactly torch's semantics.
    'mean' divides the sum over samples by sum_i w_{t_i} over the counted samples (not by sum q), as torch.

    Gradient (hand-derived). With p = softmax(x_i), d/dx_k of -sum_c q_c log p_c is
        sum_c q_c (p_k - [c == k]) = p_k sum_c q_c - q_k,
    which for a plain one-hot q (sum_c q_c = 1) is Part 1's p - one_hot(t). The backward pass builds
    exactly that, scaled by the upstream gradient (and 1 / sum_i w_{t_i} for 'mean').
    Arguments as cross_entropy (checked by the caller); may_ignore: whether any target may be ignore_index.
    """
    return _CrossEntropyWithOptions.apply(input, target, weight, ignore_index, reduction, float(label_smoothing),
                                          may_ignore)


class _CrossEntropyWithOptions(torch.autograd.Function):
    """cross_entropy with every option, forward and hand-derived backward; the math is in
    cross_entropy_with_options's docstring."""

    @staticmethod
    def forward(ctx, logits, target, weight, ignore_index, reduction, eps, may_ignore):
        dtype = _compute_dtype(logits)
        class_dim = 0 if logits.dim() == 1 else 1
        n_classes = logits.shape[class_dim]
        w_t, keep, safe_target = _target_weights(target, weight, ignore_index, n_classes, dtype, may_ignore)
        index = safe_target.unsqueeze(class_dim)
        w_c = None if weight is None else _class_view(weight.to(dtype), logits.dim(), class_dim)
        w_total = n_classes if weight is None else weight.to(dtype).sum()  # sum_c w_c

        # log softmax(x) = s - log sum_c exp(s_c) = s - log_z with s = x - max x. No guard for rows of
        # -inf (as _stable_shift has): their loss is nan either way, as in torch. (Inside forward autograd
        # records nothing, so nothing needs detaching either.)
        x = logits.to(dtype)
        s = x - x.amax(class_dim, keepdim=True)
        s_t = s.gather(class_dim, index).squeeze(class_dim)
        if eps > 0:
            s_weighted_sum = s.sum(class_dim) if w_c is None else (s * w_c).sum(class_dim)
        # exp in place: the forward allocates one buffer of the logits' size, as torch's fused kernel does.
        e = s.exp_()
        sum_e = e.sum(class_dim, keepdim=True)
        log_z = sum_e.log().squeeze(class_dim)

        losses = _weigh_and_mask(log_z - s_t, w_t, keep)                     # -w_t logp_t
        if eps > 0:
            smooth = _weigh_and_mask(log_z * w_total - s_weighted_sum, None, keep)  # -sum_c w_c logp_c
            losses = (1 - eps) * losses + (eps / n_classes) * smooth
        total_weight = target.numel() if w_t is None else w_t.sum()
        loss = _reduce(losses, total_weight, reduction)

        ctx.save_for_backward(e, sum_e, index, w_t, keep, w_c)
        ctx.config = (class_dim, n_classes, w_total, total_weight, reduction, eps, logits.dtype)
        return loss.to(logits.dtype)

    @staticmethod
    def backward(ctx, g):
        e, sum_e, index, w_t, keep, w_c = ctx.saved_tensors
        class_dim, n_classes, w_total, total_weight, reduction, eps, dtype = ctx.config
        g = g.to(e.dtype)
        if reduction == 'mean':
            g = g / total_weight
        if keep is not None:  # ignored samples get no gradient, even where 'mean' divided 0 by 0 (as torch)
            g = torch.where(keep, g, 0.0)
        # grad_i = g_i (p_i sum_c q_ic - q_i) with p = e / sum_e. q's one-hot part is (1 - eps) w_t at the
        # target class, its uniform part (eps / C) w_c at every class c.
        g_target = g if w_t is None else g * w_t
        g_q_sum = g_target
        if eps > 0:
            g_target = (1 - eps) * g_target
            g_q_sum = g_target + (eps / n_classes) * w_total * g
        grad = e * (_along(g_q_sum, class_dim) / sum_e)
        grad.scatter_add_(class_dim, index, _along(-g_target, class_dim).expand(index.shape))
        if eps > 0:
            uniform_share = (eps / n_classes) * _along(g, class_dim)
            grad.sub_(uniform_share if w_c is None else uniform_share * w_c)
        return grad.to(dtype), None, None, None, None, None, None


def _along(per_sample, class_dim):
    """A per-sample tensor with a size-1 class dimension, to broadcast against the logits; 0-d stays 0-d."""
    return per_sample.unsqueeze(class_dim) if per_sample.dim() > 0 else per_sample


def _class_view(weight, ndim, class_dim):
    """The (C,) class weights reshaped to broadcast along the class dimension of an ndim-d input."""
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
