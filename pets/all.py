"""The front door for the chapter's code: `from pets.all import *`. Names only, no logic.

Like fastai.vision.all, it also brings torch, nn, F and tensor, which the chapter's snippets use directly.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import tensor

from minigrad.optim import SGD, Adam

__all__ = ['torch', 'nn', 'F', 'tensor', 'Adam', 'SGD']
