"""Feature extractors: conv4 (max-pooled or strided), resnet12, resnet18, in one registry.

Every backbone maps ``[batch, C, H, W]`` to ``[batch, feature_dim]`` and uses
:class:`BatchNorm2d` below, which can stay exact under ``torch.func`` transforms.
"""
from __future__ import annotations

import copy
from functools import partial
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import nn


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that can also compute itself from elementary operations.

    PyTorch's fused ``batch_norm`` kernel gives a wrong second-order MAML meta-gradient
    under ``vmap`` (measured error ~0.5, even in float64); the ``composite`` form is exact
    there but slower, so only learners that run the backbone under ``vmap`` ask for it. It
    always normalises with the statistics of the batch it sees (running averages cannot be
    updated under ``vmap``): transductive at test time, as in MAML. So does the kernel with
    ``track_running_stats=False``; otherwise eval mode uses running averages.
    """

    def __init__(self, num_features: int, track_running_stats: bool = True, composite: bool = False):
        if composite and track_running_stats:
            raise ValueError("the composite batch norm uses batch statistics only: pass track_running_stats=False")
        super().__init__(num_features, track_running_stats=track_running_stats)
        self.composite = composite

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.composite:
            return super().forward(x)
        # Two means rather than torch.var_mean, whose Welford kernel ran ~7x slower at 64×28×28.
        # E[x²] - E[x]² cancels only when |mean| >> std; inputs are normalised, and a conv bias
        # in front of a batch norm gets no gradient, so channel means stay near the spread.
        mean = x.mean(dim=(0, 2, 3))
        var = ((x * x).mean(dim=(0, 2, 3)) - mean * mean).clamp_min(0.0)
        scale = torch.rsqrt(var + self.eps) * self.weight
        shift = self.bias - mean * scale
        return x * scale[:, None, None] + shift[:, None, None]


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def with_pytorch_layers(module: ModuleT) -> ModuleT:
    """A deep copy of ``module`` computed as a library would: PyTorch's batch-norm kernel, none folded into a
    convolution. Wrong under ``vmap``, exact and faster in a per-task loop: the reference the vmapped MAML is
    checked and timed against."""
    copied = copy.deepcopy(module)
    for child in copied.modules():
        if isinstance(child, BatchNorm2d):
            child.composite = False
    return copied


def conv_batch_norm(x: torch.Tensor, conv: nn.Conv2d, norm: nn.BatchNorm2d) -> torch.Tensor:
    """``norm(conv(x))`` with batch statistics, computed without the full-resolution pass of batch norm.

    A convolution is linear in its input patches (``D`` = channels × kernel values each), so the
    mean and variance of each output channel follow from the mean and covariance of the patches:
    the batch norm folds into the convolution's weights and bias. Exact up to rounding, and cheap
    where ``D`` is small: a first layer over 1-3 input channels, whose outputs are the largest
    activations of the network and whose batch norm, with its first and second derivatives,
    otherwise makes a dozen passes over them under MAML. Needs ``groups=1`` and zero padding, as
    in every backbone here.
    """
    cols = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # [batch, D, positions]
    patches = cols.transpose(1, 2).flatten(0, 1)
    patch_mean = patches.mean(0)
    centred = patches - patch_mean  # centred first: E[pp'] - E[p]E[p]' cancels for images with a large mean
    patch_cov = centred.T @ centred / patches.shape[0]
    weight = conv.weight.flatten(1)  # [out_channels, D]
    variance = ((weight @ patch_cov) * weight).sum(1)
    scale = norm.weight * torch.rsqrt(variance + norm.eps)
    # The conv bias cancels against the mean it shifts; it stays in the graph so that it gets its
    # (zero) gradient as in the unfolded layers.
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    shift = norm.bias - scale * (weight @ patch_mean + bias) + scale * bias
    out = (weight * scale[:, None]) @ cols + shift[:, None]
    kernel, stride, padding, dilation = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]
    height = (x.shape[-2] + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    return out.unflatten(-1, (height, -1))


Norm = Callable[[int], nn.Module]  # a batch norm of that many channels


class Conv4(nn.Sequential):
    """4 × [conv3×3, BN, ReLU, maxpool 2] with 64 filters (Vinyals et al. 2016).

    ``strided``: 4 × [conv3×3 stride 2, BN, ReLU], then the spatial mean, as Finn et al. (2017)
    ran MAML on Omniglot. It computes each convolution at a quarter of the positions, so a
    training step costs about a quarter as much; features are always ``hidden`` wide.
    """

    def __init__(self, in_channels: int, norm: Norm = BatchNorm2d, hidden: int = 64, strided: bool = False):
        blocks: list[nn.Module] = []
        for i in range(4):
            blocks += [
                nn.Conv2d(in_channels if i == 0 else hidden, hidden, 3, stride=2 if strided else 1, padding=1),
                norm(hidden),
                nn.ReLU(),
            ]
            if not strided:
                blocks.append(nn.MaxPool2d(2))
        head = [nn.AdaptiveAvgPool2d(1), nn.Flatten()] if strided else [nn.Flatten()]
        super().__init__(*blocks, *head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm, *rest = self
        # The vmap-safe batch norm of the first block folds into its convolution (see conv_batch_norm).
        x = conv_batch_norm(x, conv, norm) if isinstance(norm, BatchNorm2d) and norm.composite else norm(conv(x))
        for module in rest:
            x = module(x)
        return x


class _ResBlock12(nn.Module):
    def __init__(self, cin: int, cout: int, norm: Norm):
        super().__init__()
        layers = []
        for i in range(3):
            layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), norm(cout)]
            if i < 2:
                layers.append(nn.LeakyReLU(0.1))
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), norm(cout))
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.leaky_relu(self.body(x) + self.shortcut(x), 0.1))


class ResNet12(nn.Sequential):
    """The few-shot ResNet-12 (Lee et al. 2019): four residual blocks of 64-160-320-640, global average pool."""

    def __init__(self, in_channels: int, norm: Norm = BatchNorm2d, widths: tuple[int, ...] = (64, 160, 320, 640)):
        blocks, cin = [], in_channels
        for width in widths:
            blocks.append(_ResBlock12(cin, width, norm))
            cin = width
        super().__init__(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _swap_batch_norm(module: nn.Module, norm: Norm) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, norm(child.num_features))
        else:
            _swap_batch_norm(child, norm)


def resnet18(in_channels: int, norm: Norm = BatchNorm2d) -> nn.Module:
    """torchvision's ResNet-18 for small images: 3×3 stem with stride 1, no max-pool, no classifier."""
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(weights=None)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    _swap_batch_norm(model, norm)
    return model


BackboneFactory = Callable[..., nn.Module]

BACKBONES: dict[str, BackboneFactory] = {
    "conv4": Conv4,
    "conv4_strided": partial(Conv4, strided=True),
    "resnet12": ResNet12,
    "resnet18": resnet18,
}


def build_backbone(name: str, image_shape: tuple[int, int, int], track_running_stats: bool = True,
                   composite_batch_norm: bool = False) -> tuple[nn.Module, int]:
    """Return ``(backbone, feature_dim)`` for images of ``image_shape`` (C, H, W).

    ``composite_batch_norm``: for backbones run under ``vmap`` (see :class:`BatchNorm2d`).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}' (choose from {', '.join(BACKBONES)})")
    norm = partial(BatchNorm2d, track_running_stats=track_running_stats, composite=composite_batch_norm)
    backbone = BACKBONES[name](image_shape[0], norm=norm)
    was_training = backbone.training
    backbone.train()  # batch statistics: a dry run must not depend on (or touch) running stats
    with torch.no_grad():
        probe = torch.zeros(2, *image_shape)
        state = {k: v.clone() for k, v in backbone.state_dict().items()}
        feature_dim = backbone(probe).shape[1]
        backbone.load_state_dict(state)
    backbone.train(was_training)
    return backbone, int(feature_dim)
