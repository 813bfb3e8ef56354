"""Normalising a batch per channel: (x - mean) / std, with the statistics a pretrained network was trained on.

    dls = block.dataloaders(path, batch_tfms=[*aug_transforms(size=224), Normalize.from_stats(*imagenet_stats)])

A pretrained network expects its inputs as its training data were: ImageNet's images shifted and scaled to
zero mean and unit variance per channel. fastai's cnn_learner adds this transform to the loaders, unless
they already have one; pets's has the loaders' augmentation normalise in its one pass instead
(AugTransform.for_model: on a GPU each value is written once, normalised), or, without an augmentation,
normalises in the Learner (learn.normalize); also only when the loaders do not already Normalize.
"""
import torch

imagenet_stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class Normalize:
    """Batch transform: x -> (x - mean) / std per channel (fastai's Normalize). A uint8 batch is scaled to
    [0, 1] first. decode undoes it, for showing the images."""

    def __init__(self, mean, std):
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"Normalize: mean {self.mean} and std {self.std} need one value per channel, "
                             f"each std above 0")
        self._on_device = {}  # device -> (mean, std) tensors there: sent once, not with every batch

    @classmethod
    def from_stats(cls, mean, std):
        """fastai's constructor: Normalize.from_stats(*imagenet_stats)."""
        return cls(mean, std)

    def __repr__(self):
        return f"Normalize(mean={self.mean}, std={self.std})"

    def _stats(self, x):
        """(mean, std) as (1, C, 1, 1) float32 tensors on x's device. Made once per device: on a GPU each
        copy from the host would make it wait, batch after batch."""
        if x.device not in self._on_device:
            self._on_device[x.device] = tuple(torch.tensor(v, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
                                              for v in (self.mean, self.std))
        return self._on_device[x.device]

    def __call__(self, x, train=True):
        x = x.float().div_(255) if x.dtype == torch.uint8 else x
        mean, std = self._stats(x)
        return (x - mean) / std

    def decode(self, x):
        """The images before normalising: x * std + mean."""
        mean, std = self._stats(x)
        return x * std + mean
