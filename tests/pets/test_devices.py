"""Device mistakes caught on a CPU: the learner on the pretend GPU of tests/fakegpu.py (tensors that hold CPU
data but say they are on fakegpu:0), and mixed precision's dtypes. What a user gets back must be on the CPU,
as in fastai; a training step may wait for the device once; tta must leave every random stream as it was."""
import matplotlib
import pytest
import torch

from pets.data.block import DataBlock
from pets.data.images import Resize
from pets.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr
from pets.interpret import ClassificationInterpretation
from pets.learner import Learner, cnn_learner
from pets.metrics import accuracy, error_rate
from pets.precision import mixed_precision_callback

matplotlib.use('Agg')


def device_learner(folder, device):
    """An untrained resnet18 over the pet folder (presized, no augmentation) on device."""
    block = DataBlock(get_items=get_image_files, splitter=RandomSplitter(valid_pct=0.25, seed=0), item_tfms=Resize(32),
                      get_y=using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name'))
    dls = block.dataloaders(folder, bs=6, num_workers=0, device=device, seed=0)
    torch.manual_seed(0)
    return cnn_learner(dls, 'resnet18', metrics=[error_rate, accuracy], pretrained=False, progress=False)


def on_cpu(*tensors):
    return all(t.device.type == 'cpu' for t in tensors)


def test_the_pretend_gpu_is_not_the_cpu(fakegpu):
    x = torch.ones(3).to('fakegpu')
    assert x.device == fakegpu.DEVICE and (x * 2).device == fakegpu.DEVICE and torch.equal(x.cpu(), torch.ones(3))
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        x + torch.ones(3)
    with pytest.raises(TypeError, match="can't convert fakegpu:0 device type tensor to numpy"):
        x.numpy()
    with fakegpu.counting_waits() as waits:
        float(x.sum())
    assert waits == ['read _local_scalar_dense']


def test_the_pretend_gpu_counts_every_wait_a_cuda_device_makes(fakegpu):
    """Reads back, copies to the device that block (unpinned memory, or non_blocking=False), and operations
    whose output size depends on the values; a non-blocking copy from pinned memory and plain arithmetic
    do not wait."""
    host = torch.arange(6.0)
    pinned = host.pin_memory()
    assert pinned.is_pinned() and not host.is_pinned()
    with fakegpu.counting_waits() as waits:
        x = pinned.to('fakegpu', non_blocking=True)
        y = (x * 2 + 1).sum(0, keepdim=True)
    assert waits == [] and y.device == fakegpu.DEVICE
    cases = {
        'copy': [lambda: host.to('fakegpu'), lambda: host.to('fakegpu', non_blocking=True),
                 lambda: pinned.to('fakegpu'), lambda: torch.tensor([1.0, 2.0], device='fakegpu'),
                 lambda: torch.as_tensor(host, device='fakegpu')],
        'read': [lambda: x.sum().item(), lambda: bool(x[0] > 0), lambda: x.tolist(), lambda: x.cpu()],
        'size': [lambda: x[x > 2], lambda: x.nonzero(), lambda: torch.bincount(x.long()),
                 lambda: x.repeat_interleave(x.long()), lambda: x.unique(), lambda: x.masked_select(x > 2)],
    }
    for kind, calls in cases.items():
        for call in calls:
            with fakegpu.counting_waits() as waits:
                call()
            assert waits and all(w.split()[0] == kind for w in waits), (kind, waits)
    with fakegpu.counting_waits() as waits:
        x.repeat_interleave(x.long(), output_size=15)  # the size given: no wait
        torch.where(x > 2, x, 0)                       # masks that keep the shape: no wait
    assert waits == []


def test_a_learner_on_a_gpu_trains_predicts_interprets_and_hands_back_cpu_tensors(pet_folder, fakegpu):
    learn = device_learner(pet_folder, 'fakegpu')
    assert next(learn.model.parameters()).device == fakegpu.DEVICE
    learn.fit_one_cycle(1, 1e-3)
    assert all(isinstance(v, float) for row in learn.recorder.values for v in row)
    probabilities, targets = learn.get_preds()
    _, _, losses = learn.get_preds(with_loss=True)
    tta_probabilities, _ = learn.tta(n=2)
    label, index, predicted = learn.predict(pet_folder / 'beagle_0.jpg')
    assert on_cpu(probabilities, targets, losses, tta_probabilities, index, predicted)
    assert label == learn.dls.vocab[index]
    interp = ClassificationInterpretation.from_learner(learn)
    assert on_cpu(interp.probabilities, interp.targets, interp.losses, interp.confusion_matrix())
    interp.most_confused()
    assert interp.plot_confusion_matrix().axes and interp.plot_top_losses(3).axes
    assert learn.show_results(max_n=3).axes
    suggestions = learn.lr_find(num_it=5, show_plot=False)
    assert all(isinstance(v, float) for v in (*suggestions, *learn.recorder.lr_find.losses))


def test_training_with_augmentation_and_validation_waits_once_a_step(pet_folder, fakegpu):
    """Whole epochs on the pretend GPU, loading, augmentation, the step, callbacks and validation: at most
    one wait per training step (the loss, read once for the NaN guard and the recorder) and a few per
    epoch (validation's loss and metrics), whatever kind of wait it is."""
    from pets.augment import aug_transforms
    block = DataBlock(get_items=get_image_files, splitter=RandomSplitter(valid_pct=0.25, seed=0), item_tfms=Resize(32),
                      get_y=using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name'),
                      batch_tfms=aug_transforms(size=24, min_scale=0.75, seed=0))
    dls = block.dataloaders(pet_folder, bs=6, num_workers=0, device='fakegpu', seed=0)
    torch.manual_seed(0)
    learn = cnn_learner(dls, 'resnet18', metrics=[error_rate, accuracy], pretrained=False, progress=False)
    epochs, per_epoch = 2, 1 + len(learn.metrics)  # validation: its loss and each metric, read once
    with fakegpu.counting_waits() as waits:
        learn.fit_one_cycle(epochs, 1e-3)
    steps = epochs * len(dls.train)
    assert len(waits) <= steps + epochs * per_epoch, (steps, waits)


def test_the_nan_guard_still_stops_a_step_on_a_gpu(pet_folder, fakegpu):
    learn = device_learner(pet_folder, 'fakegpu')
    learn.loss_func = lambda logits, targets: logits.sum() * float('nan')
    before = [p.detach().cpu().clone() for p in learn.model.parameters()]
    with pytest.raises(FloatingPointError, match="the loss became nan"):
        learn.fit(1, lr=1e-3)
    assert all(torch.equal(a, p.detach().cpu()) for a, p in zip(before, learn.model.parameters()))


def test_tta_leaves_the_gpus_random_stream_as_it_was(pet_folder, fakegpu):
    learn = device_learner(pet_folder, 'fakegpu')
    torch.manual_seed(1)
    device_state, cpu_state = torch.fakegpu.get_rng_state(), torch.get_rng_state()
    learn.tta(n=2)
    assert torch.equal(torch.fakegpu.get_rng_state(), device_state) and torch.equal(torch.get_rng_state(), cpu_state)


@pytest.mark.parametrize('device', ['cpu', 'cuda'])
def test_float16_training_keeps_a_float32_loss_and_takes_the_scalers_first_step(pet_folder, device):
    """Under float16 autocast the network computes in float16 and the loss is float32 (autocast's policy for
    losses), so GradScaler's 65536 x loss (about 72000 here) stays finite and its first step is taken: the
    scale is not halved. A float16 loss would overflow (float16 stops at 65504) and the step be skipped.
    GradScaler and float16 autocast run on the CPU too. The model is small enough that its gradients fit
    float16 once scaled (a deep net's may not, and then the scaler rightly halves its scale)."""
    if device == 'cuda' and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (none here)")
    dls = device_learner(pet_folder, device).dls
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, dls.c))
    learn = Learner(dls, model, metrics=error_rate, progress=False).to_precision('fp16')
    dtypes = []

    class RecordDtypes:
        def before_backward(self, learn):
            dtypes.append((learn.pred.dtype, learn.loss.dtype))

    learn.add_cb(RecordDtypes())
    before = [p.detach().clone() for p in learn.model.parameters()]
    learn.fit(1, lr=1e-3)
    assert set(dtypes) == {(torch.float16, torch.float32)}
    assert mixed_precision_callback(learn).scaler.get_scale() == 2.0 ** 16  # no step was skipped
    assert all(not torch.equal(a, p.detach()) for a, p in zip(before, learn.model.parameters()))


def test_on_a_gpu_the_loss_is_read_after_the_step_is_queued(pet_folder, fakegpu):
    """The host queues forward, backward and step before its one wait: reading the loss."""
    learn = device_learner(pet_folder, 'fakegpu')

    class Mark:
        def before_backward(self, learn):
            fakegpu.waits.append('mark before_backward')

        def after_step(self, learn):
            fakegpu.waits.append('mark after_step')

    learn.add_cb(Mark())
    with fakegpu.counting_waits() as waits:
        learn.fit(1, lr=1e-3)
    steps = len(learn.dls.train)
    training = [w for w in waits if w.startswith(('mark', 'read'))][:3 * steps]
    assert training == ['mark before_backward', 'mark after_step', 'read _local_scalar_dense'] * steps


def test_float16_on_a_gpu_waits_once_a_step_and_skips_an_overflow_on_the_device(pet_folder, fakegpu):
    """GradScaler.step would read its overflow flag back (a second wait): the learner's own step skips
    itself on the device instead, and the scale is halved there."""
    dls = device_learner(pet_folder, 'fakegpu').dls
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, dls.c))
    learn = Learner(dls, model, progress=False).to_precision('fp16')
    with fakegpu.counting_waits() as waits:
        learn.fit(1, lr=1e-3)
    steps = len(dls.train)
    assert len(waits) <= steps + 1, waits  # one a step, and validation's loss
    scaler = mixed_precision_callback(learn).scaler
    assert float(scaler.get_scale()) == 2.0 ** 16  # no overflow: every step taken

    class Overflow:  # a gradient that overflows float16's range once scaled
        def after_backward(self, learn):
            learn.model[2].weight.grad[0, 0] = float('inf')

    learn.add_cb(Overflow())
    before = [p.detach().cpu().clone() for p in learn.model.parameters()]
    state_before = {k: v.cpu().clone() for k, v in learn.opt.state[learn.model[2].weight].items()}
    learn.fit(1, lr=1e-3)  # a new fit: a new scaler, whose every step overflows
    assert all(torch.equal(a, p.detach().cpu()) for a, p in zip(before, learn.model.parameters()))
    state_after = learn.opt.state[learn.model[2].weight]
    assert all(torch.equal(v, state_after[k].cpu()) for k, v in state_before.items())
    assert float(mixed_precision_callback(learn).scaler.get_scale()) == 2.0 ** 16 / 2 ** steps


def test_on_a_gpu_workers_prepare_the_items_from_images_decoded_once(pet_folder, fakegpu):
    """For a GPU, the items' presizing runs in worker processes even for a data set kept in memory: the
    images are decoded once, here, and the workers (forked after) share them; tta's loaders share them too.
    The batches are the ones a loader without workers makes (each item carries its own seed)."""
    block = DataBlock(get_items=get_image_files, splitter=RandomSplitter(valid_pct=0.25, seed=0), item_tfms=Resize(32),
                      get_y=using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name'))
    dls = block.dataloaders(pet_folder, bs=6, device='fakegpu', seed=0)
    assert dls.train.num_workers > 0 and len(dls.train_ds.cache) == len(dls.train_ds)
    assert dls.valid.ordered(train=True, seed=0).dataset.cache is dls.valid_ds.cache
    in_process = block.dataloaders(pet_folder, bs=6, device='fakegpu', seed=0, num_workers=0)
    for (x, y), (x0, y0) in zip(dls.train, in_process.train):
        assert x.device == fakegpu.DEVICE and torch.equal(x.cpu(), x0.cpu()) and torch.equal(y.cpu(), y0.cpu())
    cpu = block.dataloaders(pet_folder, bs=6, device='cpu', seed=0)
    assert cpu.train.num_workers == 0  # on the CPU the items are prepared here: no process competes with the model


def test_a_normalize_batch_transform_waits_once_per_device_not_per_batch(fakegpu):
    from pets.data.normalize import Normalize, imagenet_stats
    normalize = Normalize.from_stats(*imagenet_stats)
    x = torch.rand(2, 3, 4, 4).to('fakegpu')
    normalize(x)  # its statistics reach the device once
    with fakegpu.counting_waits() as waits:
        for _ in range(3):
            out = normalize(x)
    assert waits == [] and out.device == fakegpu.DEVICE
    torch.testing.assert_close(normalize.decode(out).cpu(), x.cpu())
