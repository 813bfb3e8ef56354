"""pets against fastai itself: the same calls through both libraries, on the same inputs, compared.

fastai 2.8 is the reference, as torch's own test inputs are for minigrad (pip install -e ".[fastai]"; these
tests are skipped without it). Where the two pipelines are built differently (fastai's PIL items and
DataLoader, pets's uint8 tensors), they are compared where they meet: optimizer state, hyper-parameters per
step, trainable layers, suggested rates, coordinate maps, splits, and the shapes of what inference returns.
"""
import copy
import warnings
from functools import partial

import pytest
import torch
import torch.nn as nn

pytest.importorskip('fastai', reason='fastai (the reference these tests compare with) is not installed: '
                                     'pip install -e ".[fastai]"')
from fastai.callback.core import Callback  # noqa: E402
from fastai.data.core import DataLoaders as FastaiDataLoaders  # noqa: E402
from fastai.data.load import DataLoader as FastaiDataLoader  # noqa: E402
from fastai.learner import Learner as FastaiLearner  # noqa: E402
from fastai.losses import CrossEntropyLossFlat  # noqa: E402
import fastai.optimizer as fastai_optim  # noqa: E402
import fastai.callback.schedule as fastai_schedule  # noqa: E402

from minigrad import homographies as H  # noqa: E402
from minigrad import optim as minigrad_optim  # noqa: E402
from minigrad.functional import cross_entropy  # noqa: E402
from pets.augment import AugTransform  # noqa: E402
from pets.learner import Learner  # noqa: E402
from pets.lr_finder import LRFinderResult, minimum, slide, steep, suggest, valley  # noqa: E402

N_TRAIN, N_VALID, BS = 16, 8, 4  # 4 batches an epoch


def tiny_model():
    """Three layer groups (conv + BatchNorm, conv + BatchNorm, head), as a cnn_learner's body and head."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def split_three(model):
    return [list(model[0:3].parameters()), list(model[3:6].parameters()), list(model[6:].parameters())]


def tensor_data():
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(N_TRAIN + N_VALID, 3, 8, 8, generator=g), torch.randint(0, 3, (N_TRAIN + N_VALID,), generator=g)
    return (x[:N_TRAIN], y[:N_TRAIN]), (x[N_TRAIN:], y[N_TRAIN:])


class TensorLoaders:
    """What pets's Learner reads of its loaders, over fixed batches in order (fastai's side gets the same)."""

    def __init__(self, train, valid):
        batches = lambda x, y: [(x[i:i + BS], y[i:i + BS]) for i in range(0, len(x), BS)]
        self.train, self.valid = batches(*train), batches(*valid)
        self.device, self.c, self.vocab = torch.device('cpu'), 3, ['a', 'b', 'c']

    def __getitem__(self, i):
        return (self.train, self.valid)[i]


class RecordHypers(Callback):
    """fastai callback: every step's learning rate and momentum of each layer group (what the step used)."""
    order = 100

    def before_fit(self):
        self.lrs, self.moms = [], []

    def before_step(self):
        self.lrs.append([h['lr'] for h in self.opt.hypers])
        self.moms.append([h['mom'] for h in self.opt.hypers])


def learners(tmp_path):
    """(fastai's Learner, pets's) over one model's two copies and the same batches, both unnormalised."""
    train, valid = tensor_data()
    model = tiny_model()
    fastai_dls = FastaiDataLoaders(FastaiDataLoader(list(zip(*train)), bs=BS),
                                   FastaiDataLoader(list(zip(*valid)), bs=BS), device='cpu')
    theirs = FastaiLearner(fastai_dls, copy.deepcopy(model), loss_func=CrossEntropyLossFlat(), splitter=split_three,
                           path=tmp_path, cbs=RecordHypers())
    ours = Learner(TensorLoaders(train, valid), model, loss_func=cross_entropy, splitter=split_three, progress=False)
    return theirs, ours


def quietly(fastai_learner):
    return fastai_learner.no_bar(), fastai_learner.no_logging()


def assert_same_optimizer_state(theirs, ours):
    """Per parameter: Adam's step count and both running means; the weights."""
    for p_theirs, p_ours in zip(theirs.model.parameters(), ours.model.parameters()):
        state_theirs, state_ours = theirs.opt.state[p_theirs], ours.opt.state.get(p_ours, {})
        has_moments = 'grad_avg' in state_theirs
        assert has_moments == ('exp_avg' in state_ours)
        if has_moments:
            assert int(state_theirs['step']) == int(state_ours['step'])
            torch.testing.assert_close(state_ours['exp_avg'], state_theirs['grad_avg'], atol=1e-6, rtol=1e-4)
            torch.testing.assert_close(state_ours['exp_avg_sq'], state_theirs['sqr_avg'], atol=1e-7, rtol=1e-4)
        torch.testing.assert_close(p_ours.detach(), p_theirs.detach(), atol=1e-5, rtol=1e-4)


def test_fine_tune_phase_by_phase_optimizer_state_and_schedules(tmp_path):
    """fine_tune's steps, one by one: after each, the optimizer state, the weights and each layer group's
    rate and momentum at every step equal fastai's (fastai clears Adam's state at freeze and unfreeze)."""
    theirs, ours = learners(tmp_path)
    lr = 1e-2
    phases = [('freeze', lambda learn: learn.freeze()),
              ('head', lambda learn: learn.fit_one_cycle(1, slice(lr), pct_start=0.99)),
              ('unfreeze', lambda learn: learn.unfreeze()),
              ('all', lambda learn: learn.fit_one_cycle(1, slice(lr / 2 / 100, lr / 2), pct_start=0.3, div=5.0))]
    with theirs.no_bar(), theirs.no_logging():
        for name, phase in phases:
            phase(theirs)
            phase(ours)
            assert_same_optimizer_state(theirs, ours)
            if name in ('head', 'all'):
                record = theirs.cbs.filter(lambda cb: isinstance(cb, RecordHypers))[0]
                steps = ours.recorder.lrs[-len(record.lrs):]
                torch.testing.assert_close(torch.tensor(steps, dtype=torch.float64),
                                           torch.tensor(record.lrs, dtype=torch.float64), rtol=1e-6, atol=0)
                moms = ours.recorder.moms[-len(record.moms):]
                assert [m for m in moms for _ in range(3)] == pytest.approx(sum(record.moms, []), rel=1e-6)
    # The head's Adam restarted at phase 2: 4 steps, as fastai's [4, 4], not 8.
    head_weight = ours.model[8].weight
    assert int(ours.opt.state[head_weight]['step']) == 4


def test_fine_tune_whole_equals_fastais(tmp_path):
    theirs, ours = learners(tmp_path)
    with theirs.no_bar(), theirs.no_logging():
        theirs.fine_tune(1, base_lr=1e-2, freeze_epochs=1)
    ours.fine_tune(1, base_lr=1e-2, freeze_epochs=1)
    assert_same_optimizer_state(theirs, ours)
    record = theirs.cbs.filter(lambda cb: isinstance(cb, RecordHypers))[0]
    torch.testing.assert_close(torch.tensor(ours.recorder.lrs[-4:], dtype=torch.float64),
                               torch.tensor(record.lrs, dtype=torch.float64), rtol=1e-6, atol=0)


@pytest.mark.parametrize('n', range(-4, 5))
def test_freeze_to_every_n(tmp_path, n):
    """Which layer groups train after freeze_to(n), for n from minus to plus (groups + 1), and the warning
    when everything is frozen: their weights and biases (BatchNorm trains in every group: train_bn)."""
    theirs, ours = learners(tmp_path)
    theirs.create_opt()
    with warnings.catch_warnings(record=True) as their_warnings:
        warnings.simplefilter('always')
        theirs.freeze_to(n)
    with warnings.catch_warnings(record=True) as our_warnings:
        warnings.simplefilter('always')
        ours.freeze_to(n)
    convolutions = lambda model: [model[0].weight, model[3].weight, model[8].weight]
    assert [p.requires_grad for p in convolutions(ours.model)] == [p.requires_grad for p in convolutions(theirs.model)]
    assert [p.requires_grad for p in ours.model.parameters()] == [p.requires_grad for p in theirs.model.parameters()]
    assert bool(our_warnings) == bool([w for w in their_warnings if 'whole model is frozen' in str(w.message)])


def fastai_opt(kind, params, bias, true_wd, wd):
    opt = (fastai_optim.Adam(params, lr=1e-3, wd=wd, decouple_wd=true_wd) if kind == 'adam'
           else fastai_optim.SGD(params, lr=1e-3, mom=0.9, wd=wd, decouple_wd=true_wd))
    opt.state[bias]['do_wd'] = False  # fastai's wd_bn_bias=False: no decay for biases and BatchNorm
    return opt


def minigrad_opt(kind, weights, bias, true_wd, wd):
    groups = [{'params': weights}, {'params': [bias], 'weight_decay': 0.0}]
    if kind == 'adam':
        return minigrad_optim.Adam(groups, lr=1e-3, weight_decay=wd, decoupled_weight_decay=true_wd, foreach=False)
    return minigrad_optim.SGD(groups, lr=1e-3, momentum=0.9, weight_decay=wd, decoupled_weight_decay=true_wd)


@pytest.mark.parametrize('kind', ['adam', 'sgd'])
@pytest.mark.parametrize('true_wd', [True, False])
@pytest.mark.parametrize('wd', [0.0, 0.1])
def test_optimizer_steps_equal_fastais(kind, true_wd, wd):
    """fastai's Adam and SGD against minigrad's on the same gradients, with fastai's defaults (beta2 0.99,
    eps 1e-5), decay decoupled (true_wd) or as an L2 term, a bias left undecayed; rate and momentum moved
    every step as a one-cycle schedule moves them."""
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (5,), (3,)]
    start = [torch.randn(s, generator=g) for s in shapes]
    theirs = [t.clone().requires_grad_() for t in start]
    ours = [t.clone().requires_grad_() for t in start]
    fastai_o = fastai_opt(kind, theirs, theirs[2], true_wd, wd)
    minigrad_o = minigrad_opt(kind, ours[:2], ours[2], true_wd, wd)
    for step in range(12):
        lr, mom = 1e-2 * (1 + step % 4), 0.95 - 0.01 * step
        grads = [torch.randn(s, generator=g) for s in shapes]
        for p, grad in zip(theirs, grads):
            p.grad = grad.clone()
        for p, grad in zip(ours, grads):
            p.grad = grad.clone()
        fastai_o.set_hyper('lr', lr)
        fastai_o.set_hyper('mom', mom)
        for group in minigrad_o.param_groups:
            group['lr'] = lr
            if kind == 'adam':
                group['betas'] = (mom, group['betas'][1])
            else:
                group['momentum'] = mom
        fastai_o.step()
        minigrad_o.step()
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


def test_lr_find_curve_and_suggestions_equal_fastais(tmp_path):
    """fastai's lr_find and pets's on the same model and batches: the same swept rates and smoothed losses
    up to where fastai stops; and pets's four rules on fastai's own recorded curve give fastai's answers."""
    theirs, ours = learners(tmp_path)
    funcs = (fastai_schedule.minimum, fastai_schedule.steep, fastai_schedule.valley, fastai_schedule.slide)
    with theirs.no_bar(), theirs.no_logging():
        their_suggestions = theirs.lr_find(num_it=100, suggest_funcs=funcs, show_plot=False)
    ours.lr_find(num_it=100, suggest_funcs=(minimum, steep, valley, slide), show_plot=False)
    their_lrs, their_losses = list(theirs.recorder.lrs), [float(v) for v in theirs.recorder.losses]
    mine = ours.recorder.lr_find
    n = min(len(their_lrs), len(mine.lrs))
    assert n >= 50
    torch.testing.assert_close(torch.tensor(mine.lrs[:n]), torch.tensor(their_lrs[:n]), rtol=1e-6, atol=0)
    torch.testing.assert_close(torch.tensor(mine.smooth_losses[:n]), torch.tensor(their_losses[:n]), rtol=1e-3,
                               atol=1e-4)
    recorded = LRFinderResult()
    recorded.lrs, recorded.smooth_losses = their_lrs, their_losses
    suggestions, points = suggest(recorded, (minimum, steep, valley, slide), num_it=100)
    assert suggestions._fields == their_suggestions._fields
    assert list(suggestions) == pytest.approx(list(their_suggestions), rel=1e-6)


def test_suggestion_rules_return_fastais_pairs():
    """Each rule, given fastai's arguments (lrs, losses, num_it) on one curve, returns what fastai's does:
    the rate and the (rate, loss) point marked on the plot."""
    lrs = torch.logspace(-7, 1, 85, dtype=torch.float64)
    log_lr = torch.log10(lrs)
    losses = 3 - 2 * torch.sigmoid((log_lr + 3) * 3) + torch.relu(log_lr + 0.5) ** 2 + 0.01 * torch.sin(7 * log_lr)
    for ours, theirs in ((minimum, fastai_schedule.minimum), (steep, fastai_schedule.steep),
                         (valley, fastai_schedule.valley), (slide, fastai_schedule.slide)):
        lr, (point_lr, point_loss) = ours(lrs, losses, 100)
        their_lr, (their_point_lr, their_point_loss) = theirs(lrs, losses, 100)
        assert (lr, point_lr, point_loss) == pytest.approx((float(their_lr), float(their_point_lr),
                                                            float(their_point_loss)), rel=1e-9)


def coordinate_image(n, size):
    """An image whose channels are its own normalised x and y: resampled, it shows where each pixel read."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing='ij')
    return torch.stack([xs, ys, torch.zeros_like(xs)])[None].expand(n, 3, size, size).contiguous()


def test_augmentation_coordinate_map_equals_fastais():
    """For the same drawn parameters (flip, rotation, zoom and its centre, both warp axes, a square crop),
    the point each output pixel reads from equals fastai's: its affine-and-warp pass on the presized image,
    then RandomResizedCropGPU's crop, read off an image of coordinates."""
    from fastai.torch_core import TensorImage
    from fastai.vision.augment import AffineCoordTfm, RandomResizedCropGPU, _WarpCoord, flip_mat, rotate_mat, zoom_mat
    n, size_in, size_out = 4, 64, 40
    flips, angles, zooms = [1.0, 0.0, 1.0, 0.0], [8.0, -5.0, 0.0, 3.0], [1.05, 1.0, 1.08, 1.02]
    centre_x, centre_y = [0.3, 0.5, 0.8, 0.1], [0.6, 0.2, 0.5, 0.9]
    warp_x, warp_y = [0.1, -0.15, 0.0, 0.05], [-0.05, 0.12, 0.1, 0.0]
    affine = AffineCoordTfm(aff_fs=[partial(flip_mat, p=1.0, draw=flips), partial(rotate_mat, p=1.0, draw=angles),
                                    partial(zoom_mat, p=1.0, draw=zooms, draw_x=centre_x, draw_y=centre_y)],
                            coord_fs=[_WarpCoord(p=1.0, draw_x=warp_x, draw_y=warp_y)], align_corners=True)
    x = TensorImage(coordinate_image(n, size_in))
    affine.before_call(x, split_idx=0)
    warped = affine._encode(x, 'bilinear')
    crop = RandomResizedCropGPU(size_out, min_scale=0.75, ratio=(1, 1))
    crop.before_call(warped, split_idx=0)
    crop.tl, crop.cp_size = (5, 9), (50, 50)  # (top, left), (height, width) in pixels: the box fastai draws
    fastai_map = crop._encode(warped, 'bilinear')[:, :2].permute(0, 2, 3, 1).double()

    (top, left), (height, width) = crop.tl, crop.cp_size
    pixel = 2 / (size_in - 1)  # align_corners: pixel j sits at -1 + j * pixel
    tensor = lambda values: torch.tensor(values, dtype=torch.float64)
    geometry = {'flip': tensor(flips).bool(), 'angle': tensor(angles), 'zoom': tensor(zooms),
                'zoom_centre': tensor([centre_x, centre_y]).T, 'warp_x': tensor(warp_x), 'warp_y': tensor(warp_y),
                'crop_width': tensor([(width - 1) / (size_in - 1)] * n),
                'crop_height': tensor([(height - 1) / (size_in - 1)] * n),
                'crop_centre': tensor([[-1 + (left + (width - 1) / 2) * pixel,
                                        -1 + (top + (height - 1) / 2) * pixel]] * n)}
    our_map = H.transform_grid(AugTransform(size=size_out).matrices(geometry, n).double(), size_out, size_out, True)
    inside = (our_map.abs() < 0.9).all(-1)  # away from the reflected border, where the two passes differ
    assert inside.double().mean() > 0.9
    # fastai resamples twice: its second bilinear pass reads the first's output between pixels, a curvature
    # error of the warp's order 1e-4; a different composition would be off by a tenth of the image.
    torch.testing.assert_close(our_map[inside], fastai_map[inside], atol=3e-4, rtol=0)


def test_splitter_labeller_and_vocabulary_equal_fastais(pet_folder):
    from fastai.data.transforms import RandomSplitter as FastaiRandomSplitter
    from fastai.data.transforms import RegexLabeller as FastaiRegexLabeller
    from fastai.data.block import CategoryBlock as FastaiCategoryBlock, DataBlock as FastaiDataBlock, TransformBlock
    from fastai.data.transforms import get_image_files as fastai_get_image_files
    from fastcore.basics import using_attr as fastai_using_attr
    from pets.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr
    from pets.data.block import DataBlock
    files = get_image_files(pet_folder)
    # The same files; pets sorts them (the same list on every file system), fastai keeps the directory's order.
    assert files == sorted(fastai_get_image_files(pet_folder))
    for valid_pct, seed in ((0.2, 42), (0.25, 0), (0.5, 7)):
        train, valid = RandomSplitter(valid_pct, seed=seed)(files)
        their_train, their_valid = FastaiRandomSplitter(valid_pct, seed=seed)(files)
        assert (train, valid) == (list(their_train), list(their_valid))
    pattern = r'(.+)_\d+.jpg$'
    assert [RegexLabeller(pattern)(f.name) for f in files] == [FastaiRegexLabeller(pattern)(f.name) for f in files]
    block = dict(get_y=using_attr(RegexLabeller(pattern), 'name'), splitter=RandomSplitter(seed=42))
    ours = DataBlock(get_items=get_image_files, **block).datasets(pet_folder)
    theirs = FastaiDataBlock(blocks=(TransformBlock, FastaiCategoryBlock), get_items=fastai_get_image_files,
                             get_y=fastai_using_attr(FastaiRegexLabeller(pattern), 'name'),
                             splitter=FastaiRandomSplitter(seed=42)).datasets(pet_folder)
    # Every breed is in the training split here, so the vocabularies agree (pets takes all labels' own).
    assert list(ours[0].vocab) == list(theirs.vocab)


def shapes(value):
    """The structure of what a call returned: nested tuples of tensor shapes, or the type's name."""
    if isinstance(value, (tuple, list)):
        return tuple(shapes(v) for v in value)
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    return type(value).__name__


def test_inference_returns_what_fastais_returns(pet_folder, tmp_path):
    """get_preds (with fastai's options, on either data set), tta (beta=None too), predict (a file, a PIL
    image) and the interpretation return the same structures as fastai's on the same folder and split."""
    from fastai.interpret import ClassificationInterpretation as FastaiInterpretation
    from fastai.vision.all import ImageDataLoaders, PILImage, vision_learner
    from fastai.vision.all import Resize as FastaiResize, aug_transforms as fastai_aug_transforms
    from torchvision.models import resnet18
    from PIL import Image
    from pets.data.block import DataBlock
    from pets.data.images import Resize
    from pets.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr
    from pets.augment import aug_transforms
    from pets.interpret import ClassificationInterpretation
    from pets.learner import cnn_learner
    pattern = r'(.+)_\d+.jpg$'
    files = get_image_files(pet_folder)
    fastai_dls = ImageDataLoaders.from_name_re(tmp_path, files, pattern, valid_pct=0.25, seed=0, bs=6,
                                               item_tfms=FastaiResize(40), num_workers=0, device='cpu',
                                               batch_tfms=fastai_aug_transforms(size=32, min_scale=0.75))
    theirs = vision_learner(fastai_dls, resnet18, pretrained=False)
    block = DataBlock(get_items=get_image_files, splitter=RandomSplitter(valid_pct=0.25, seed=0),
                      get_y=using_attr(RegexLabeller(pattern), 'name'), item_tfms=Resize(40),
                      batch_tfms=aug_transforms(size=32, min_scale=0.75))
    ours = cnn_learner(block.dataloaders(pet_folder, bs=6, num_workers=0, device='cpu'), 'resnet18',
                       pretrained=False, progress=False)
    calls = {
        'get_preds()': lambda learn: learn.get_preds(),
        'get_preds(ds_idx=0)': lambda learn: learn.get_preds(ds_idx=0),
        'get_preds(with_input, with_decoded, with_loss)':
            lambda learn: learn.get_preds(with_input=True, with_decoded=True, with_loss=True),
        'get_preds(with_decoded)': lambda learn: learn.get_preds(with_decoded=True),
        'tta()': lambda learn: learn.tta(n=2),
        'tta(beta=None)': lambda learn: learn.tta(n=2, beta=None),
        'tta(use_max)': lambda learn: learn.tta(n=2, use_max=True),
    }
    with theirs.no_bar(), theirs.no_logging():
        for name, call in calls.items():
            assert shapes(call(ours)) == shapes(call(theirs)), name
        for item in (files[0], Image.open(files[0])):
            label, index, probabilities = ours.predict(item)
            their_label, their_index, their_probabilities = theirs.predict(PILImage.create(item) if
                                                                           isinstance(item, Image.Image) else item)
            assert isinstance(label, str) and label in ours.dls.vocab and isinstance(their_label, str)
            assert shapes((index, probabilities)) == shapes((their_index, their_probabilities))
            assert int(index) == int(probabilities.argmax()) and float(probabilities.sum()) == pytest.approx(1)
        for ds_idx in (0, 1):
            interp = ClassificationInterpretation.from_learner(ours, ds_idx=ds_idx)
            their_interp = FastaiInterpretation.from_learner(theirs, ds_idx=ds_idx)
            assert interp.confusion_matrix().shape == their_interp.confusion_matrix().shape
            assert int(interp.confusion_matrix().sum()) == int(their_interp.confusion_matrix().sum())
            assert len(interp.losses) == len(their_interp.losses)


def test_a_loss_module_gives_per_sample_losses_as_fastais(tmp_path):
    """Learner(loss_func=nn.CrossEntropyLoss()): fastai sets its reduction to 'none' for get_preds(with_loss)."""
    theirs, ours = learners(tmp_path)
    theirs.loss_func, ours.loss_func = nn.CrossEntropyLoss(), nn.CrossEntropyLoss()
    with theirs.no_bar(), theirs.no_logging():
        their_preds, their_targets, their_losses = theirs.get_preds(with_loss=True)
    preds, targets, losses = ours.get_preds(with_loss=True)
    torch.testing.assert_close(losses, their_losses)
    # fastai applies no activation for a torch loss module (only its own loss classes carry .activation);
    # pets knows cross-entropy's, the softmax, whichever library's it is.
    torch.testing.assert_close(preds, torch.softmax(their_preds, dim=1))
    assert ours.loss_func.reduction == 'mean'
