"""Batch augmentation: every spatial change of every image composed into ONE matrix, ONE resample.

    tfm = aug_transforms(size=224, min_scale=0.75)
    x = tfm(uint8_batch, train=True)   # float32 (N, 3, 224, 224) in [0, 1]; tfm.last_matrices: the geometry

This is step two of the chapter's presizing. Per image, parameters are drawn for a random-resized crop,
a flip, a rotation, a zoom and a perspective warp; their output->input matrices multiply into one, and
minigrad.warp reads the presized uint8 image through it once (antialiased where it shrinks a lot). Then
brightness and contrast change in logit space, as fastai does. On a GPU, minigrad.warp_triton's hand-written
kernel does all of it in one pass over the output. fastai resamples twice when min_scale < 1
(its crop is a separate pass) and draws one crop per batch; here each image gets its own, in one pass.

On the validation set nothing is random: the image is only resized to `size`, in one interpolation.
"""
import functools
import importlib.util
import math

import torch

from minigrad import homographies as H
from minigrad import warp as W
from pets.data.normalize import Normalize
from pets.rng import generator_from


class AugTransform:
    """The batch transform aug_transforms returns; call it as tfm(x, train=True|False).

    for_model(mean, std, dtype, memory_format) makes its output what a model reads: normalised, (x - mean)
    / std per channel, in a dtype and a memory layout, in the same pass (on a GPU, in the one Triton kernel:
    each value written once). cnn_learner asks it to, as fastai's adds Normalize to the loaders; decode(x)
    gives the images back in [0, 1], to show them.
    """

    def __init__(self, size=None, min_scale=1.0, do_flip=True, flip_vert=False, max_rotate=10.0, min_zoom=1.0,
                 max_zoom=1.1, max_lighting=0.2, max_warp=0.2, p_affine=0.75, p_lighting=0.75, mode='bilinear',
                 pad_mode='reflection', align_corners=True, batch=False, seed=None, fused=None, crop_ratio=(1.0, 1.0)):
        self.size = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
        self.min_scale, self.crop_ratio, self.do_flip, self.flip_vert = min_scale, tuple(crop_ratio), do_flip, flip_vert
        self.max_rotate, self.min_zoom, self.max_zoom = max_rotate, min_zoom, max_zoom
        self.max_lighting, self.max_warp = max_lighting, max_warp
        self.p_affine, self.p_lighting = p_affine, p_lighting
        self.mode, self.pad_mode, self.align_corners, self.batch = mode, pad_mode, align_corners, batch
        self.generator = generator_from(seed)
        self.fused = fused
        self.last_matrices = None
        self.mean = self.std = self.dtype = None
        self.memory_format = torch.contiguous_format

    def for_model(self, mean=None, std=None, dtype=None, memory_format=None):
        """From now on the output is normalised with mean and std (None: not normalised), in dtype (None:
        float32 for uint8 images) and memory_format (None: as it was). Returns self."""
        self.mean, self.std = (None, None) if mean is None else (tuple(mean), tuple(std))
        self.dtype = dtype
        self.memory_format = memory_format or self.memory_format
        return self

    def decode(self, x):
        """A batch this transform made, as images in [0, 1] (float32, channels first): the normalisation undone."""
        x = x.float()
        if self.mean is not None:
            x = Normalize(self.mean, self.std).decode(x)
        return x.contiguous()

    def __repr__(self):
        return (f"aug_transforms(size={self.size}, min_scale={self.min_scale}, crop_ratio={self.crop_ratio}, "
                f"max_rotate={self.max_rotate}, "
                f"max_zoom={self.max_zoom}, max_warp={self.max_warp}, max_lighting={self.max_lighting})")

    def __call__(self, x, train=True):
        """uint8 (or float in [0, 1]) images (N, 3, H, W) -> float32 (N, 3, size, size) in [0, 1] (or, after
        for_model, normalised, in its dtype and memory format)."""
        n, _, height, width = x.shape
        size = self.size or (height, width)
        matrices = self.draw_matrices(n, aspect=width / height) if train else torch.eye(3).repeat(n, 1, 1)
        self.last_matrices = matrices
        shift, factor = self.draw_lighting(n) if train and self.max_lighting > 0 else (None, None)
        return render(x, matrices, size, self.mode, self.pad_mode, self.align_corners, shift, factor,
                      backend=choose_backend(x.device, self.fused), mean=self.mean, std=self.std, dtype=self.dtype,
                      memory_format=self.memory_format)

    def _uniform(self, n, low, high):
        values = torch.empty(1 if self.batch else n, dtype=torch.float64).uniform_(low, high, generator=self.generator)
        return values.expand(n)

    def _chosen(self, n, p):
        chosen = torch.rand(1 if self.batch else n, generator=self.generator) < p
        return chosen.expand(n)

    def draw_geometry(self, n, aspect=1.0):
        """Each image's random geometry, from fastai's distributions; a transform that its probability does
        not choose takes its neutral value. A dict of (n,) tensors (aspect: the input's width / height):
            crop_width, crop_height, crop_centre (n, 2)  with min_scale < 1: a random-resized crop of area
                                                        U(min_scale, 1), aspect ratio log-uniform in crop_ratio
            flip (and flip_vertical, transpose with flip_vert)   each with probability 0.5
            angle         degrees, U(-max_rotate, max_rotate) with probability p_affine, else 0
            zoom          U(min_zoom, max_zoom) with probability p_affine, else 1; zoom_centre (n, 2) U(0, 1)
            warp_x, warp_y  U(-max_warp, max_warp), each with probability p_affine on its own (as fastai's
                          _WarpCoord draws its two masks), else 0
        """
        geometry = {}
        if self.min_scale < 1:
            boxes = H.random_resized_crop_boxes(1 if self.batch else n, self.min_scale, self.crop_ratio,
                                                generator=self.generator, aspect=aspect)
            geometry['crop_width'], geometry['crop_height'] = (b.double().expand(n) for b in boxes[:2])
            geometry['crop_centre'] = boxes[2].double().expand(n, 2)
        if self.do_flip:
            geometry['flip'] = self._chosen(n, 0.5)
            if self.flip_vert:
                geometry['flip_vertical'], geometry['transpose'] = self._chosen(n, 0.5), self._chosen(n, 0.5)
        if self.max_rotate > 0:
            geometry['angle'] = self._uniform(n, -self.max_rotate, self.max_rotate) * self._chosen(n, self.p_affine)
        if self.max_zoom > 1 or self.min_zoom < 1:
            geometry['zoom'] = torch.where(self._chosen(n, self.p_affine), self._uniform(n, self.min_zoom, self.max_zoom),
                                           torch.ones(n, dtype=torch.float64))
            geometry['zoom_centre'] = torch.stack([self._uniform(n, 0, 1), self._uniform(n, 0, 1)], dim=1)
        if self.max_warp > 0:
            for axis in ('warp_x', 'warp_y'):
                geometry[axis] = self._uniform(n, -self.max_warp, self.max_warp) * self._chosen(n, self.p_affine)
        return geometry

    def matrices(self, geometry, n, aspect=1.0):
        """One output->input matrix per image, composed as fastai composes its passes:
            warp @ flip @ rotation @ zoom @ crop.
        An output point goes through the crop first and the warp last: fastai warps, flips, rotates and
        zooms the presized image (one pass, the affine matrix and then its warp on the sampling grid), then
        crops the result (RandomResizedCropGPU, a second pass), so the rotation turns about the presized
        image's centre and the crop frames the turned image. Here the same map is one matrix and one pass."""
        m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
        if 'warp_x' in geometry:
            m = H.perspective_matrices(geometry['warp_x'], geometry['warp_y']).double()
        if 'flip' in geometry:
            m = m @ H.flip_matrices(geometry['flip']).double()
        if 'flip_vertical' in geometry:
            m = m @ torch.diag_embed(torch.stack([torch.ones(n), 1 - 2 * geometry['flip_vertical'].float(),
                                                  torch.ones(n)], dim=1)).double()
            swap = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
            # with both flips: all 8 symmetries of the square (fastai's Dihedral)
            m = torch.where(geometry['transpose'][:, None, None], m @ swap, m)
        if 'angle' in geometry:
            m = m @ H.rotation_matrices(geometry['angle'], aspect).double()
        if 'zoom' in geometry:
            m = m @ H.zoom_matrices(geometry['zoom'], geometry['zoom_centre']).double()
        if 'crop_width' in geometry:
            m = m @ H.crop_matrices(geometry['crop_width'], geometry['crop_height'], geometry['crop_centre']).double()
        return m.float()

    def draw_matrices(self, n, aspect=1.0):
        """n random output->input matrices: draw_geometry's parameters, composed by matrices."""
        return self.matrices(self.draw_geometry(n, aspect), n, aspect)

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


@functools.cache
def _triton_installed():
    return importlib.util.find_spec('triton') is not None


def choose_backend(device, fused=None, triton_available=None):
    """Which code renders a batch on `device`:
        'triton'    minigrad.warp_triton's hand-written kernel: CUDA tensors, Triton installed, fused not False;
        'compiled'  minigrad.warp and adjust through torch.compile (C++ loops): CPU tensors with fused=True;
        'eager'     the tensor ops one by one: fused=False, the CPU by default, or CUDA without Triton.
    triton_available: None asks whether the triton package is installed.
    """
    if triton_available is None:
        triton_available = _triton_installed()
    if fused is False:
        return 'eager'
    if torch.device(device).type == 'cuda':
        return 'triton' if triton_available else 'eager'  # torch.compile on CUDA needs Triton too
    return 'compiled' if fused else 'eager'


def render(x, matrices, size, mode, padding_mode, align_corners, shift=None, factor=None, backend='eager',
           mean=None, std=None, dtype=None, memory_format=torch.contiguous_format):
    """The augmented batch: one warp through `matrices`, then uint8 -> [0, 1] and the lighting change
    (see adjust), then with mean and std (per-channel sequences) the normalisation (x - mean) / std; in
    dtype (None: float32 for uint8 input, else the input's) and memory_format.

    The per-image work before the pixels (minigrad.warp.sampling_plan: each image's pixel map and taps) is
    done on the host, where the matrices were drawn; the maps and the lighting then reach x's device in one
    copy that does not make the host wait (minigrad.warp.to_device), and the taps stay on the host, where
    the eager warp groups images by them. So a batch on a GPU is augmented without a single wait.

    backend (see choose_backend): 'eager'; 'compiled', the warp (minigrad.warp.compiled_supersample) and
    adjust each one compiled loop over the batch; 'triton', all of it in one hand-written kernel
    (minigrad.warp_triton.render: the output written once).
    """
    if backend not in ('eager', 'compiled', 'triton'):
        raise ValueError(f"backend={backend!r} is not 'eager', 'compiled' or 'triton'")
    size = (size, size) if isinstance(size, int) else tuple(size)
    pixel_maps, taps = W.sampling_plan(x, matrices.cpu(), size, mode, padding_mode, align_corners, antialias=True)
    mean, std = (None, None) if mean is None else (torch.tensor(mean), torch.tensor(std))
    if backend == 'triton':
        from minigrad import warp_triton  # imports triton: only where it is used
        pixel_maps, taps, shift, factor, mean, std = W.to_device(x.device, pixel_maps, taps, shift, factor, mean, std)
        return warp_triton.render(x, None, size, mode, padding_mode, align_corners, shift, factor, mean, std,
                                  dtype=dtype or torch.float32, plan=(pixel_maps, taps), memory_format=memory_format)
    compiled = backend == 'compiled'
    pixel_maps, shift, factor, mean, std = W.to_device(x.device, pixel_maps, shift, factor, mean, std)
    out = W.warp(x, None, size, mode=mode, padding_mode=padding_mode, align_corners=align_corners,
                 compiled=compiled, plan=(pixel_maps, taps))
    value_range = 255 if x.dtype == torch.uint8 else 1
    out = (compiled_adjust() if compiled else adjust)(out, value_range, shift, factor)
    if mean is not None:  # in place, as adjust: the same arithmetic as a separate (x - mean) / std
        out = out.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    return (out if dtype is None else out.to(dtype)).contiguous(memory_format=memory_format)


def adjust(x, value_range, shift=None, factor=None):
    """v = x / value_range (255 for uint8 images, 1 for floats in [0, 1]), then per image the lighting change
    sigmoid((logit(v) + shift) factor) (in logit space a change never leaves (0, 1), and it moves mid-tones
    most), clamped to [0, 1]. In place: in eager mode a fresh 64x3x224x224 buffer costs as much as the
    arithmetic on it."""
    x.div_(value_range)
    if shift is not None:
        n, eps = len(x), 1e-6
        shift, factor = shift.view(n, 1, 1, 1), factor.view(n, 1, 1, 1)
        x.clamp_(eps, 1 - eps).logit_().add_(shift).mul_(factor).sigmoid_()
    return x.clamp_(0, 1)


@functools.cache
def compiled_adjust():
    """adjust through torch.compile: one loop over the batch instead of six, one graph for every batch size
    but 1 (minigrad.warp.mark_batch_dynamic)."""
    compiled = torch.compile(adjust)

    def adjust_batch(x, value_range, shift=None, factor=None):
        W.mark_batch_dynamic(x, shift, factor)
        return compiled(x, value_range, shift, factor)

    return adjust_batch


def aug_transforms(mult=1.0, do_flip=True, flip_vert=False, max_rotate=10.0, min_zoom=1.0, max_zoom=1.1,
                   max_lighting=0.2, max_warp=0.2, p_affine=0.75, p_lighting=0.75, size=None, mode='bilinear',
                   pad_mode='reflection', align_corners=True, batch=False, min_scale=1.0, seed=None, fused=None,
                   crop_ratio=(1.0, 1.0)):
    """fastai's aug_transforms, with its arguments and defaults, as ONE batch transform (AugTransform).

    mult scales max_rotate, max_lighting and max_warp. size: the output size (int or (h, w)); with
    min_scale < 1 a random-resized crop of at least that fraction of the area comes first, its aspect ratio
    (width / height in pixels) drawn log-uniformly from crop_ratio: (1, 1) by default, square crops that
    are not stretched, as fastai's aug_transforms (RandomResizedCropGPU(size, min_scale, ratio=(1, 1)));
    torchvision's RandomResizedCrop draws from (3/4, 4/3): a 4:3 box resized to a square changes the
    image's proportions by a third.
    (crop_ratio is not in fastai's signature.) batch=True
    draws one set of parameters for the whole batch (fastai's option); by default each image draws its own.
    seed: draws from a private generator seeded with it, a repeatable sequence whatever else runs (default:
        draws from torch's global generator as each batch is augmented; pets.rng).
    fused: render each batch in one fused pass. None (default): on CUDA tensors with minigrad.warp_triton's
        hand-written Triton kernel when Triton is installed; on the CPU eagerly, op by op. True: also on the
        CPU, through torch.compile (C++ loops, about 2x faster than eager once compiled, which takes ~25 s
        the first time, a few seconds once torch's compile cache holds it: worth it for long runs, not for
        a short one). False: eagerly everywhere.
    """
    return AugTransform(size=size, min_scale=min_scale, do_flip=do_flip, flip_vert=flip_vert,
                        max_rotate=max_rotate * mult, min_zoom=min_zoom, max_zoom=max_zoom,
                        max_lighting=max_lighting * mult, max_warp=max_warp * mult, p_affine=p_affine,
                        p_lighting=p_lighting, mode=mode, pad_mode=pad_mode, align_corners=align_corners,
                        batch=batch, seed=seed, fused=fused, crop_ratio=crop_ratio)
