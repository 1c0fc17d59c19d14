"""The seed's 2-D U-Net: 5 encoder blocks, 4 symmetric decoder blocks, softmax head."""

from __future__ import annotations

import torch
from torch import nn


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions (same padding), each followed by ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Upsample x2, concatenate the skip connection, two 3x3 conv + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(torch.cat([skip, self.up(x)], dim=1))
        return out


class UNet(nn.Module):
    """U-Net with channels ``base * (1, 2, 4, 8, 16)`` (seed: base 64 -> 64..1024).

    Input ``(n, 1, h, w)`` with h and w divisible by 16; output ``(n, classes, h, w)`` softmax
    probabilities (``logits()`` gives the pre-softmax scores for the losses).
    """

    def __init__(self, num_classes: int, base: int = 64, in_channels: int = 1) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = (base * m for m in (1, 2, 4, 8, 16))
        self.num_classes = num_classes
        self.base = base
        self.enc1 = DoubleConv(in_channels, c1)
        self.enc2 = DoubleConv(c1, c2)
        self.enc3 = DoubleConv(c2, c3)
        self.enc4 = DoubleConv(c3, c4)
        self.enc5 = DoubleConv(c4, c5)
        self.pool = nn.MaxPool2d(2)
        self.up4 = Up(c5, c4)
        self.up3 = Up(c4, c3)
        self.up2 = Up(c3, c2)
        self.up1 = Up(c2, c1)
        self.head = nn.Conv2d(c1, num_classes, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        e4 = self.enc4(self.pool(e3))
        e5 = self.enc5(self.pool(e4))
        d4 = self.up4(e5, e4)
        d3 = self.up3(d4, e3)
        d2 = self.up2(d3, e2)
        d1 = self.up1(d2, e1)
        out: torch.Tensor = self.head(d1)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)
