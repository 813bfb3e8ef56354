"""pets.rng's rule, object by object: a seed gives a private stream; no seed draws from torch's global
generator when the random work runs, so that torch.manual_seed before the work repeats it, whatever was
built or drawn before."""
import torch

from pets.augment import aug_transforms
from pets.data.block import DataBlock
from pets.data.images import Resize
from pets.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr
from pets.rng import generator_from


def images(n=4, size=24):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_a_seed_gives_a_private_generator_and_none_gives_torchs_global_one():
    assert generator_from(None) is None  # what torch's functions read as "the global generator"
    expected = torch.rand(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.rand(3, generator=generator_from(7)), expected)


def test_an_augmentation_without_a_seed_draws_when_it_augments_not_when_it_is_built():
    x = images()
    torch.manual_seed(0)
    first = aug_transforms(size=16, min_scale=0.5)
    torch.manual_seed(99)
    second = aug_transforms(size=16, min_scale=0.5)
    torch.manual_seed(1)
    a = first(x)
    torch.manual_seed(1)
    assert torch.equal(second(x), a)
    assert not torch.equal(first(x), a)  # the global stream moved on: new draws


def test_a_seeded_augmentation_leaves_the_global_generator_alone():
    x = images()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = aug_transforms(size=16, min_scale=0.5, seed=3)(x)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(12345)
    assert torch.equal(aug_transforms(size=16, min_scale=0.5, seed=3)(x), a)


def test_loaders_without_a_seed_draw_the_order_and_crops_when_an_epoch_starts(pet_folder):
    block = DataBlock(get_items=get_image_files, splitter=RandomSplitter(seed=0),
                      get_y=using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name'), item_tfms=Resize(32))
    torch.manual_seed(0)
    dls = block.dataloaders(pet_folder, bs=4, num_workers=0, device='cpu')
    epochs = []
    for seed in (2, 2, 3):
        dls.train.one_batch()  # some other epoch's draws in between
        torch.manual_seed(seed)
        epochs.append([(x, y) for x, y in dls.train])
    same = lambda a, b: all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert same(epochs[0], epochs[1])  # order and random crops repeat under manual_seed
    assert not same(epochs[0], epochs[2])
    # Validation draws nothing: it cannot shift what training draws next.
    before = torch.get_rng_state()
    list(dls.valid)
    assert torch.equal(torch.get_rng_state(), before)


def test_an_unseeded_split_is_fastais_global_draw():
    items = list(range(20))
    torch.manual_seed(4)
    train, valid = RandomSplitter(valid_pct=0.25)(items)
    torch.manual_seed(4)
    expected = torch.randperm(20).tolist()  # fastai: set_seed, then torch.randperm
    assert valid == expected[:5] and train == expected[5:]
