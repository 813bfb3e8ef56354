"""Optimizers: how a gradient becomes a step. SGD with momentum, then Adam.

Both keep torch.optim's shape, so that anything written for it (a learner, a checkpoint, a torch optimizer's
saved state) works with them:
- `param_groups` is a list of dicts, each with its 'params' and its own hyper-parameters ('lr',
  'weight_decay', ...), which the caller may change between steps; that is how a schedule drives them,
  and how discriminative learning rates give each layer group its own rate. Other keys a caller adds to a
  group (a layer group's index, say) are kept and left alone, as in torch;
- `state[p]` holds each parameter's running buffers (momentum, moment estimates);
- `state_dict()` / `load_state_dict()` save and restore both, parameters named by their position.

Every option of torch.optim.SGD, Adam and AdamW that changes the arithmetic of a step is written out here
(its formula in the class docstring). The ones that only choose how torch runs it (`foreach`) are accepted;
the ones minigrad has no use for (`fused`: one compiled kernel; `differentiable`: autograd through the step)
are accepted at the values that leave them off, so that a torch state_dict loads, and refused otherwise,
wherever they come in: the constructor, a param group, load_state_dict.
"""
import copy
from collections import defaultdict

import torch


class Optimizer:
    """What every optimizer shares: parameter groups, per-parameter state, zeroing and saving them.

    A subclass passes its default hyper-parameters, checks a group's values (prepare_group), and writes the
    update of one parameter (_update) or of a group's parameters at once (_step_group).
    """

    # torch's options that minigrad does not implement, and the values at which they change nothing.
    TURNED_OFF = {'fused': (None, False), 'differentiable': (False,)}

    def __init__(self, params, defaults):
        self.defaults = defaults
        self.state = {}
        self.param_groups = []
        groups = list(params)
        if not groups:
            raise ValueError("the optimizer got an empty parameter list: pass model.parameters() or a list "
                             "of parameter groups")
        if not isinstance(groups[0], dict):
            groups = [{'params': groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Adds a dict with 'params' and any hyper-parameters; missing ones take the defaults."""
        group = dict(group)
        params = group['params']
        group['params'] = [params] if isinstance(params, torch.Tensor) else list(params)
        for name, value in self.defaults.items():
            group.setdefault(name, value)
        self._prepare(group)
        seen = {id(p) for g in self.param_groups for p in g['params']}
        if any(id(p) in seen for p in group['params']):
            raise ValueError("a parameter appears in more than one parameter group")
        self.param_groups.append(group)

    def _prepare(self, group):
        """Refuses what this optimizer cannot honour, then lets the subclass check its values."""
        name = type(self).__name__
        for option, allowed in self.TURNED_OFF.items():
            if group.get(option, allowed[0]) not in allowed:
                raise ValueError(f"{name}: {option}={group[option]!r} is a torch.optim option minigrad does not "
                                 f"implement; leave it at {allowed[0]!r} (the step's numbers do not depend on it)")
        self.prepare_group(group)

    def prepare_group(self, group):
        """Raises ValueError for a hyper-parameter out of range (a subclass's own rules), and puts the values
        in the form step() uses."""

    def zero_grad(self, set_to_none=True):
        """Forgets the gradients, by default by dropping them (cheaper than writing zeros, as torch)."""
        for group in self.param_groups:
            for p in group['params']:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    def _params_with_grad(self, group):
        return [p for p in group['params'] if p.grad is not None]

    def state_dict(self):
        """A snapshot: {'state': {index: buffers}, 'param_groups': [hyper-parameters, 'params': indices]}.

        Parameters are numbered in group order, as torch does, so a saved state can be loaded into a fresh
        optimizer over the same model. The buffers are copies: later steps do not change a saved state.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            for p in group['params']:
                index.setdefault(id(p), len(index))
            saved = {k: v for k, v in group.items() if k != 'params'}
            saved['params'] = [index[id(p)] for p in group['params']]
            groups.append(saved)
        state = {index[id(p)]: copy.deepcopy(s) for group in self.param_groups
                 for p in group['params'] if (s := self.state.get(p))}
        return {'state': state, 'param_groups': copy.deepcopy(groups)}

    def load_state_dict(self, state_dict):
        """Restores hyper-parameters and buffers saved by state_dict() (ours or a torch optimizer's of the same
        kind), onto this optimizer's parameters. Options this optimizer cannot honour are refused first."""
        saved_groups = state_dict['param_groups']
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"the saved state has {len(saved_groups)} parameter groups, this optimizer has "
                             f"{len(self.param_groups)}: it was saved for a different model or layer split")
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved['params']) != len(group['params']):
                raise ValueError(f"parameter group {i} has {len(group['params'])} parameters here but "
                                 f"{len(saved['params'])} in the saved state: it was saved for a different model")
        loaded_groups = []
        for saved, group in zip(saved_groups, self.param_groups):
            loaded = {k: copy.deepcopy(v) for k, v in saved.items() if k != 'params'}
            loaded['params'] = group['params']
            for name, value in self.defaults.items():
                loaded.setdefault(name, value)
            self._prepare(loaded)
            loaded_groups.append(loaded)
        self.param_groups = loaded_groups
        self.state = {}
        for saved, group in zip(saved_groups, self.param_groups):
            for i, p in zip(saved['params'], group['params']):
                if i in state_dict['state']:
                    buffers = {k: _like(v, p) for k, v in state_dict['state'][i].items()}
                    self.state[p] = self._loaded_state(buffers, p, group)

    def _loaded_state(self, buffers, p, group):
        """A parameter's loaded buffers in the form step() uses (a subclass may convert some)."""
        return buffers

    def step(self, closure=None, skip=None):
        """Updates every parameter that has a gradient. `closure`, if given, re-evaluates the loss first.

        skip: None, or a 0-d bool tensor on the parameters' device saying whether to skip this step, decided
        on the device (say, the loss was not finite), so that the host queues the step without reading the
        flag back (on a GPU that read would wait for the device):
            p <- where(skip, p_before, p_after), and the same for every tensor of the state
        A skipped step changes nothing, provided the state's step counts are tensors (Adam's capturable=True)
        rather than host numbers; state that a skipped step creates is left as zeros (a fresh state, for Adam).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            before = self._snapshot() if skip is not None else None
            for group in self.param_groups:
                self._step_group(group)
            if before is not None:
                self._undo_where(skip, before)
        return loss

    def _snapshot(self):
        """Copies of every parameter that will step, and of its state's tensors (none where it has no state yet)."""
        return [(p, p.detach().clone(), {k: v.clone() for k, v in self.state.get(p, {}).items() if torch.is_tensor(v)})
                for group in self.param_groups for p in self._params_with_grad(group)]

    def _undo_where(self, skip, before):
        """Puts back, where skip holds, what _snapshot copied; state made since is zeroed."""
        for p, p_before, state_before in before:
            p.copy_(torch.where(skip, p_before, p))
            for name, value in self.state.get(p, {}).items():
                if torch.is_tensor(value):
                    old = state_before.get(name, torch.zeros_like(value))
                    value.copy_(torch.where(skip, old, value))

    def _step_group(self, group):
        """Updates one group's parameters, one at a time (a subclass may do them all at once)."""
        for p in self._params_with_grad(group):
            self._update(p, p.grad, self.state.setdefault(p, {}), group)

    def _update(self, p, grad, state, group):
        raise NotImplementedError


def _capturable_adam_step(p, m, v, t, lr, beta1, beta2, eps):
    """Adam's last line, p <- p - lr m^ / (sqrt(v^) + eps), with the step count t a tensor on p's device.

    lr / (1 - beta1^t) and sqrt(1 - beta2^t) then stay tensors, and addcdiv's `value` must be a number, so
    both are folded into the denominator, in the order of torch's capturable kernel (so that the rounding is
    torch's): with s = -lr / (1 - beta1^t),
        p <- p + m / ((sqrt(v) / (sqrt(1 - beta2^t) s)) + eps / s),
    the same as p - lr / (1 - beta1^t) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)."""
    step_size_neg = -(lr / (1 - beta1 ** t))
    denominator = (v.sqrt() / ((1 - beta2 ** t).sqrt() * step_size_neg)).add_(eps / step_size_neg)
    p.addcdiv_(m, denominator)


def _max_buffer(state, p):
    """AMSGrad's running maximum of v, made once (zeros) where a state has none yet (a state saved before
    amsgrad was turned on). Not state.setdefault(..., zeros_like(p)): that makes the zeros every step."""
    if 'max_exp_avg_sq' not in state:
        state['max_exp_avg_sq'] = torch.zeros_like(p)
    return state['max_exp_avg_sq']


def _like(value, p):
    """A saved buffer moved to its parameter's device (and dtype, if it is a floating-point tensor other
    than a step count, which torch keeps in float32 whatever the parameter's dtype)."""
    if not isinstance(value, torch.Tensor):
        return copy.deepcopy(value)
    dtype = p.dtype if value.is_floating_point() and value.dim() > 0 else value.dtype
    return value.to(device=p.device, dtype=dtype, copy=True)


def _to_scalar(value):
    """A 1-element tensor hyper-parameter as a 0-d tensor; anything else as it is."""
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise ValueError(f"a tensor hyper-parameter must have one element, got shape {tuple(value.shape)}")
        return value.reshape(())
    return value


def _check_nonnegative(name, group, *options):
    bad = {k: group[k] for k in options if not group[k] >= 0}
    if bad:
        raise ValueError(f"{name} needs {', '.join(options)} >= 0; got "
                         + ', '.join(f"{k}={v}" for k, v in bad.items()))


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and weight decay, step for step torch.optim.SGD.

        g_t = grad + wd * p                          (the gradient of the L2 penalty wd/2 |p|^2 added in)
        b_t = g_t                                    on the first step,
        b_t = momentum * b_{t-1} + (1 - dampening) g_t   after it (a running sum that smooths noisy gradients),
        p  <- p - lr * b_t                           or, with nesterov=True, p <- p - lr (g_t + momentum * b_t)

    With momentum = 0 this is plain p <- p - lr * g. Nesterov's momentum (Sutskever et al. 2013) steps with
    the gradient plus the momentum it is about to add, a look ahead. maximize=True climbs instead: g is
    -grad. decoupled_weight_decay=True (fastai's SGD default, Loshchilov & Hutter 2019) shrinks the
    weights directly instead, p <- p (1 - lr wd), and g_t = grad: the decay then bypasses the momentum.
    Hyper-parameters of each group: 'lr', 'momentum', 'dampening', 'weight_decay', 'nesterov', 'maximize',
    'decoupled_weight_decay'.

    Args:
        params: parameters, or a list of dicts {'params': ..., and any hyper-parameter}.
        lr: the learning rate (a float, or a 1-element tensor as torch allows).
        momentum: the decay of the running sum b, in [0, 1).
        dampening: the share of g_t that does not enter b_t after the first step.
        weight_decay: the coefficient wd: of the L2 penalty, or of the decoupled decay.
        nesterov: Nesterov's momentum (needs momentum > 0 and dampening = 0, as in torch).
        maximize: step up the gradient instead of down.
        foreach: accepted for torch's signature. minigrad's SGD steps one parameter at a time, which torch's
            foreach implementation equals to the bit (tests/minigrad/test_torch_suites.py).
        differentiable, fused: torch options minigrad does not implement; only their off values are accepted.
        decoupled_weight_decay: True for the decoupled decay (fastai's SGD), False for the L2 term (torch's).
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None, decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, foreach=foreach,
                                      differentiable=differentiable, fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def prepare_group(self, group):
        group['lr'] = _to_scalar(group['lr'])
        _check_nonnegative('SGD', group, 'lr', 'momentum', 'weight_decay')
        if group['nesterov'] and (group['momentum'] <= 0 or group['dampening'] != 0):
            raise ValueError(f"SGD: nesterov=True needs momentum > 0 and dampening = 0; got "
                             f"momentum={group['momentum']}, dampening={group['dampening']}")

    def _update(self, p, grad, state, group):
        if group['maximize']:
            grad = -grad
        if group['weight_decay'] != 0:
            if group.get('decoupled_weight_decay'):
                p.mul_(1 - group['lr'] * group['weight_decay'])
            else:
                grad = grad.add(p, alpha=group['weight_decay'])
        momentum = group['momentum']
        if momentum != 0:
            if 'momentum_buffer' not in state:
                state['momentum_buffer'] = grad.clone()
            else:
                state['momentum_buffer'].mul_(momentum).add_(grad, alpha=1 - group['dampening'])
            b = state['momentum_buffer']
            grad = grad.add(b, alpha=momentum) if group['nesterov'] else b
        p.add_(grad, alpha=-group['lr'])


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with fastai's defaults; AdamW's decoupled weight decay by default.

        m_t = beta1 m_{t-1} + (1 - beta1) g                 (running mean of the gradient: momentum)
        v_t = beta2 v_{t-1} + (1 - beta2) g^2               (running mean of its square: its scale)
        m^ = m_t / (1 - beta1^t),  v^ = v_t / (1 - beta2^t) (undo the bias of starting both at 0)
        p <- p - lr * m^ / (sqrt(v^) + eps)

    Each coordinate moves by about lr, whatever its gradient's scale. Weight decay comes in one of two ways:
    decoupled_weight_decay=True (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization";
    torch.optim.AdamW, fastai's default) shrinks the weights directly before the step, p <- p (1 - lr wd);
    False adds wd * p to g (L2 regularisation, torch.optim.Adam's default), which Adam then rescales like
    any gradient. amsgrad=True (Reddi et al. 2018, "On the Convergence of Adam and Beyond") keeps the
    largest raw v seen so far, v_max,t = max(v_max,t-1, v_t), and divides by it bias-corrected with the
    current step's correction, sqrt(v_max,t / (1 - beta2^t)), as torch does (not by the largest v^ seen: the
    correction of an earlier step may have been larger), so that a coordinate's step does not grow because
    its gradients shrank. maximize=True climbs: g is -grad.

    fastai's defaults differ from torch's: beta2 = 0.99 (not 0.999) and eps = 1e-5 (not 1e-8), which
    suit short one-cycle runs; weight_decay = 0.01, decoupled. Hyper-parameters of each group: 'lr',
    'betas', 'eps', 'weight_decay', 'amsgrad', 'maximize', 'decoupled_weight_decay', 'foreach',
    'capturable'. A one-cycle schedule moves beta1 as its momentum.

    Two ways to run the same arithmetic: foreach=False updates one parameter at a time (_update, the
    formulas above line by line: read this one); foreach=True (the default) applies each line to all of a
    group's parameters at once with torch's _foreach_ operations (_update_all), a few Python calls per
    group instead of a dozen per parameter. For float32 and float64 parameters their steps are equal to the
    bit (tests/minigrad/test_optim.py); 16-bit parameters may differ in a last bit.

    capturable=True keeps the step count t on the parameter's device and computes the bias corrections
    there, so that a step never waits for the device (what CUDA graphs need); lr and betas may then be
    tensors. The numbers are the same formulas, in the order torch's capturable kernels use.

    Args:
        params: parameters, or a list of dicts {'params': ..., and any hyper-parameter}.
        lr: the learning rate (a float; a 1-element tensor with capturable=True or foreach=False).
        betas: (beta1, beta2), the decays of the two running means (floats, or with lr, 1-element tensors).
        eps: added to the denominator so that a zero gradient scale does not divide by zero.
        weight_decay: wd.
        amsgrad: divide by the running maximum of the raw v, bias-corrected with the current step's correction.
        foreach: all of a group's parameters per operation (True) or one parameter at a time (False).
        maximize: step up the gradient instead of down.
        capturable: keep the step count on the device (GPUs; torch allows it on no CPU).
        differentiable, fused: torch options minigrad does not implement; only their off values are accepted.
        decoupled_weight_decay: True for AdamW's decoupled decay, False for an L2 term in the gradient.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01, amsgrad=False, *,
                 foreach=True, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=True):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, foreach=foreach, maximize=maximize, capturable=capturable,
                                      differentiable=differentiable, fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def prepare_group(self, group):
        # A 1-element tensor becomes 0-d, as torch's _to_scalar does: betas of shape (1, 1, 1) would otherwise
        # broadcast the running means to a new shape.
        group['lr'], group['betas'] = _to_scalar(group['lr']), tuple(_to_scalar(b) for b in group['betas'])
        (beta1, beta2), lr = group['betas'], group['lr']
        _check_nonnegative('Adam', group, 'lr', 'eps', 'weight_decay')
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam needs betas in [0, 1); got betas={group['betas']}")
        tensors = [name for name, v in (('lr', lr), ('beta1', beta1), ('beta2', beta2)) if torch.is_tensor(v)]
        if tensors and group['foreach'] and not group['capturable']:
            raise ValueError(f"Adam: {' and '.join(tensors)} as a tensor needs capturable=True or foreach=False "
                             f"(torch's _foreach_ operations take numbers there), as in torch")
        if group['capturable'] and group['params'] and group['params'][0].device.type == 'cpu':
            raise ValueError("Adam: capturable=True keeps the step count on a GPU; these parameters are on the "
                             "CPU (torch refuses it there too)")

    def _loaded_state(self, buffers, p, group):
        """torch keeps the step count as a float32 tensor: a number here, a tensor on p's device if capturable."""
        step = buffers['step']
        if group['capturable']:
            buffers['step'] = torch.as_tensor(step, dtype=torch.float32, device=p.device).clone()
        else:
            buffers['step'] = int(step)
        return buffers

    def _new_state(self, p, group):
        """Zero running means, and the step count t = 0 (a tensor on p's device when capturable)."""
        step = torch.zeros((), dtype=torch.float32, device=p.device) if group['capturable'] else 0
        state = dict(step=step, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        if group['amsgrad']:
            state['max_exp_avg_sq'] = torch.zeros_like(p)
        return state

    def _step_group(self, group):
        """foreach=False: _update per parameter; foreach=True: _update_all on the parameters that have taken
        the same number of steps (they share the bias corrections; one frozen for a while has taken fewer)."""
        if not group['foreach']:
            return super()._step_group(group)
        by_step = defaultdict(list)
        for p in self._params_with_grad(group):
            state = self.state.setdefault(p, {})
            if not state:
                state.update(self._new_state(p, group))
            state['step'] += 1
            # A capturable count is a device tensor: grouping by its value would wait for the device, and all
            # of them can be used as they are.
            by_step['all' if group['capturable'] else state['step']].append(p)
        for params in by_step.values():
            self._update_all(params, group)

    def _update_all(self, params, group):
        """_update's lines, each on every parameter of the list at once (all have taken the same steps)."""
        lr, (beta1, beta2), wd = group['lr'], group['betas'], group['weight_decay']
        grads = [p.grad for p in params]
        if group['maximize']:
            grads = torch._foreach_neg(grads)
        if wd != 0:
            if group['decoupled_weight_decay']:
                torch._foreach_mul_(params, 1 - lr * wd)
            else:
                grads = torch._foreach_add(grads, params, alpha=wd)
        states = [self.state[p] for p in params]
        m, v = [s['exp_avg'] for s in states], [s['exp_avg_sq'] for s in states]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        if torch.is_tensor(beta2):  # (capturable) _foreach_addcmul_ takes a number as its value
            torch._foreach_addcmul_(v, torch._foreach_mul(grads, 1 - beta2), grads, value=1)
        else:
            torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        if group['amsgrad']:
            v_max = [_max_buffer(s, p) for s, p in zip(states, params)]
            torch._foreach_maximum_(v_max, v)
            v = v_max
        denominators = torch._foreach_sqrt(v)
        if group['capturable']:
            # -lr / (1 - beta1^t) and sqrt(1 - beta2^t) on the device, then the step divided through by the
            # first: the order of torch's capturable foreach kernel.
            steps = [s['step'] for s in states]
            step_size = torch._foreach_pow(beta1, steps)
            torch._foreach_sub_(step_size, 1)
            torch._foreach_div_(step_size, lr)
            torch._foreach_reciprocal_(step_size)
            correction2 = torch._foreach_pow(beta2, steps)
            torch._foreach_sub_(correction2, 1)
            torch._foreach_neg_(correction2)
            torch._foreach_sqrt_(correction2)
            torch._foreach_div_(denominators, correction2)
            torch._foreach_add_(denominators, group['eps'])
            torch._foreach_div_(denominators, step_size)
            torch._foreach_addcdiv_(params, m, denominators)
            return
        t = states[0]['step']
        torch._foreach_div_(denominators, (1 - beta2 ** t) ** 0.5)
        torch._foreach_add_(denominators, group['eps'])
        torch._foreach_addcdiv_(params, m, denominators, value=-lr / (1 - beta1 ** t))

    def _update(self, p, grad, state, group):
        lr, (beta1, beta2), wd = group['lr'], group['betas'], group['weight_decay']
        if not state:
            state.update(self._new_state(p, group))
        state['step'] += 1
        t = state['step']
        if group['maximize']:
            grad = -grad
        if wd != 0:
            if group['decoupled_weight_decay']:
                p.mul_(1 - lr * wd)
            else:
                grad = grad.add(p, alpha=wd)
        m, v = state['exp_avg'], state['exp_avg_sq']
        m.lerp_(grad, 1 - beta1)  # m_t = beta1 m + (1 - beta1) g = m + (1 - beta1)(g - m): a lerp towards g
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        if group['amsgrad']:
            v_max = _max_buffer(state, p)
            torch.maximum(v_max, v, out=v_max)
            v = v_max
        if group['capturable']:
            return _capturable_adam_step(p, m, v, t, lr, beta1, beta2, group['eps'])
        # p <- p - lr m^ / (sqrt(v^) + eps), with m^ = m / (1 - beta1^t) and v^ = v / (1 - beta2^t):
        denominator = (v.sqrt() / (1 - beta2 ** t) ** 0.5).add_(group['eps'])  # sqrt(v^) + eps
        p.addcdiv_(m, denominator, value=-lr / (1 - beta1 ** t))                # the lr / (1 - beta1^t) of m^
