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
        scale, shift = self.scale_and_shift(x)
        return x * scale[:, None, None] + shift[:, None, None]

    def scale_and_shift(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(scale, shift)`` with ``composite(x) == x * scale + shift``, from the batch statistics of
        ``x``; ``weight`` in place of the module's own (see :func:`conv_batch_norm`)."""
        # Two sums rather than torch.var_mean, whose Welford kernel ran ~7x slower at 64×28×28 (and
        # sums rather than means: a mean's backward materialises its division at full size).
        # E[x²] - E[x]² cancels only when |mean| >> std; inputs are normalised, and a conv bias
        # in front of a batch norm gets no gradient, so channel means stay near the spread.
        count = x.numel() // x.shape[1]
        mean = x.sum(dim=(0, 2, 3)) / count
        var = (x.square().sum(dim=(0, 2, 3)) / count - mean * mean).clamp_min(0.0)
        scale = torch.rsqrt(var + self.eps) * (self.weight if weight is None else weight)
        return scale, self.bias - mean * scale


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def with_pytorch_layers(module: ModuleT) -> ModuleT:
    """A deep copy of ``module`` computed as a library would: PyTorch's batch-norm kernel, and conv4 as its plain
    sequence of layers (no :func:`conv_batch_norm`). Wrong under ``vmap``, exact and faster in a per-task loop:
    the reference the vmapped MAML is checked and timed against."""
    copied = copy.deepcopy(module)
    for child in copied.modules():
        if isinstance(child, BatchNorm2d):
            child.composite = False
    return copied


def conv_batch_norm(x: torch.Tensor, conv: nn.Conv2d, norm: BatchNorm2d, from_patches: bool = False,
                    max_pool: bool = False) -> torch.Tensor:
    """``norm(conv(x))`` with batch statistics, or with ``max_pool`` ``max_pool_2x2(norm(conv(x)))``, in fewer passes.

    ``max_pool``: pool first, then normalise at a quarter of the size. A max-pool commutes with a
    per-channel ``z * scale + shift`` when ``scale ≥ 0``, so channels whose batch-norm weight is
    negative are computed negated (their convolution weights, bias and batch-norm weight flipped:
    the same function, and ``scale`` is then positive).

    ``from_patches``: the statistics without a pass over the convolution's output. A convolution
    is linear in its input patches (``D`` = channels × kernel values each), so the mean and
    variance of each output channel follow from the mean and covariance of the patches, and
    without ``max_pool`` the batch norm folds into the convolution's weights and bias. Exact up to
    rounding, and cheap where ``D`` is small: a first layer over 1-3 input channels, whose outputs
    are the largest activations of the network and whose batch norm, with its first and second
    derivatives, otherwise makes a dozen passes over them under MAML. Needs ``groups=1`` and zero
    padding, as in every backbone here.
    """
    weight, norm_weight = conv.weight, norm.weight
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm_weight)
    if max_pool:
        sign = torch.where(norm_weight < 0, -1.0, 1.0)
        weight, bias, norm_weight = weight * sign[:, None, None, None], bias * sign, norm_weight * sign
    conv_args = conv.stride, conv.padding, conv.dilation
    if from_patches:
        cols = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # [batch, D, positions]
        patches = cols.transpose(1, 2).flatten(0, 1)
        patch_mean = patches.mean(0)
        centred = patches - patch_mean  # centred first: E[pp'] - E[p]E[p]' cancels for images with a large mean
        patch_cov = centred.T @ centred / patches.shape[0]
        flat = weight.flatten(1)  # [out_channels, D]
        scale = norm_weight * torch.rsqrt(((flat @ patch_cov) * flat).sum(1) + norm.eps)
        # The shift of the convolution without its bias: the bias cancels against the mean it
        # shifts, and stays in the graph for its (zero) gradient.
        shift = norm.bias - scale * (flat @ patch_mean + bias) + scale * bias
        if not max_pool:
            return F.conv2d(x, weight * scale[:, None, None, None], shift, *conv_args)
        z = F.conv2d(x, weight, None, *conv_args)
    else:
        z = F.conv2d(x, weight, bias, *conv_args)
        scale, shift = norm.scale_and_shift(z, norm_weight)
    if max_pool:
        z = max_pool_2x2(z)
    return z * scale[:, None, None] + shift[:, None, None]


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` as a gather at the maxima's indices, found in the channels-last layout.

    PyTorch's CPU max-pool kernel is vectorised over channels only in that layout (~10× faster
    than in the default one at 64×28×28), and ``vmap`` cannot carry channels-last activations.
    The gather's first and second derivatives route gradients to the maxima, as max-pooling's do.
    """
    with torch.no_grad():
        _, indices = F.max_pool2d(x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), 2, return_indices=True)
    indices = indices.contiguous()
    return x.flatten(-2).gather(-1, indices.flatten(-2)).view(indices.shape)


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
        self.strided = strided

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (isinstance(self[1], BatchNorm2d) and self[1].composite):
            return super().forward(x)
        # The vmap-safe form in fewer passes (see conv_batch_norm): the first block's batch norm
        # from its input's patch statistics; in the max-pooled conv4, every block pooled first.
        layers, block = list(self), 3 if self.strided else 4
        for start in range(0, 4 * block, block):
            conv, norm = layers[start], layers[start + 1]
            x = F.relu(conv_batch_norm(x, conv, norm, from_patches=start == 0, max_pool=not self.strided))
        for module in layers[4 * block:]:
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
