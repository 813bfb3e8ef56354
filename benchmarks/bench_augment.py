"""Batch augmentation speed: one composed pass (ours, hand-written sampler) against the alternatives.

    python benchmarks/bench_augment.py

A batch of 64 uint8 images 3x460x460 -> float 64x3x224x224 on the CPU:
  pets aug_transforms     aug_transforms(size=224, min_scale=0.75): one matrix per image, one warp (uint8 taps)
  ... (fused=True)        the same through torch.compile (its compile time printed apart, not counted)
  F.grid_sample one pass  the same matrices, torch's native grid_sample on the batch converted to float
  torchvision v2 chain    per image: RandomResizedCrop, flip, rotation, affine zoom, perspective, colour jitter
Prints the median ms per batch and each one's ratio to ours. Target (issue 4): >= 3x faster than the v2 chain.
"""
import os
import sys
import time

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import median_seconds, print_table  # noqa: E402

from minigrad.warp import transform_grid  # noqa: E402
from pets.augment import aug_transforms  # noqa: E402


def main():
    x = torch.randint(0, 256, (64, 3, 460, 460), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = aug_transforms(size=224, min_scale=0.75, seed=0)
    matrices = ours.draw_matrices(64)

    def native():
        grid = transform_grid(matrices, 224, 224, align_corners=True)
        return F.grid_sample(x.float() / 255, grid, mode='bilinear', padding_mode='reflection', align_corners=True)

    chain = v2.Compose([v2.RandomResizedCrop(224, scale=(0.75, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                        v2.RandomRotation(10), v2.RandomAffine(degrees=0, scale=(1.0, 1.1)),
                        v2.RandomPerspective(0.2, p=0.75), v2.ColorJitter(brightness=0.2, contrast=0.2),
                        v2.ToDtype(torch.float32, scale=True)])

    def torchvision_chain():
        return torch.stack([chain(image) for image in x])

    fused = aug_transforms(size=224, min_scale=0.75, seed=0, fused=True)
    start = time.perf_counter()
    for _ in range(30):  # random draws make a few variants (groups of images taking 1 or more taps): compile them all
        fused(x, train=True)
    warm_up_seconds = time.perf_counter() - start
    names = ['pets aug_transforms', 'pets aug_transforms(fused=True)', 'F.grid_sample one pass',
             'torchvision v2 chain']
    times = median_seconds([lambda: ours(x, train=True), lambda: fused(x, train=True), native, torchvision_chain],
                           rounds=15, calls_per_round=1)
    print(f"64 x uint8 3x460x460 -> float 3x224x224, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"fused=True: first 30 batches (compiling) took {warm_up_seconds:.1f} s\n")
    print_table(['pipeline', 'ms per batch', 'time / ours'],
                [[name, f"{t * 1e3:.0f}", f"{t / times[0]:.2f}"] for name, t in zip(names, times)])


if __name__ == '__main__':
    main()
