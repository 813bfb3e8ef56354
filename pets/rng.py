"""Randomness: one home, one rule.

Every random draw in pets comes from a torch.Generator made by generator_from:
  - given a seed, a private generator seeded with it: the same seed, the same draws, whatever else runs;
  - given none, a private generator seeded by a draw from torch's global generator, so that
    torch.manual_seed(s) beforehand makes everything repeat, as in fastai. The draw happens when the
    generator is made: a split when it splits, a loader or an augmentation when it is built.
Nothing draws from Python's or NumPy's global generators. A learner's checkpoint saves the state of every
generator (transform_generators finds the batch transforms' own), so that a resumed run draws what an
uninterrupted one would.
"""
import torch


def generator_from(seed=None):
    """A private torch.Generator seeded with `seed`; with no seed, with one drawn from torch's global
    generator, so that torch.manual_seed(...) beforehand makes the run repeat, as in fastai."""
    return torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ())))


def transform_generators(tfms):
    """{position in tfms: generator} of the transforms that draw from a private torch.Generator (as
    aug_transforms does); a transform listed twice, or sharing a generator, counts once."""
    generators = {}
    for i, tfm in enumerate(tfms):
        generator = getattr(tfm, 'generator', None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in generators.values()):
            generators[i] = generator
    return generators
