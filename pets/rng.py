"""Randomness: one home, one rule.

Whatever draws random numbers in pets (a splitter, a loader's order and crops, the augmentation) takes an
optional seed, and generator_from(seed) gives what it draws from:
  - a seed: a private torch.Generator seeded with it; the same seed, the same draws, whatever else runs;
  - no seed: None, which torch's functions read as torch's global generator, drawn from when the random
    work runs (a split when it splits, a loader's order when an epoch starts, an augmentation when it
    augments a batch), not when the object is built. torch.manual_seed(s) before the work then repeats
    it, as in fastai, however many objects were built in between.
Nothing draws from Python's or NumPy's global generators. A learner's checkpoint saves torch's global
generator and every private one (transform_generators finds the batch transforms'), so that a resumed run
draws what an uninterrupted one would.
"""
import torch


def generator_from(seed=None):
    """A private torch.Generator seeded with `seed`, or None (torch's global generator) without a seed."""
    return torch.Generator().manual_seed(seed) if seed is not None else None


def transform_generators(tfms):
    """{position in tfms: generator} of the transforms that draw from a private torch.Generator (as
    aug_transforms does); a transform listed twice, or sharing a generator, counts once."""
    generators = {}
    for i, tfm in enumerate(tfms):
        generator = getattr(tfm, 'generator', None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in generators.values()):
            generators[i] = generator
    return generators
