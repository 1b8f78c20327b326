"""Generators G: code h → image x in [0, 1] (paper Sec. 3.2, S9.4).

``UpconvGenerator`` is the project's CPU-sized G: it inverts a spatial code (C×4×4) with
nearest-neighbour upsampling + 3×3 convolutions and ends at half resolution with a
pixel-shuffle, so that no convolution runs at the full output resolution (the cost that
dominated earlier CPU recipes). ``PaperFc6Generator`` is the original release's fc6 generator.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class UpconvGenerator(nn.Module):
    """G: code (B×code_channels×s×s) → image (B×3×out×out) in [0, 1].

    widths: channels at each resolution, from s×s up to out/2; each stage after the first
    doubles the resolution. A final 3×3 conv makes 12 channels at out/2 that a pixel-shuffle
    turns into 3 channels at out.
    """

    def __init__(self, code_channels: int = 320, code_size: int = 4,
                 widths: tuple[int, ...] = (256, 256, 128, 64, 32), out_size: int = 128,
                 slope: float = 0.2):
        super().__init__()
        if code_size * 2 ** len(widths) != out_size:
            raise ValueError(f"code_size·2^len(widths) must equal out_size ({code_size}, {widths}, {out_size})")
        self.code_channels, self.code_size, self.out_size = code_channels, code_size, out_size
        self.widths = tuple(widths)
        act = lambda: nn.LeakyReLU(slope, inplace=True)  # noqa: E731
        layers: list[nn.Module] = [_conv(code_channels, widths[0], 1), act(), _conv(widths[0], widths[0]), act()]
        for i in range(1, len(widths)):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(widths[i - 1], widths[i]), act()]
            if i < 3:  # an extra conv at the cheap low resolutions
                layers += [_conv(widths[i], widths[i]), act()]
        layers += [_conv(widths[-1], 12), nn.PixelShuffle(2)]
        self.body = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(h))

    def config(self) -> dict:
        return {"arch": "upconv", "code_channels": self.code_channels, "code_size": self.code_size,
                "widths": list(self.widths), "out_size": self.out_size}


class PaperFc6Generator(nn.Module):
    """The original release's fc6 generator (DGN-AM / PPGN): 4096-d code → 256×256 BGR image.

    defc7, defc6, defc5 (fully connected, 4096 each) → reshape 256×4×4 → deconv5 (256),
    conv5_1 (512), deconv4 (256), conv4_1 (256), deconv3 (128), conv3_1 (128), deconv2 (64),
    deconv1 (32), deconv0 (3). Up-convolutions are 4×4 stride 2, the conv*_1 are 3×3 stride 1;
    LeakyReLU(0.3) after every layer but the last. Output is in the release's units (BGR, mean
    subtracted); ``crop`` gives the centre 227×227 the release feeds to CaffeNet.
    """

    layer_names = ("defc7", "defc6", "defc5", "deconv5", "conv5_1", "deconv4", "conv4_1",
                   "deconv3", "conv3_1", "deconv2", "deconv1", "deconv0")

    def __init__(self, code_dim: int = 4096):
        super().__init__()
        self.defc7 = nn.Linear(code_dim, 4096)
        self.defc6 = nn.Linear(4096, 4096)
        self.defc5 = nn.Linear(4096, 4096)
        up = lambda cin, cout: nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)  # noqa: E731
        self.deconv5 = up(256, 256)
        self.conv5_1 = nn.Conv2d(256, 512, 3, padding=1)
        self.deconv4 = up(512, 256)
        self.conv4_1 = nn.Conv2d(256, 256, 3, padding=1)
        self.deconv3 = up(256, 128)
        self.conv3_1 = nn.Conv2d(128, 128, 3, padding=1)
        self.deconv2 = up(128, 64)
        self.deconv1 = up(64, 32)
        self.deconv0 = up(32, 3)
        self.act = nn.LeakyReLU(0.3)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = self.act
        y = a(self.defc5(a(self.defc6(a(self.defc7(h))))))
        y = y.view(-1, 256, 4, 4)
        for name in self.layer_names[3:-1]:
            y = a(getattr(self, name)(y))
        return self.deconv0(y)

    @staticmethod
    def crop(x: torch.Tensor, size: int = 227) -> torch.Tensor:
        off = (x.shape[-1] - size) // 2
        return x[..., off: off + size, off: off + size]


class Discriminator(nn.Module):
    """D: image in [0, 1] → real/fake logit; strided convs then a linear layer (paper S9.4, smaller)."""

    def __init__(self, in_size: int = 128, widths: tuple[int, ...] = (32, 64, 128, 256, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            cin = w
        self.features = nn.Sequential(*layers)
        side = in_size // 2 ** len(widths)
        self.out = nn.Linear(cin * side * side, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x * 2 - 1).flatten(1)).squeeze(1)
