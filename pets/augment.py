"""Batch augmentation: every spatial change of every image composed into ONE matrix, ONE resample.

    tfm = aug_transforms(size=224, min_scale=0.75)
    x = tfm(uint8_batch, train=True)   # float32 (N, 3, 224, 224) in [0, 1]; tfm.last_matrices: the geometry

This is step two of the chapter's presizing. Per image, parameters are drawn for a random-resized crop,
a flip, a rotation, a zoom and a perspective warp; their output->input matrices multiply into one, and
minigrad.warp reads the presized uint8 image through it once (antialiased where it shrinks a lot). Then
brightness and contrast change in logit space, as fastai does. fastai resamples twice when min_scale < 1
(its crop is a separate pass) and draws one crop per batch; here each image gets its own, in one pass.

On the validation set nothing is random: the image is only resized to `size`, in one interpolation.
"""
import functools
import math

import torch

from minigrad import warp as W
from pets.data.block import generator_from


class AugTransform:
    """The batch transform aug_transforms returns; call it as tfm(x, train=True|False)."""

    def __init__(self, size=None, min_scale=1.0, do_flip=True, flip_vert=False, max_rotate=10.0, min_zoom=1.0,
                 max_zoom=1.1, max_lighting=0.2, max_warp=0.2, p_affine=0.75, p_lighting=0.75, mode='bilinear',
                 pad_mode='reflection', align_corners=True, batch=False, seed=None, fused=False):
        self.size = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
        self.min_scale, self.do_flip, self.flip_vert = min_scale, do_flip, flip_vert
        self.max_rotate, self.min_zoom, self.max_zoom = max_rotate, min_zoom, max_zoom
        self.max_lighting, self.max_warp = max_lighting, max_warp
        self.p_affine, self.p_lighting = p_affine, p_lighting
        self.mode, self.pad_mode, self.align_corners, self.batch = mode, pad_mode, align_corners, batch
        self.generator = generator_from(seed)
        self.render = compiled_render() if fused else render
        self.last_matrices = None

    def __repr__(self):
        return (f"aug_transforms(size={self.size}, min_scale={self.min_scale}, max_rotate={self.max_rotate}, "
                f"max_zoom={self.max_zoom}, max_warp={self.max_warp}, max_lighting={self.max_lighting})")

    def __call__(self, x, train=True):
        """uint8 (or float in [0, 1]) images (N, 3, H, W) -> float32 (N, 3, size, size) in [0, 1]."""
        n, _, height, width = x.shape
        size = self.size or (height, width)
        matrices = self.draw_matrices(n, aspect=width / height) if train else torch.eye(3).repeat(n, 1, 1)
        self.last_matrices = matrices
        shift, factor = self.draw_lighting(n) if train and self.max_lighting > 0 else (None, None)
        return self.render(x, matrices.to(x.device), size, self.mode, self.pad_mode, self.align_corners,
                           shift, factor)

    def _uniform(self, n, low, high):
        values = torch.empty(1 if self.batch else n, dtype=torch.float64).uniform_(low, high, generator=self.generator)
        return values.expand(n)

    def _chosen(self, n, p):
        chosen = torch.rand(1 if self.batch else n, generator=self.generator) < p
        return chosen.expand(n)

    def draw_matrices(self, n, aspect=1.0):
        """One output->input matrix per image: crop @ flip @ rotation @ zoom @ warp (the warp acts first on
        the output's coordinates, the crop last, so each stage sees the image the previous one made)."""
        m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
        if self.min_scale < 1:
            crop = W.random_resized_crop_matrices(1 if self.batch else n, self.min_scale, generator=self.generator)
            m = crop.double().expand(n, 3, 3) @ m
        if self.do_flip:
            flips = self._chosen(n, 0.5)
            m = m @ W.flip_matrices(flips).double()
            if self.flip_vert:
                vertical = self._chosen(n, 0.5)
                m = m @ torch.diag_embed(torch.stack([torch.ones(n), 1 - 2 * vertical.float(), torch.ones(n)],
                                                     dim=1)).double()
                transpose = self._chosen(n, 0.5)  # with both flips: all 8 symmetries of the square (Dihedral)
                swap = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
                m = torch.where(transpose[:, None, None], m @ swap, m)
        if self.max_rotate > 0:
            angles = self._uniform(n, -self.max_rotate, self.max_rotate) * self._chosen(n, self.p_affine)
            m = m @ W.rotation_matrices(angles, aspect).double()
        if self.max_zoom > 1 or self.min_zoom < 1:
            scales = torch.where(self._chosen(n, self.p_affine), self._uniform(n, self.min_zoom, self.max_zoom),
                                 torch.ones(n, dtype=torch.float64))
            centres = torch.stack([self._uniform(n, 0, 1), self._uniform(n, 0, 1)], dim=1)
            m = m @ W.zoom_matrices(scales, centres).double()
        if self.max_warp > 0:
            chosen = self._chosen(n, self.p_affine)
            magnitudes = [self._uniform(n, -self.max_warp, self.max_warp) * chosen for _ in range(2)]
            m = m @ W.perspective_matrices(*magnitudes).double()
        return m.float()

    def draw_lighting(self, n):
        """Per image (shift, factor) for brightness and contrast in logit space, fastai's way.

        Brightness b ~ U(0.5 (1 - max_lighting), 0.5 (1 + max_lighting)) becomes the shift logit(b) (b = 0.5
        changes nothing); contrast c = exp(U(log(1 - max_lighting), -log(1 - max_lighting))) the factor.
        Each is applied with p_lighting. Returns two (N,) float32 tensors.
        """
        half = 0.5 * self.max_lighting
        brightness = torch.where(self._chosen(n, self.p_lighting), self._uniform(n, 0.5 - half, 0.5 + half),
                                 torch.full((n,), 0.5, dtype=torch.float64))
        log_limit = -math.log(1 - self.max_lighting)
        contrast = torch.where(self._chosen(n, self.p_lighting), self._uniform(n, -log_limit, log_limit).exp(),
                               torch.ones(n, dtype=torch.float64))
        return torch.logit(brightness).float(), contrast.float()


def render(x, matrices, size, mode, padding_mode, align_corners, shift=None, factor=None):
    """The augmented batch: one warp through `matrices`, then uint8 -> [0, 1], then the lighting change
    sigmoid((logit(v) + shift) factor) per image (in logit space a change never leaves (0, 1), and it
    moves mid-tones most). Separate from the random draws so that torch.compile can fuse all of it."""
    out = W.warp(x, matrices, size, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    # In place: without fusion, a fresh 64x3x224x224 buffer costs as much as the arithmetic on it.
    if x.dtype == torch.uint8:
        out.div_(255)
    if shift is not None:
        n, eps = len(out), 1e-6
        shift, factor = shift.to(out.device).view(n, 1, 1, 1), factor.to(out.device).view(n, 1, 1, 1)
        out.clamp_(eps, 1 - eps).logit_().add_(shift).mul_(factor).sigmoid_()
    return out.clamp_(0, 1)


@functools.cache
def compiled_render():
    """render through torch.compile: the same ops fused into a few loops (C++ on the CPU, Triton on a GPU).
    About 10 s of compiling over the first batches (a few variants: images of one scale group or of
    several), then no more for new random parameters; about 1.9x faster than eager on the CPU."""
    return torch.compile(render, dynamic=True)


def aug_transforms(mult=1.0, do_flip=True, flip_vert=False, max_rotate=10.0, min_zoom=1.0, max_zoom=1.1,
                   max_lighting=0.2, max_warp=0.2, p_affine=0.75, p_lighting=0.75, size=None, mode='bilinear',
                   pad_mode='reflection', align_corners=True, batch=False, min_scale=1.0, seed=None, fused=False):
    """fastai's aug_transforms, with its arguments and defaults, as ONE batch transform (AugTransform).

    mult scales max_rotate, max_lighting and max_warp. size: the output size (int or (h, w)); with
    min_scale < 1 a random-resized crop of at least that fraction of the area comes first. batch=True
    draws one set of parameters for the whole batch (fastai's option); by default each image draws its own.
    seed: for a repeatable sequence (default: drawn from torch's global generator).
    fused: run the rendering through torch.compile (worth its ~10 s compile on long runs; see compiled_render).
    """
    return AugTransform(size=size, min_scale=min_scale, do_flip=do_flip, flip_vert=flip_vert,
                        max_rotate=max_rotate * mult, min_zoom=min_zoom, max_zoom=max_zoom,
                        max_lighting=max_lighting * mult, max_warp=max_warp * mult, p_affine=p_affine,
                        p_lighting=p_lighting, mode=mode, pad_mode=pad_mode, align_corners=align_corners,
                        batch=batch, seed=seed, fused=fused)
