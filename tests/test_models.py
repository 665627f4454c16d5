"""Tests for contrastlab.models: encoder shapes, the CIFAR stem, width multiplier, heads, errors."""
import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from contrastlab.models import ProjectionHead, SmallCNN, build_encoder, resnet18


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_small_cnn_shapes(channels, size):
    model = SmallCNN(in_channels=channels, width=8)
    h = model(torch.randn(5, channels, size, size))
    assert model.out_dim == 32
    assert h.shape == (5, 32)
    assert h.dtype == torch.float32


def test_small_cnn_small_inputs_and_width():
    assert SmallCNN(1, width=4)(torch.randn(2, 1, 8, 8)).shape == (2, 16)
    assert SmallCNN().out_dim == 128
    # parameters grow about as width ** 2 (the convolutions dominate)
    ratio = n_params(SmallCNN(3, 32)) / n_params(SmallCNN(3, 16))
    assert 3.5 < ratio < 4.5


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_resnet18_shapes(channels, size):
    model = resnet18(in_channels=channels, width=0.25)
    h = model(torch.randn(2, channels, size, size))
    assert model.out_dim == 128
    assert h.shape == (2, 128)


def test_resnet18_is_torchvision_resnet_with_cifar_stem():
    model = resnet18(3)
    assert isinstance(model, ResNet)
    assert model.out_dim == 512
    assert all(isinstance(m, BasicBlock) for layer in (model.layer1, model.layer2, model.layer3, model.layer4)
               for m in layer)
    assert [len(layer) for layer in (model.layer1, model.layer2, model.layer3, model.layer4)] == [2, 2, 2, 2]
    conv = model.conv1
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    assert conv.in_channels == 3 and conv.out_channels == 64
    assert isinstance(model.maxpool, nn.Identity)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert isinstance(model.fc, nn.Identity)


def test_resnet18_last_stage_is_4x4_on_32x32():
    model = resnet18(3, width=0.125).eval()
    seen = {}
    model.layer4.register_forward_hook(lambda mod, inp, out: seen.update(layer4=out.shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert seen["layer4"] == (1, 64, 4, 4)


def test_resnet18_imagenet_stem():
    model = resnet18(3, width=0.125, cifar_stem=False)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 64)


def test_resnet18_width_multiplier():
    base, half = resnet18(3, width=1.0), resnet18(3, width=0.5)
    assert half.out_dim == 256 and base.out_dim == 512
    assert half.layer1[0].conv1.out_channels == 32 and half.layer4[0].conv1.out_channels == 256
    ratio = n_params(base) / n_params(half)
    assert 3.8 < ratio < 4.2                      # about width ** 2
    assert resnet18(3, width=0.3).out_dim == int(512 * 0.3)


def test_build_encoder():
    enc = build_encoder("small_cnn", 1)
    assert isinstance(enc, SmallCNN) and enc.out_dim == 128
    assert build_encoder("small_cnn", 1, width=8).out_dim == 32
    assert build_encoder("small_cnn", 1, width=8.0).out_dim == 32
    enc = build_encoder("resnet18", 3, width=0.25)
    assert isinstance(enc, ResNet) and enc.out_dim == 128
    assert build_encoder("resnet18", 3).out_dim == 512


@pytest.mark.parametrize("kind, expected", [("none", 64), ("linear", 16), ("mlp", 16)])
def test_projection_head_kinds(kind, expected):
    head = ProjectionHead(64, kind=kind, out_dim=16)
    h = torch.randn(6, 64)
    z = head(h)
    assert head.out_dim == expected
    assert z.shape == (6, expected)
    if kind == "none":
        assert torch.equal(z, h)


def test_projection_head_structure():
    mlp = ProjectionHead(64, out_dim=16, hidden_dim=32)
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16)]
    assert any(isinstance(m, nn.BatchNorm1d) for m in mlp.modules())
    assert any(isinstance(m, nn.ReLU) for m in mlp.modules())
    default = ProjectionHead(64)
    assert default.out_dim == 128
    assert [m.out_features for m in default.modules() if isinstance(m, nn.Linear)] == [64, 128]
    linear = ProjectionHead(64, kind="linear", out_dim=8)
    assert next(m for m in linear.modules() if isinstance(m, nn.Linear)).bias is None


def test_gradients_reach_every_parameter():
    enc, head = SmallCNN(3, width=4), ProjectionHead(16, out_dim=8)
    head(enc(torch.randn(4, 3, 16, 16))).pow(2).sum().backward()
    assert all(p.grad is not None for p in list(enc.parameters()) + list(head.parameters()))


def test_errors():
    with pytest.raises(ValueError, match="unknown encoder name 'vgg'.*'small_cnn', 'resnet18'"):
        build_encoder("vgg", 3)
    with pytest.raises(ValueError, match="unknown head kind 'deep'.*'none', 'linear', 'mlp'"):
        ProjectionHead(64, kind="deep")
    with pytest.raises(ValueError, match="width for small_cnn must be a whole number of channels, got 0.5"):
        build_encoder("small_cnn", 1, width=0.5)
    with pytest.raises(ValueError, match="width must be > 0, got -1"):
        resnet18(3, width=-1.0)
    with pytest.raises(ValueError, match="width must be >= 1/64"):
        resnet18(3, width=0.001)
    with pytest.raises(TypeError, match="width must be a finite number"):
        resnet18(3, width="wide")
    with pytest.raises(ValueError, match="in_channels must be >= 1, got 0"):
        SmallCNN(in_channels=0)
    with pytest.raises(TypeError, match="width must be an int, got float"):
        SmallCNN(1, width=2.5)
    with pytest.raises(ValueError, match="out_dim must be >= 1, got 0"):
        ProjectionHead(64, out_dim=0)
