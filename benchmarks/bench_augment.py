"""Batch augmentation speed: one composed pass (ours) against the alternatives, on the CPU or a GPU.

    python benchmarks/bench_augment.py                   # CPU: batches of 64
    python benchmarks/bench_augment.py --device cuda     # GPU: batches of 64 and 256

Batches of uint8 images 3x460x460 -> float 3x224x224, aug_transforms(size=224, min_scale=0.75)'s draws:
  pets, Triton kernel     (GPU) minigrad.warp_triton.render: warp + lighting in one hand-written kernel
  pets, compiled          the tensor-op warp and lighting through torch.compile (compile time printed apart)
  pets, eager             the tensor-op warp and lighting, op by op (the CPU default)
  F.grid_sample one pass  the same matrices, torch's native grid_sample on the batch converted to float
  torchvision v2 chain    per image: RandomResizedCrop, flip, rotation, affine zoom, perspective, colour jitter
Prints the median ms per batch, images/s, each one's time over the first row's, and how close each comes to
the memory limit: the bytes a single pass must move (read the uint8 batch, write the float32 result) per
second, over the bandwidth of a plain tensor copy measured on the same device.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import median_seconds, print_table  # noqa: E402

from minigrad.homographies import transform_grid  # noqa: E402
from pets.augment import aug_transforms, render  # noqa: E402

SIZE_IN, SIZE_OUT = 460, 224


def synchronized(fn, device):
    """fn, then wait for the device: a GPU call returns before its kernels finish."""
    if device.type != 'cuda':
        return fn
    return lambda: (fn(), torch.cuda.synchronize(device))


def copy_bandwidth(device, megabytes=512):
    """Bytes per second a plain copy moves on `device` (each byte read once and written once)."""
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    seconds, = median_seconds([synchronized(lambda: target.copy_(source), device)], rounds=10, calls_per_round=3)
    return 2 * source.numel() / seconds


def pipelines(x, device):
    """name -> function that augments the batch x once, each from the same kind of draw."""
    tfm = aug_transforms(size=SIZE_OUT, min_scale=0.75, seed=0)
    matrices = tfm.draw_matrices(len(x)).to(device)
    shift, factor = tfm.draw_lighting(len(x))

    def one_pass(backend):
        return lambda: render(x, matrices, SIZE_OUT, 'bilinear', 'reflection', True, shift, factor, backend=backend)

    def native():
        grid = transform_grid(matrices, SIZE_OUT, SIZE_OUT, align_corners=True)
        return F.grid_sample(x.float() / 255, grid, mode='bilinear', padding_mode='reflection', align_corners=True)

    chain = v2.Compose([v2.RandomResizedCrop(SIZE_OUT, scale=(0.75, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                        v2.RandomRotation(10), v2.RandomAffine(degrees=0, scale=(1.0, 1.1)),
                        v2.RandomPerspective(0.2, p=0.75), v2.ColorJitter(brightness=0.2, contrast=0.2),
                        v2.ToDtype(torch.float32, scale=True)])
    found = {}
    if device.type == 'cuda':
        found['pets, Triton kernel'] = one_pass('triton')
    found['pets, compiled'] = one_pass('compiled')
    found['pets, eager'] = one_pass('eager')
    found['F.grid_sample one pass'] = native
    found['torchvision v2 chain'] = lambda: torch.stack([chain(image) for image in x])
    return found


def device_argument(text):
    try:
        return torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda or cuda:N") from None


def positive_integer(text):
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def positive_integers(text):
    return [positive_integer(part) for part in text.split(',')]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', type=device_argument, default='cpu', help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument('--batch-sizes', type=positive_integers, default=None,
                        help='comma-separated (default: 64 on the CPU, 64,256 on a GPU)')
    parser.add_argument('--rounds', type=positive_integer, default=15,
                        help='timing rounds, each pipeline once per round (default: 15)')
    args = parser.parse_args()
    device = args.device
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA GPU is visible to torch; run it on a machine with one')
    batch_sizes = args.batch_sizes or ([64, 256] if device.type == 'cuda' else [64])
    bandwidth = copy_bandwidth(device)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f"CPU, {torch.get_num_threads()} threads"
    print(f"uint8 3x{SIZE_IN}x{SIZE_IN} -> float32 3x{SIZE_OUT}x{SIZE_OUT}, torch {torch.__version__}, {name}; "
          f"plain copy: {bandwidth / 1e9:.1f} GB/s\n")
    for batch_size in batch_sizes:
        x = torch.randint(0, 256, (batch_size, 3, SIZE_IN, SIZE_IN), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0)).to(device)
        found = {name: synchronized(fn, device) for name, fn in pipelines(x, device).items()}
        start = time.perf_counter()
        for _ in range(30):  # compile every variant the draws make (groups of images taking more taps)
            found['pets, compiled']()
        compile_seconds = time.perf_counter() - start
        times = median_seconds(list(found.values()), rounds=args.rounds, calls_per_round=1)
        bytes_moved = x.numel() + batch_size * 3 * SIZE_OUT * SIZE_OUT * 4  # read the batch, write the result
        print(f"batch of {batch_size}; 'pets, compiled': the first 30 batches (compiling) took {compile_seconds:.1f} s")
        print_table(['pipeline', 'ms per batch', 'images/s', 'time / first', 'of copy bandwidth'],
                    [[name, f"{t * 1e3:.1f}", f"{batch_size / t:.0f}", f"{t / times[0]:.2f}",
                      f"{bytes_moved / t / bandwidth:.0%}"] for name, t in zip(found, times)])
        print()


if __name__ == '__main__':
    main()
