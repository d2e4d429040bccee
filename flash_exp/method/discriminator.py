"""The discriminator heads that read frozen-teacher features (the teacher itself stays frozen).

Three architectures, chosen by ``backbone.discriminator.head``:

- ``flash_sd15``: the official Flash SD head: Conv3x3(C -> c0), SiLU, then per further width a 4x4
  stride-2 conv, SiLU, GroupNorm(4), and a 4x4 conv (no padding) to one channel;
- ``flash_strided``: the official Flash SDXL / PixArt / SD3 / canny head: a 4x4 stride-2 conv (C -> c0),
  SiLU, then per further width a 4x4 stride-2 conv, GroupNorm(4), SiLU, and a 4x4 conv (no padding) to
  one channel; the widths differ per backbone (``backbone.discriminator.channels``);
- ``generic``: 4x4 convs with GroupNorm and SiLU whose stride drops to 1 on small maps, for features
  too small for the official heads (the toy world's 4x4 mid-block).

Every head returns the logit map flattened, (B, H' * W'), as the official heads (``nn.Flatten``): one
logit per sample at the paper's feature sizes, 25 patch logits for SD3's 128x128 teacher output. The
GAN losses average over every logit, which is what the official code's comparison of (B, 25) logits
with a (B, 1) target computes by broadcasting.
"""

from __future__ import annotations

import torch
from torch import nn

from flash_exp.config import DISCRIMINATOR_HEADS


def _conv4(c_in: int, c_out: int, stride: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=4, stride=stride, padding=1 if stride == 2 else 0, bias=bias)


def flash_sd15_layers(in_channels: int, channels: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, 1, 1), nn.SiLU()]
    for prev, ch in zip(channels, channels[1:], strict=False):
        layers += [_conv4(prev, ch, 2), nn.SiLU(), nn.GroupNorm(4, ch)]
    return layers + [_conv4(channels[-1], 1, 1)]


def flash_strided_layers(in_channels: int, channels: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = [_conv4(in_channels, channels[0], 2), nn.SiLU()]
    for prev, ch in zip(channels, channels[1:], strict=False):
        layers += [_conv4(prev, ch, 2), nn.GroupNorm(4, ch), nn.SiLU()]
    return layers + [_conv4(channels[-1], 1, 1)]


def generic_layers(in_channels: int, feature_size: int, channels: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    size, prev = feature_size, in_channels
    for ch in channels:
        stride = 2 if size >= 8 else 1
        layers += [nn.Conv2d(prev, ch, kernel_size=4, stride=stride, padding=1), nn.GroupNorm(min(4, ch), ch),
                   nn.SiLU()]
        size = (size + 2 - 4) // stride + 1
        prev = ch
    return layers + [nn.Conv2d(prev, 1, kernel_size=min(4, size), stride=1, padding=0)]


def head_layers(head: str, in_channels: int, feature_size: int, channels: list[int]) -> list[nn.Module]:
    """The layers of head ``head`` on (in_channels, feature_size, feature_size) features, before the flatten."""
    if head not in DISCRIMINATOR_HEADS:
        raise ValueError(f"backbone.discriminator.head={head!r}: allowed values are {', '.join(DISCRIMINATOR_HEADS)}")
    if head == "flash_sd15":
        return flash_sd15_layers(in_channels, channels)
    if head == "flash_strided":
        return flash_strided_layers(in_channels, channels)
    return generic_layers(in_channels, feature_size, channels)


def logit_side(head: str, in_channels: int, feature_size: int, channels: list[int]) -> int:
    """The side of the logit map head ``head`` makes of its features (< 1: the features are too small);
    its layers are built on the meta device, no memory allocated."""
    with torch.device("meta"):
        return output_side(head_layers(head, in_channels, feature_size, channels), feature_size)


def output_side(layers: list[nn.Module], side: int) -> int:
    """The side of the logit map that ``layers`` make of a side x side input (< 1: too small)."""
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            side = (side + 2 * layer.padding[0] - layer.kernel_size[0]) // layer.stride[0] + 1
            if side < 1:
                return side
    return side


def tokens_to_map(features: torch.Tensor) -> torch.Tensor:
    """(B, tokens, C) from a transformer block -> (B, C, side, side); (B, C, H, W) is returned as is."""
    if features.ndim != 3:
        return features
    b, n, c = features.shape
    side = int(n**0.5)
    return features[:, : side * side].transpose(1, 2).reshape(b, c, side, side)


class DiscriminatorHead(nn.Module):
    """A head of kind ``head`` on features (B, in_channels, feature_size, feature_size) (or their tokens).

    Output: logits (B, N), N = 1 at the paper's feature sizes. Raises ValueError, naming the setting,
    when the features are too small for the head.
    """

    def __init__(self, head: str, in_channels: int, feature_size: int, channels: list[int]):
        super().__init__()
        layers = head_layers(head, in_channels, feature_size, channels)
        side = output_side(layers, feature_size)
        if side < 1:
            raise ValueError(
                f"backbone.discriminator.head={head!r} with channels {list(channels)} needs larger features than "
                f"{feature_size}x{feature_size} (see backbone.discriminator.feature_module and backbone.resolution); "
                "the generic head adapts its strides to small maps"
            )
        self.num_logits = side * side
        self.net = nn.Sequential(*layers, nn.Flatten())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(tokens_to_map(features).float())
