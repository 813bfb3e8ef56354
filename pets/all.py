"""The front door for the chapter's code: `from pets.all import *`. Names only, no logic.

Like fastai.vision.all, it also brings re, Path, torch, nn, F and tensor, which the chapter's snippets use
directly. softmax, log_softmax, nll_loss and cross_entropy are minigrad's own (the functions the chapter
explains, written out in minigrad/functional.py); F stays torch's, so that the two can be compared side by
side as the chapter does (`nll_loss(sm_acts, targ)` next to `F.nll_loss(sm_acts, targ)`).
"""
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import tensor

from minigrad.functional import cross_entropy, log_softmax, nll_loss, softmax
from minigrad.optim import SGD, Adam
from pets.augment import aug_transforms
from pets.checkpoint import SaveCheckpoint
from pets.data.block import CategoryBlock, DataBlock, ImageBlock
from pets.data.loader import DataLoader, DataLoaders
from pets.data.download import URLs, untar_data
from pets.data.images import Resize, load_image, read_image, verify_images
from pets.data.factories import ImageDataLoaders
from pets.data.items import (Categorize, GrandparentSplitter, RandomSplitter, RegexLabeller, get_image_files,
                             parent_label, using_attr)
from pets.data.normalize import Normalize, imagenet_stats
from pets.data.show import show_images
from pets.interpret import ClassificationInterpretation
from pets.learner import Learner, cnn_learner, load_learner, trainable_params, vision_learner
from pets.lr_finder import minimum, slide, steep, valley
from pets.metrics import accuracy, error_rate, top_k_accuracy
from pets.models import efficientnet_lite0, resnet18, resnet34, resnet50, resnet101, resnet152

__all__ = [
    're', 'Path', 'torch', 'nn', 'F', 'tensor',
    'softmax', 'log_softmax', 'nll_loss', 'cross_entropy',
    'Adam', 'SGD',
    'URLs', 'untar_data',
    'get_image_files', 'RegexLabeller', 'using_attr', 'parent_label', 'RandomSplitter', 'GrandparentSplitter',
    'Categorize', 'ImageDataLoaders',
    'load_image', 'read_image', 'verify_images', 'Resize', 'aug_transforms', 'Normalize', 'imagenet_stats',
    'DataBlock', 'ImageBlock', 'CategoryBlock', 'DataLoader', 'DataLoaders', 'show_images',
    'Learner', 'cnn_learner', 'vision_learner', 'load_learner', 'trainable_params', 'SaveCheckpoint',
    'error_rate', 'accuracy', 'top_k_accuracy', 'minimum', 'steep', 'valley', 'slide',
    'ClassificationInterpretation',
    'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152', 'efficientnet_lite0',
]
