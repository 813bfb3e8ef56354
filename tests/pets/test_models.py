"""Architectures: configs, bodies and heads, layer groups, and pretrained EfficientNet-Lite0 on real photos."""
import pytest
import torch
from torchvision.models import ResNet18_Weights

from pets.data.download import URLs, untar_data
from pets.data.images import Resize, read_image
from pets.data.items import get_image_files
from pets.models import (PretrainedWeightsError, arch_config, create_cnn_model, efficientnet_lite0, layer_groups,
                         resnet18, resnet34)

# The sample's breeds that ImageNet also has, with ImageNet's name for them.
IMAGENET_NAMES = {
    'Persian': 'Persian cat', 'Siamese': 'Siamese cat', 'Egyptian_Mau': 'Egyptian cat', 'beagle': 'beagle',
    'basset_hound': 'basset', 'boxer': 'boxer', 'chihuahua': 'Chihuahua', 'english_setter': 'English setter',
    'german_shorthaired': 'German short-haired pointer', 'great_pyrenees': 'Great Pyrenees',
    'japanese_chin': 'Japanese spaniel', 'keeshond': 'keeshond', 'leonberger': 'Leonberg',
    'miniature_pinscher': 'miniature pinscher', 'newfoundland': 'Newfoundland', 'pomeranian': 'Pomeranian',
    'pug': 'pug', 'saint_bernard': 'Saint Bernard', 'samoyed': 'Samoyed', 'scottish_terrier': 'Scotch terrier',
    'staffordshire_bull_terrier': 'Staffordshire bullterrier', 'wheaten_terrier': 'soft-coated wheaten terrier',
    'yorkshire_terrier': 'Yorkshire terrier', 'american_pit_bull_terrier': 'American Staffordshire terrier',
}


def test_pretrained_efficientnet_lite0_recognises_real_sample_photos(tmp_path, monkeypatch):
    monkeypatch.setenv('PETS_DATA', str(tmp_path))
    categories = ResNet18_Weights.DEFAULT.meta['categories']
    model = efficientnet_lite0('imagenet').eval()
    files = [f for f in get_image_files(untar_data(URLs.PETS_SAMPLE) / 'images')
             if f.name.rsplit('_', 1)[0] in IMAGENET_NAMES]
    assert len(files) == 240
    x = torch.stack([Resize(224)(read_image(f)) for f in files]).float() / 255
    with torch.no_grad():
        top5 = model((x - 0.5) / 0.5).topk(5).indices
    hits = [IMAGENET_NAMES[f.name.rsplit('_', 1)[0]] in [categories[i] for i in row] for f, row in zip(files, top5)]
    assert sum(hits) / len(hits) > 0.8, f"top-5 accuracy {sum(hits) / len(hits):.2f}"


@pytest.mark.parametrize('arch', [resnet18, 'resnet34', efficientnet_lite0])
def test_model_shapes_and_layer_groups(arch):
    model = create_cnn_model(arch, n_out=37, pretrained=False).eval()
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 37)
    groups = layer_groups(model, arch)
    assert len(groups) == 3
    assert sum(p.numel() for g in groups for p in g.parameters()) == sum(p.numel() for p in model.parameters())


def test_resnet_groups_are_fastais_split():
    model = create_cnn_model(resnet34, 37, pretrained=False)
    body = list(model[0].children())  # conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4
    first, second, head = layer_groups(model, resnet34)
    assert list(first.children()) == body[:6] and list(second.children()) == body[6:] and head is model[1]
    assert [len(layer) for layer in body[6:]] == [6, 3]  # resnet34's layer3 and layer4
    assert arch_config(resnet34).mean == (0.485, 0.456, 0.406)
    assert arch_config('efficientnet_lite0').mean == (0.5, 0.5, 0.5)


def test_offline_pretrained_resnet_fails_with_the_fixes(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))

    def no_network(*args, **kwargs):
        raise OSError('no network')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_network)
    with pytest.raises(PretrainedWeightsError, match=r"(?s)resnet18.*pretrained=False.*efficientnet_lite0"):
        create_cnn_model(resnet18, 37, pretrained=True)


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'resnet7'"):
        arch_config('resnet7')


@pytest.mark.parametrize('kernel, stride', [(3, 1), (5, 2)])
def test_a_bfloat16_depthwise_convolution_takes_its_gradients_in_float32(kernel, stride):
    from pets.models import DepthwiseConv2d
    torch.manual_seed(0)
    conv = DepthwiseConv2d(8, kernel, stride).to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 11, 11).to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = conv(x)
    assert out.dtype == torch.bfloat16 and type(out.grad_fn).__name__ == 'Float32BackwardBackward'
    grad_out = torch.randn_like(out)
    grad_x, grad_weight = torch.autograd.grad(out, (x, conv.weight), grad_out)
    assert grad_x.dtype == torch.bfloat16 and grad_weight.dtype == torch.float32
    # The reference: the same convolution on the same (bfloat16-valued) numbers, all in float32.
    x32 = x.detach().float().requires_grad_()
    expected_x, expected_weight = torch.autograd.grad(
        torch.nn.functional.conv2d(x32, conv.weight, None, stride, kernel // 2, 1, 8), (x32, conv.weight),
        grad_out.float())
    torch.testing.assert_close(grad_x.float(), expected_x, rtol=2 ** -7, atol=1e-2)  # rounded to bfloat16 once
    torch.testing.assert_close(grad_weight, expected_weight)
    torch.testing.assert_close(out.float(), torch.nn.functional.conv2d(x32, conv.weight.bfloat16().float(), None,
                                                                       stride, kernel // 2, 1, 8), rtol=2 ** -7,
                               atol=1e-2)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):  # inference takes torch's own path
        assert conv(x).grad_fn is None
    assert type(conv(x32).grad_fn).__name__ != 'Float32BackwardBackward'


def test_relu6_caps_at_zero_and_six():
    from pets.models import relu6
    x = torch.tensor([-1.0, 0.0, 3.0, 6.0, 7.0], requires_grad=True)
    assert relu6(x).tolist() == [0.0, 0.0, 3.0, 6.0, 6.0]
    relu6(x).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]  # F.relu6: no gradient at the kinks
