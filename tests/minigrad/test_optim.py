"""minigrad.optim step for step against torch.optim, with param groups changed between steps."""
import copy

import pytest
import torch
from hypothesis import given, strategies as st

from minigrad.optim import SGD, Adam


def small_model(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).to(dtype)


def two_groups(model):
    """Two parameter groups, as discriminative learning rates make them: body, then head."""
    return [{'params': model[0].parameters()}, {'params': model[2].parameters()}]


def batches(n, dtype, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 5, generator=gen).to(dtype), torch.randint(0, 3, (16,), generator=gen)) for _ in range(n)]


def train(model, optimizer, data, mutate=None):
    """Runs the optimizer over data; mutate(step, optimizer) may change its param groups before a step."""
    for step, (x, y) in enumerate(data):
        if mutate is not None:
            mutate(step, optimizer)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def assert_same_parameters(ours, theirs, dtype):
    tolerance = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **tolerance)


def compare(make_ours, make_theirs, dtype, n_steps, mutate=None, grouped=False):
    data = batches(n_steps, dtype)
    model_ours, model_theirs = small_model(dtype), small_model(dtype)
    params = (lambda m: two_groups(m)) if grouped else (lambda m: m.parameters())
    ours = train(model_ours, make_ours(params(model_ours)), data, mutate)
    theirs = train(model_theirs, make_theirs(params(model_theirs)), data, mutate)
    assert_same_parameters(ours, theirs, dtype)


def change_groups(changes):
    """A mutate function: at step k, set group[i][name] = value for each (k, i, name, value) in changes."""
    def mutate(step, optimizer):
        for k, i, name, value in changes:
            if k == step:
                optimizer.param_groups[i][name] = value
    return mutate


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@given(lr=st.floats(1e-4, 0.5), momentum=st.sampled_from([0.0, 0.5, 0.9]),
       weight_decay=st.sampled_from([0.0, 1e-4, 0.1]), n_steps=st.integers(10, 40),
       new_lr=st.floats(1e-4, 0.5), new_momentum=st.sampled_from([0.0, 0.8, 0.95]))
def test_sgd_equals_torch_step_for_step(dtype, lr, momentum, weight_decay, n_steps, new_lr, new_momentum):
    mutate = change_groups([(5, 0, 'lr', new_lr), (7, 1, 'momentum', new_momentum), (9, 1, 'weight_decay', 0.01)])
    compare(lambda p: SGD(p, lr, momentum=momentum, weight_decay=weight_decay),
            lambda p: torch.optim.SGD(p, lr, momentum=momentum, weight_decay=weight_decay),
            dtype, n_steps, mutate, grouped=True)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('decoupled_weight_decay', [True, False])
@pytest.mark.parametrize('foreach', [True, False])
@given(lr=st.floats(1e-5, 0.1), beta1=st.sampled_from([0.0, 0.85, 0.9, 0.95]), beta2=st.sampled_from([0.9, 0.99, 0.999]),
       eps=st.sampled_from([1e-8, 1e-5, 1e-3]), weight_decay=st.sampled_from([0.0, 0.01, 0.3]),
       n_steps=st.integers(10, 40), new_lr=st.floats(1e-5, 0.1), new_beta1=st.sampled_from([0.85, 0.95]))
def test_adam_equals_torch_adamw_or_adam(dtype, decoupled_weight_decay, foreach, lr, beta1, beta2, eps, weight_decay, n_steps,
                                         new_lr, new_beta1):
    torch_adam = torch.optim.AdamW if decoupled_weight_decay else torch.optim.Adam
    # The schedule moves beta1 as momentum, and the learner sets each group's lr: both mid-run here.
    mutate = change_groups([(3, 0, 'lr', new_lr), (6, 1, 'betas', (new_beta1, beta2)),
                            (8, 0, 'weight_decay', weight_decay / 2)])
    options = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    compare(lambda p: Adam(p, decoupled_weight_decay=decoupled_weight_decay, foreach=foreach, **options),
            lambda p: torch_adam(p, **options), dtype, n_steps, mutate, grouped=True)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@given(decoupled_weight_decay=st.booleans(), lr=st.floats(1e-5, 0.1), beta1=st.sampled_from([0.0, 0.9]),
       weight_decay=st.sampled_from([0.0, 0.01, 0.3]), n_steps=st.integers(4, 12), unfreeze_at=st.integers(1, 3))
def test_foreach_adam_equals_the_per_parameter_adam_to_the_bit(dtype, decoupled_weight_decay, lr, beta1, weight_decay, n_steps,
                                                               unfreeze_at):
    """The readable per-parameter loop is the reference; the first layer is frozen for the first steps, so
    that parameters of one group have taken different numbers of steps (bias corrections apart).
    (Parameters stored in 16 bits are left out: there torch's foreach kernels and the per-tensor ones round
    some operations differently, by a last bit that later steps compound; mixed precision keeps the
    parameters float32.)"""
    same = torch.equal
    def run(foreach):
        model = small_model(dtype)
        optimizer = Adam(two_groups(model), lr=lr, betas=(beta1, 0.99), weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, foreach=foreach)
        model[0].weight.requires_grad_(False)

        def mutate(step, optimizer):
            if step == unfreeze_at:
                model[0].weight.requires_grad_(True)
            optimizer.param_groups[1]['lr'] = lr * (1 + step)
        weights = train(model, optimizer, batches(n_steps, dtype), mutate)
        return weights, {k: v for k, v in optimizer.state_dict()['state'].items()}

    (ours, our_state), (reference, reference_state) = run(True), run(False)
    assert all(same(a, b) for a, b in zip(ours, reference))
    assert our_state.keys() == reference_state.keys()
    for index, buffers in reference_state.items():
        assert our_state[index]['step'] == buffers['step']
        assert same(our_state[index]['exp_avg'], buffers['exp_avg'])
        assert same(our_state[index]['exp_avg_sq'], buffers['exp_avg_sq'])


def test_adam_defaults_are_fastais():
    adam = Adam(small_model(torch.float32).parameters())
    group = adam.param_groups[0]
    assert (group['lr'], group['betas'], group['eps'], group['weight_decay'], group['decoupled_weight_decay'],
            group['amsgrad'], group['maximize'], group['foreach']) == (1e-3, (0.9, 0.99), 1e-5, 0.01, True, False, False, True)


def test_parameters_without_gradient_are_left_alone():
    model = small_model(torch.float64)
    frozen = [p.detach().clone() for p in model[0].parameters()]
    for p in model[0].parameters():
        p.requires_grad_(False)
    optimizer = Adam(model.parameters(), lr=0.1)
    train(model, optimizer, batches(3, torch.float64))
    assert all(torch.equal(a, b) for a, b in zip(frozen, model[0].parameters()))
    assert all(p not in optimizer.state for p in model[0].parameters())


@pytest.mark.parametrize('make', [lambda p: SGD(p, 0.1, momentum=0.9, weight_decay=1e-3),
                                  lambda p: Adam(p, lr=0.01)], ids=['SGD', 'Adam'])
def test_state_dict_round_trip_resumes_exactly(make):
    data = batches(10, torch.float64)
    model = small_model(torch.float64)
    optimizer = make(two_groups(model))
    train(model, optimizer, data[:5])
    optimizer.param_groups[0]['lr'] = 0.003
    saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), optimizer.state_dict()
    uninterrupted = train(model, optimizer, data[5:])

    resumed_model = small_model(torch.float64, seed=123)
    resumed_model.load_state_dict(saved_model)
    resumed_optimizer = make(two_groups(resumed_model))
    resumed_optimizer.load_state_dict(saved_optimizer)
    assert resumed_optimizer.param_groups[0]['lr'] == 0.003
    assert_same_parameters(train(resumed_model, resumed_optimizer, data[5:]), uninterrupted, torch.float64)


def test_state_dict_is_a_snapshot_and_mismatches_are_refused():
    model = small_model(torch.float32)
    optimizer = Adam(model.parameters())
    train(model, optimizer, batches(2, torch.float32))
    saved = optimizer.state_dict()
    before = saved['state'][0]['exp_avg'].clone()
    train(model, optimizer, batches(2, torch.float32, seed=5))
    assert torch.equal(saved['state'][0]['exp_avg'], before)
    assert saved['state'][0]['step'] == 2
    with pytest.raises(ValueError, match="1 parameter groups, this optimizer has 2"):
        Adam(two_groups(small_model(torch.float32))).load_state_dict(saved)
    with pytest.raises(ValueError, match="group 0 has 2 parameters here but 4"):
        Adam(small_model(torch.float32)[0].parameters()).load_state_dict(saved)


def test_zero_grad_and_bad_arguments():
    model = small_model(torch.float32)
    optimizer = SGD(model.parameters(), lr=0.1)
    train(model, optimizer, batches(1, torch.float32))
    optimizer.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{'params': model.parameters()}, {'params': model[0].parameters()}], lr=0.1)
    with pytest.raises(ValueError, match="lr=-1"):
        Adam(model.parameters(), lr=-1)
    with pytest.raises(ValueError, match="betas"):
        Adam(model.parameters(), betas=(0.9, 1.0))


OPTIMIZERS_THAT_SKIP = {
    'sgd': lambda params: SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01),
    'adam per parameter': lambda params: Adam(params, lr=0.01, foreach=False, amsgrad=True),
    'adam foreach': lambda params: Adam(params, lr=0.01),
    'adam capturable': lambda params: Adam(params, lr=0.01, capturable=True),
}


@pytest.mark.parametrize('name', OPTIMIZERS_THAT_SKIP)
def test_a_step_skipped_on_the_device_changes_nothing_and_a_kept_one_is_a_step(name, fakegpu):
    """step(skip=flag): a True flag leaves parameters and state as they were, to the bit, without reading
    the flag back (no wait); a False one is the ordinary step, to the bit. On the pretend GPU, so that a
    read would be counted (and capturable Adam, which keeps its step count on the device, may run)."""
    def run(flags):
        model = small_model(torch.float32).to(fakegpu.DEVICE)
        optimizer = OPTIMIZERS_THAT_SKIP[name](model.parameters())
        for step, (x, y) in enumerate(batches(len(flags), torch.float32)):
            loss = torch.nn.functional.cross_entropy(model(x.to(fakegpu.DEVICE)), y.to(fakegpu.DEVICE))
            loss.backward()
            if flags[step] is None:
                optimizer.step()
            else:
                skip = torch.tensor(flags[step]).to(fakegpu.DEVICE)
                with fakegpu.counting_waits() as waits:
                    optimizer.step(skip=skip)
                assert waits == []
            optimizer.zero_grad()
        return model, optimizer

    def same(a, b):
        (model_a, opt_a), (model_b, opt_b) = a, b
        for p_a, p_b in zip(model_a.parameters(), model_b.parameters()):
            assert torch.equal(p_a.detach().cpu(), p_b.detach().cpu())
            state_a, state_b = opt_a.state[p_a], opt_b.state[p_b]
            assert state_a.keys() == state_b.keys()
            for key in state_a:
                if key == 'step' and not torch.is_tensor(state_a[key]):
                    continue  # a step count on the host (Adam without capturable) counts skipped steps too
                assert torch.equal(torch.as_tensor(state_a[key]).cpu(), torch.as_tensor(state_b[key]).cpu()), key

    same(run([None]), run([None, True]))          # a skipped step: as if it had not been taken
    same(run([None, None]), run([None, False]))  # a kept one: the ordinary step
