"""The fastai calls a user makes, checked on pets's side: items in memory, get_preds's options, tta's beta,
the interpretation of the training set, a scaler per fit, normalising once, fastai's save paths, exporting
any model safely, and the recipes' own settings. (tests/pets/test_fastai_parity.py runs fastai itself.)"""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from minigrad.functional import softmax
from pets.data.normalize import Normalize, imagenet_stats
from pets.learner import Learner, cnn_learner, load_learner
from pets.metrics import error_rate
from pets.precision import mixed_precision_callback

from small_learners import learner, small_dls


@pytest.fixture
def dls(pet_folder):
    return small_dls(pet_folder)


def test_predict_takes_a_path_a_pil_image_a_tensor_or_an_array(dls, pet_folder):
    learn = learner(dls)
    path = sorted(pet_folder.glob('*.jpg'))[0]
    image = Image.open(path)
    label, index, probabilities = learn.predict(image)
    pixels = np.asarray(image.convert('RGB'))
    for item in (torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), pixels):
        other_label, other_index, other_probabilities = learn.predict(item)
        assert other_label == label and int(other_index) == int(index)
        assert torch.equal(other_probabilities, probabilities)
    # A file decodes at the smallest size the presizing needs (JPEG draft mode), so its pixels, and the
    # probabilities, may differ a little from a full-size image's.
    from_file = learn.predict(path)
    assert from_file[2].shape == probabilities.shape and torch.equal(learn.predict(str(path))[2], from_file[2])
    with pytest.raises(TypeError, match="list is not an image: give a file path, a PIL image"):
        learn.predict([1, 2, 3])
    with pytest.raises(TypeError, match=r"uint8 of shape \(3, H, W\)"):
        learn.predict(torch.zeros(4, 8, 8))


def test_get_preds_options_in_fastais_order(dls):
    learn = learner(dls)
    probabilities, targets = learn.get_preds()
    inputs, again, same_targets, decoded, losses = learn.get_preds(with_input=True, with_decoded=True,
                                                                   with_loss=True)
    torch.testing.assert_close(again, probabilities)
    assert torch.equal(same_targets, targets) and torch.equal(decoded, probabilities.argmax(1))
    assert inputs.shape == (len(targets), 3, 32, 32) and inputs.device.type == 'cpu'
    torch.testing.assert_close(losses, -probabilities.log().gather(1, targets[:, None])[:, 0], atol=1e-5, rtol=1e-4)
    logits, _ = learn.get_preds(act=lambda x: x)  # act: the raw outputs
    torch.testing.assert_close(softmax(logits, dim=1), probabilities)
    train_probabilities, train_targets = learn.get_preds(ds_idx=0)  # every training item, none dropped
    assert len(train_targets) == len(dls.train_ds)


def test_tta_beta_none_gives_both_and_the_blend_is_their_lerp(dls):
    learn = learner(dls)
    (augmented, plain), targets = learn.tta(n=2, beta=None)
    blended, same_targets = learn.tta(n=2, beta=0.25)
    torch.testing.assert_close(blended, torch.lerp(augmented, plain, 0.25))
    torch.testing.assert_close(plain, learn.get_preds()[0])
    assert torch.equal(targets, same_targets)
    # fastai's positional order: ds_idx, dl, n, item_tfms, batch_tfms, beta.
    (augmented_again, _), _ = learn.tta(1, None, 2, None, None, None)
    torch.testing.assert_close(augmented_again, augmented)


def test_interpretation_of_the_training_set_sees_every_item_and_leaves_its_order(dls):
    from pets.interpret import ClassificationInterpretation
    learn = learner(dls)
    dls.train.use_generator(torch.Generator().manual_seed(5))
    state = dls.train.generator.get_state()
    interp = ClassificationInterpretation.from_learner(learn, ds_idx=0)
    assert len(interp.targets) == len(dls.train_ds) and int(interp.confusion_matrix().sum()) == len(dls.train_ds)
    assert sorted(interp.items) == sorted(dls.train_ds.items)
    assert torch.equal(dls.train.generator.get_state(), state)


def test_lr_find_takes_a_rule_with_fastais_signature(dls):
    learn = learner(dls)

    def tenth_of_the_last(lrs, losses, num_it):
        return float(lrs[-1]) / 10, (float(lrs[-1]), float(losses[-1]))

    suggestions = learn.lr_find(num_it=12, suggest_funcs=tenth_of_the_last, show_plot=False)
    assert suggestions._fields == ('tenth_of_the_last',) and suggestions.tenth_of_the_last > 0
    assert learn.recorder.plot_lr_find().axes[0].get_legend() is not None


def test_a_float16_scaler_per_fit_and_lr_finds_own(dls):
    """fastai's MixedPrecision makes a GradScaler at each fit: a scale halved in one fit does not carry into
    the next, and lr_find's sweep (a fit in fastai) leaves the run's scaler alone."""
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, dls.c))
    learn = Learner(dls, model, metrics=error_rate, progress=False).to_precision('fp16')
    learn.fit(1, lr=1e-3)
    callback = mixed_precision_callback(learn)
    first = callback.scaler
    first.update(new_scale=4.0)  # as if overflows had halved it
    learn.lr_find(num_it=5, show_plot=False)
    assert callback.scaler is first and first.get_scale() == 4.0
    learn.fit(1, lr=1e-3)
    assert callback.scaler is not first and callback.scaler.get_scale() == 2.0 ** 16


def test_normalising_happens_once(pet_folder):
    """cnn_learner normalises with the architecture's statistics once, as fastai's adds its Normalize only
    where there is none: in the augmentation's one pass when the loaders end with one, by the loaders' own
    Normalize when they have it, else in the Learner. The model sees the same inputs every way."""
    from pets.augment import AugTransform
    from pets.data.block import DataBlock
    from pets.data.images import Resize
    from pets.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in imagenet_stats)

    def loaders(batch_tfms):
        block = DataBlock(get_items=get_image_files, splitter=RandomSplitter(valid_pct=0.25, seed=0),
                          get_y=using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name'), item_tfms=Resize(32),
                          batch_tfms=batch_tfms)
        return block.dataloaders(pet_folder, bs=6, num_workers=0, device='cpu', seed=0)

    def model_input(learn):
        x, _ = learn.dls.valid.one_batch()
        return learn.normalize(x)

    plain = cnn_learner(loaders([]), 'resnet18', pretrained=False, progress=False)
    assert plain.stats == imagenet_stats  # no augmentation: the Learner normalises
    expected = model_input(plain)
    augmented = cnn_learner(loaders([AugTransform(size=32)]), 'resnet18', pretrained=False, progress=False)
    augment = augmented.dls.valid.batch_tfms[-1]
    assert augmented.stats is None and augment.mean == imagenet_stats[0]  # the augmentation's pass does
    torch.testing.assert_close(model_input(augmented), (AugTransform(size=32)(
        next(iter(augmented.dls.valid.ordered(train=False)._loader))[0], train=False) - mean) / std)
    theirs = cnn_learner(loaders([Normalize.from_stats(*imagenet_stats)]), 'resnet18', pretrained=False,
                         progress=False)
    assert theirs.stats is None and theirs.mean is None  # the loaders' own Normalize does
    torch.testing.assert_close(model_input(theirs), expected)
    for learn in (plain, augmented, theirs):
        assert learn.input_normalization() == imagenet_stats  # what export records
    x, _ = augmented.dls.valid.one_batch()
    decoded = augmented.dls.valid.decode(x)  # for show_batch: the images in [0, 1] again
    assert decoded.min() >= -1e-6 and decoded.max() <= 1 + 1e-6
    assert Learner(loaders([]), nn.Linear(2, 2), progress=False).mean is None  # a plain Learner, as fastai's


def test_export_any_model_as_a_checked_program(dls, tmp_path):
    """A Learner over any traceable model exports as a torch.export program that load_learner rebuilds
    without unpickling code; a program naming anything but torch's own operators is refused."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, dls.c))
    learn = Learner(dls, model, metrics=error_rate, mean=imagenet_stats[0], std=imagenet_stats[1], path=tmp_path,
                    progress=False)
    learn.fit(1, lr=1e-3)
    path = learn.export()  # fastai's default name, under learn.path
    assert path == tmp_path / 'export.pth'
    loaded = load_learner(path)
    files = list(dls.valid_ds.items)
    expected, _ = learn.get_preds(dl=learn.dls.test_dl(files))
    got, _ = loaded.get_preds(dl=loaded.dls.test_dl(files))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert loaded.predict(files[0])[0] in dls.vocab

    saved = torch.load(path, weights_only=True)
    graph = json.loads(saved['program'].numpy().tobytes())
    first_call = next(node for node in graph['graph_module']['graph']['nodes'])
    first_call['target'] = 'torch.hub.load'
    saved['program'] = torch.frombuffer(bytearray(json.dumps(graph).encode()), dtype=torch.uint8)
    torch.save(saved, tmp_path / 'crafted.pth')
    with pytest.raises(ValueError, match=r"calls what a pets export never does \(torch.hub.load\)"):
        load_learner(tmp_path / 'crafted.pth')


def test_a_model_torch_export_cannot_trace_is_refused_clearly(dls, tmp_path):
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)

        def forward(self, x):
            pooled = x.mean(dim=(2, 3))
            if pooled.sum() > 0:  # control flow on the values: no single graph
                return self.linear(pooled)
            return -self.linear(pooled)

    learn = Learner(dls, DataDependent(), progress=False)
    with pytest.raises(ValueError, match="export: torch.export cannot trace this model"):
        learn.export(tmp_path / 'model.pth')


def test_a_recipe_brings_its_own_run(monkeypatch):
    from pets.run import parse_args
    book = parse_args(['--recipe', 'fastai'])
    assert (book.freeze_epochs, book.epochs, book.lr, book.presize, book.bs) == (1, 2, 2e-3, 460, 64)
    ours = parse_args([])
    assert (ours.freeze_epochs, ours.epochs, ours.lr, ours.presize, ours.bs) == (10, 12, 5e-3, 256, 32)
    assert parse_args(['--recipe', 'fastai', '--bs', '16', '--lr', '1e-3']).bs == 16  # options still win


@pytest.mark.parametrize('keep', [False, True])
def test_phase_two_starts_adam_afresh_unless_the_recipe_keeps_its_state(dls, keep):
    from pets.recipes import RECIPES
    learn = learner(dls)
    RECIPES['fastai'].train(learn, freeze_epochs=1, epochs=1, lr=1e-3, keep_optimizer_state=keep)
    head_weight = next(p for p in learn.groups[-1].parameters() if p.ndim == 2)
    steps = len(dls.train)
    assert int(learn.opt.state[head_weight]['step']) == (2 * steps if keep else steps)


def test_frozen_parameter_list_groups_keep_their_batchnorm_statistics(dls):
    """A splitter's parameter lists (fastai's usual form): freeze(train_bn=False) keeps the frozen group's
    BatchNorm layers whole, weights and running statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, dls.c))
    learn = Learner(dls, model, splitter=lambda m: [list(m[:2].parameters()), list(m[5].parameters())],
                    progress=False)
    learn.freeze(train_bn=False)
    statistics = model[1].running_mean.clone(), model[1].running_var.clone()
    learn.fit(1, lr=1e-2)
    assert torch.equal(model[1].running_mean, statistics[0]) and torch.equal(model[1].running_var, statistics[1])
    learn.freeze()  # train_bn: the frozen group's BatchNorm trains, statistics too, as fastai's
    learn.fit(1, lr=1e-2)
    assert not torch.equal(model[1].running_mean, statistics[0])
