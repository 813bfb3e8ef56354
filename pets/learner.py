"""The Learner: a model, its data, a loss and an optimizer, and the loops that train and evaluate them.

    learn = cnn_learner(dls, resnet34, metrics=error_rate)
    learn.fine_tune(2, base_lr=3e-3)        # fastai's sequence: frozen one-cycle, then unfrozen
    preds, targets = learn.get_preds()

The training step is the usual one (normalise, forward, loss, backward, step); what the chapter adds is
around it: one-cycle schedules (minigrad.schedule) written into the optimizer's param groups before each
step, one param group per layer group so that a slice(lo, hi) gives each its own rate, and freezing all
but the head. Learner.fit is a short loop that fires events (EVENTS); what happens around the step lives
in callbacks, fastai's design: the Recorder keeps the table (a row per epoch: epoch, train_loss,
valid_loss, metrics, time) and the progress bar, TrainingProgress (pets.checkpoint) counts fit calls and
resumes checkpoints, SaveCheckpoint writes them, distrib_ctx's DistributedTrainer (pets.distributed) runs
DDP, MixedPrecision (pets.precision) runs the network in 16 bits. Inference is in pets.inference, the
metrics in pets.metrics.
"""
import inspect
import math
import time
import warnings
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from minigrad.functional import cross_entropy
from minigrad.optim import Adam, Optimizer
from minigrad.schedule import discriminative_lrs, one_cycle
from pets.augment import AugTransform
from pets.checkpoint import CancelFit, SaveCheckpoint, TrainingProgress
from pets.data.loader import default_device
from pets.data.normalize import Normalize
from pets.distributed import distrib_ctx, rank
from pets.export import LOSSES, export, inference_dataloaders, program_module, read_export
from pets.inference import get_preds, model_outputs, out_of_memory_error, predict, tta
from pets.interpret import show_results
from pets.lr_finder import plot_lr_find, run_sweep, suggest, valley
from pets.models import arch_config, create_cnn_model, layer_groups
from pets.precision import DTYPES, CancelStep, MixedPrecision, autocast, mixed_precision_callback

# The events of Learner.fit, in the order they fire; a callback is any object with some of these methods,
# each called with the learner. Per fit: before_fit; per epoch: before_epoch, before_train, then per batch
# before_batch, the forward pass and loss, before_backward, after_backward, before_step, after_step,
# after_batch; then after_train, before_validate, after_validate, after_epoch; after_fit at the end.
EVENTS = ('before_fit', 'before_epoch', 'before_train', 'before_batch', 'before_backward', 'after_backward',
          'before_step', 'after_step', 'after_batch', 'after_train', 'before_validate', 'after_validate',
          'after_epoch', 'after_fit')


class Recorder:
    """Callback, always the learner's: what training saw, and the table it prints (fastai's Recorder and
    ProgressCallback). Per batch the loss, learning rates and momentum; per epoch the table's values
    (epoch, train_loss, valid_loss, metrics, time), one printed row each, with a progress bar meanwhile."""

    def __init__(self, metric_names, progress=True):
        self.metric_names, self.progress = list(metric_names), progress
        self.losses, self.lrs, self.moms, self.values = [], [], [], []
        self.lr_find, self.lr_find_suggestions, self.lr_find_points = None, None, None
        self.total, self.count, self.start = 0.0, 0, 0.0

    @property
    def header(self):
        return ['epoch', 'train_loss', 'valid_loss', *self.metric_names, 'time']

    def before_fit(self, learn):
        self.print_row(learn, self.header)
        for epoch, row in enumerate(self.values[len(self.values) - learn.start_epoch:]):
            self.print_row(learn, [epoch, *row, 'resumed'])

    def before_epoch(self, learn):
        self.total, self.count, self.start = 0.0, 0, time.time()

    def before_train(self, learn):
        show = self.progress and learn.is_main_process
        learn.dl = tqdm(learn.dl, leave=False, disable=None if show else True, desc=f"epoch {learn.epoch}")

    def after_batch(self, learn):
        loss = learn.loss_value  # read once by train_step
        self.losses.append(loss)
        self.lrs.append(list(learn.step_lrs))
        self.moms.append(learn.mom)
        self.total, self.count = self.total + loss * len(learn.y), self.count + len(learn.y)

    def after_epoch(self, learn):
        """The row: mean training loss over the epoch's samples (over every process's, under DDP), then
        validation's loss and metrics."""
        values = [self.total / max(self.count, 1), *learn.valid_values]
        self.values.append(values)
        self.print_row(learn, [learn.epoch, *values, time.strftime('%M:%S', time.gmtime(time.time() - self.start))])

    @staticmethod
    def print_row(learn, row):
        if learn.is_main_process:
            cells = [f"{v:.6f}" if isinstance(v, float) else str(v) for v in row]
            tqdm.write('  '.join(f"{c:<12}" for c in cells).rstrip())

    def plot_loss(self):
        """Training loss per batch, and validation loss at the end of each epoch."""
        import matplotlib.pyplot as plt
        figure, axis = plt.subplots(figsize=(6, 4))
        axis.plot(self.losses, label='train')
        if self.values:
            per_epoch = len(self.losses) / len(self.values)
            axis.plot([per_epoch * (i + 1) for i in range(len(self.values))], [v[1] for v in self.values],
                      label='valid')
        axis.set_xlabel('batch')
        axis.set_ylabel('loss')
        axis.legend()
        return figure

    def plot_sched(self):
        """The learning rate of each layer group and the momentum, per batch."""
        import matplotlib.pyplot as plt
        figure, (lr_axis, mom_axis) = plt.subplots(1, 2, figsize=(10, 4))
        lr_axis.plot(self.lrs)
        lr_axis.set_title('learning rate (per layer group)')
        mom_axis.plot([m if m is not None else float('nan') for m in self.moms])
        mom_axis.set_title('momentum')
        return figure

    def plot_lr_find(self):
        """The last lr_find's curve with its suggestions."""
        return plot_lr_find(self.lr_find, self.lr_find_suggestions, self.lr_find_points)


def trainable_params(model):
    """fastai's default splitter: every parameter that trains, as one group."""
    return [p for p in model.parameters() if p.requires_grad]


class Learner:
    """Trains `model` on `dls` with `loss_func` and an optimizer made by `opt_func`; fastai's signature.

    Args:
        dls: DataLoaders whose batches are float images in [0, 1] and class indices.
        model: the network; it receives images normalised with `mean` and `std`.
        loss_func: (logits, targets) -> loss (default: minigrad's cross_entropy).
        opt_func: minigrad.optim.Adam (default) or SGD.
        lr: the default learning rate.
        splitter: model -> its layer groups, each a module or a list of parameters (a flat list of
            parameters is one group); each gets its own learning rate from a slice(lo, hi), and freezing
            works group by group. Default trainable_params: the whole model as one group. cnn_learner
            splits a pretrained body from its new head (pets.models.layer_groups).
        cbs: callbacks: objects with any of the event methods of fit (EVENTS), each called with the
            learner, after the learner's own: learn.training_progress (TrainingProgress) and learn.recorder.
            add_cb and remove_cb change them later.
        metrics: functions (logits, targets) -> number, reported each epoch.
        wd: weight decay (None: the optimizer's default, 0.01 for Adam).
        mean, std: per-channel input normalisation, (x - mean) / std, done by the learner before the model
            (cnn_learner gives the pretrained weights' own); None: the model gets the batches as they are,
            as a fastai Learner does.
        path, model_dir: save and load use path / model_dir (default: the loaders' path, and 'models').
        progress: show a progress bar while an epoch runs.
    """

    def __init__(self, dls, model, loss_func=None, opt_func=Adam, lr=1e-3, splitter=trainable_params, cbs=None,
                 metrics=None, path=None, model_dir='models', wd=None, mean=None, std=None, progress=True):
        self.dls, self.model = dls, model.to(dls.device)
        groups = splitter(self.model)
        self.groups = [groups] if groups and all(isinstance(g, torch.Tensor) for g in groups) else list(groups)
        self.cbs = list(cbs) if isinstance(cbs, (list, tuple)) else [cbs] if cbs else []
        self.loss_func = loss_func or cross_entropy
        self.opt_func, self.lr, self.wd = opt_func, lr, wd
        self.metrics = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics] if metrics else []
        self.path = Path(path) if path is not None else Path(getattr(dls, 'path', '.'))
        self.model_dir = model_dir
        self.stats = None if mean is None else (tuple(mean), tuple(std))
        self.mean = None if mean is None else torch.tensor(mean, device=dls.device).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, device=dls.device).view(1, -1, 1, 1)
        self.training_progress = TrainingProgress()
        self.recorder = Recorder((m.__name__ for m in self.metrics), progress=progress)
        self.cbs = [self.training_progress, self.recorder, *self.cbs]
        self.opt, self.frozen_batchnorms, self.arch = None, [], None
        self.memory_format = torch.contiguous_format
        # Inside distrib_ctx: the model wrapped in DistributedDataParallel (by its callback, for each fit).
        self.distributed, self.ddp = False, None
        self._trainable = (0, 0)

    # --- the parts -----------------------------------------------------------------------------------------

    def _parameters(self):
        """Each layer group's parameters, each with what it is: (p, is_batchnorm, is_bias) lists."""
        kinds = {}
        for module in self.model.modules():
            is_batchnorm = isinstance(module, nn.modules.batchnorm._BatchNorm)
            for name, p in module.named_parameters(recurse=False):
                kinds[id(p)] = (is_batchnorm, name == 'bias')
        groups = [group.parameters() if isinstance(group, nn.Module) else group for group in self.groups]
        return [[(p, *kinds.get(id(p), (False, False))) for p in group] for group in groups]

    def create_opt(self):
        """Two param groups per layer group, both at the layer group's learning rate: its weights, with
        weight decay, and its BatchNorm parameters and biases, without (fastai's wd_bn_bias=False: decaying
        a BatchNorm scale or a bias towards 0 only fights the normalisation). Each param group records its
        layer group ('layer_group'), whose rate it takes. Only parameters that train (requires_grad, so a
        gradient) are stepped."""
        param_groups = []
        for index, group in enumerate(self._parameters()):
            decayed = [p for p, is_batchnorm, is_bias in group if not (is_batchnorm or is_bias)]
            not_decayed = [p for p, is_batchnorm, is_bias in group if is_batchnorm or is_bias]
            param_groups += [{'params': decayed, 'decayed': True, 'layer_group': index},
                             {'params': not_decayed, 'decayed': False, 'weight_decay': 0.0, 'layer_group': index}]
        options = {} if self.wd is None else {'weight_decay': self.wd}
        if self.dls.device.type != 'cpu' and 'capturable' in inspect.signature(self.opt_func).parameters:
            # Adam's step counts on the device: a step skipped there (train_step) leaves them as they were,
            # and no step reads them back.
            options['capturable'] = True
        self.opt = self.opt_func(param_groups, lr=self.lr, **options)

    def normalize(self, x):
        """(x - mean) / std per channel (with the learner's mean and std), in the model's memory format."""
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)

    def to_channelslast(self):
        """Channels-last memory for the model's weights and its inputs (each pixel's channels side by side):
        the layout oneDNN's CPU convolutions and GPUs' tensor cores run fastest (fastai's to_channelslast).
        cnn_learner and load_learner start in it; the values are the same up to rounding."""
        self.memory_format = torch.channels_last
        self.model.to(memory_format=torch.channels_last)
        return self

    def to_contiguous(self):
        """Back to torch's default layout (channels first)."""
        self.memory_format = torch.contiguous_format
        self.model.to(memory_format=torch.contiguous_format)
        return self

    def _set_trainable(self, n_frozen, n_frozen_batchnorm):
        """Layer groups before n_frozen do not train, except their BatchNorm layers when those come at or
        after n_frozen_batchnorm; frozen BatchNorm layers keep their running statistics too (eval mode)."""
        self._trainable = (n_frozen, n_frozen_batchnorm)
        for i, group in enumerate(self._parameters()):
            for p, is_batchnorm, _ in group:
                p.requires_grad_(i >= (n_frozen_batchnorm if is_batchnorm else n_frozen))
        self.frozen_batchnorms = [m for group in self.groups[:n_frozen_batchnorm] for m in self._batchnorms(group)]

    def _batchnorms(self, group):
        """The BatchNorm layers of a layer group: a module's own, or those whose parameters a list holds."""
        is_batchnorm = lambda m: isinstance(m, nn.modules.batchnorm._BatchNorm)
        if isinstance(group, nn.Module):
            return [m for m in group.modules() if is_batchnorm(m)]
        held = {id(p) for p in group}
        return [m for m in self.model.modules() if is_batchnorm(m) and m.weight is not None and id(m.weight) in held]

    def freeze_to(self, n, train_bn=True):
        """Freezes the layer groups before group n, as fastai's freeze_to: a negative n counts from the end
        (freeze_to(-2): the last two groups train), and n at or past the number of groups freezes them all,
        with a warning. The optimizer's state is cleared (fastai's opt.clear_state()): the phase that follows
        starts Adam afresh, step 0 and zero moments, whatever trained before.

        train_bn=True (fastai): their BatchNorm layers keep training, scale, shift and running statistics.
        train_bn=False: those BatchNorm layers are frozen whole, statistics included; on a few images per
        class that keeps the pretrained features intact.
        """
        n_groups = len(self.groups)
        n_frozen = n if n >= 0 else max(n_groups + n, 0)
        if n_frozen >= n_groups:
            warnings.warn(f"freeze_to({n}): freezing {n_frozen} layer groups of {n_groups}: the whole model is frozen")
            n_frozen = n_groups
        self._set_trainable(n_frozen, 0 if train_bn else n_frozen)
        self.clear_opt_state()

    def freeze(self, train_bn=True):
        """Trains only the last layer group, the new head (and BatchNorm layers, with train_bn): freeze_to(-1)."""
        self.freeze_to(-1, train_bn)

    def unfreeze(self, train_bn=True, first_group=0):
        """Trains every layer group from first_group on (all of them by default: freeze_to(0));
        train_bn=False keeps the body's BatchNorm layers frozen whole, in the groups that train too. The
        optimizer's state is cleared, as by freeze_to."""
        self._set_trainable(first_group, 0 if train_bn else len(self.groups) - 1)
        self.clear_opt_state()

    def clear_opt_state(self):
        """Forgets the optimizer's per-parameter state (Adam's step counts and moments, SGD's momentum),
        keeping its hyper-parameters: fastai's opt.clear_state(), which freeze_to and unfreeze call (making
        the optimizer first, as fastai's freeze_to does, if there is none yet)."""
        if self.opt is None:
            self.create_opt()
        self.opt.state.clear()

    def train_mode(self):
        """Training mode, except for frozen BatchNorm layers, which keep their statistics (eval mode)."""
        self.model.train()
        for module in self.frozen_batchnorms:
            module.eval()

    def train_step(self, x, y):
        """One optimizer step on a batch, firing the step's events; returns the loss. A non-finite loss
        stops training with the weights and optimizer state as they were before this step.

        The loss is read back to the host once (learn.loss_value, which the recorder keeps too). On the CPU
        that read is free, and comes before the backward pass: a non-finite loss stops there. On a GPU a
        read makes the host wait for the device, so it comes after the whole step is queued, and the step
        skips itself on the device where the loss is not finite (learn.skip_step, a 0-d bool tensor that
        callbacks may add to, as MixedPrecision adds float16's overflows): the one wait of the step, with the
        host free to queue everything else ahead of it. Callbacks may replace what is differentiated
        (learn.loss_grad, e.g. a scaled loss) in before_backward, and take the step themselves in
        before_step, raising CancelStep."""
        self.x, self.y = x, y
        self('before_batch')
        model = self.ddp if self.ddp is not None else self.model
        with self.autocast():
            self.pred = model(self.normalize(self.x))
            self.loss = self.loss_func(self.pred, self.y)
        read_late = self.dls.device.type != 'cpu' and isinstance(self.opt, Optimizer)  # minigrad's: can skip
        self.skip_step = ~torch.isfinite(self.loss.detach()) if read_late else None
        if not read_late:
            self._read_loss()
        self.loss_grad = self.loss
        self('before_backward')
        self.loss_grad.backward()
        self('after_backward')
        try:
            self('before_step')
            self.opt.step(skip=self.skip_step) if read_late else self.opt.step()
        except CancelStep:
            pass
        self('after_step')
        self.opt.zero_grad()
        if read_late:
            self._read_loss()
        return self.loss

    def _read_loss(self):
        """learn.loss_value, the step's one read of the device; FloatingPointError if it is not finite."""
        self.loss_value = self.loss.item()
        if not math.isfinite(self.loss_value):
            lr = self.opt.param_groups[-1]['lr']
            raise FloatingPointError(f"the loss became {self.loss_value} at learning rate {lr:.2e}: lower the "
                                     f"learning rate (or train in fp32 if mixed precision is on)")

    def distrib_ctx(self, sync_bn=False):
        """A context in which training is data-parallel over the processes torchrun started (see
        pets.distributed); with a single process it changes nothing.

            with learn.distrib_ctx():
                learn.fine_tune(4)
        """
        return distrib_ctx(self, sync_bn)

    def use_sync_batchnorm(self):
        """Swaps every BatchNorm layer for a SyncBatchNorm (statistics over all processes' batches).

        torch's convert_sync_batchnorm makes new modules that share the old ones' parameters and running
        statistics, so the optimizer keeps working; layer groups that are modules, which may hold the old
        ones (a group is a new Sequential over the body's children), are pointed at the new ones, and the
        freezing applied again so that frozen statistics stay frozen."""
        before = dict(self.model.named_modules())
        self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        replaced = {id(before[name]): module for name, module in self.model.named_modules()
                    if before.get(name) is not module}
        self.groups = [replaced.get(id(group), group) for group in self.groups]
        for group in (g for g in self.groups if isinstance(g, nn.Module)):
            for parent in group.modules():
                for name, child in parent.named_children():
                    if id(child) in replaced:
                        setattr(parent, name, replaced[id(child)])
        self._set_trainable(*self._trainable)

    def to_fp16(self):
        """Mixed precision (pets.precision): the forward pass in float16 on a GPU, with loss scaling, or in
        bfloat16 on a CPU (which has no fast float16); weights and optimizer stay float32."""
        return self.to_precision('fp16' if self.dls.device.type == 'cuda' else 'bf16')

    def to_bf16(self):
        """Mixed precision in bfloat16 (pets.precision): float32's range, so no loss scaling."""
        return self.to_precision('bf16')

    def to_fp32(self):
        """Back to full precision."""
        return self.to_precision('fp32')

    def to_precision(self, precision):
        """'fp32', 'bf16' or 'fp16' (see pets.precision.choose_precision for picking one)."""
        if precision not in ('fp32', *DTYPES):
            raise ValueError(f"precision {precision!r}: choose fp32, bf16 or fp16")
        self.remove_cb(MixedPrecision)
        if precision != 'fp32':
            self.add_cb(MixedPrecision(DTYPES[precision]))
        augment = loader_augmentation(self.dls)
        if augment is not None and augment.mean is not None and self.dls.device.type == 'cuda':
            # On a GPU the augmentation's kernel writes the batch in the precision the network computes in,
            # half the bytes (autocast would cast it so at the first layer anyway); float32 elsewhere.
            augment.for_model(augment.mean, augment.std, DTYPES.get(precision), augment.memory_format)
        return self

    @property
    def precision(self):
        """'fp32', 'bf16' or 'fp16': what the network computes in."""
        callback = mixed_precision_callback(self)
        return callback.precision if callback is not None else 'fp32'

    def autocast(self):
        """The autocast context of the learner's precision (its MixedPrecision callback's), or one that
        changes nothing in float32. Training and validation both run in it."""
        return autocast(self)

    def add_cb(self, cb):
        """Adds a callback (it fires after those already there)."""
        self.cbs.append(cb)
        return self

    def remove_cb(self, cb):
        """Removes a callback, or every callback of a class."""
        self.cbs = [c for c in self.cbs if not (c is cb or (isinstance(cb, type) and isinstance(c, cb)))]
        return self

    def __call__(self, event):
        """Fires an event: each callback's method of that name, in order."""
        for cb in self.cbs:
            method = getattr(cb, event, None)
            if method is not None:
                method(self)

    def _set_hypers(self, lrs, mom):
        for group in self.opt.param_groups:
            group['lr'] = lrs[group['layer_group']]
            if mom is not None:
                if 'betas' in group:
                    group['betas'] = (mom, group['betas'][1])
                else:
                    group['momentum'] = mom

    # --- the loops -----------------------------------------------------------------------------------------

    def fit(self, n_epoch, lr=None, wd=None, schedule=None, resume=False):
        """Trains n_epoch epochs. lr: a float, list or slice (one rate per layer group); schedule(step) ->
        (lrs, mom) overrides it step by step (fit_one_cycle passes one). resume: continue from the last
        checkpoint (see resume_from).

        The loop fires the events of EVENTS; everything else happens in callbacks: the recorder keeps the
        table, TrainingProgress counts fit calls and resumes checkpoints, distrib_ctx's callback runs DDP.
        """
        if n_epoch < 0:
            raise ValueError(f"n_epoch={n_epoch}: the number of epochs cannot be negative")
        if resume and not self.training_progress.resuming:
            self.resume_from()
        self.n_epoch, self.start_epoch, self.step = n_epoch, 0, 0
        self._prepare_optimizer(wd)
        lrs = discriminative_lrs(lr if lr is not None else self.lr, len(self.groups))
        try:
            self('before_fit')  # may restore a checkpoint (start_epoch, step), or skip this call
        except CancelFit:
            return
        for self.epoch in range(self.start_epoch, n_epoch):
            self('before_epoch')
            self.train_mode()
            self.dl = self.dls.train
            self('before_train')
            for x, y in self.dl:
                self.step_lrs, self.mom = schedule(self.step) if schedule else (lrs, None)
                self._set_hypers(self.step_lrs, self.mom)
                try:
                    self.train_step(x, y)
                except FloatingPointError as error:
                    raise FloatingPointError(f"epoch {self.epoch}, step {self.step}: {error}") from None
                except torch.OutOfMemoryError:
                    where = f"epoch {self.epoch}, step {self.step}"
                    raise out_of_memory_error(self, where, self.dls.train.bs) from None
                self.step += 1
                self('after_batch')
            self('after_train')
            self('before_validate')
            self.valid_values = self.validate()
            self('after_validate')
            self('after_epoch')
        self('after_fit')

    def _prepare_optimizer(self, wd):
        """The optimizer (made on first use), and a new weight decay for the groups that decay, if given."""
        if wd is not None:
            self.wd = wd
        if self.opt is None:
            self.create_opt()
        if wd is not None:
            for group in self.opt.param_groups:
                if group['decayed']:
                    group['weight_decay'] = wd

    def fit_one_cycle(self, n_epoch, lr_max=None, div=25.0, div_final=1e5, pct_start=0.25, wd=None,
                      moms=(0.95, 0.85, 0.95), resume=False):
        """fit with fastai's one-cycle schedule (minigrad.schedule.one_cycle) of rates and momentum."""
        peaks = discriminative_lrs(lr_max if lr_max is not None else self.lr, len(self.groups))
        n_steps = max(1, n_epoch * len(self.dls.train))
        lrs, mom_values = one_cycle(n_steps, peaks, div, div_final, pct_start, moms)
        schedule = lambda step: (lrs[min(step, n_steps - 1)].tolist(), mom_values[min(step, n_steps - 1)].item())
        self.fit(n_epoch, wd=wd, schedule=schedule, resume=resume)

    def fine_tune(self, epochs, base_lr=2e-3, freeze_epochs=1, lr_mult=100, pct_start=0.3, div=5.0, resume=False,
                  **kwargs):
        """fastai's sequence: freeze; one-cycle over freeze_epochs at slice(base_lr) with pct_start=0.99;
        halve base_lr; unfreeze; one-cycle over `epochs` at slice(base_lr / lr_mult, base_lr)."""
        if resume:
            self.resume_from()
        self.freeze()
        self.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99, **kwargs)
        base_lr /= 2
        self.unfreeze()
        self.fit_one_cycle(epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div=div, **kwargs)

    def lr_find(self, start_lr=1e-7, end_lr=10, num_it=100, stop_div=True, show_plot=True, suggest_funcs=(valley,)):
        """Sweeps the learning rate (see pets.lr_finder); returns SuggestedLRs, one field per suggest_func
        (fastai's rules, or your own with their signature f(lrs, losses, num_it) -> (lr, (lr, loss))).
        The model and optimizer come back as they were. show_plot draws the curve (recorder.plot_lr_find)."""
        suggest_funcs = suggest_funcs if isinstance(suggest_funcs, (list, tuple)) else (suggest_funcs,)
        result = run_sweep(self, start_lr, end_lr, num_it, stop_div)
        self.recorder.lr_find = result
        self.recorder.lr_find_suggestions, self.recorder.lr_find_points = suggest(result, suggest_funcs, num_it)
        if show_plot:
            self.recorder.plot_lr_find()
        return self.recorder.lr_find_suggestions

    def resume_from(self, path=None):
        """Reads a checkpoint (default: the SaveCheckpoint callback's file) and checks that it fits this
        learner; the fit call it was written in then restores it and continues after its last epoch, and
        the fit calls before that one are skipped (TrainingProgress). A learner made afresh that repeats the
        same calls (e.g. fine_tune, or pets.run's recipe) thus picks up where the killed one stopped."""
        if path is None:
            savers = [cb for cb in self.cbs if isinstance(cb, SaveCheckpoint)]
            path = (savers[0] if savers else SaveCheckpoint()).resolve(self)
        if self.opt is None:
            self.create_opt()
        return self.training_progress.resume(self, path)

    @property
    def fit_count(self):
        """How many fit calls this learner has started (TrainingProgress counts them)."""
        return self.training_progress.fit_count

    @property
    def is_main_process(self):
        """True unless this is a rank other than 0 of a distributed run (those neither print nor write)."""
        return rank() == 0

    def export(self, path='export.pth'):
        """Saves the model, its input normalisation, vocabulary and transforms for load_learner (pets.export):
        a cnn_learner's by architecture and weights, any other model as a torch.export program. fastai's
        default name; a relative path is taken under learn.path, as fastai's."""
        return export(self, self.path / path, self.input_normalization())

    def input_normalization(self):
        """(mean, std) the model's inputs are normalised with: by this learner, by a Normalize of its loaders,
        or in their augmentation's pass; None if they are not."""
        normalizer, augment = loader_normalization(self.dls), loader_augmentation(self.dls)
        if self.stats is not None:
            return self.stats
        if normalizer is not None:
            return normalizer.mean, normalizer.std
        if augment is not None and augment.mean is not None:
            return augment.mean, augment.std
        return None

    def model_file(self, file):
        """Where save and load put `file`: self.path / self.model_dir / f'{file}.pth' (fastai's rule; an
        absolute path stays where it is, with .pth added)."""
        return self.path / self.model_dir / f"{file}.pth"

    def save(self, file, with_opt=True):
        """Saves the model's weights and, with_opt, the optimizer's state (to resume training) to
        model_file(file), fastai's learn.save('stage-1') -> models/stage-1.pth; returns the path."""
        path = self.model_file(file)
        path.parent.mkdir(parents=True, exist_ok=True)
        opt = self.opt.state_dict() if with_opt and self.opt is not None else None
        torch.save({'model': self.model.state_dict(), 'opt': opt}, path)
        return path

    def load(self, file, with_opt=True, strict=True):
        """Loads what save wrote to model_file(file) (weights_only: no code is unpickled); with_opt: the
        optimizer's state too, when the file has it."""
        path = self.model_file(file)
        if not path.is_file():
            raise FileNotFoundError(f"no saved model at {path}: learn.save({str(file)!r}) writes it there")
        saved = torch.load(path, map_location=self.dls.device, weights_only=True)
        self.model.load_state_dict(saved['model'], strict=strict)
        if with_opt and saved['opt'] is not None:
            if self.opt is None:
                self.create_opt()
            self.opt.load_state_dict(saved['opt'])
        return self

    def validate(self, dl=None):
        """[valid_loss, *metrics] on the validation set (or dl)."""
        logits, targets, _, _ = model_outputs(self, dl or self.dls.valid)
        return [self.loss_func(logits, targets).item(), *(float(m(logits, targets)) for m in self.metrics)]

    def get_preds(self, ds_idx=1, dl=None, with_input=False, with_decoded=False, with_loss=False, act=None):
        """(probabilities, targets) on dataset ds_idx (0 train, 1 valid) or dl, and with fastai's options
        (inputs, predictions, targets, decoded, losses) (pets.inference.get_preds)."""
        return get_preds(self, ds_idx, dl, with_input, with_decoded, with_loss, act)

    def tta(self, ds_idx=1, dl=None, n=4, item_tfms=None, batch_tfms=None, beta=0.25, use_max=False, seed=0):
        """Test-time augmentation: (probabilities, targets) averaged over n augmented views, fastai's
        signature (pets.inference.tta)."""
        return tta(self, ds_idx, dl, n, item_tfms, batch_tfms, beta, use_max, seed)

    def predict(self, item):
        """(label, class index, probabilities) for one image (a file, a PIL image, a uint8 tensor or array),
        as fastai (pets.inference.predict)."""
        return predict(self, item)

    def show_results(self, ds_idx=1, dl=None, max_n=9, nrows=None, ncols=3, figsize=None):
        """Images of data set ds_idx (1: validation) titled actual / predicted, green where right, red where
        wrong (pets.interpret.show_results); returns the figure."""
        return show_results(self, ds_idx, dl, max_n, nrows, ncols, figsize)


def cnn_learner(dls, arch, metrics=None, pretrained=True, loss_func=None, opt_func=Adam, lr=1e-3, wd=None,
                cbs=None, path=None, model_dir='models', progress=True):
    """A Learner for a pretrained CNN: arch's body with a new head for dls.c classes, frozen to the head,
    inputs normalised with arch's mean and std, unless the loaders' batch transforms already normalise (a
    Normalize), as fastai's cnn_learner adds its Normalize only where there is none."""
    model = create_cnn_model(arch, dls.c, pretrained=pretrained)
    config = arch_config(arch)
    augment = loader_augmentation(dls)
    if loader_normalization(dls) is not None:
        stats = (None, None)  # the user's Normalize does it
    elif augment is not None:
        # The augmentation's one pass normalises too, writing channels-last batches (the model's layout).
        augment.for_model(config.mean, config.std, memory_format=torch.channels_last)
        stats = (None, None)
    else:
        stats = (config.mean, config.std)
    learn = Learner(dls, model, loss_func=loss_func, opt_func=opt_func, lr=lr, splitter=partial(layer_groups, arch=arch),
                    cbs=cbs, metrics=metrics, path=path, model_dir=model_dir, wd=wd, mean=stats[0], std=stats[1],
                    progress=progress)
    learn.arch = arch
    learn.to_channelslast()
    if pretrained:
        learn.freeze()
    return learn


def loader_normalization(dls):
    """The Normalize among the loaders' batch transforms, or None."""
    return next((t for t in getattr(dls.train, 'batch_tfms', ()) if isinstance(t, Normalize)), None)


def loader_augmentation(dls):
    """The loaders' augmentation (an AugTransform) when it is their last batch transform (so that its output
    is what the model reads), else None."""
    tfms = getattr(dls.train, 'batch_tfms', ())
    return tfms[-1] if tfms and isinstance(tfms[-1], AugTransform) else None


vision_learner = cnn_learner  # fastai's newer name for the same thing


def load_learner(path, cpu=True):
    """An exported classifier as an inference Learner (pets.export: weights_only, no code unpickled), fastai's way:

        learn = load_learner('model.pth')
        learn.dls.vocab                                   # the classes
        preds, _ = learn.get_preds(dl=learn.dls.test_dl(files))
        label, index, probabilities = learn.predict('my_cat.jpg')

    Its DataLoaders hold no images, only the validation pipeline and the vocabulary; the model is the
    architecture's network with its weights, or for any other model the torch.export program export wrote.
    cpu: load onto the CPU (else the GPU when there is one). A missing file raises FileNotFoundError; any
    other file that learn.export did not write, ValueError saying so.
    """
    saved = read_export(path)
    dls = inference_dataloaders(saved, torch.device('cpu') if cpu else default_device())
    mean, std = saved['normalization'] or (None, None)
    if 'arch' in saved:
        model = create_cnn_model(saved['arch'], len(saved['vocab']), pretrained=False)
        model.load_state_dict(saved['state_dict'])
        splitter = partial(layer_groups, arch=saved['arch'])
    else:
        model, splitter = program_module(saved, path), trainable_params
    learn = Learner(dls, model, loss_func=LOSSES[saved['loss']], splitter=splitter, mean=mean, std=std,
                    progress=False)
    learn.arch = saved.get('arch')
    learn.to_channelslast().model.eval()
    return learn
