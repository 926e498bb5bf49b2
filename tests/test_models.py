"""Backbones and heads: shapes, normalisation, determinism, bad names."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.core.errors import ObcpError
from pipeline.method.models import ARCHITECTURES, EncoderConfigError, UnknownArchitectureError, build_encoder

FEATURE_DIMS = {"smallcnn": 2 * 8, "resnet18_cifar": 512, "resnet50": 2048, "vgg16": 4096}
INPUT_SIZE = {"smallcnn": 8, "resnet18_cifar": 32, "resnet50": 32, "vgg16": 32}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_arch_gives_logits_and_unit_projection(arch: str) -> None:
    torch.manual_seed(0)
    enc = build_encoder(arch, num_classes=7, width=8, proj_dim=16)
    size = INPUT_SIZE[arch]
    x = torch.randn(2, 3, size, size)
    logits, z = enc(x)
    assert logits.shape == (2, 7)
    assert z.shape == (2, 16)
    assert enc.feature_dim == FEATURE_DIMS[arch]
    assert enc.features(x).shape == (2, FEATURE_DIMS[arch])
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))
    assert torch.isfinite(logits).all()
    (logits.sum() + z.sum()).backward()
    assert enc.classifier.weight.grad is not None


def test_resnet18_cifar_has_cifar_stem() -> None:
    enc = build_encoder("resnet18_cifar", num_classes=10)
    conv1 = enc.backbone.conv1
    assert isinstance(conv1, nn.Conv2d)
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)
    assert isinstance(enc.backbone.maxpool, nn.Identity)
    # 32x32 input keeps 32x32 after the stem (no downsampling before layer1).
    x = torch.randn(1, 3, 32, 32)
    b = enc.backbone
    stem = b.relu(b.bn1(b.conv1(x)))
    assert b.maxpool(stem).shape[-2:] == (32, 32)


def test_projector_is_two_layer_mlp() -> None:
    enc = build_encoder("smallcnn", num_classes=3, width=4, proj_dim=5)
    linears = [m for m in enc.projector if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 8), (8, 5)]
    assert any(isinstance(m, nn.ReLU) for m in enc.projector)


def test_same_seed_same_weights_and_outputs() -> None:
    x = torch.randn(3, 3, 8, 8)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        enc = build_encoder("smallcnn", num_classes=4, width=4).eval()
        outs.append(enc(x))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=0, atol=0)


def test_unknown_arch_lists_known_ones() -> None:
    with pytest.raises(UnknownArchitectureError) as info:
        build_encoder("resnet9000", num_classes=10)
    assert isinstance(info.value, ObcpError)
    for name in ARCHITECTURES:
        assert name in str(info.value)


@pytest.mark.parametrize("kwargs", [{"num_classes": 1}, {"num_classes": 10, "width": 0}, {"num_classes": 10, "proj_dim": 0}])
def test_bad_sizes_are_rejected(kwargs: dict) -> None:
    with pytest.raises(EncoderConfigError):
        build_encoder("smallcnn", **kwargs)
