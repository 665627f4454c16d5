"""Encoders f(.) and projection heads g(.) for contrastive learning.

The pipeline of SimCLR (Chen et al. 2020, Sec. 2.1) maps an augmented image x to a
representation h = f(x), the thing kept for downstream tasks, and then to a projection
z = g(h), the thing the contrastive loss sees. This module holds:

- :class:`SmallCNN`: a four-block convolutional encoder for 28x28 / 32x32 images that trains
  in minutes on a CPU (the book's ``cpu`` budget).
- :func:`resnet18`: torchvision's ResNet-18 with the CIFAR stem (3x3 stride-1 first conv, no
  max-pool) and a width multiplier; the ``gpu`` budget encoder.
- :class:`Conv1dEncoder`: a strided 1-D convolutional encoder for sequences stored as (N, C, 1, L),
  after CPC's audio encoder; it also exposes its per-step features (``frames``).
- :func:`build_encoder`: pick one of them by name.
- :class:`ProjectionHead`: identity, linear or the SimCLR MLP head (Sec. 4.2, Fig. 8).

Every encoder returns ``h`` of shape (N, D) and exposes ``out_dim = D``.
"""
from __future__ import annotations

import math

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet

from contrastlab._validate import check_choice, check_positive, shape_str

ENCODERS = ("small_cnn", "resnet18", "conv1d")
HEAD_KINDS = ("none", "linear", "mlp")


def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (padding 1, no bias), batch norm, ReLU: keeps H and W."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A small VGG-style encoder: four conv-BN-ReLU blocks, two 2x2 poolings, global average pool.

    Channels are ``width, width, 2*width, 4*width``; the spatial size goes H -> H/2 -> H/4, so a
    28x28 input ends at 7x7 and a 32x32 input at 8x8 before the global pool. Any input of at
    least 4x4 works (8x8 or more is sensible).

    Args:
        in_channels: image channels C (1 for Fashion-MNIST / digits, 3 for CIFAR).
        width: channels of the first block; the output dimension is ``4 * width``.

    Shapes:
        input (N, C, H, W) float -> output h (N, 4 * width).
    """

    def __init__(self, in_channels: int = 1, width: int = 32):
        super().__init__()
        _check_int("in_channels", in_channels)
        _check_int("width", width)
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, width),
            _conv_bn_relu(width, width),
            nn.MaxPool2d(2),                       # H/2
            _conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),                       # H/4
            _conv_bn_relu(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),               # (N, 4w, 1, 1)
            nn.Flatten(),                          # (N, 4w)
        )
        self.out_dim: int = 4 * width

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class _WideResNet18(ResNet):
    """torchvision's ResNet with BasicBlock [2, 2, 2, 2], stage widths scaled by ``width``.

    torchvision hard-codes the widths 64, 128, 256, 512, so after its constructor has run we
    rebuild the stem and the four stages through its own ``_make_layer`` with scaled planes,
    keeping torchvision's blocks and its initialisation.
    """

    def __init__(self, in_channels: int, width: float, cifar_stem: bool):
        super().__init__(BasicBlock, [2, 2, 2, 2])
        planes = [int(p * width) for p in (64, 128, 256, 512)]
        if planes[0] < 1:
            raise ValueError(f"width must be >= 1/64 so that every stage has a channel, got {width!r}")
        self.inplanes = planes[0]
        if cifar_stem:
            # CIFAR stem: 32x32 stays 32x32 until layer2 (lightly #1419: the ImageNet stem costs ~8 points)
            self.conv1 = nn.Conv2d(in_channels, planes[0], kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, planes[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.layer1 = self._make_layer(BasicBlock, planes[0], 2)
        self.layer2 = self._make_layer(BasicBlock, planes[1], 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, planes[2], 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, planes[3], 2, stride=2)
        self.fc = nn.Identity()                    # forward now returns h = avgpool(layer4) (N, D)
        self.out_dim: int = planes[3]
        for m in self.modules():                   # torchvision's initialisation, for the new layers
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def resnet18(in_channels: int = 3, width: float = 1.0, cifar_stem: bool = True) -> nn.Module:
    """ResNet-18 (He et al. 2016) as an encoder f: image -> h, built from torchvision's ResNet.

    With ``cifar_stem=True`` the first convolution is 3x3 with stride 1 and the max-pool is
    removed, as in SimCLR's CIFAR-10 experiments (Chen et al. 2020, Appendix B.9), so a 32x32
    image reaches the last stage at 4x4. The classifier ``fc`` is replaced by the identity, so
    the output is the globally pooled representation h.

    Args:
        in_channels: image channels C.
        width: multiplier of the stage widths 64, 128, 256, 512 (parameters grow about as
            width**2); each stage gets ``int(planes * width)`` channels.
        cifar_stem: CIFAR stem (True) or the ImageNet stem, 7x7 stride-2 conv + max-pool (False).

    Returns:
        a ``torchvision.models.resnet.ResNet`` mapping (N, C, H, W) float to h (N, D) with
        ``D = out_dim = int(512 * width)``.
    """
    _check_int("in_channels", in_channels)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width):
        raise TypeError(f"width must be a finite number, got {width!r}")
    check_positive("width", width)
    return _WideResNet18(in_channels, float(width), bool(cifar_stem))


class Conv1dEncoder(nn.Module):
    """A strided 1-D convolutional encoder for sequences, CPC's audio encoder scaled down.

    CPC (van den Oord et al. 2018, Sec. 3.1) encodes raw 16 kHz audio with five convolutions
    (strides 5, 4, 2, 2, 2, kernels 10, 8, 4, 4, 4, 512 channels), one 512-d frame per 160
    samples. Here three conv-BN-ReLU layers with strides 4, 2, 2 and kernels 8, 4, 4 give one
    frame per 16 samples, with ``width, 2*width, 4*width`` channels (the small CNN's widths); a
    frame sees 44 samples. Sequences are stored like one-row images, (N, C, 1, L), so that they
    go through the same data, training and evaluation code as images.

    ``frames(x)`` returns the per-frame features (N, T, 4 * width), T = L // 16 for L a multiple
    of 16; ``forward(x)`` mean-pools them over time into h (N, 4 * width).

    Args:
        in_channels: channels C of the sequences.
        width: channels of the first layer; the output dimension is ``4 * width``.
    """

    def __init__(self, in_channels: int = 1, width: int = 32):
        super().__init__()
        _check_int("in_channels", in_channels)
        _check_int("width", width)
        layers = []
        for c_in, c_out, kernel, stride in ((in_channels, width, 8, 4), (width, 2 * width, 4, 2),
                                            (2 * width, 4 * width, 4, 2)):
            padding = (kernel - stride) // 2            # T = L / stride exactly when stride divides L
            layers += [nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
                       nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.out_dim: int = 4 * width

    def frames(self, x: Tensor) -> Tensor:
        """(N, C, 1, L) sequences -> (N, T, out_dim) frame features."""
        if x.ndim != 4 or x.shape[2] != 1 or x.shape[3] < 16:
            raise ValueError(f"x must be a batch of sequences of shape (N, C, 1, L) with L >= 16, "
                             f"got shape {shape_str(x.shape)}")
        return self.features(x.squeeze(2)).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.frames(x).mean(dim=1)


def build_encoder(name: str, in_channels: int, width: float | None = None) -> nn.Module:
    """Build an encoder by name; the result has ``out_dim``.

    Args:
        name: ``"small_cnn"``, ``"resnet18"`` or ``"conv1d"`` (sequences stored as (N, C, 1, L)).
        in_channels: image channels C.
        width: for ``"small_cnn"`` and ``"conv1d"`` the channels of the first layer, a whole
            number (default 32); for ``"resnet18"`` the width multiplier (default 1.0). None
            picks the default.

    Returns:
        an ``nn.Module`` mapping (N, C, H, W) float to h (N, out_dim).
    """
    check_choice("encoder name", name, ENCODERS)
    if name in ("small_cnn", "conv1d"):
        cls = SmallCNN if name == "small_cnn" else Conv1dEncoder
        if width is None:
            return cls(in_channels, 32)
        if isinstance(width, bool) or not isinstance(width, (int, float)) or width != int(width):
            raise ValueError(f"width for {name} must be a whole number of channels, got {width!r}")
        return cls(in_channels, int(width))
    return resnet18(in_channels, 1.0 if width is None else width)


class ProjectionHead(nn.Module):
    """Projection head g: h -> z, the space where the contrastive loss is computed.

    Kinds (SimCLR, Chen et al. 2020, Sec. 4.2 compares the three):

    - ``"none"``: identity, z = h; ``out_dim = in_dim`` and the ``out_dim`` argument is ignored.
    - ``"linear"``: z = W h (no bias).
    - ``"mlp"``: z = W2 ReLU(BN(W1 h)), the SimCLR head; W1 has no bias (BN follows), W2 has one.

    Args:
        in_dim: dimension D of h.
        kind: one of ``"none"``, ``"linear"``, ``"mlp"``.
        out_dim: dimension d of z (default 128, as in SimCLR).
        hidden_dim: hidden width of the MLP; default ``in_dim``.

    Shapes:
        input h (N, in_dim) -> output z (N, out_dim).
    """

    def __init__(self, in_dim: int, kind: str = "mlp", out_dim: int = 128, hidden_dim: int | None = None):
        super().__init__()
        check_choice("head kind", kind, HEAD_KINDS)
        _check_int("in_dim", in_dim)
        _check_int("out_dim", out_dim)
        hidden_dim = in_dim if hidden_dim is None else hidden_dim
        _check_int("hidden_dim", hidden_dim)
        self.kind = kind
        if kind == "none":
            self.net: nn.Module = nn.Identity()
            self.out_dim: int = in_dim
        elif kind == "linear":
            self.net = nn.Linear(in_dim, out_dim, bias=False)
            self.out_dim = out_dim
        else:
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden_dim, bias=False),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
                nn.Linear(hidden_dim, out_dim),
            )
            self.out_dim = out_dim

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, out_dim={self.out_dim}"


__all__ = ["ENCODERS", "HEAD_KINDS", "Conv1dEncoder", "ProjectionHead", "SmallCNN", "build_encoder",
           "resnet18"]
