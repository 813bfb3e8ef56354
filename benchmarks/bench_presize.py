"""Decode + presize throughput: pets' item pipeline against torchvision's usual one, on the sample set.

    python benchmarks/bench_presize.py

Both turn each of the 370 sample JPEGs into a uint8 (3, 460, 460) tensor in a torch DataLoader (batch 64):
  pets         load_image with JPEG draft mode, then Resize(460): one resample of the crop box;
  torchvision  PIL open + convert('RGB'), transforms.Resize(460) of the whole image, RandomCrop(460),
               PILToTensor (the ImageFolder recipe).
Prints items/second for 0 and 2 worker processes and the ratio. Target: >= 1.5x torchvision.
"""
import os
import sys
import tempfile
import time

import torch
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import print_table  # noqa: E402

from pets.data.loader import ItemDataset, collate  # noqa: E402
from pets.data.download import URLs, untar_data  # noqa: E402
from pets.data.images import Resize  # noqa: E402
from pets.data.items import get_image_files  # noqa: E402


class TorchvisionDataset(torch.utils.data.Dataset):
    def __init__(self, files, size):
        self.files = files
        self.transform = transforms.Compose([transforms.Resize(size), transforms.RandomCrop(size),
                                             transforms.PILToTensor()])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        with Image.open(self.files[index]) as image:
            return self.transform(image.convert('RGB')), 0


def items_per_second(dataset, workers, collate_fn=None, epochs=3):
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True, num_workers=workers,
                                         collate_fn=collate_fn, persistent_workers=workers > 0)
    for _ in loader:  # warm-up epoch: worker start-up, file cache
        pass
    start = time.perf_counter()
    for _ in range(epochs):
        for _ in loader:
            pass
    return epochs * len(dataset) / (time.perf_counter() - start)


def main():
    with tempfile.TemporaryDirectory() as data:
        files = get_image_files(untar_data(URLs.PETS_SAMPLE, data=data) / 'images')
        ours = ItemDataset(files, [0] * len(files), ['pet'], [Resize(460)], train=True)
        theirs = TorchvisionDataset(files, 460)
        rows = []
        for workers in (0, 2):
            ours_rate = items_per_second(ours, workers, collate)
            theirs_rate = items_per_second(theirs, workers)
            rows.append([workers, f"{theirs_rate:.0f}", f"{ours_rate:.0f}", f"{ours_rate / theirs_rate:.2f}"])
    print(f"{len(files)} sample JPEGs -> uint8 (3, 460, 460), torch {torch.__version__}, {os.cpu_count()} cores\n")
    print_table(['workers', 'torchvision items/s', 'pets items/s', 'ratio'], rows)


if __name__ == '__main__':
    main()
