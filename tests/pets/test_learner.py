"""The Learner on generated data: schedules in the optimizer, freezing, fine_tune, predictions, errors."""
import math

import pytest
import torch

from minigrad.schedule import one_cycle
from pets.learner import Learner
from pets.metrics import error_rate
from small_learners import learner, small_dls

@pytest.fixture
def dls(pet_folder):
    return small_dls(pet_folder)


def test_fit_one_cycle_drives_the_optimizer_with_the_schedule(dls, capsys):
    learn = learner(dls)
    learn.fit_one_cycle(2, lr_max=1e-2)
    n_steps = 2 * len(dls.train)
    expected_lrs, expected_moms = one_cycle(n_steps, [1e-2] * 3)
    torch.testing.assert_close(torch.tensor(learn.recorder.lrs, dtype=torch.float64), expected_lrs)
    assert learn.recorder.moms == pytest.approx(expected_moms.tolist())
    assert learn.opt.param_groups[0]['betas'][0] == pytest.approx(expected_moms[-1].item())
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ['epoch', 'train_loss', 'valid_loss', 'error_rate', 'accuracy', 'time']
    assert len(out) == 3 and len(learn.recorder.values) == 2
    train_loss, valid_loss, err, acc = learn.recorder.values[-1]
    assert err == pytest.approx(1 - acc) and train_loss > 0 and valid_loss > 0


def test_discriminative_rates_from_a_slice(dls):
    learn = learner(dls)
    learn.unfreeze()
    learn.fit(1, lr=slice(1e-6, 1e-4))
    assert learn.recorder.lrs[0] == pytest.approx([1e-6, 1e-5, 1e-4])


def test_freeze_trains_only_the_head_and_batchnorm(dls):
    learn = learner(dls)
    body, head = learn.groups[0], learn.groups[-1]
    learn.freeze()
    assert all(p.requires_grad for p in head.parameters())
    assert not body[0].weight.requires_grad and body[1].weight.requires_grad  # conv frozen, BN trains (fastai)
    learn.freeze(train_bn=False)
    assert not body[1].weight.requires_grad and body[1] in learn.frozen_batchnorms
    before = body[1].running_mean.clone()
    learn.fit(1, lr=1e-3)
    assert torch.equal(body[1].running_mean, before)  # frozen whole: statistics kept
    learn.unfreeze(train_bn=False)
    assert body[0].weight.requires_grad and not body[1].weight.requires_grad
    assert all(p.requires_grad for p in head.parameters())  # the head's BatchNorm always trains
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())


def test_unfreeze_from_a_later_group_keeps_the_groups_before_it_frozen(dls):
    learn = learner(dls)
    first, second = learn.groups[0], learn.groups[1]
    learn.unfreeze(train_bn=False, first_group=1)
    assert not any(p.requires_grad for p in first.parameters())
    batchnorms = [m for m in second.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms and all(m in learn.frozen_batchnorms for m in batchnorms)  # frozen in a training group too
    assert any(p.requires_grad for p in second.parameters())
    assert all(p.requires_grad for p in learn.groups[-1].parameters())
    before = [p.detach().clone() for p in first.parameters()]
    learn.fit(1, lr=1e-3)
    assert all(torch.equal(a, b) for a, b in zip(before, first.parameters()))
    learn.unfreeze(first_group=1)  # train_bn=True: the frozen group's BatchNorm layers train, as fastai's freeze_to
    assert first[1].weight.requires_grad and not first[0].weight.requires_grad


def test_fine_tune_is_fastais_sequence(dls):
    trains = []  # at each fit: whether the body's first conv trains, whether the head does

    class RecordTrainable:
        def before_fit(self, learn):
            trains.append((learn.groups[0][0].weight.requires_grad, learn.groups[-1][-1].weight.requires_grad))

    learn = learner(dls, cbs=RecordTrainable())
    learn.fine_tune(1, base_lr=2e-3)
    assert trains == [(False, True), (True, True)]  # frozen to the head, then unfrozen
    n = len(dls.train)
    first, second = learn.recorder.lrs[:n], learn.recorder.lrs[n:]
    # Phase 1: slice(base_lr) -> base_lr / 10 for the body groups, base_lr for the head; pct_start 0.99.
    expected_first = one_cycle(n, [2e-4, 2e-4, 2e-3], pct_start=0.99).lrs
    # Phase 2: base_lr halved, slice(1e-3 / 100, 1e-3) spread geometrically; div 5, pct_start 0.3.
    expected_second = one_cycle(n, [1e-5, 1e-4, 1e-3], div=5.0, pct_start=0.3).lrs
    torch.testing.assert_close(torch.tensor(first, dtype=torch.float64), expected_first)
    torch.testing.assert_close(torch.tensor(second, dtype=torch.float64), expected_second)


def test_get_preds_and_predict(dls, pet_folder):
    learn = learner(dls)
    probabilities, targets = learn.get_preds()
    assert probabilities.shape == (len(dls.valid_ds), 3) and torch.allclose(probabilities.sum(1), torch.ones(6))
    assert targets.tolist() == [dls.valid_ds.targets[i] for i in range(len(dls.valid_ds))]
    _, _, losses = learn.get_preds(with_loss=True)
    assert losses.shape == (6,)
    label, index, probs = learn.predict(pet_folder / 'beagle_0.jpg')
    # fastai's triple: the decoded label, the class index as a tensor, the probabilities
    assert isinstance(index, torch.Tensor) and index.dim() == 0 and index == probs.argmax()
    assert label == dls.vocab[index] and probs.shape == (3,)


def test_tta_blends_augmented_views_with_the_plain_prediction_and_repeats(dls):
    learn = learner(dls)
    plain, targets = learn.get_preds()
    augmentation = dls.train.batch_tfms[0]
    streams = [augmentation.generator.get_state(), dls.train.generator.get_state(), torch.get_rng_state()]
    probabilities, tta_targets = learn.tta(n=3)
    assert torch.equal(tta_targets, targets) and probabilities.shape == plain.shape
    torch.testing.assert_close(probabilities.sum(1), torch.ones(len(targets)))
    assert not torch.allclose(probabilities, plain)  # the views are augmented
    assert torch.equal(learn.tta(n=3).probabilities, probabilities)  # drawn from the seed: repeatable
    after = [augmentation.generator.get_state(), dls.train.generator.get_state(), torch.get_rng_state()]
    assert all(torch.equal(a, b) for a, b in zip(streams, after))  # training's random streams untouched
    torch.testing.assert_close(learn.tta(n=3, beta=1.0).probabilities, plain)  # beta=1: the plain prediction
    assert (learn.tta(n=3, use_max=True).probabilities >= plain).all()


def test_a_diverging_loss_stops_with_a_message(dls):
    learn = learner(dls)
    learn.unfreeze()
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        learn.fit(1, lr=1e30)


def test_running_out_of_memory_suggests_a_smaller_batch(dls):
    def out_of_memory(logits, targets, **kwargs):  # what a too-large batch raises on a GPU
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    learn = learner(dls, loss_func=out_of_memory)
    with pytest.raises(torch.OutOfMemoryError, match=r"epoch 0, step 0: out of memory on cpu with batch size 6: "
                                                     r"use a smaller batch size \(dataloaders\(bs=3\), pets.run --bs 3"):
        learn.fit(1)

    learn = learner(dls)
    learn.model.forward = lambda x: out_of_memory(x, None)
    with pytest.raises(torch.OutOfMemoryError, match=r"predicting: out of memory on cpu with batch size 6: use a"):
        learn.validate()


def test_lr_find_restores_the_model_and_suggests(dls):
    import matplotlib
    matplotlib.use('Agg')
    from pets.lr_finder import minimum, slide, steep, valley
    learn = learner(dls)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    suggestions = learn.lr_find(num_it=30, suggest_funcs=(minimum, steep, valley, slide), show_plot=False)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items())
    assert suggestions._fields == ('minimum', 'steep', 'valley', 'slide')
    assert all(1e-7 <= lr <= 10 for lr in suggestions)
    lrs = learn.recorder.lr_find.lrs
    assert lrs[0] == pytest.approx(1e-7) and all(b > a for a, b in zip(lrs, lrs[1:]))
    lr_min, lr_steep = learn.lr_find(num_it=30, suggest_funcs=(minimum, steep), show_plot=False)
    # fastai's rules on the smoothed curve without its first tenth (3 of 30) and last 5 points: a tenth of the
    # rate at its lowest loss; the rate where the loss falls most per decade of rate.
    sweep = learn.recorder.lr_find
    rates, losses = sweep.lrs[3:len(sweep.lrs) - 5], sweep.smooth_losses[3:len(sweep.lrs) - 5]
    assert lr_min == pytest.approx(rates[losses.index(min(losses))] / 10)
    drops = [(b - a) / (math.log(r2) - math.log(r1)) for a, b, r1, r2 in zip(losses, losses[1:], rates, rates[1:])]
    assert lr_steep == pytest.approx(rates[drops.index(min(drops))])
    assert learn.recorder.plot_lr_find().axes[0].get_xscale() == 'log'
    learn.fit_one_cycle(1, 1e-3)
    assert len(learn.recorder.plot_sched().axes) == 2 and learn.recorder.plot_loss().axes


def test_suggestion_rules_on_a_known_curve():
    from pets.lr_finder import minimum, steep, valley
    lrs = torch.logspace(-7, 1, 81, dtype=torch.float64)
    log_lr = torch.log10(lrs)
    losses = 3 - 2 * torch.sigmoid((log_lr + 3) * 3) + torch.relu(log_lr + 0.5) ** 2  # drops around 1e-3, rises after
    lowest = int(losses.argmin())
    assert minimum(lrs, losses, 100) == (pytest.approx(lrs[lowest] / 10), (lrs[lowest], losses[lowest]))
    lr_steep, (marked_lr, marked_loss) = steep(lrs, losses, 100)
    assert 10 ** -3.2 < lr_steep < 10 ** -2.8 and marked_lr == lr_steep and marked_loss in losses
    lr_valley, _ = valley(lrs, losses, 100)
    assert lrs[0] < lr_valley < lrs[lowest]


def test_interpretation(dls):
    import matplotlib
    matplotlib.use('Agg')
    from pets.interpret import ClassificationInterpretation
    learn = learner(dls)
    interp = ClassificationInterpretation.from_learner(learn)
    matrix = interp.confusion_matrix()
    assert matrix.shape == (3, 3) and matrix.sum() == len(dls.valid_ds)
    assert torch.equal(matrix.sum(1), torch.bincount(interp.targets, minlength=3))
    confused = interp.most_confused()
    vocab = list(dls.vocab)
    off_diagonal = {(vocab[a], vocab[p]): int(matrix[a, p]) for a in range(3) for p in range(3)
                    if a != p and matrix[a, p] >= 1}
    assert {(a, p): n for a, p, n in confused} == off_diagonal and len(confused) == len(off_diagonal)
    assert [n for _, _, n in confused] == sorted(off_diagonal.values(), reverse=True)
    assert interp.most_confused(min_val=max(off_diagonal.values(), default=1) + 1) == []
    assert [n for _, _, n in confused] == sorted((n for _, _, n in confused), reverse=True)
    assert sum(n for _, _, n in confused) == int((interp.predictions != interp.targets).sum())
    losses, indices = interp.top_losses(3)
    assert (losses[:-1] >= losses[1:]).all() and len(indices) == 3
    # The heat map draws the matrix, each non-zero count written in its cell.
    axis = interp.plot_confusion_matrix().axes[0]
    assert (axis.images[0].get_array() == matrix.numpy()).all()
    assert sorted((round(t.get_position()[1]), round(t.get_position()[0]), int(t.get_text())) for t in axis.texts) == \
        sorted((a, p, int(matrix[a, p])) for a in range(3) for p in range(3) if matrix[a, p])
    # The top losses, titled from the learner's own predict on each file: predicted / actual, then the loss
    # (cross-entropy, -log of the actual class's probability) / the prediction's probability, as fastai.
    titles = [a.get_title() for a in interp.plot_top_losses(3).axes if a.get_title()]
    expected = []
    for item in sorted(dls.valid_ds.items, key=lambda f: -float(interp.losses[interp.items.index(f)]))[:3]:
        label, index, probabilities = learn.predict(item)
        actual = dls.valid_ds.targets[dls.valid_ds.items.index(item)]
        expected.append(f"{label} /\n{vocab[actual]}\n{-math.log(probabilities[actual]):.2f} / "
                        f"{float(probabilities.max()):.2f}")
    assert titles == expected


def test_probabilities_come_from_minigrads_softmax(dls, tmp_path, monkeypatch):
    """get_preds, tta, predict and a loaded learner: logits -> probabilities by minigrad.functional.softmax."""
    import minigrad.functional
    import pets.inference
    import pets.learner
    calls = []

    def spy(x, dim=-1):
        calls.append(x.shape)
        return minigrad.functional.softmax(x, dim)

    learn = learner(dls)
    learn.export(tmp_path / 'model.pth')
    loaded = pets.learner.load_learner(tmp_path / 'model.pth')
    monkeypatch.setattr(pets.inference, 'softmax', spy)
    probabilities, _ = learn.get_preds()
    assert calls == [probabilities.shape]
    learn.tta(n=2)
    learn.predict(dls.valid_ds.items[0])
    loaded.predict(dls.valid_ds.items[0])
    assert len(calls) == 1 + 3 + 1 + 1  # get_preds; tta's plain pass and 2 views; predict; the loaded learner


def test_export_load_learner_and_predict_cli(dls, pet_folder, tmp_path, capsys):
    import pickle
    from pets.learner import load_learner
    from pets.predict import main as predict_main
    learn = learner(dls)
    learn.fit(1, lr=1e-3)
    path = learn.export(tmp_path / 'model.pth')
    # fastai's inference code, unchanged: load_learner gives a Learner with dls.vocab, test_dl, get_preds, predict.
    inference = load_learner(path)
    assert isinstance(inference, Learner) and list(inference.dls.vocab) == list(dls.vocab)
    files = dls.valid_ds.items[:3]
    expected, _ = learn.get_preds(dl=dls.test_dl(files))
    preds, targets = inference.get_preds(dl=inference.dls.test_dl(files))
    torch.testing.assert_close(preds, expected, atol=1e-5, rtol=0)
    assert targets is None and len(inference.dls.train_ds) == len(inference.dls.valid_ds) == 0
    label, index, probabilities = inference.predict(files[0])
    assert label == learn.predict(files[0])[0] and label == dls.vocab[index]
    torch.testing.assert_close(probabilities, expected[0], atol=1e-5, rtol=0)
    capsys.readouterr()
    assert predict_main([str(path), str(files[0]), '--top', '2']) == 0
    assert capsys.readouterr().out.startswith(f"{files[0]}: {label} ")
    (tmp_path / 'evil.pth').write_bytes(pickle.dumps(Exception('runs code on load')))
    assert predict_main([str(tmp_path / 'evil.pth'), str(files[0])]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot load {tmp_path / 'evil.pth'}: {tmp_path / 'evil.pth'} "
                                              f"is not a model exported by pets")

    # A folder is every image under it; --csv writes one row per image; an unreadable image is reported in
    # a line, the rest are predicted, and the exit code is 2.
    (pet_folder / 'notes.txt').write_text('not an image')
    (pet_folder / 'broken.jpg').write_bytes(b'not a jpeg')
    assert predict_main([str(path), str(pet_folder), '--csv', str(tmp_path / 'predictions.csv'), '--top', '2']) == 2
    captured = capsys.readouterr()
    assert captured.out.count('\n') == 24 and 'notes.txt' not in captured.out + captured.err
    first_line, second_line = captured.err.splitlines()
    assert first_line.startswith(f"{pet_folder / 'broken.jpg'}: not a readable image (")
    assert second_line == '1 of 25 images could not be read (see above); the others were predicted'
    rows = (tmp_path / 'predictions.csv').read_text().splitlines()
    assert rows[0] == 'file,label,probability,top 2' and len(rows) == 25
    first = rows[1].split(',')
    assert first[0] == str(sorted(pet_folder.glob('*.jpg'))[0]) and first[1] in dls.vocab and 0 < float(first[2]) <= 1
    assert predict_main([str(path), str(tmp_path / 'missing.jpg')]) == 2


def test_save_and_load_restore_weights_and_optimizer(dls, tmp_path):
    learn = learner(dls, path=tmp_path)
    learn.fit(1, lr=1e-3)
    assert learn.save('stage-1') == tmp_path / 'models' / 'stage-1.pth'  # fastai's place for it
    other = learner(dls, path=tmp_path).load('stage-1')
    for a, b in zip(learn.model.state_dict().values(), other.model.state_dict().values()):
        assert torch.equal(a, b)
    saved, loaded = learn.opt.state_dict()['state'], other.opt.state_dict()['state']
    assert saved.keys() == loaded.keys() and len(saved) > 0
    for key in saved:
        assert saved[key].keys() == loaded[key].keys()
        for name, value in saved[key].items():  # Adam's step count and both running means, to the bit
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(loaded[key][name])), (key, name)


def test_top_k_accuracy():
    from pets.metrics import top_k_accuracy
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.8, 0.15, 0.05]])
    assert top_k_accuracy(scores, torch.tensor([2, 2]), k=2) == 0.5
    assert top_k_accuracy(scores, torch.tensor([2, 2]), k=3) == 1.0


def test_the_loop_fires_every_event_in_order(dls):
    from pets.learner import EVENTS
    seen = []

    class Spy:
        def __getattr__(self, event):
            if event not in EVENTS:
                raise AttributeError(event)
            return lambda learn: seen.append(event)

    learn = learner(dls, cbs=Spy())
    learn.fit(1, lr=1e-3)
    per_batch = ['before_batch', 'before_backward', 'after_backward', 'before_step', 'after_step', 'after_batch']
    assert seen == ['before_fit', 'before_epoch', 'before_train', *per_batch * len(dls.train), 'after_train',
                    'before_validate', 'after_validate', 'after_epoch', 'after_fit']
    assert set(seen) == set(EVENTS)


def test_a_callback_that_takes_the_step_cancels_the_learners(dls):
    from pets.precision import CancelStep

    class NoStep:
        def before_step(self, learn):
            raise CancelStep

    learn = learner(dls, cbs=NoStep())
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.fit(1, lr=1e-2)
    head = learn.groups[-1]
    assert all(p.grad is None for p in head.parameters())  # gradients were still cleared after each batch
    changed = [k for k, v in learn.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all('running' in k or 'num_batches' in k for k in changed)  # BatchNorm statistics only


def test_mixed_precision_on_the_cpu_is_bfloat16_autocast(dls):
    from pets.precision import MixedPrecision
    learn = learner(dls).to_fp16()
    assert learn.precision == 'bf16' and learn.to_bf16().precision == 'bf16'
    assert sum(isinstance(cb, MixedPrecision) for cb in learn.cbs) == 1
    learn.unfreeze()
    learn.fit(1, lr=1e-3)
    assert learn.cbs[-1].scaler is None  # bfloat16 has float32's range: no loss scaling
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    assert all(torch.isfinite(torch.tensor(v)).all() for v in learn.recorder.values)
    with learn.autocast():
        assert learn.model(torch.rand(2, 3, 32, 32)).dtype == torch.bfloat16
    probabilities, _ = learn.to_fp32().get_preds()
    assert probabilities.dtype == torch.float32 and learn.precision == 'fp32'
    assert not any(isinstance(cb, MixedPrecision) for cb in learn.cbs)
    with pytest.raises(ValueError, match="precision 'fp8': choose fp32, bf16 or fp16"):
        learn.to_precision('fp8')


def test_bfloat16_outputs_are_close_to_float32s_and_a_step_moves_the_weights_alike(dls):
    learn = learner(dls)
    learn.model.eval()
    x, y = dls.one_batch()
    with torch.no_grad():
        full = learn.model(learn.normalize(x))
        with learn.to_bf16().autocast():
            half = learn.model(learn.normalize(x)).float()
    # bfloat16 keeps 8 significant bits: about 2-3 digits, so logits agree to a few hundredths.
    torch.testing.assert_close(half, full, atol=0.1, rtol=0.05)
    assert (half.argmax(1) == full.argmax(1)).float().mean() >= 0.8
    # One training step from the same weights in each precision: the head's gradient points the same way.
    head = [m for m in learn.groups[-1].modules() if isinstance(m, torch.nn.Linear)][-1]

    class Gradient:
        def after_backward(self, learn):
            self.value = head.weight.grad.clone()

    start, gradients = {k: v.clone() for k, v in learn.model.state_dict().items()}, {}
    for precision in ('fp32', 'bf16'):
        learn.model.load_state_dict(start)
        learn.to_precision(precision).add_cb(spy := Gradient()).create_opt()
        learn.train_mode()
        torch.manual_seed(1)  # the same dropout masks
        learn.train_step(x, y)
        learn.remove_cb(spy)
        gradients[precision] = spy.value.flatten()
    # (an untrained resnet18: bfloat16's rounding compounds over 18 layers; 0.99 on this batch)
    assert torch.cosine_similarity(gradients['fp32'], gradients['bf16'], dim=0) > 0.98
    assert not torch.equal(gradients['fp32'], gradients['bf16'])  # bfloat16 did run


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_mixed_precision_on_cuda_is_float16_with_gradient_scaling(pet_folder):
    learn = learner(small_dls(pet_folder, device='cuda')).to_fp16()
    assert learn.precision == 'fp16'
    learn.unfreeze()
    learn.fit(2, lr=1e-3)
    scaler = learn.cbs[-1].scaler
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.get_scale() > 0
    assert learn.loss.dtype == torch.float32  # autocast's policy for losses: the scaled loss cannot overflow
    assert all(p.dtype == torch.float32 and p.is_cuda for p in learn.model.parameters())
    assert all(torch.isfinite(torch.tensor(v)).all() for v in learn.recorder.values)
    with learn.autocast():
        assert learn.model(torch.rand(2, 3, 32, 32, device='cuda')).dtype == torch.float16
    probabilities, targets = learn.get_preds()
    assert probabilities.dtype == torch.float32 and torch.isfinite(probabilities).all()
    torch.testing.assert_close(probabilities.sum(1), torch.ones(len(targets)), atol=1e-3, rtol=0)


def test_show_results_titles_actual_and_predicted_in_green_or_red(dls):
    import matplotlib
    matplotlib.use('Agg')
    learn = learner(dls)
    figure = learn.show_results(max_n=4)
    titled = [axis for axis in figure.axes if axis.get_title()]
    assert len(titled) == 4
    for axis, item, target in zip(titled, dls.valid_ds.items, dls.valid_ds.targets):
        label = learn.predict(item)[0]  # each file predicted on its own
        assert axis.get_title() == f"{dls.vocab[target]}\n{label}"
        assert axis.title.get_color() == ('green' if dls.vocab[target] == label else 'red')


def test_batchnorm_and_bias_are_not_decayed(dls):
    learn = learner(dls, wd=0.1)
    learn.create_opt()
    groups = learn.opt.param_groups
    assert len(groups) == 2 * len(learn.groups)
    decayed = {id(p) for g in groups if g['weight_decay'] > 0 for p in g['params']}
    body = learn.groups[0]
    assert id(body[0].weight) in decayed and id(body[1].weight) not in decayed and id(body[1].bias) not in decayed
    assert [g['weight_decay'] for g in groups] == [0.1, 0.0] * 3
    learn.fit(1, lr=slice(1e-5, 1e-3), wd=0.2)
    assert [g['weight_decay'] for g in groups] == [0.2, 0.0] * 3
    assert [g['lr'] for g in groups] == pytest.approx([1e-5, 1e-5, 1e-4, 1e-4, 1e-3, 1e-3])


def test_frozen_body_weights_do_not_move_and_callbacks_are_called(dls):
    events = []

    class Record:
        def before_fit(self, learn):
            events.append('before_fit')

        def after_batch(self, learn):
            events.append(('batch', learn.loss.item()))

        def after_epoch(self, learn):
            events.append(('epoch', learn.epoch))

        def after_fit(self, learn):
            events.append('after_fit')

    learn = learner(dls, cbs=Record())
    learn.freeze()
    conv, batchnorm = learn.groups[0][0], learn.groups[0][1]
    conv_before, bn_before = conv.weight.clone(), batchnorm.weight.clone()
    learn.fit_one_cycle(1, 1e-2)
    assert torch.equal(conv.weight, conv_before) and not torch.equal(batchnorm.weight, bn_before)
    assert events[0] == 'before_fit' and events[-1] == 'after_fit' and events[-2] == ('epoch', 0)
    assert sum(1 for e in events if e[0] == 'batch') == len(dls.train)


def test_most_confused_on_a_constructed_case(dls):
    from pets.interpret import ClassificationInterpretation
    targets = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    predicted = torch.tensor([1, 1, 0, 0, 1, 0, 1, 2])
    probabilities = torch.nn.functional.one_hot(predicted, 3).float()
    interp = ClassificationInterpretation(learner(dls), dls.valid, probabilities, targets, torch.zeros(8))
    v = dls.vocab
    assert interp.most_confused() == [(v[0], v[1], 2), (v[1], v[0], 1), (v[2], v[0], 1), (v[2], v[1], 1)]
    assert interp.most_confused(min_val=2) == [(v[0], v[1], 2)]
    assert interp.confusion_matrix().tolist() == [[1, 2, 0], [1, 1, 0], [1, 1, 1]]


def test_sync_batchnorm_reaches_the_layer_groups_and_keeps_the_optimizer(dls):
    learn = learner(dls)
    learn.freeze(train_bn=False)
    learn.create_opt()
    parameters = [p for group in learn.opt.param_groups for p in group['params']]
    learn.use_sync_batchnorm()
    in_model = {id(m) for m in learn.model.modules() if isinstance(m, torch.nn.SyncBatchNorm)}
    in_groups = [m for group in learn.groups for m in group.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert in_groups and all(isinstance(m, torch.nn.SyncBatchNorm) and id(m) in in_model for m in in_groups)
    assert {id(m) for m in learn.frozen_batchnorms} <= in_model and learn.frozen_batchnorms
    model_parameters = {id(p) for p in learn.model.parameters()}
    assert all(id(p) in model_parameters for p in parameters)  # the optimizer steps the model's parameters
    frozen = learn.frozen_batchnorms[0]
    before = frozen.running_mean.clone()
    learn.fit(1, lr=1e-3)  # one process, no process group: SyncBatchNorm computes as BatchNorm
    assert torch.equal(frozen.running_mean, before)



def test_learner_takes_fastais_signature_and_splitter(dls):
    """Learner(dls, model, loss_func=..., metrics=...) as the book calls it: the whole model one layer group
    (fastai's trainable_params); a splitter of parameter lists gives each its rate and freezes by group."""
    from minigrad.functional import cross_entropy
    from pets.learner import trainable_params
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3))
    learn = Learner(dls, model, loss_func=cross_entropy, metrics=error_rate, progress=False)
    assert len(learn.groups) == 1 and learn.groups[0] == trainable_params(model)
    learn.fit(1, lr=1e-3)
    assert len(learn.recorder.values) == 1
    split = lambda m: [list(m[:2].parameters()), list(m[4].parameters())]
    learn = Learner(dls, model, splitter=split, progress=False)
    learn.freeze(train_bn=False)
    assert not model[0].weight.requires_grad and not model[1].weight.requires_grad and model[4].weight.requires_grad
    learn.freeze()  # train_bn: the frozen group's BatchNorm still trains, as fastai
    assert not model[0].weight.requires_grad and model[1].weight.requires_grad
    learn.unfreeze()
    learn.fit(1, lr=slice(1e-4, 1e-2))
    assert learn.recorder.lrs[0] == pytest.approx([1e-4, 1e-2])
    decayed = {id(p) for g in learn.opt.param_groups if g['decayed'] for p in g['params']}
    assert decayed == {id(model[0].weight), id(model[4].weight)}  # BatchNorm and biases are not decayed
