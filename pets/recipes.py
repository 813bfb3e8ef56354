"""The training recipes of pets.run: which layers train, for how long, at which rates, and why each number.

    recipe = RECIPES['frozen-bn']
    recipe.train(learn, freeze_epochs=10, epochs=8, lr=3e-3)

Both fine-tune a network pretrained on ImageNet in two phases: first the new head alone (the body frozen),
then everything with discriminative rates, smaller for the early layers (Howard & Ruder 2018, ULMFiT).
They differ in what BatchNorm does, which decides what works on small data sets.
"""
from dataclasses import dataclass

# pets.run's defaults, chosen by the mean accuracy over seeds (benchmarks/bench_recipe.py; each seed its own
# validation set) on the 370-image sample. Longer training helped (float32: 82.4% over seeds 0, 1, 2, 42 for
# 6 + 3 epochs, 84.8% for 8 + 5, 85.8% for 10 + 8). With the first group frozen in phase 2, 10 + 12 epochs
# take the time 10 + 8 took: 85.3% over the eight seeds 0-6 and 42, where 10 + 8 gave 84.5%; a peak rate
# of 5e-3 then gave 85.5% (3e-3 is fastai's default for fine-tuning a head), 84.6% over sixteen seeds.
# Tried, no better: 8e-3, min_scale 0.5 and 1.0 (1.0 was a point better on four seeds, half a point worse
# over sixteen), 12 + 12 and 12 + 14 epochs, label smoothing 0.1, lr_mult 10, batch size 16, training at
# 240 pixels; averaging the weights of phase 2's last epochs, validating at 240-288. With the augmentation
# composed as fastai composes it and each phase starting Adam afresh, as fastai's: 84.0% over sixteen seeds;
# phase 2 continuing phase 1's Adam state instead (--keep-opt-state) is no better (83.6%, seed by seed -0.3
# +- 0.7). Every row: benchmarks/RESULTS.md.
FREEZE_EPOCHS, EPOCHS, LR = 10, 12, 5e-3


@dataclass(frozen=True)
class Recipe:
    """A two-phase fine-tuning recipe.

    Fields:
        name: what pets.run --recipe calls it.
        train_bn: whether the body's BatchNorm layers train (weights and running statistics) in both phases.
        head_pct_start: the share of phase 1 spent warming up to its peak lr.
        head_div: phase 2's peak, the head's, is lr / head_div.
        lr_mult: in phase 2 the head trains lr_mult times faster than the first layer group; the groups
            between get rates spread geometrically (minigrad.schedule.discriminative_lrs).
        pct_start, div: phase 2's one-cycle warm-up share, and its starting rate, peak / div.
        first_group: phase 2 trains the layer groups from this one on; the ones before stay frozen (the
            rates are spread over all the groups still, so each group that trains keeps its rate).
        freeze_epochs, epochs, lr, presize, bs: the run the recipe was made for, pets.run's defaults when
            it is chosen: the epochs of each phase, phase 1's peak rate, the side every image is presized
            to, and the batch size.
    """
    name: str
    train_bn: bool
    head_pct_start: float
    head_div: float
    lr_mult: float
    pct_start: float
    div: float
    first_group: int = 0
    freeze_epochs: int = FREEZE_EPOCHS
    epochs: int = EPOCHS
    lr: float = LR
    presize: int = 256
    bs: int = 32

    def train(self, learn, freeze_epochs, epochs, lr, lr_mult=None, keep_optimizer_state=False):
        """Phase 1: the head alone, one-cycle over freeze_epochs peaking at lr. Phase 2: everything,
        one-cycle over epochs peaking at slice(lr / head_div / lr_mult, lr / head_div), the layer groups
        before first_group still frozen. A phase of 0 epochs is skipped.

        Each phase starts Adam afresh (freeze and unfreeze clear the optimizer's state, as fastai's);
        keep_optimizer_state=True lets phase 2 continue the head's step counts and moments instead."""
        learn.freeze(train_bn=self.train_bn)
        learn.fit_one_cycle(freeze_epochs, slice(lr), pct_start=self.head_pct_start)
        kept = learn.opt.state_dict() if keep_optimizer_state and learn.opt is not None else None
        learn.unfreeze(train_bn=self.train_bn, first_group=self.first_group)
        if kept is not None:
            learn.opt.load_state_dict(kept)
        learn.fit_one_cycle(epochs, self.phase_two_lr(lr, lr_mult), pct_start=self.pct_start, div=self.div)

    def phase_two_lr(self, lr, lr_mult=None):
        """Phase 2's peak rates for phase 1's peak lr: slice(head / lr_mult, head), head = lr / head_div."""
        head = lr / self.head_div
        return slice(head / (lr_mult or self.lr_mult), head)


RECIPES = {recipe.name: recipe for recipe in [
    # pets.run's default for small data sets: the body's BatchNorm frozen whole, statistics too, since eight
    # images per class are too few to re-estimate them and ImageNet's serve. Phase 2 at a tenth of phase 1's
    # rate, the body 100x slower still. The first group would get lr / 1000, 5e-6 at the default peak: Adam
    # moves a weight by about the rate a step at most, so none of its weights would move more than about
    # 5e-4 in the default 108 steps. It stays frozen instead: its layers hold the largest activations, and
    # not differentiating them cuts a training batch of the default run from 0.95 s to 0.55 s.
    Recipe('frozen-bn', train_bn=False, head_pct_start=0.25, head_div=10, lr_mult=100, pct_start=0.3, div=5.0,
           first_group=1),
    # fastai's fine_tune exactly, the book's first run (learn.fine_tune(2) on Resize(460) items in batches of
    # 64, fine_tune's base_lr=2e-3): BatchNorm trains throughout; phase 1 warms up over 99% of its steps (a
    # new head's first large steps would undo what its small ones found); phase 2 at half the rate, the
    # body's first group 100x slower; each phase starts Adam afresh (freeze and unfreeze clear its state).
    Recipe('fastai', train_bn=True, head_pct_start=0.99, head_div=2, lr_mult=100, pct_start=0.3, div=5.0,
           freeze_epochs=1, epochs=2, lr=2e-3, presize=460, bs=64),
]}
