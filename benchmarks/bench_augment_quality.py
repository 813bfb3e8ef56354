"""Augmentation quality: one composed resample against chained resamples, scored against ground truth.

    python benchmarks/bench_augment_quality.py

Each pipeline takes the same 3x460x460 inputs and the same geometric draws (aug_transforms(min_scale=0.75):
perspective, flip, rotation and zoom A, then a random-resized crop C of the result; the whole output->input
map is M = A C, fastai's composition) and
produces the output at 224 (and 112). The ground truth averages the continuous image over each output
pixel's footprint: M evaluated at 8x8 points inside every output pixel, the continuous image read there.
  analytic  a band-limited sum of sinusoids (below the input's Nyquist rate), evaluated exactly anywhere;
  photo     sample photos presized to 4x460 and read with bicubic interpolation as the continuous image.
Both inputs are their continuous image sampled at the 460x460 pixel centres.
Pipelines (all with minigrad's sampler, so only the number of resamples and the antialiasing differ):
  one pass, antialias    warp(x, M) as aug_transforms does by default
  one pass, bilinear     warp(x, M, antialias=False)
  2 passes (fastai)      A at the input's size first, then the crop C of that resampled to the output size
                         (fastai's passes when min_scale < 1: the affine and warp pass, then RandomResizedCropGPU)
  4 passes (chain)       perspective, then flip + rotation, then zoom, then crop, each resampled to the
                         output size
Prints PSNR in dB (higher is better) and the share of output pixels that read padding.
Targets: antialias within 0.3 dB of plain bilinear at 224, better than it at 112, >= 3 dB above fastai.
Also writes, in the current folder, augmented_batch.png (nine sample photos through aug_transforms) and
augment_passes.png (one photo and draw through the 4-pass chain, fastai's 2 passes and the one pass, beside
the ground truth, each with an enlarged patch and its PSNR).
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import print_table  # noqa: E402

from minigrad import homographies as H  # noqa: E402
from minigrad import sampling as S  # noqa: E402
from minigrad import warp as W  # noqa: E402
from pets.augment import AugTransform  # noqa: E402
from pets.data.download import URLs, untar_data  # noqa: E402
from pets.data.images import Resize, read_image  # noqa: E402
from pets.data.items import get_image_files  # noqa: E402

N_IMAGES, SIZE_IN = 8, 460


def draws(n, seed):
    """The crop C and the rest A of aug_transforms(size, min_scale=0.75)'s draws, per image, and the rest's
    parameters (for the 4-pass chain, which applies them one by one). The whole map is A C."""
    generator = torch.Generator().manual_seed(seed)
    crop = H.random_resized_crop_matrices(n, 0.75, ratio=(1, 1), generator=generator).double()
    augmentation = AugTransform(min_scale=1.0, seed=seed)
    geometry = augmentation.draw_geometry(n)
    return crop, augmentation.matrices(geometry, n).double(), geometry


def footprint_average(continuous, matrices, size, taps=8):
    """Ground truth: continuous(u, v) averaged over taps x taps points of each output pixel's footprint."""
    total = 0
    for i in range(taps):
        for j in range(taps):
            offset = ((j + 0.5) / taps - 0.5, (i + 0.5) / taps - 0.5)
            total = total + continuous(H.transform_grid(matrices, size, size, align_corners=True, offset=offset))
    return total / taps ** 2


def reflect_normalised(grid):
    """Normalised coordinates folded back into [-1, 1] as reflection padding reads them."""
    return S.reflect(grid, -1.0, 1.0)


class Analytic:
    """sum_k a_k cos(2 pi (fx_k u + fy_k v) + phase_k) with frequencies below 0.35 cycles per input pixel."""

    def __init__(self, seed=0, terms=12):
        g = torch.Generator().manual_seed(seed)
        cycles = torch.rand(terms, 2, generator=g, dtype=torch.float64) * 0.7 - 0.35  # per input pixel
        self.frequency = cycles * SIZE_IN / 2  # per normalised unit
        self.phase = torch.rand(terms, generator=g, dtype=torch.float64) * 2 * math.pi
        self.amplitude = torch.rand(terms, generator=g, dtype=torch.float64) / terms

    def __call__(self, grid):
        grid = reflect_normalised(grid.double())
        angle = 2 * math.pi * (grid[..., None, 0] * self.frequency[:, 0] + grid[..., None, 1] * self.frequency[:, 1])
        return (0.5 + (self.amplitude * torch.cos(angle + self.phase)).sum(-1)).unsqueeze(1).expand(-1, 3, -1, -1)

    def pixels(self, n):
        grid = H.transform_grid(torch.eye(3, dtype=torch.float64).repeat(n, 1, 1), SIZE_IN, SIZE_IN, True)
        return self(grid)


class Photos:
    """Sample photos, Resize(4 x 460)-presized and bicubic-interpolated as the continuous image."""

    def __init__(self, n):
        files = get_image_files(untar_data(URLs.PETS_SAMPLE) / 'images')[::37][:n]
        big = torch.stack([Resize(SIZE_IN * 4)(read_image(f)) for f in files]).double() / 255
        self.big = big

    def __call__(self, grid):
        grid = reflect_normalised(grid.double())
        return F.grid_sample(self.big, grid, mode='bicubic', padding_mode='border', align_corners=True).clamp(0, 1)

    def pixels(self, n):
        grid = H.transform_grid(torch.eye(3, dtype=torch.float64).repeat(n, 1, 1), SIZE_IN, SIZE_IN, True)
        return self(grid)


def psnr(estimate, truth):
    return 10 * math.log10(1 / F.mse_loss(estimate.double(), truth.double()).item())


def chain(x, matrices_in_order, size, first_size=None):
    """Resamples once per matrix: each pass maps its output onto the previous pass's image; every pass's
    output is size x size, but the first's, first_size (default: size)."""
    for i, m in enumerate(matrices_in_order):
        x = W.warp(x, m.float(), first_size if i == 0 and first_size else size, antialias=False).clamp(0, 1)
    return x


def main():
    crop, rest, g = draws(N_IMAGES, seed=0)
    full = rest @ crop
    # The 4-pass chain applies the parameters stage by stage.
    flip = H.flip_matrices(g['flip']).double()
    rotation = H.rotation_matrices(g['angle']).double()
    zoom = H.zoom_matrices(g['zoom'], g['zoom_centre']).double()
    perspective = H.perspective_matrices(g['warp_x'], g['warp_y']).double()
    torch.testing.assert_close(perspective @ flip @ rotation @ zoom, rest.double(), atol=1e-5, rtol=0)

    rows = []
    for name, source in (('analytic', Analytic()), ('photo', Photos(N_IMAGES))):
        x = source.pixels(N_IMAGES).float()
        for size in (224, 112):
            truth = footprint_average(source, full, size)
            outside = (H.transform_grid(full, size, size, True).abs() > 1).any(-1).double().mean().item()
            pipelines = {
                'one pass, antialias': W.warp(x, full.float(), size),
                'one pass, bilinear': W.warp(x, full.float(), size, antialias=False),
                '2 passes (fastai order)': chain(x, [rest, crop], size, first_size=SIZE_IN),
                '4 passes (chain)': chain(x, [perspective, flip @ rotation, zoom, crop], size),
            }
            for pipeline, out in pipelines.items():
                rows.append([source.__class__.__name__.lower(), f"460->{size}", pipeline,
                             f"{psnr(out.clamp(0, 1), truth):.2f}", f"{100 * outside:.1f}%"])
            if name == 'photo' and size == 224:
                side_by_side = (truth, {k: pipelines[k] for k in ('4 passes (chain)', '2 passes (fastai order)',
                                                                  'one pass, antialias')})
    print(f"{N_IMAGES} images, aug_transforms(min_scale=0.75) draws, ground truth 8x8 footprint average\n")
    print_table(['image', 'scale', 'pipeline', 'PSNR dB', 'reads padding'], rows)
    save_example_batch('augmented_batch.png')
    save_side_by_side('augment_passes.png', *side_by_side)


def save_side_by_side(path, truth, outputs, crop=56, zoom=4):
    """One photo and draw through each pipeline, beside the ground truth: the whole image above (a box marks
    the crop), below it a crop x crop patch enlarged zoom times (each pixel a zoom x zoom block), with the
    photo's own PSNR in each title. The photo is the one with the most fine detail, the patch its busiest."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    detail = (truth[:, :, 1:, 1:] - truth[:, :, :-1, :-1]).abs().mean(1)  # (N, H-1, W-1): local contrast
    image = int(detail.mean(dim=(1, 2)).argmax())
    busy = F.avg_pool2d(detail[image][None, None], crop, stride=8)[0, 0]
    top, left = [8 * int(i) for i in divmod(int(busy.argmax()), busy.shape[1])]
    panels = {'ground truth (footprint average)': truth, **outputs}
    figure, axes = plt.subplots(2, len(panels), figsize=(4 * len(panels), 8.6))
    for column, (name, out) in enumerate(panels.items()):
        picture = out[image].clamp(0, 1).permute(1, 2, 0).numpy()
        title = name if out is truth else f"{name}\nPSNR {psnr(out[image].clamp(0, 1), truth[image]):.2f} dB"
        axes[0, column].imshow(picture)
        axes[0, column].add_patch(Rectangle((left - 0.5, top - 0.5), crop, crop, fill=False, color='yellow'))
        axes[0, column].set_title(title, fontsize=10)
        axes[1, column].imshow(picture[top:top + crop, left:left + crop].repeat(zoom, 0).repeat(zoom, 1))
        axes[1, column].set_title(f"{crop}x{crop} patch, {zoom}x enlarged", fontsize=10)
    for axis in axes.flat:
        axis.axis('off')
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"one photo through each pipeline: {os.path.abspath(path)}")


def save_example_batch(path):
    """Nine sample photos through aug_transforms(size=224, min_scale=0.75), to look at."""
    import matplotlib
    matplotlib.use('Agg')
    from pets.augment import aug_transforms
    from pets.data.show import show_images
    files = get_image_files(untar_data(URLs.PETS_SAMPLE) / 'images')[5::41][:9]
    x = torch.stack([Resize(SIZE_IN)(read_image(f), train=True) for f in files])
    out = aug_transforms(size=224, min_scale=0.75, seed=1)(x, train=True)
    show_images(out, [f.name for f in files]).savefig(path)
    print(f"\none augmented batch: {os.path.abspath(path)}")


if __name__ == '__main__':
    main()
