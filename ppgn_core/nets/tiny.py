"""Tiny random networks with the same interfaces as the real ones: for tests and smoke runs."""

from __future__ import annotations

import torch
import torch.nn as nn

from .classifiers import ImageClassifier


class TinyConvNet(nn.Module):
    """A small convnet classifier with named stages ``stem``, ``blocks.0``, ``blocks.1``, ``fc``."""

    def __init__(self, num_classes: int = 1000, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU())
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(width, width * 2, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(width * 2, width * 4, 3, stride=2, padding=1), nn.ReLU()),
        ])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward_to(self, x: torch.Tensor, last_block: int) -> torch.Tensor:
        y = self.stem(x)
        for b in self.blocks[: last_block + 1]:
            y = b(y)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.forward_to(x, len(self.blocks) - 1)).flatten(1))


def tiny_classifier(seed: int = 0, num_classes: int = 1000, input_size: int | None = None) -> ImageClassifier:
    torch.manual_seed(seed)
    return ImageClassifier(TinyConvNet(num_classes), "tiny", input_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class TinyEncoder(nn.Module):
    """E = E2∘E1 for tiny images: h1 = 8×(s/4)², h = ``code_channels``×(s/8)²."""

    def __init__(self, code_channels: int = 16, size: int = 32):
        super().__init__()
        self.input_size = size
        self.e1 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.e2 = nn.Sequential(nn.Conv2d(8, code_channels, 3, stride=2, padding=1))
        for p in self.parameters():
            p.requires_grad_(False)

    def encode_h1(self, x: torch.Tensor) -> torch.Tensor:
        return self.e1(x * 2 - 1)

    def h1_to_h(self, h1: torch.Tensor) -> torch.Tensor:
        return self.e2(h1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h1_to_h(self.encode_h1(x))

    def encode_both(self, x: torch.Tensor):
        h1 = self.encode_h1(x)
        return h1, self.h1_to_h(h1)


class TinyGenerator(nn.Module):
    """G for tiny images: code C×(s/8)² → 3×s×s in [0, 1]."""

    def __init__(self, code_channels: int = 16, size: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(code_channels, 32, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(32, 16, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(16, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(h))
