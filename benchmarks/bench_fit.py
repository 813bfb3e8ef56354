"""Training-loop overhead: Learner.fit_one_cycle against a plain PyTorch loop doing the same work.

    python benchmarks/bench_fit.py [--precision fp32 bf16]

Same model (resnet18, random init), data (the sample at 128 px, batch 32, decoded once and kept in memory so
that decoding does not blur the comparison), optimizer (minigrad Adam), loss (minigrad cross_entropy) and
one epoch of training plus one validation pass, in each precision asked for: float32, and bfloat16 autocast
(learn.to_bf16(); the plain loop under torch.autocast). Prints images/second of each and their ratio.
Target: the Learner >= 0.95x the plain loop in the same precision.
"""
import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import print_table  # noqa: E402

from minigrad.functional import cross_entropy  # noqa: E402
from pets.augment import aug_transforms  # noqa: E402
from pets.data.block import DataBlock  # noqa: E402
from pets.data.download import URLs, untar_data  # noqa: E402
from pets.data.images import Resize  # noqa: E402
from pets.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr  # noqa: E402
from pets.learner import cnn_learner  # noqa: E402
from pets.metrics import error_rate  # noqa: E402


class InMemory:
    """A loader's batches, computed once: (images, labels) pairs, replayed each epoch."""

    def __init__(self, loader):
        self.batches = [(x.clone(), y.clone()) for x, y in loader]
        self.dataset, self.bs, self.vocab, self.device = loader.dataset, loader.bs, loader.vocab, loader.device

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--precision', nargs='+', choices=['fp32', 'bf16'], default=['fp32', 'bf16'])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        block = DataBlock(get_items=get_image_files, splitter=RandomSplitter(seed=42),
                          get_y=using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name'), item_tfms=Resize(144),
                          batch_tfms=aug_transforms(size=128, seed=0))
        dls = block.dataloaders(untar_data(URLs.PETS_SAMPLE, data=data) / 'images', bs=32, num_workers=0, seed=0)
        dls.train, dls.valid = InMemory(dls.train), InMemory(dls.valid)
    n_images = sum(len(y) for _, y in dls.train) + sum(len(y) for _, y in dls.valid)

    def learner_epoch(precision):
        torch.manual_seed(0)
        learn = cnn_learner(dls, 'resnet18', metrics=error_rate, pretrained=False, progress=False)
        learn.to_precision(precision).unfreeze()
        start = time.perf_counter()
        learn.fit_one_cycle(1, 1e-3)
        return time.perf_counter() - start

    def plain_epoch(precision):
        torch.manual_seed(0)
        learn = cnn_learner(dls, 'resnet18', pretrained=False, progress=False)  # the same model, built alike
        model, mean, std = learn.model, learn.mean, learn.std  # channels-last weights, as the learner's
        learn.create_opt()
        optimizer = learn.opt  # the same param groups (weights decayed; BatchNorm and biases not)
        autocast = lambda: torch.autocast('cpu', dtype=torch.bfloat16, enabled=precision == 'bf16')
        normalize = lambda x: ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        start = time.perf_counter()
        model.train()
        for x, y in dls.train:
            with autocast():
                loss = cross_entropy(model(normalize(x)), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        with torch.no_grad(), autocast():
            outputs = [(model(normalize(x)).float(), y) for x, y in dls.valid]
            error_rate(torch.cat([o for o, _ in outputs]), torch.cat([y for _, y in outputs]))
        return time.perf_counter() - start

    rows = []
    for precision in args.precision:
        times = {'plain loop': [], 'Learner.fit_one_cycle': []}
        for _ in range(3):
            times['plain loop'].append(plain_epoch(precision))
            times['Learner.fit_one_cycle'].append(learner_epoch(precision))
        best = {name: min(t) for name, t in times.items()}
        rows += [[precision, name, f"{n_images / t:.1f}", f"{best['plain loop'] / t:.3f}"] for name, t in best.items()]
    print(f"resnet18, 128 px, batch 32, {n_images} images per epoch (train + valid), best of 3\n")
    print_table(['precision', 'loop', 'images/s', 'speed / plain'], rows)


if __name__ == '__main__':
    main()
