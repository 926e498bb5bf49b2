"""Backbones and heads: the query encoder f of ObCP (backbone + classifier + projector).

``build_encoder(arch, num_classes)`` returns an :class:`Encoder` whose forward pass gives
both the class logits (for L_sup, L_neg and the prediction history) and the L2-normalised
projection used by the contrastive terms (paper Eq. 2-4, MoCo v2 style 2-layer MLP head).

Architectures (never downloads weights; every backbone is randomly initialised):

- ``smallcnn``: a few 3x3 conv + BN + ReLU layers with global average pooling; meant for
  the 8x8 ``digits`` default so the full pipeline runs in seconds on a CPU.
  Feature dimension F = 2 * width.
- ``resnet18_cifar``: torchvision ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no
  max-pool), as in the paper's CIFAR experiments. F = 512.
- ``resnet50``: torchvision ResNet-50 (ImageNet stem). F = 2048.
- ``vgg16``: torchvision VGG-16 (no batch norm) up to and including its penultimate
  fully connected layer (``classifier[:-1]``: fc 25088→4096, ReLU, dropout, fc
  4096→4096, ReLU, dropout), i.e. the 4096-d feature that VGG fine-tuning conventionally
  puts a new classifier on; only the last 4096→1000 layer is replaced by our heads.
  Torchvision's adaptive 7x7 average pool makes it accept any input of at least 32x32.
  F = 4096.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.core.errors import ObcpError


class UnknownArchitectureError(ObcpError):
    """An architecture name that :func:`build_encoder` does not know."""


class EncoderConfigError(ObcpError):
    """Invalid sizes (classes, width, projection dimension) for :func:`build_encoder`."""


class SmallCNN(nn.Module):
    """Four 3x3 conv + BN + ReLU layers, global average pooling.

    Channels: 3 → w → w → 2w (stride 2) → 2w; input ``[B, 3, H, W]`` with H, W ≥ 2,
    output ``[B, 2w]``.
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        w = width
        layers: list[nn.Module] = []
        for c_in, c_out, stride in ((3, w, 1), (w, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 1)):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = 2 * w

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, 3, H, W]`` → feature ``[B, 2*width]``."""
        return torch.flatten(self.pool(self.body(x)), 1)


def _resnet18_cifar(width: int) -> tuple[nn.Module, int]:
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


def _resnet50(width: int) -> tuple[nn.Module, int]:
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


def _vgg16(width: int) -> tuple[nn.Module, int]:
    from torchvision.models import vgg16

    net = vgg16(weights=None)
    last = net.classifier[-1]
    assert isinstance(last, nn.Linear)
    dim = last.in_features
    net.classifier = nn.Sequential(*list(net.classifier.children())[:-1])
    return net, dim


def _smallcnn(width: int) -> tuple[nn.Module, int]:
    net = SmallCNN(width)
    return net, net.out_dim


_BACKBONES: dict[str, Callable[[int], tuple[nn.Module, int]]] = {
    "smallcnn": _smallcnn,
    "resnet18_cifar": _resnet18_cifar,
    "resnet50": _resnet50,
    "vgg16": _vgg16,
}

ARCHITECTURES: tuple[str, ...] = tuple(_BACKBONES)
"""Names accepted by :func:`build_encoder`."""


class Encoder(nn.Module):
    """Backbone → feature ``[B, F]`` → (classifier logits ``[B, C]``, projection ``[B, D]``).

    The projector is MoCo v2's MLP head (F → F → ``proj_dim`` with ReLU); its output is
    L2-normalised so dot products are cosine similarities in [-1, 1].
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, proj_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(feature_dim, num_classes)
        self.projector = nn.Sequential(
            nn.Linear(feature_dim, feature_dim),
            nn.ReLU(inplace=True),
            nn.Linear(feature_dim, proj_dim),
        )
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.proj_dim = proj_dim

    def features(self, x: Tensor) -> Tensor:
        """``x [B, 3, H, W]`` → backbone feature ``[B, F]``."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, 3, H, W]`` → ``(logits [B, C], z [B, D])`` with ``||z_i||_2 = 1``."""
        h = self.features(x)
        logits = self.classifier(h)
        z = F.normalize(self.projector(h), dim=1)
        return logits, z


def build_encoder(arch: str, num_classes: int, *, width: int = 64, proj_dim: int = 128) -> Encoder:
    """Build a randomly initialised :class:`Encoder`.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        num_classes: C, the classifier's output size (≥ 2).
        width: channel width of ``smallcnn`` (ignored by the torchvision backbones).
        proj_dim: D, the dimension of the normalised contrastive embedding.
    """
    if arch not in _BACKBONES:
        raise UnknownArchitectureError(
            f"Unknown model architecture {arch!r}. Known architectures are: "
            f"{', '.join(ARCHITECTURES)}. Set the model's `arch` parameter in params.yaml "
            "to one of these names."
        )
    if num_classes < 2:
        raise EncoderConfigError(
            f"num_classes must be at least 2 for a classifier, got {num_classes}. Check that "
            "the dataset's classes were read correctly (classes.json) before building the model."
        )
    if width < 1 or proj_dim < 1:
        raise EncoderConfigError(
            f"width and proj_dim must be positive integers, got width={width}, "
            f"proj_dim={proj_dim}. Fix the model parameters in params.yaml."
        )
    backbone, feature_dim = _BACKBONES[arch](width)
    return Encoder(backbone, feature_dim, num_classes, proj_dim)
