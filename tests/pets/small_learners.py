"""Small learners on generated images, shared by the learner tests (tests/pets/conftest.py puts this
folder on sys.path)."""
import torch

from pets.augment import aug_transforms
from pets.data.block import DataBlock
from pets.data.images import Resize
from pets.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr
from pets.learner import cnn_learner
from pets.metrics import accuracy, error_rate


def small_dls(folder, device='cpu'):
    block = DataBlock(get_items=get_image_files, splitter=RandomSplitter(valid_pct=0.25, seed=0),
                      get_y=using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name'), item_tfms=Resize(40),
                      batch_tfms=aug_transforms(size=32, min_scale=0.75, seed=0))
    return block.dataloaders(folder, bs=6, num_workers=0, device=device, seed=0)


def learner(dls, **kwargs):
    torch.manual_seed(0)
    return cnn_learner(dls, 'resnet18', metrics=[error_rate, accuracy], pretrained=False, progress=False, **kwargs)
