"""pets.recipes: the calls each recipe makes, and the fastai one against fastai's fine_tune itself."""
import pytest
import torch

from pets.recipes import RECIPES


class Spy:
    """Records what a recipe asks of a learner."""

    def __init__(self):
        self.calls = []

    def freeze(self, train_bn=True):
        self.calls.append(('freeze', train_bn))

    def unfreeze(self, train_bn=True, first_group=0):
        self.calls.append(('unfreeze', train_bn, first_group))

    def fit_one_cycle(self, n_epoch, lr_max, pct_start=0.25, div=25.0):
        self.calls.append(('fit_one_cycle', n_epoch, lr_max, pct_start, div))


def test_frozen_bn_keeps_batchnorm_and_the_first_group_frozen_and_the_body_at_a_hundredth_of_the_rate():
    learn = Spy()
    RECIPES['frozen-bn'].train(learn, freeze_epochs=10, epochs=8, lr=3e-3)
    freeze, head_phase, unfreeze, whole_phase = learn.calls
    assert freeze == ('freeze', False) and unfreeze == ('unfreeze', False, 1)
    assert head_phase == ('fit_one_cycle', 10, slice(3e-3), 0.25, 25.0)
    _, epochs, rates, pct_start, div = whole_phase
    assert (epochs, pct_start, div) == (8, 0.3, 5.0)
    assert rates.start == pytest.approx(3e-6) and rates.stop == pytest.approx(3e-4)
    RECIPES['frozen-bn'].train(learn, 1, 1, lr=1e-2, lr_mult=10)
    assert learn.calls[-1][2].start == pytest.approx(1e-4)  # --lr-mult: head / first group in phase 2


def test_the_fastai_recipe_is_fine_tune(pet_folder):
    from pets.augment import aug_transforms
    from pets.data.block import DataBlock
    from pets.data.images import Resize
    from pets.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr
    from pets.learner import cnn_learner

    def learner():
        block = DataBlock(get_items=get_image_files, splitter=RandomSplitter(valid_pct=0.25, seed=0),
                          get_y=using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name'), item_tfms=Resize(40),
                          batch_tfms=aug_transforms(size=32, seed=0))
        dls = block.dataloaders(pet_folder, bs=6, num_workers=0, device='cpu', seed=0)
        torch.manual_seed(0)
        return cnn_learner(dls, 'resnet18', pretrained=False, progress=False)

    ours, fastais = learner(), learner()
    torch.manual_seed(1)  # the same dropout draws for both
    RECIPES['fastai'].train(ours, freeze_epochs=1, epochs=1, lr=2e-3)
    torch.manual_seed(1)
    fastais.fine_tune(1, base_lr=2e-3, freeze_epochs=1)
    assert ours.recorder.lrs == fastais.recorder.lrs and ours.recorder.moms == fastais.recorder.moms
    assert ours.recorder.values == fastais.recorder.values
    for a, b in zip(ours.model.state_dict().values(), fastais.model.state_dict().values()):
        assert torch.equal(a, b)
