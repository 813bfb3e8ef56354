"""minigrad against PyTorch's own test inputs: the samples torch's test suite feeds its operators and the
settings it runs its optimizers with (torch.testing._internal, shipped in the wheel; it needs expecttest).

The math. For softmax, log_softmax (each also with dtype=), logsumexp, nll_loss, cross_entropy,
binary_cross_entropy_with_logits and sigmoid, every OpInfo sample input of torch's op_db:
  float64  values and gradients equal to torch's, and gradcheck and gradgradcheck (finite differences)
           pass: the dtype where finite differences mean something;
  float32  values, gradients and second derivatives (a gradient of the gradient) equal to torch's;
  float16, bfloat16  values. minigrad computes these in float32 and rounds once, where torch's kernels may
           round along the way, so each value must equal torch's (its default tolerance for the dtype) or
           be no further than torch's from the exact answer: torch in float64 on the same rounded inputs.
The optimizers. SGD, Adam and AdamW at every setting optim_db's optim_inputs_func gives them: 20 steps from
the same start with the same gradients, weights and state equal to torch's to the bit (float32, float64),
for each of torch's two ways to run the step (one parameter at a time, or foreach), and a torch state_dict
loaded half way continuing the same. torch gives some settings for CUDA only (capturable, which keeps the
step count on the device); they run on a GPU where there is one, and on the pretend GPU of tests/fakegpu.py
where there is none (torch allows capturable on any accelerator).

Skipped, and why: everything asked of a CUDA GPU where there is none, but the capturable settings, which
the pretend GPU runs. Nothing else.
"""
import os
import warnings

import pytest
import torch

import minigrad.functional as M
from minigrad.optim import SGD, Adam


def import_torch_test_inputs():
    """op_db and optim_db. Imported, torch's test helpers set the process up for torch's own suite: they
    forbid setting torch.backends flags outside a context manager, point TorchInductor's cache at a fresh
    folder and add warning filters. The rest of this suite needs none of that (pets.run sets
    cudnn.benchmark; the compile tests use the warm cache), so all three are undone."""
    inductor_cache = os.environ.get('TORCHINDUCTOR_CACHE_DIR')
    with warnings.catch_warnings():
        from torch.testing._internal.common_methods_invocations import op_db
        from torch.testing._internal.common_optimizers import optim_db
    if inductor_cache is None:
        os.environ.pop('TORCHINDUCTOR_CACHE_DIR', None)
    else:
        os.environ['TORCHINDUCTOR_CACHE_DIR'] = inductor_cache
    # The module global that torch.backends.disable_global_flags() set to False, where flags_frozen reads it.
    torch.backends.flags_frozen.__globals__['__allow_nonbracketed_mutation_flag'] = True
    return op_db, optim_db


op_db, optim_db = import_torch_test_inputs()

GPU = torch.cuda.is_available()
DEVICES = ['cpu', 'cuda']
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
DIFFERENTIABLE = (torch.float64, torch.float32)

# (OpInfo name, variant) -> the minigrad function it is held against.
MINIGRAD = {
    ('softmax', ''): M.softmax,
    ('softmax', 'with_dtype'): M.softmax,
    ('log_softmax', ''): M.log_softmax,
    ('log_softmax', 'with_dtype'): M.log_softmax,
    ('logsumexp', ''): M.logsumexp,
    ('nn.functional.nll_loss', ''): M.nll_loss,
    ('nn.functional.cross_entropy', ''): M.cross_entropy,
    ('nn.functional.binary_cross_entropy_with_logits', ''): M.binary_cross_entropy_with_logits,
    ('sigmoid', ''): M.sigmoid,
}
OPS = {(op.name, op.variant_test_name): op for op in op_db if (op.name, op.variant_test_name) in MINIGRAD}


def test_every_operator_has_its_opinfo():
    assert OPS.keys() == MINIGRAD.keys()


def test_importing_torchs_test_helpers_leaves_torch_backends_settable():
    """pets.run sets torch.backends.cudnn.benchmark, in this very process in the run tests."""
    assert not torch.backends.flags_frozen()



def needs_device(device):
    if device == 'cuda' and not GPU:
        pytest.skip("needs a CUDA GPU (none here)")


def samples(op, device, dtype):
    """The op's OpInfo samples, drawn from a fixed seed without touching the caller's random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return list(op.sample_inputs(device, dtype, requires_grad=dtype in DIFFERENTIABLE))


def leaves(sample):
    return [sample.input, *sample.args, *sample.kwargs.values()]


def as_function_of_differentiable_inputs(fn, sample):
    """(f, inputs): fn called on the sample, as a function of the sample's tensors that require grad."""
    differentiable = [t for t in leaves(sample) if isinstance(t, torch.Tensor) and t.requires_grad]

    def f(*tensors):
        replacing = iter(tensors)
        swap = lambda v: next(replacing) if any(v is t for t in differentiable) else v
        return fn(swap(sample.input), *map(swap, sample.args), **{k: swap(v) for k, v in sample.kwargs.items()})
    return f, differentiable


def widened(sample, dtype):
    """The sample with every floating-point tensor cast to dtype (its values already rounded)."""
    cast = lambda v: v.detach().to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
    kwargs = {k: (dtype if k == 'dtype' and v is not None else cast(v)) for k, v in sample.kwargs.items()}
    return cast(sample.input), [cast(a) for a in sample.args], kwargs


def random_like(tensors, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t) for t in tensors]


def gradients(f, inputs, output, seed=1):
    """d(sum of output * v)/d inputs for a random v, keeping the graph for a second derivative."""
    (v,) = random_like([output], seed)
    grads = torch.autograd.grad(output, inputs, v, create_graph=True, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def second_derivatives(grads, inputs, seed=2):
    """d(sum_i grads_i * w_i)/d inputs for random w: each gradient differentiated once more."""
    connected = [(g, w) for g, w in zip(grads, random_like(grads, seed)) if g.requires_grad]
    if not connected:
        return [torch.zeros_like(x) for x in inputs]
    outs = torch.autograd.grad([g for g, _ in connected], inputs, [w for _, w in connected], allow_unused=True)
    return [torch.zeros_like(x) if d is None else d for d, x in zip(outs, inputs)]


def assert_values_match(ours, theirs, sample, op, description):
    if ours.dtype in DIFFERENTIABLE or theirs.dtype in DIFFERENTIABLE:
        torch.testing.assert_close(ours, theirs, equal_nan=True, msg=lambda m: f"{description}: {m}")
        return
    # 16 bits: as close to torch as its tolerance, or no further than torch from the exact answer.
    input, args, kwargs = widened(sample, torch.float64)
    exact = op.op(input, *args, **kwargs)
    tolerance = {torch.float16: dict(rtol=1e-3, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-5)}[ours.dtype]
    close = torch.isclose(ours, theirs, equal_nan=True, **tolerance)
    no_worse = (ours.double() - exact).abs() <= (theirs.double() - exact).abs()
    assert (close | no_worse).all(), (f"{description}: minigrad {ours} is further than torch {theirs} from "
                                      f"the exact {exact}")


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('name', sorted(MINIGRAD), ids=lambda n: '-'.join(filter(None, n)))
def test_opinfo_samples(name, dtype, device):
    needs_device(device)
    op, ours = OPS[name], MINIGRAD[name]
    for i, sample in enumerate(samples(op, device, dtype)):
        description = f"{op.name} {op.variant_test_name} sample {i}: {sample.summary()}"
        f_ours, inputs = as_function_of_differentiable_inputs(ours, sample)
        f_theirs, _ = as_function_of_differentiable_inputs(op.op, sample)
        y_ours, y_theirs = f_ours(*inputs), f_theirs(*inputs)
        assert y_ours.dtype == y_theirs.dtype and y_ours.shape == y_theirs.shape, description
        assert_values_match(y_ours.detach(), y_theirs.detach(), sample, op, description)
        if dtype not in DIFFERENTIABLE or not inputs:
            continue
        g_ours, g_theirs = gradients(f_ours, inputs, y_ours), gradients(f_theirs, inputs, y_theirs)
        for a, b in zip(g_ours, g_theirs):
            torch.testing.assert_close(a, b, equal_nan=True, msg=lambda m: f"{description}, gradient: {m}")
        for a, b in zip(second_derivatives(g_ours, inputs), second_derivatives(g_theirs, inputs)):
            torch.testing.assert_close(a, b, equal_nan=True, msg=lambda m: f"{description}, second derivative: {m}")
        if dtype == torch.float64:
            assert torch.autograd.gradcheck(f_ours, inputs), description
            assert torch.autograd.gradgradcheck(f_ours, inputs), description


# --- the optimizers -----------------------------------------------------------------------------------------

# torch's defaults, which minigrad's Adam (fastai's defaults) is given explicitly where torch's are compared.
TORCH_DEFAULTS = {
    'SGD': {},
    'Adam': dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False),
    'AdamW': dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, decoupled_weight_decay=True),
}
OPTIMIZERS = {info.optim_cls.__name__: info for info in optim_db if info.optim_cls.__name__ in TORCH_DEFAULTS}
N_STEPS = 20


def settings(device):
    """(optimizer name, description, kwargs) for every optim_db setting of SGD, Adam and AdamW on device."""
    for name, info in sorted(OPTIMIZERS.items()):
        for setting in info.optim_inputs_func(device=device):
            yield name, setting.desc, setting.kwargs


CPU_SETTINGS = list(settings('cpu'))
CUDA_SETTINGS = list(settings('cuda'))  # the CPU's, and those torch runs on CUDA only (capturable)
RUNS = [('cpu', *s) for s in CPU_SETTINGS] + [('cuda', *s) for s in CUDA_SETTINGS]


def test_settings_are_found():
    assert {name for name, _, _ in CPU_SETTINGS} == set(TORCH_DEFAULTS) and len(CPU_SETTINGS) >= 15
    assert any('capturable' in kwargs for _, _, kwargs in CUDA_SETTINGS)


def parameters(dtype, device):
    """Two parameter groups of a few shapes, a matrix, a vector and a scalar, the same for every run."""
    gen = torch.Generator().manual_seed(0)
    make = lambda *shape: torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=dtype).to(device))
    return [make(5, 4), make(5)], [make(3, 2, 2), make()]


def set_gradients(params, step, dtype):
    """Step k's gradients: a fixed draw for each parameter; the scalar skips odd steps (no gradient)."""
    gen = torch.Generator().manual_seed(1000 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=dtype).to(p.device)
    if step % 2:
        params[-1].grad = None


def minigrad_optimizer(name, groups, kwargs):
    options = TORCH_DEFAULTS[name] | kwargs
    return (SGD if name == 'SGD' else Adam)(groups, **options)


def torch_optimizer(name, groups, kwargs):
    return OPTIMIZERS[name].optim_cls(groups, **kwargs)


def run(make, name, kwargs, dtype, device, steps=range(N_STEPS), start=None):
    """Steps an optimizer from make; start (a state_dict) is loaded first if given. Returns the parameters'
    values after the steps, the optimizer's state_dict, and the optimizer."""
    body, head = parameters(dtype, device)
    groups = [{'params': body}, {'params': head, 'lr': 0.02}]
    optimizer = make(name, groups, kwargs)
    if start is not None:
        weights, state = start
        with torch.no_grad():
            for p, w in zip(body + head, weights):
                p.copy_(w)
        optimizer.load_state_dict(state)
    for step in steps:
        set_gradients(body + head, step, dtype)
        optimizer.step()
    return [p.detach().clone() for p in body + head], optimizer.state_dict(), optimizer


def assert_same_bits(ours, theirs, description):
    (weights_ours, state_ours, _), (weights_theirs, state_theirs, _) = ours, theirs
    for i, (a, b) in enumerate(zip(weights_ours, weights_theirs)):
        assert torch.equal(a, b), f"{description}: parameter {i} differs by {(a - b).abs().max():.3g}"
    assert state_ours['state'].keys() == state_theirs['state'].keys(), description
    for index, buffers in state_theirs['state'].items():
        assert state_ours['state'][index].keys() == buffers.keys(), description
        for key, theirs_value in buffers.items():
            ours_value = state_ours['state'][index][key]
            if key == 'step':
                assert float(ours_value) == float(theirs_value), description
            else:
                assert torch.equal(ours_value, theirs_value), f"{description}: state {index} {key} differs"


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize('device, name, description, kwargs', RUNS, ids=[f"{d}-{n}-{s}" for d, n, s, _ in RUNS])
def test_optim_db_settings_equal_torch_to_the_bit(device, name, description, kwargs, dtype, request):
    if device == 'cuda' and not GPU:
        if 'capturable' not in kwargs:
            pytest.skip("needs a CUDA GPU (none here); the CPU runs this setting above")
        # torch runs capturable on any accelerator, the pretend GPU of tests/fakegpu.py included: there both
        # compute with the CPU's kernels, so the order of their operations is what is compared.
        device = request.getfixturevalue('fakegpu').DEVICE
    foreach_choices = [False, True]
    if any(torch.is_tensor(v) for v in [kwargs.get('lr'), *kwargs.get('betas', ())]) and not kwargs.get('capturable'):
        foreach_choices = [False]  # torch's foreach takes tensor rates only when capturable
    for foreach in foreach_choices:
        setting = kwargs | {'foreach': foreach}
        label = f"{name} {description} foreach={foreach} {dtype}"
        theirs = run(torch_optimizer, name, setting, dtype, device)
        assert_same_bits(run(minigrad_optimizer, name, setting, dtype, device), theirs, label)
        # torch's state half way, loaded into minigrad, then the rest of the steps.
        halfway = run(torch_optimizer, name, setting, dtype, device, steps=range(N_STEPS // 2))
        resumed = run(minigrad_optimizer, name, setting, dtype, device, steps=range(N_STEPS // 2, N_STEPS),
                      start=halfway[:2])
        assert_same_bits(resumed, theirs, f"{label}, from torch's state_dict")


@pytest.mark.parametrize('option, value', [('fused', True), ('differentiable', True)])
@pytest.mark.parametrize('make', [SGD, Adam], ids=['SGD', 'Adam'])
def test_options_minigrad_does_not_implement_are_refused_wherever_they_come_in(make, option, value):
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=f"{option}={value}.*does not implement"):
        make([p], **{option: value})
    with pytest.raises(ValueError, match=f"{option}={value}"):
        make([{'params': [p], option: value}])
    state = make([p]).state_dict()
    state['param_groups'][0][option] = value
    with pytest.raises(ValueError, match=f"{option}={value}"):
        make([p]).load_state_dict(state)
    with pytest.raises(TypeError):
        make([p], no_such_option=1)


@pytest.mark.parametrize('group, expected', [
    ({'maximize': True}, 1.1),                               # climbs: p + lr * grad
    ({'momentum': 0.5, 'nesterov': True}, 1 - 0.1 * 1.5),    # g + momentum * b on the first step
])
def test_sgd_options_inside_a_param_group_take_effect(group, expected):
    """The issue's example: options given in a param-group dict were once stored and ignored."""
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    SGD([{'params': [p], **group}], lr=0.1).step()
    torch.testing.assert_close(p.detach(), torch.full((3,), expected))


def test_hyper_parameters_out_of_range_are_refused():
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0 and dampening = 0"):
        SGD([p], momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="capturable=True keeps the step count on a GPU"):
        Adam([p], capturable=True)
    with pytest.raises(ValueError, match="lr as a tensor needs capturable=True or foreach=False"):
        Adam([p], lr=torch.tensor(0.01))
    with pytest.raises(ValueError, match="one element"):
        SGD([p], lr=torch.tensor([0.1, 0.2]))
    Adam([p], lr=torch.tensor(0.01), foreach=False)  # allowed, as in torch

