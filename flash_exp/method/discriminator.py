"""The discriminator head that reads frozen-teacher features (the teacher itself stays frozen)."""

from __future__ import annotations

import torch
from torch import nn


class DiscriminatorHead(nn.Module):
    """Strided 4x4 convolutions with GroupNorm and SiLU, then a 4x4 convolution to one logit map.

    Input: features (B, in_channels, H, W) from a teacher block. Output: logits (B, 1, H', W'), where
    H' depends on the feature size; layers that would shrink the map below 4 pixels use stride 1.
    """

    def __init__(self, in_channels: int, feature_size: int, channels: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        size = feature_size
        prev = in_channels
        for ch in channels:
            stride = 2 if size >= 8 else 1
            layers += [
                nn.Conv2d(prev, ch, kernel_size=4, stride=stride, padding=1),
                nn.GroupNorm(min(4, ch), ch),
                nn.SiLU(),
            ]
            size = (size + 2 - 4) // stride + 1
            prev = ch
        layers.append(nn.Conv2d(prev, 1, kernel_size=min(4, size), stride=1, padding=0))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim == 3:  # (B, tokens, C) from a transformer block: make it a square map
            b, n, c = features.shape
            side = int(n**0.5)
            features = features[:, : side * side].transpose(1, 2).reshape(b, c, side, side)
        return self.net(features.float())
