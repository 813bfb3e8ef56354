"""Mixed precision: the network's arithmetic in a 16-bit float where the hardware has it, the rest in float32.

    learn.to_bf16()     # bfloat16 autocast: CPUs with avx512_bf16 or AMX, GPUs since Ampere
    learn.to_fp16()     # float16 autocast with loss scaling on a GPU (bfloat16 on a CPU)
    learn.to_fp32()     # back to float32
    choose_precision(torch.device('cpu'))   # -> ('bf16', 'this CPU computes bfloat16 natively (avx512_bf16)')

Under torch.autocast the matrix multiplications and convolutions, nearly all of a CNN's time, run in 16 bits
on float32 weights cast on the fly; reductions that lose accuracy in 16 bits (softmax, the losses, BatchNorm's
statistics) stay float32. The weights, their gradients and the optimizer's state stay float32, and so do
minigrad's losses, which compute half inputs in float32.

The two 16-bit formats differ in where they spend their bits:
  bfloat16: 8 exponent bits, as float32 (range up to 3e38), 7 mantissa bits (about 2-3 decimal digits).
      A gradient that fits float32 fits bfloat16: training needs nothing more.
  float16: 5 exponent bits (range 6e-8 to 65504), 10 mantissa bits. Small gradients flush to zero, so the
      loss is multiplied by a large scale before backward and the gradients divided by it after
      (torch.amp.GradScaler); a step whose gradients overflowed is skipped and the scale halved.
CPUs compute float16 slowly (no native arithmetic on most), so to_fp16 on a CPU is bfloat16.
"""
import contextlib

import torch

PRECISIONS = ('auto', 'fp32', 'bf16', 'fp16')
DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


class CancelStep(Exception):
    """Raised by a callback's before_step when it has stepped the optimizer itself (MixedPrecision's scaler does)."""


def native_bfloat16(device):
    """Whether `device` computes bfloat16 in hardware: on a CPU, avx512_bf16 or AMX instructions (asked of
    torch's CPU feature detection); on a GPU, compute capability 8.0 or more (Ampere)."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == 'cpu':
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def choose_precision(device, requested='auto'):
    """(precision, why): the precision to train in on `device` ('fp32', 'bf16' or 'fp16'), and a phrase
    saying why, for the run's first line.

    auto: bfloat16 where the device computes it natively; otherwise float16 with loss scaling on a GPU, and
    float32 on a CPU (emulated bfloat16 is slower than float32 there). fp16 on a CPU is bfloat16 (to_fp16)."""
    device = torch.device(device)
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    if requested == 'fp16' and device.type == 'cpu':
        return 'bf16', 'asked for fp16, which a CPU runs as bfloat16 (no fast float16 arithmetic)'
    if requested != 'auto':
        return requested, 'asked for'
    if native_bfloat16(device):
        return 'bf16', f"auto: this {'GPU' if device.type == 'cuda' else 'CPU'} computes bfloat16 natively"
    if device.type == 'cuda':
        return 'fp16', 'auto: this GPU has no native bfloat16, so float16 with loss scaling'
    return 'fp32', f"auto: this {device.type.upper()} has no native bfloat16"


class MixedPrecision:
    """Callback: the forward pass and loss under torch.autocast(dtype); with float16, the loss scaled before
    backward and the step taken by a GradScaler (fastai's MixedPrecision). The loss itself stays float32
    (minigrad's losses follow autocast's float32 policy), so the scaled loss cannot overflow float16.

    Learner.to_fp16 and to_bf16 add it; learn.autocast() enters its context (training and validation alike).
    """

    def __init__(self, dtype=torch.bfloat16):
        self.dtype = dtype
        self.scaler = None

    @property
    def precision(self):
        return 'fp16' if self.dtype == torch.float16 else 'bf16'

    def autocast(self, device):
        return torch.autocast(device.type, dtype=self.dtype)

    def before_fit(self, learn):
        # A new scaler for each fit, as fastai's MixedPrecision makes one: a scale that one fit's overflows
        # halved (an lr_find sweep's, say) does not carry into the next. A fit resumed from a checkpoint
        # (start_epoch > 0) keeps the scaler the checkpoint restored.
        if self.dtype == torch.float16 and learn.start_epoch == 0:
            self.scaler = self.new_scaler(learn.dls.device)

    def new_scaler(self, device):
        return torch.amp.GradScaler(torch.device(device).type)

    def before_backward(self, learn):
        if self.scaler is None and self.dtype == torch.float16:  # a train_step outside any fit
            self.scaler = self.new_scaler(learn.dls.device)
        if self.scaler is not None:
            learn.loss_grad = self.scaler.scale(learn.loss)

    def before_step(self, learn):
        if self.scaler is None:
            return
        if getattr(learn, 'skip_step', None) is None:  # on the CPU, where reading a flag is free
            self.scaler.step(learn.opt)  # unscales the gradients; skips the step if any is inf or NaN
            self.scaler.update()
            raise CancelStep
        # On a GPU: unscale, and let the learner's own step skip itself on the device where a gradient
        # overflowed (GradScaler.step would read that flag back: a wait). The flags are the ones
        # GradScaler.step itself sums (a private record of torch's; unscale_ fills it).
        self.scaler.unscale_(learn.opt)
        found_inf = self.scaler._per_optimizer_states[id(learn.opt)]['found_inf_per_device'].values()
        learn.skip_step = learn.skip_step | (sum(found_inf) > 0)

    def after_step(self, learn):
        if self.scaler is not None and getattr(learn, 'skip_step', None) is not None:
            self.scaler.update()  # halves the scale after an overflow, on the device

    def scaler_state(self):
        """The loss scale and its schedule (float16), for a checkpoint; None without a scaler."""
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_scaler_state(self, state, device):
        if state is not None:
            self.scaler = self.new_scaler(device)
            self.scaler.load_state_dict(state)


@contextlib.contextmanager
def own_scaler(learn):
    """Inside: a fresh loss scaler (float16 only), put back as it was after. lr_find's sweep runs in one, as
    fastai's, where the sweep is a fit of its own: a sweep that diverges halves its own scale, not the run's."""
    callback = mixed_precision_callback(learn)
    if callback is None or callback.dtype != torch.float16:
        yield
        return
    saved = callback.scaler
    callback.scaler = callback.new_scaler(learn.dls.device)
    try:
        yield
    finally:
        callback.scaler = saved


def mixed_precision_callback(learn):
    """learn's MixedPrecision callback, or None (float32)."""
    return next((cb for cb in learn.cbs if isinstance(cb, MixedPrecision)), None)


def autocast(learn):
    """The autocast context of learn's MixedPrecision callback, or a context that changes nothing."""
    callback = mixed_precision_callback(learn)
    return callback.autocast(learn.dls.device) if callback is not None else contextlib.nullcontext()
