"""Backbones: the feature dimension each reports, and their batch norm (fused kernel or vmap-safe composite)."""
from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from learners import backbones
from learners.backbones import (BACKBONES, BatchNorm2d, build_backbone, conv_batch_norm, max_pool_2x2,
                                with_pytorch_layers)
from tests.helpers import spread_batch_norm_affine

# Expected feature width at Omniglot (1×28×28) and miniImageNet (3×84×84) sizes.
FEATURES = {
    "conv4": {(1, 28, 28): 64, (3, 84, 84): 1600},
    "conv4_strided": {(1, 28, 28): 64, (3, 84, 84): 64},
    "resnet12": {(1, 28, 28): 640, (3, 84, 84): 640},
    "resnet18": {(1, 28, 28): 512, (3, 84, 84): 512},
}


def test_every_registered_backbone_has_expected_widths() -> None:
    assert set(FEATURES) == set(BACKBONES)


@pytest.mark.parametrize("name", sorted(FEATURES))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 84, 84)])
def test_backbone_reports_the_width_of_its_output(name: str, shape: tuple[int, int, int]) -> None:
    backbone, feature_dim = build_backbone(name, shape)
    assert feature_dim == FEATURES[name][shape]
    with torch.no_grad():
        assert backbone(torch.randn(3, *shape)).shape == (3, feature_dim)


def test_building_leaves_running_statistics_untouched() -> None:
    backbone, _ = build_backbone("conv4", (1, 28, 28))
    assert all(float(m.num_batches_tracked) == 0 for m in backbone.modules() if isinstance(m, BatchNorm2d))


def test_unknown_backbone_is_named() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        build_backbone("vgg", (1, 28, 28))


@pytest.mark.parametrize("training", [True, False])
def test_composite_batch_norm_matches_the_builtin(training: bool) -> None:
    torch.manual_seed(0)
    ours = BatchNorm2d(4, track_running_stats=False, composite=True)
    builtin = nn.BatchNorm2d(4, track_running_stats=False)
    for bn in (ours, builtin):
        spread_batch_norm_affine(bn, (-1, 2), (0.5, -0.5))
        bn.train(training)
    x = (torch.randn(6, 4, 5, 5) * 3 + 1).requires_grad_()
    torch.testing.assert_close(ours(x), builtin(x))
    weights = torch.randn(6, 4, 5, 5)
    ours_grad, = torch.autograd.grad((ours(x) * weights).sum(), x)
    builtin_grad, = torch.autograd.grad((builtin(x) * weights).sum(), x)
    torch.testing.assert_close(ours_grad, builtin_grad)


def test_composite_batch_norm_refuses_running_statistics() -> None:
    with pytest.raises(ValueError, match="batch statistics only"):
        BatchNorm2d(4, composite=True)


@pytest.mark.parametrize("composite", [False, True])
def test_untracked_batch_norm_uses_batch_statistics_in_eval_mode(composite: bool) -> None:
    bn = BatchNorm2d(2, track_running_stats=False, composite=composite).eval()
    y = bn(torch.randn(8, 2, 3, 3) * 5 + 2)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(0, 2, 3), correction=0), torch.ones(2), atol=1e-3, rtol=0)


@pytest.mark.parametrize("vmapped", [False, True])
def test_build_backbone_puts_the_requested_batch_norm_everywhere(vmapped: bool) -> None:
    backbone, _ = build_backbone("resnet12", (3, 84, 84), track_running_stats=not vmapped, composite_batch_norm=vmapped)
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(m, BatchNorm2d) and m.composite == vmapped for m in norms)


def reference_conv_batch_norm(x: torch.Tensor, conv: nn.Conv2d, norm: BatchNorm2d, max_pool: bool) -> torch.Tensor:
    """PyTorch's own layers: convolution, fused batch-norm kernel (batch statistics), max-pool."""
    out = F.batch_norm(conv(x), None, None, norm.weight, norm.bias, training=True, eps=norm.eps)
    return F.max_pool2d(out, 2) if max_pool else out


@pytest.mark.parametrize("from_patches", [True, False])
@pytest.mark.parametrize("max_pool", [True, False])
@pytest.mark.parametrize("in_channels, stride, bias", [(1, 1, True), (3, 2, False)])
def test_conv_batch_norm_matches_pytorch_layers(from_patches: bool, max_pool: bool, in_channels: int, stride: int,
                                                bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(in_channels, 8, 3, stride=stride, padding=1, bias=bias).double()
    norm = BatchNorm2d(8, track_running_stats=False, composite=True).double()
    spread_batch_norm_affine(norm, (-1, 2), (0.5, -0.5))  # negative weights: pooling must not commute blindly
    x = torch.rand(6, in_channels, 11, 11, dtype=torch.float64) * 2 + 5  # a large mean, as Omniglot's white pages
    params = [conv.weight, norm.weight, norm.bias] + ([conv.bias] if bias else [])
    ours = conv_batch_norm(x, conv, norm, from_patches=from_patches, max_pool=max_pool)
    reference = reference_conv_batch_norm(x, conv, norm, max_pool)
    torch.testing.assert_close(ours, reference)
    # First and second derivatives, as MAML takes them.
    weights = torch.randn_like(reference)
    for first, second in zip(*[torch.autograd.grad(((out * weights).sum() ** 2), params, create_graph=True)
                               for out in (ours, reference)]):
        torch.testing.assert_close(first, second)
        torch.testing.assert_close(*[torch.autograd.grad(g.square().sum(), conv.weight, retain_graph=True)[0]
                                     for g in (first, second)])


@pytest.mark.parametrize("size", [28, 7, 6])
def test_max_pool_2x2_matches_max_pool2d_under_vmap(size: int) -> None:
    x = torch.randn(3, 4, 5, size, size, dtype=torch.float64, requires_grad=True)
    ours, reference = vmap(max_pool_2x2)(x), F.max_pool2d(x.flatten(0, 1), 2).unflatten(0, (3, 4))
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    weights = torch.randn_like(reference)
    torch.testing.assert_close(*[torch.autograd.grad((out * weights).sum(), x)[0] for out in (ours, reference)])


@pytest.mark.parametrize("name", ["conv4", "conv4_strided"])
def test_conv4_goes_through_conv_batch_norm_only_when_composite(name: str) -> None:
    torch.manual_seed(0)
    composite, _ = build_backbone(name, (1, 28, 28), track_running_stats=False, composite_batch_norm=True)
    spread_batch_norm_affine(composite, (-1, 2))
    fused = with_pytorch_layers(composite)
    x = torch.rand(5, 1, 28, 28)
    with mock.patch("learners.backbones.conv_batch_norm", wraps=backbones.conv_batch_norm) as blocks:
        torch.testing.assert_close(composite(x), fused(x), atol=1e-4, rtol=1e-4)
    assert [call.kwargs for call in blocks.call_args_list] == [
        {"from_patches": i == 0, "max_pool": name == "conv4"} for i in range(4)]
    with mock.patch("learners.backbones.conv_batch_norm") as blocks:
        fused(x)
    assert blocks.call_count == 0
