"""minigrad.functional against torch.nn.functional: values and gradients, every dtype, extreme inputs."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from minigrad import functional as M

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
TOLERANCE = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=4e-2, atol=4e-2),
}
SCALES = [1e-3, 1.0, 10.0, 1e4]  # 1e4: logits far enough apart that exp(x) overflows without the max shift


@st.composite
def logit_tensors(draw, min_dims=1, max_dims=4, allow_neg_inf=True):
    """A float64 tensor of activations: random shape, scale, and optionally some -inf entries."""
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=min_dims, max_size=max_dims)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * draw(st.sampled_from(SCALES))
    if allow_neg_inf and draw(st.booleans()):
        x[torch.rand(shape, generator=gen) < 0.3] = -float('inf')
    return x


def values_and_grads(fn, x, upstream_seed=0):
    """fn(x) and d(sum of fn(x) * g)/dx for a random upstream gradient g."""
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(upstream_seed)).to(y.dtype)
    (grad,) = torch.autograd.grad(y, x, g, allow_unused=True)
    return y.detach(), grad


def like(options, t):
    """The tensor options (weights, float targets) in the dtype of the input t.

    A test first rounds its options to the dtype under test, like its input; the wider reference then
    computes on those same rounded values.
    """
    return {k: v.to(t.dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
            for k, v in options.items()}


def assert_same_as_torch(ours, theirs, x):
    """ours(x) and its gradient equal theirs(x), within the dtype's tolerance.

    The reference is torch computing in a wider dtype on the same (already rounded) inputs, cast back:
    float64 for float32 inputs, float32 for float16/bfloat16. That is the exact answer for the inputs
    given, which torch's own narrow kernels do not always reach: the float32 gradient of torch.logsumexp
    is off by 4e-5 for logits of 1e4, and its float16 cross_entropy with label smoothing overflows 65504.
    """
    y_ours, g_ours = values_and_grads(ours, x)
    wide = {torch.float64: torch.float64, torch.float32: torch.float64}.get(x.dtype, torch.float32)
    y_theirs, g_theirs = values_and_grads(theirs, x.to(wide))
    y_theirs, g_theirs = y_theirs.to(x.dtype), g_theirs.to(x.dtype)
    tolerance = TOLERANCE[x.dtype]
    assert y_ours.dtype == x.dtype and y_ours.shape == y_theirs.shape
    torch.testing.assert_close(y_ours, y_theirs, equal_nan=True, **tolerance)
    torch.testing.assert_close(g_ours, g_theirs, equal_nan=True, **tolerance)


# --- softmax, log_softmax, logsumexp ---------------------------------------------------------------------

@pytest.mark.parametrize('dtype', DTYPES)
@given(x=logit_tensors(), data=st.data())
def test_softmax_family_matches_torch(dtype, x, data):
    dim = data.draw(st.integers(-x.dim(), x.dim() - 1), label='dim')
    x = x.to(dtype)
    # A -inf row has no distribution: both give nan values, and nan gradients only through that row.
    assert_same_as_torch(lambda t: M.softmax(t, dim), lambda t: F.softmax(t, dim), x)
    assert_same_as_torch(lambda t: M.log_softmax(t, dim), lambda t: F.log_softmax(t, dim), x)
    keepdim = data.draw(st.booleans(), label='keepdim')
    assert_same_as_torch(lambda t: M.logsumexp(t, dim, keepdim), lambda t: torch.logsumexp(t, dim, keepdim), x)


def test_softmax_extreme_logits_are_exact_and_finite():
    x = torch.tensor([[1e4, -1e4, 0.0], [-float('inf'), 0.0, 0.0], [3.0, 3.0, 3.0]])
    assert torch.equal(M.softmax(x, 1), torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]]))
    assert torch.equal(M.log_softmax(x, 1)[0], torch.tensor([0.0, -2e4, -1e4]))
    assert torch.equal(M.logsumexp(x, 1)[0], torch.tensor(1e4))
    assert M.logsumexp(torch.full((3,), -float('inf')), 0) == -float('inf')


def test_softmax_sums_to_one_and_is_shift_invariant():
    x = torch.randn(5, 37, dtype=torch.float64)
    torch.testing.assert_close(M.softmax(x, 1).sum(1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(M.softmax(x + 1000, 1), M.softmax(x, 1))


@pytest.mark.parametrize('fn', [M.softmax, M.log_softmax], ids=['softmax', 'log_softmax'])
@pytest.mark.parametrize('dim', [0, 1, -1])
def test_hand_written_backward_passes_gradcheck(fn, dim):
    x = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fn(t, dim), (x,))
    assert torch.autograd.gradgradcheck(lambda t: fn(t, dim), (x,))


# --- nll_loss and cross_entropy ---------------------------------------------------------------------------

@st.composite
def classification_problems(draw, probabilities=False):
    """(logits, target, options): shapes (C,), (N, C) or (N, C, d1, ...) with up to 6 classes, or (N, 1000)
    as ImageNet's head gives; int64 or uint8 class indices, with weights and ignored samples; with
    probabilities=True sometimes a float target of class probabilities (soft labels) instead."""
    if draw(st.booleans(), label='1000 classes'):
        gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
        x = torch.randn(draw(st.integers(1, 4)), 1000, generator=gen, dtype=torch.float64) * draw(st.sampled_from(SCALES))
    else:
        x = draw(logit_tensors(min_dims=1, max_dims=4, allow_neg_inf=False))
    class_dim = 0 if x.dim() == 1 else 1
    n_classes = x.shape[class_dim]
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    weight = torch.rand(n_classes, generator=gen, dtype=torch.float64) + 0.1 if draw(st.booleans()) else None
    reduction = draw(st.sampled_from(M.REDUCTIONS), label='reduction')
    if probabilities and draw(st.booleans(), label='probability target'):
        target = torch.rand(x.shape, generator=gen, dtype=torch.float64)
        target = target / target.sum(class_dim, keepdim=True)
        return x, target, dict(weight=weight, reduction=reduction)
    target_shape = x.shape[:class_dim] + x.shape[class_dim + 1:]
    target = torch.randint(0, n_classes, target_shape, generator=gen)
    uint8 = n_classes <= 256 and draw(st.booleans(), label='uint8 target')
    ignore_index = draw(st.sampled_from([-100, 0, n_classes - 1]), label='ignore_index')
    if draw(st.booleans()) and target.dim() > 0 and not (uint8 and ignore_index < 0):
        target[torch.rand(target_shape, generator=gen) < 0.3] = ignore_index
    return x, target.to(torch.uint8) if uint8 else target, dict(weight=weight, ignore_index=ignore_index,
                                                                  reduction=reduction)


@pytest.mark.parametrize('dtype', DTYPES)
@given(problem=classification_problems())
def test_nll_loss_matches_torch(dtype, problem):
    x, target, options = problem
    # nll_loss takes log-probabilities: all <= 0, so its sums never cancel (raw logits of +-1e4 would, and
    # then float32 rounding, not the code, decides the result).
    x = torch.log_softmax(x, 0 if x.dim() == 1 else 1).to(dtype)
    options = like(options, x)
    # torch's spatial kernel takes no uint8 targets: it gets the same values as int64.
    assert_same_as_torch(lambda t: M.nll_loss(t, target, **like(options, t)),
                         lambda t: F.nll_loss(t, target.long(), **like(options, t)), x)


@pytest.mark.parametrize('dtype', DTYPES)
@given(problem=classification_problems(probabilities=True), label_smoothing=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_cross_entropy_matches_torch(dtype, problem, label_smoothing):
    x, target, options = problem
    x = x.to(dtype)
    options = like(options | dict(target=target), x) | dict(label_smoothing=label_smoothing)
    # Probabilities are rounded to x's dtype like the weights; torch's spatial kernel takes no uint8 targets.
    target = options.pop('target')
    torch_target = target if target.is_floating_point() else target.long()
    assert_same_as_torch(lambda t: M.cross_entropy(t, **like(dict(target=target) | options, t)),
                         lambda t: F.cross_entropy(t, **like(dict(target=torch_target) | options, t)), x)


@pytest.mark.parametrize('reduction', M.REDUCTIONS)
@pytest.mark.parametrize('label_smoothing', [0.0, 0.2])
@pytest.mark.parametrize('weighted', [False, True])
@pytest.mark.parametrize('target_kind', ['indices', 'probabilities'])
@pytest.mark.parametrize('shape', [(7,), (6, 7), (3, 7, 2, 2)])
def test_cross_entropy_gradcheck_and_gradgradcheck(reduction, label_smoothing, weighted, target_kind, shape):
    """The hand-written backward, differentiated by finite differences once (gradcheck) and twice
    (gradgradcheck: the backward is itself differentiable), also with respect to probability targets."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    class_dim = 0 if len(shape) == 1 else 1
    weight = torch.rand(7, generator=gen, dtype=torch.float64) + 0.1 if weighted else None
    options = dict(weight=weight, reduction=reduction, label_smoothing=label_smoothing)
    if target_kind == 'probabilities':
        target = torch.rand(shape, generator=gen, dtype=torch.float64, requires_grad=True)
        inputs, loss = (x, target), lambda t, q: M.cross_entropy(t, q, **options)
    else:
        target = torch.randint(0, 7, shape[:class_dim] + shape[class_dim + 1:], generator=gen)
        if target.dim() > 0:
            target.view(-1)[0] = -100
        inputs, loss = (x,), lambda t: M.cross_entropy(t, target, **options)
    assert torch.autograd.gradcheck(loss, inputs)
    assert torch.autograd.gradgradcheck(loss, inputs)


def test_second_derivative_of_cross_entropy_equals_torchs():
    """The issue's example: a gradient of the gradient, once silently wrong."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    target, w = torch.tensor([2, 2]), torch.randn(2, 3, generator=gen, dtype=torch.float64)

    def second_derivative(loss):
        (g,) = torch.autograd.grad(loss(x, target) ** 2, x, create_graph=True)
        return torch.autograd.grad((g * w).sum(), x)[0]
    torch.testing.assert_close(second_derivative(M.cross_entropy), second_derivative(F.cross_entropy))


def test_empty_reduced_dimension_gives_what_torch_gives():
    assert M.softmax(torch.empty(5, 0, 0), -1).shape == (5, 0, 0)
    assert M.log_softmax(torch.empty(5, 0, 0), -1).shape == (5, 0, 0)
    assert torch.equal(M.logsumexp(torch.empty(2, 0), 1), torch.logsumexp(torch.empty(2, 0), 1))  # -inf, -inf
    assert M.logsumexp(torch.empty(0, 3), 1).shape == (0,)


@pytest.mark.parametrize('fn, theirs', [(M.softmax, F.softmax), (M.log_softmax, F.log_softmax)])
def test_softmax_dtype_casts_first_as_torch(fn, theirs):
    x = torch.randn(4, 5).half()
    assert fn(x, 1, dtype=torch.float64).dtype == torch.float64
    torch.testing.assert_close(fn(x, 1, dtype=torch.float64), theirs(x, 1, dtype=torch.float64))


def test_uint8_targets_with_class_weights_as_torch():
    """uint8 targets index the class weights (they were once taken for a boolean mask), N == C included."""
    x = torch.randn(3, 3, dtype=torch.float64)
    weight = torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64)
    for target in (torch.tensor([2, 0, 1], dtype=torch.uint8), torch.tensor([2, 2], dtype=torch.uint8)):
        logits = x[:len(target)]
        torch.testing.assert_close(M.nll_loss(logits, target, weight=weight), F.nll_loss(logits, target, weight=weight))
        torch.testing.assert_close(M.cross_entropy(logits, target, weight=weight),
                                   F.cross_entropy(logits, target, weight=weight))


def test_probability_targets_are_soft_labels_and_ignore_index_is_refused():
    """Probabilities are kept as they are (not truncated to class 0 by .long()), as torch's soft labels."""
    x = torch.randn(4, 5, dtype=torch.float64)
    q = torch.softmax(torch.randn(4, 5, dtype=torch.float64), 1)
    torch.testing.assert_close(M.cross_entropy(x, q), F.cross_entropy(x, q))
    torch.testing.assert_close(M.cross_entropy(x, q), -(q * torch.log_softmax(x, 1)).sum(1).mean())
    with pytest.raises(ValueError, match="ignore_index=1 is for class indices"):
        M.cross_entropy(x, q, ignore_index=1)
    with pytest.raises(ValueError, match="integer tensor"):
        M.nll_loss(x, q)


@pytest.mark.parametrize('dtype', DTYPES)
@given(x=logit_tensors(min_dims=2, max_dims=2), reduction=st.sampled_from(['mean', 'sum']), seed=st.integers(0, 99))
def test_plain_cross_entropy_matches_torch(dtype, x, reduction, seed):
    """The chapter's case, (N, C) logits with no weights, ignored samples or smoothing, and every extreme."""
    target = torch.randint(0, x.shape[1], x.shape[:1], generator=torch.Generator().manual_seed(seed))
    assert_same_as_torch(lambda t: M.cross_entropy(t, target, reduction=reduction),
                         lambda t: F.cross_entropy(t, target, reduction=reduction), x.to(dtype))


@pytest.mark.parametrize('dtype', DTYPES)
@given(x=logit_tensors(min_dims=2, max_dims=2), reduction=st.sampled_from(['mean', 'sum']), seed=st.integers(0, 99))
def test_cross_entropy_is_nll_loss_of_log_softmax(dtype, x, reduction, seed):
    """The chapter's identity, on minigrad's own functions: values and gradients, the fused backward of
    cross_entropy against autograd through log_softmax's and nll_loss's backward passes."""
    target = torch.randint(0, x.shape[1], x.shape[:1], generator=torch.Generator().manual_seed(seed))
    assert_same_as_torch(lambda t: M.cross_entropy(t, target, reduction=reduction),
                         lambda t: M.nll_loss(M.log_softmax(t, dim=1), target, reduction=reduction), x.to(dtype))


def test_any_integer_targets_and_ignored_ones():
    """int64 or narrower targets give the same loss; a target equal to ignore_index counts for nothing; one
    out of range is named."""
    x = torch.randn(5, 7, dtype=torch.float64)
    target = torch.tensor([0, 6, 3, 3, 1])
    expected = F.cross_entropy(x, target)
    for dtype in (torch.int32, torch.int16, torch.uint8):
        torch.testing.assert_close(M.cross_entropy(x, target.to(dtype)), expected)
    ignored = torch.tensor([0, -100, 3, 3, 1])
    torch.testing.assert_close(M.cross_entropy(x, ignored), F.cross_entropy(x, ignored))
    with pytest.raises(IndexError, match=r"target 7 at index \(1,\)"):
        M.cross_entropy(x, torch.tensor([0, 7, 3, 3, 1]))


def test_cross_entropy_gradient_is_softmax_minus_one_hot():
    x = torch.randn(8, 37, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 37, (8,))
    M.cross_entropy(x, target, reduction='sum').backward()
    torch.testing.assert_close(x.grad, M.softmax(x.detach(), 1) - F.one_hot(target, 37))


def test_cross_entropy_of_extreme_logits_is_exact():
    x = torch.tensor([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0]], requires_grad=True)
    loss = M.cross_entropy(x, torch.tensor([0, 1]), reduction='none')
    assert torch.equal(loss.detach(), torch.tensor([0.0, 2e4]))
    loss.sum().backward()
    assert torch.equal(x.grad, torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]]))


def test_cross_entropy_with_neg_inf_logit_off_target_is_finite():
    x = torch.tensor([[2.0, -float('inf'), 0.5]], requires_grad=True)
    loss = M.cross_entropy(x, torch.tensor([0]))
    loss.backward()
    torch.testing.assert_close(loss, F.cross_entropy(x, torch.tensor([0])))
    assert torch.isfinite(x.grad).all()


def test_all_samples_ignored_gives_nan_mean_like_torch():
    x = torch.randn(3, 4)
    target = torch.full((3,), -100)
    assert M.cross_entropy(x, target).isnan() and F.cross_entropy(x, target).isnan()
    assert M.cross_entropy(x, target, reduction='sum') == 0


@pytest.mark.parametrize('loss', [M.cross_entropy, M.nll_loss])
def test_bad_targets_are_errors_that_name_the_value_and_range(loss):
    x = torch.randn(4, 37)
    with pytest.raises(IndexError, match=r"target 37 at index \(2,\).*\[0, 36\]"):
        loss(x, torch.tensor([0, 1, 37, 2]))
    with pytest.raises(IndexError, match=r"target -1 at index \(0,\)"):
        loss(x, torch.tensor([-1, 1, 3, 2]))
    with pytest.raises(ValueError, match=r"target has shape \(4, 1\).*shape \(4,\)"):
        loss(x, torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"integer tensor|class probabilities.*\(4, 37\).*\.long\(\)"):
        loss(x, torch.zeros(4))
    with pytest.raises(ValueError, match=r"weight has shape \(3,\), expected \(37,\)"):
        loss(x, torch.zeros(4, dtype=torch.long), weight=torch.ones(3))
    with pytest.raises(ValueError, match="reduction='avg'"):
        loss(x, torch.zeros(4, dtype=torch.long), reduction='avg')
    assert torch.isfinite(loss(x, torch.tensor([0, -100, 36, 5])))  # ignore_index is not out of range


def test_label_smoothing_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="label_smoothing=1.5"):
        M.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), label_smoothing=1.5)


# --- sigmoid and binary cross-entropy ---------------------------------------------------------------------

@pytest.mark.parametrize('dtype', DTYPES)
@given(x=logit_tensors(allow_neg_inf=False))
def test_sigmoid_matches_torch(dtype, x):
    assert_same_as_torch(M.sigmoid, torch.sigmoid, x.to(dtype))


@pytest.mark.parametrize('dtype', DTYPES)
@given(x=logit_tensors(allow_neg_inf=False), data=st.data())
def test_binary_cross_entropy_with_logits_matches_torch(dtype, x, data):
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label='seed'))
    target = torch.rand(x.shape, generator=gen, dtype=torch.float64)
    if data.draw(st.booleans(), label='hard targets'):
        target = target.round()
    weight = torch.rand(x.shape, generator=gen, dtype=torch.float64) if data.draw(st.booleans()) else None
    pos_weight = torch.rand(x.shape[-1:], generator=gen, dtype=torch.float64) * 3 if data.draw(st.booleans()) else None
    x = x.to(dtype)
    options = like(dict(target=target, weight=weight, pos_weight=pos_weight,
                        reduction=data.draw(st.sampled_from(M.REDUCTIONS), label='reduction')), x)
    assert_same_as_torch(lambda t: M.binary_cross_entropy_with_logits(t, **like(options, t)),
                         lambda t: F.binary_cross_entropy_with_logits(t, **like(options, t)), x)


def test_binary_losses_at_zero_and_extremes():
    x = torch.tensor([-1e4, 0.0, 1e4], requires_grad=True)
    target = torch.tensor([1.0, 1.0, 0.0])
    loss = M.binary_cross_entropy_with_logits(x, target, reduction='sum')
    loss.backward()
    assert loss.item() == pytest.approx(2e4 + 0.6931471805599453)
    assert torch.equal(x.grad, torch.tensor([-1.0, -0.5, 1.0]))  # sigmoid(x) - t, exact at 0 too
    s = torch.tensor(0.0, requires_grad=True)
    M.sigmoid(s).backward()
    assert s.grad == 0.25


# --- mixed precision -----------------------------------------------------------------------------------

AUTOCAST_CASES = {
    'cross_entropy': (M.cross_entropy, F.cross_entropy, lambda x: (x, torch.tensor([0, 3, 1, 4]))),
    'nll_loss': (M.nll_loss, F.nll_loss, lambda x: (x, torch.tensor([0, 3, 1, 4]))),
    'bce_with_logits': (M.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits,
                        lambda x: (x, torch.rand(x.shape, generator=torch.Generator().manual_seed(0)).to(x))),
    'softmax': (M.softmax, F.softmax, lambda x: (x, 1)),
    'log_softmax': (M.log_softmax, F.log_softmax, lambda x: (x, 1)),
    'logsumexp': (M.logsumexp, torch.logsumexp, lambda x: (x, 1)),
}


@pytest.mark.parametrize('device', ['cpu', 'cuda'])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize('name', sorted(AUTOCAST_CASES))
def test_autocast_policy_is_torchs(name, dtype, device):
    """Under autocast the losses (and on CUDA softmax and log_softmax) compute and return float32, as on
    torch's list; outside autocast every function returns the input's dtype, as torch's."""
    if device == 'cuda' and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (none here)")
    ours, theirs, arguments = AUTOCAST_CASES[name]
    args = arguments(torch.randn(4, 5, generator=torch.Generator().manual_seed(1)).to(device, dtype))
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
    assert ours(*args).dtype == theirs(*args).dtype == dtype
    with torch.autocast(device, dtype=dtype):
        expected = theirs(*args)
        result = ours(*args)
    assert result.dtype == expected.dtype
    torch.testing.assert_close(result.float(), expected.float(), rtol=2e-2, atol=2e-2)


@given(problem=classification_problems(probabilities=True), label_smoothing=st.sampled_from([0.0, 0.1, 1.0]))
def test_learnt_class_weights_get_torchs_gradient_or_its_refusal(problem, label_smoothing):
    """A class weight that requires grad: with probability targets d CE / d w_c = -sum_i ((1 - eps)
    target_ic + eps / C) log p_ic (times the upstream gradient), as torch; with class indices torch refuses,
    and so does minigrad."""
    x, target, options = problem
    weight = options.pop('weight')
    if weight is None:
        weight = torch.rand(x.shape[0 if x.dim() == 1 else 1], dtype=torch.float64) + 0.1
    if not target.is_floating_point():
        with pytest.raises(RuntimeError, match='class weights cannot be learnt'):
            M.cross_entropy(x, target, weight=weight.requires_grad_(), label_smoothing=label_smoothing, **options)
        return
    grads = []
    for fn in (M.cross_entropy, F.cross_entropy):
        w = weight.clone().requires_grad_()
        loss = fn(x, target, weight=w, label_smoothing=label_smoothing, **options)
        grads.append(torch.autograd.grad(loss.sum(), w)[0])
    torch.testing.assert_close(grads[0], grads[1])
    assert torch.autograd.gradcheck(lambda w: M.cross_entropy(x, target, weight=w, label_smoothing=label_smoothing,
                                                              **options), (weight.clone().requires_grad_(),))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize('reduction', M.REDUCTIONS)
@pytest.mark.parametrize('shape', [(7,), (64, 37), (3, 7, 2, 2)])
def test_the_chapters_path_computes_what_the_general_one_does_to_the_bit(dtype, reduction, shape):
    """Class indices without weights or smoothing take the chapter's path (nll_loss of log_softmax forward,
    softmax minus one-hot backward); with class weights of 1 the general target distribution computes the
    same loss: values and gradients equal to the bit, ignored samples included."""
    gen = torch.Generator().manual_seed(0)
    x0 = (torch.randn(shape, generator=gen, dtype=torch.float64) * 4).to(dtype)
    class_dim = 0 if len(shape) == 1 else 1
    target = torch.randint(0, shape[class_dim], shape[:class_dim] + shape[class_dim + 1:], generator=gen)
    if target.dim() > 0:
        target[0] = -100  # ignored
    results = []
    for weight in (None, torch.ones(shape[class_dim], dtype=dtype)):
        x = x0.clone().requires_grad_()
        loss = M.cross_entropy(x, target, weight=weight, reduction=reduction)
        loss.backward(torch.rand(loss.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype))
        results.append((loss.detach(), x.grad))
    for ours, general in zip(*results):
        torch.testing.assert_close(ours, general, rtol=0, atol=0, equal_nan=True)
