"""Optimizers: how a gradient becomes a step. SGD with momentum, then Adam.

Both keep torch.optim's shape, so that anything written for it (a learner, a checkpoint) works with them:
- `param_groups` is a list of dicts, each with its 'params' and its own hyper-parameters ('lr',
  'weight_decay', ...), which the caller may change between steps; that is how a schedule drives them,
  and how discriminative learning rates give each layer group its own rate;
- `state[p]` holds each parameter's running buffers (momentum, moment estimates);
- `state_dict()` / `load_state_dict()` save and restore both, parameters named by their position.
"""
import copy
from collections import defaultdict

import torch


class Optimizer:
    """What every optimizer shares: parameter groups, per-parameter state, zeroing and saving them.

    A subclass passes its default hyper-parameters and writes `step()`.
    """

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
        seen = {id(p) for g in self.param_groups for p in g['params']}
        if any(id(p) in seen for p in group['params']):
            raise ValueError("a parameter appears in more than one parameter group")
        self.param_groups.append(group)

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
        """Restores hyper-parameters and buffers saved by state_dict(), onto this optimizer's parameters."""
        saved_groups = state_dict['param_groups']
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"the saved state has {len(saved_groups)} parameter groups, this optimizer has "
                             f"{len(self.param_groups)}: it was saved for a different model or layer split")
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved['params']) != len(group['params']):
                raise ValueError(f"parameter group {i} has {len(group['params'])} parameters here but "
                                 f"{len(saved['params'])} in the saved state: it was saved for a different model")
        self.state = {}
        for saved, group in zip(saved_groups, self.param_groups):
            for k, v in saved.items():
                if k != 'params':
                    group[k] = copy.deepcopy(v)
            for i, p in zip(saved['params'], group['params']):
                if i in state_dict['state']:
                    self.state[p] = {k: _like(v, p) for k, v in state_dict['state'][i].items()}

    def step(self, closure=None):
        """Updates every parameter that has a gradient. `closure`, if given, re-evaluates the loss first."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            for group in self.param_groups:
                self._step_group(group)
        return loss

    def _step_group(self, group):
        """Updates one group's parameters, one at a time (a subclass may do them all at once)."""
        for p in self._params_with_grad(group):
            self._update(p, p.grad, self.state.setdefault(p, {}), group)

    def _update(self, p, grad, state, group):
        raise NotImplementedError


def _like(value, p):
    """A saved buffer moved to its parameter's device (and dtype, if it is a floating-point tensor)."""
    if not isinstance(value, torch.Tensor):
        return copy.deepcopy(value)
    dtype = p.dtype if value.is_floating_point() else value.dtype
    return value.to(device=p.device, dtype=dtype, copy=True)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and L2 weight decay, step for step torch.optim.SGD.

        g_t = grad + wd * p                  (the gradient of the L2 penalty wd/2 |p|^2 added in)
        b_t = g_t                            on the first step,
        b_t = momentum * b_{t-1} + g_t       after it (a running sum that smooths noisy gradients),
        p  <- p - lr * b_t

    With momentum = 0 this is plain p <- p - lr * g. Hyper-parameters of each group: 'lr', 'momentum',
    'weight_decay'.

    Args:
        params: parameters, or a list of dicts {'params': ..., and any hyper-parameter}.
        lr: the learning rate.
        momentum: the decay of the running sum b, in [0, 1).
        weight_decay: the L2 penalty coefficient wd.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD needs lr, momentum and weight_decay >= 0; got lr={lr}, momentum={momentum}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def _update(self, p, grad, state, group):
        if group['weight_decay'] != 0:
            grad = grad.add(p, alpha=group['weight_decay'])
        if group['momentum'] != 0:
            if 'momentum_buffer' not in state:
                state['momentum_buffer'] = grad.clone()
            else:
                state['momentum_buffer'].mul_(group['momentum']).add_(grad)
            grad = state['momentum_buffer']
        p.add_(grad, alpha=-group['lr'])


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with fastai's defaults; AdamW's decoupled weight decay by default.

        m_t = beta1 m_{t-1} + (1 - beta1) g                 (running mean of the gradient: momentum)
        v_t = beta2 v_{t-1} + (1 - beta2) g^2               (running mean of its square: its scale)
        m^ = m_t / (1 - beta1^t),  v^ = v_t / (1 - beta2^t) (undo the bias of starting both at 0)
        p <- p - lr * m^ / (sqrt(v^) + eps)

    Each coordinate moves by about lr, whatever its gradient's scale. Weight decay comes in one of two ways:
    decouple_wd=True (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"; torch.optim.AdamW,
    fastai's default) shrinks the weights directly before the step, p <- p (1 - lr wd); decouple_wd=False
    adds wd * p to g (L2 regularisation, torch.optim.Adam), which Adam then rescales like any gradient.

    fastai's defaults differ from torch's: beta2 = 0.99 (not 0.999) and eps = 1e-5 (not 1e-8), which
    suit short one-cycle runs; weight_decay = 0.01. Hyper-parameters of each group: 'lr', 'betas', 'eps',
    'weight_decay', 'decouple_wd'. A one-cycle schedule moves beta1 as its momentum.

    Two ways to run the same arithmetic: foreach=False updates one parameter at a time (_update, the
    formulas above line by line: read this one); foreach=True (the default) applies each line to all of a
    group's parameters at once with torch's _foreach_ operations (_update_all), a few Python calls per
    group instead of a dozen per parameter. For float32 and float64 parameters their steps are equal to the
    bit (tests/minigrad/test_optim.py); 16-bit parameters may differ in a last bit.

    Args:
        params: parameters, or a list of dicts {'params': ..., and any hyper-parameter}.
        lr: the learning rate.
        betas: (beta1, beta2), the decays of the two running means.
        eps: added to the denominator so that a zero gradient scale does not divide by zero.
        weight_decay: wd.
        decouple_wd: True for AdamW's decoupled decay, False for an L2 term in the gradient.
        foreach: all of a group's parameters per operation (True) or one parameter at a time (False).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01, decouple_wd=True,
                 foreach=True):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Adam needs lr, eps, weight_decay >= 0 and betas in [0, 1); got lr={lr}, "
                             f"betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      decouple_wd=decouple_wd))
        self.foreach = foreach

    def _step_group(self, group):
        """foreach=False: _update per parameter; foreach=True: _update_all on the parameters that have taken
        the same number of steps (they share the bias corrections; one frozen for a while has taken fewer)."""
        if not self.foreach:
            return super()._step_group(group)
        by_step = defaultdict(list)
        for p in self._params_with_grad(group):
            state = self.state.setdefault(p, {})
            if not state:
                state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            state['step'] += 1
            by_step[state['step']].append(p)
        for t, params in by_step.items():
            self._update_all(params, t, group)

    def _update_all(self, params, t, group):
        """_update's lines, each on every parameter of the list at once (all have taken t steps)."""
        lr, (beta1, beta2), wd = group['lr'], group['betas'], group['weight_decay']
        grads = [p.grad for p in params]
        if wd != 0:
            if group['decouple_wd']:
                torch._foreach_mul_(params, 1 - lr * wd)
            else:
                grads = torch._foreach_add(grads, params, alpha=wd)
        m = [self.state[p]['exp_avg'] for p in params]
        v = [self.state[p]['exp_avg_sq'] for p in params]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        denominators = torch._foreach_sqrt(v)
        torch._foreach_div_(denominators, (1 - beta2 ** t) ** 0.5)
        torch._foreach_add_(denominators, group['eps'])
        torch._foreach_addcdiv_(params, m, denominators, value=-lr / (1 - beta1 ** t))

    def _update(self, p, grad, state, group):
        lr, (beta1, beta2), wd = group['lr'], group['betas'], group['weight_decay']
        if not state:
            state['step'] = 0
            state['exp_avg'] = torch.zeros_like(p)
            state['exp_avg_sq'] = torch.zeros_like(p)
        state['step'] += 1
        t = state['step']
        if wd != 0:
            if group['decouple_wd']:
                p.mul_(1 - lr * wd)
            else:
                grad = grad.add(p, alpha=wd)
        m, v = state['exp_avg'], state['exp_avg_sq']
        m.lerp_(grad, 1 - beta1)  # m_t = beta1 m + (1 - beta1) g = m + (1 - beta1)(g - m): a lerp towards g
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        # The order torch uses: lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps), the same as above.
        denominator = (v.sqrt() / (1 - beta2 ** t) ** 0.5).add_(group['eps'])
        p.addcdiv_(m, denominator, value=-lr / (1 - beta1 ** t))
