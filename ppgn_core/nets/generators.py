"""Generators G: code h → image x in [0, 1] (paper Sec. 3.2, S9.4).

``UpconvGenerator`` is the project's CPU-sized G: it inverts a spatial code (C×s×s) with
nearest-neighbour upsampling + 3×3 convolutions and ends at half resolution with a
pixel-shuffle, so that no convolution runs at the full output resolution (the cost that
dominated earlier CPU recipes). Two variants of the design search plug around it:
``VectorCodeGenerator`` (a flat code such as E's pooled head, through a linear layer to 4×4) and
``LaplacianGenerator`` (coarse-to-fine, Denton et al. 2015: a half-resolution G plus a
class-agnostic refiner that adds the full-resolution detail). ``build_generator`` makes any of
them from the ``config()`` a model card keeps. ``PaperFc6Generator`` is the original release's
fc6 generator.
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

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The image before its sigmoid (the Laplacian G upsamples these)."""
        return self.body(h)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(h))

    def config(self) -> dict:
        return {"arch": "upconv", "code_channels": self.code_channels, "code_size": self.code_size,
                "widths": list(self.widths), "out_size": self.out_size}


class VectorCodeGenerator(nn.Module):
    """G for a flat code h (B×code_dim, e.g. E's pooled 1,280-d head): a linear layer to
    widths[0]×4×4, then an ``UpconvGenerator`` from 4×4 to ``out_size``."""

    def __init__(self, code_dim: int = 1280, widths: tuple[int, ...] = (384, 384, 256, 128, 64),
                 out_size: int = 128, slope: float = 0.2):
        super().__init__()
        self.code_dim = code_dim
        self.fc = nn.Linear(code_dim, widths[0] * 16)
        self.act = nn.LeakyReLU(slope, inplace=True)
        self.upconv = UpconvGenerator(widths[0], 4, widths, out_size, slope)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.upconv(self.act(self.fc(h.flatten(1))).view(len(h), -1, 4, 4))

    def config(self) -> dict:
        c = self.upconv.config()
        return {"arch": "vector_upconv", "code_dim": self.code_dim, "widths": c["widths"], "out_size": c["out_size"]}


class LaplacianRefiner(nn.Module):
    """The fine stage of a Laplacian pyramid G: from the upsampled coarse image (B×3×s×s in
    [0, 1]) the residual that adds the detail, in logit units. Class-agnostic (it never sees h),
    and cheap: its convolutions run at s/2 on the pixel-unshuffled image."""

    def __init__(self, width: int = 48, slope: float = 0.2):
        super().__init__()
        self.width = width
        self.body = nn.Sequential(nn.PixelUnshuffle(2), _conv(12, width), nn.LeakyReLU(slope, inplace=True),
                                  _conv(width, width), nn.LeakyReLU(slope, inplace=True),
                                  _conv(width, 12), nn.PixelShuffle(2))

    def forward(self, up: torch.Tensor) -> torch.Tensor:
        return self.body(up * 2 - 1)


class LaplacianGenerator(nn.Module):
    """Coarse-to-fine G (LAPGAN, Denton et al. 2015): an ``UpconvGenerator`` draws the image at
    half resolution from h; it is upsampled (bilinear) and a ``LaplacianRefiner`` adds the
    full-resolution residual in logit units: x = σ(u + refiner(σ(u))), u = up(logit_coarse).
    ``forward(h, with_coarse=True)`` also returns the coarse image (its own pixel loss in training)."""

    def __init__(self, code_channels: int = 112, code_size: int = 8, widths: tuple[int, ...] = (384, 256, 128),
                 out_size: int = 128, refiner_width: int = 48, slope: float = 0.2):
        super().__init__()
        self.coarse = UpconvGenerator(code_channels, code_size, widths, out_size // 2, slope)
        self.refiner = LaplacianRefiner(refiner_width, slope)
        self.out_size = out_size

    def forward(self, h: torch.Tensor, with_coarse: bool = False):
        logits = self.coarse.logits(h)
        up_logits = nn.functional.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
        x = torch.sigmoid(up_logits + self.refiner(torch.sigmoid(up_logits)))
        return (x, torch.sigmoid(logits)) if with_coarse else x

    def config(self) -> dict:
        c = self.coarse.config()
        return {"arch": "laplacian", "code_channels": c["code_channels"], "code_size": c["code_size"],
                "widths": c["widths"], "out_size": self.out_size, "refiner_width": self.refiner.width}


def build_generator(config: dict) -> nn.Module:
    """The G that ``config`` (a generator's ``config()``, as kept in a model card) describes."""
    arch = config.get("arch", "upconv")
    widths = tuple(config["widths"])
    if arch == "upconv":
        return UpconvGenerator(config["code_channels"], config["code_size"], widths, config["out_size"])
    if arch == "vector_upconv":
        return VectorCodeGenerator(config["code_dim"], widths, config["out_size"])
    if arch == "laplacian":
        return LaplacianGenerator(config["code_channels"], config["code_size"], widths, config["out_size"],
                                  config.get("refiner_width", 48))
    raise ValueError(f"unknown generator architecture {arch!r}: upconv, vector_upconv or laplacian")


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
