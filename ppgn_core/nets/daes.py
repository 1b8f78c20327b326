"""Denoising autoencoders: R_h on codes (PPGN-h, Sec. 3.3/S9.3) and R_x on images (PPGN-x, S9.2)."""

from __future__ import annotations

import torch
import torch.nn as nn


class MLPCodeDAE(nn.Module):
    """R_h: a 7-layer fully connected DAE on a flattened code (paper: 4096-2048-1024-500-1024-2048-4096).

    ``hidden`` gives the first three widths; the decoder mirrors them. Works on codes of any
    shape (they are flattened and reshaped back). ``residual``: R(h) = h + body(h), so the narrow
    middle only has to carry the correction toward the data, not the code itself (a plain MLP
    with a 128-wide middle on the 7,168-d block-10 code stayed 100× worse than the identity).
    """

    def __init__(self, code_shape: tuple[int, ...], hidden: tuple[int, int, int] = (1024, 512, 256),
                 residual: bool = False):
        super().__init__()
        self.code_shape = tuple(code_shape)
        self.hidden = tuple(hidden)
        self.residual = residual
        d = 1
        for s in code_shape:
            d *= s
        sizes = [d, *hidden, hidden[1], hidden[0], d]
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.body = nn.Sequential(*layers)

        if residual:  # start as the identity
            nn.init.zeros_(self.body[-1].weight)
            nn.init.zeros_(self.body[-1].bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.body(h.flatten(1)).view(h.shape[0], *self.code_shape)
        return h + out if self.residual else out

    def config(self) -> dict:
        return {"arch": "mlp_code_dae", "code_shape": list(self.code_shape), "hidden": list(self.hidden),
                "residual": self.residual}


class ConvCodeDAE(nn.Module):
    """R_h for a spatial code (C×s×s, e.g. Lite0's block-10 code 112×8×8): R(h) = h + body(h), with
    body a 1×1 convolution to ``width`` channels, ``depth`` 3×3 convolutions, and a 1×1 back to C.
    Neighbouring positions of such a code are correlated, so a convolution sees the context that
    a position's noise hides; the MLP has to learn it for every position separately. The last
    layer starts at zero, so R starts as the identity."""

    def __init__(self, code_shape: tuple[int, ...], width: int = 256, depth: int = 3):
        super().__init__()
        if len(code_shape) != 3:
            raise ValueError(f"a convolutional R_h needs a spatial code (C×s×s), got shape {tuple(code_shape)}")
        self.code_shape, self.width, self.depth = tuple(code_shape), width, depth
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        layers: list[nn.Module] = [nn.Conv2d(code_shape[0], width, 1), act()]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1), act()]
        layers.append(nn.Conv2d(width, code_shape[0], 1))
        self.body = nn.Sequential(*layers)
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.body(h)

    def config(self) -> dict:
        return {"arch": "conv_code_dae", "code_shape": list(self.code_shape), "width": self.width, "depth": self.depth}


def build_code_dae(config: dict, code_shape: tuple[int, ...]) -> nn.Module:
    """R_h from its model-card config (``arch`` mlp_code_dae, the default, or conv_code_dae)."""
    arch = config.get("arch", "mlp_code_dae")
    if arch == "conv_code_dae":
        return ConvCodeDAE(code_shape, config["width"], config["depth"])
    if arch == "mlp_code_dae":
        return MLPCodeDAE(code_shape, tuple(config["hidden"]), config.get("residual", False))
    raise ValueError(f"unknown code DAE architecture {arch!r}")


class ConvImageDAE(nn.Module):
    """R_x: a small convolutional DAE on images in [0, 1] (paper S9.2: conv encoder, upconv decoder)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), act(),
            nn.Conv2d(width, width * 2, 4, stride=2, padding=1), act(),
            nn.Conv2d(width * 2, width * 2, 3, padding=1), act(),
            nn.Conv2d(width * 2, width * 4, 4, stride=2, padding=1), act(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(width * 4, width * 2, 4, stride=2, padding=1), act(),
            nn.ConvTranspose2d(width * 2, width, 4, stride=2, padding=1), act(),
            nn.Conv2d(width, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.encoder(x * 2 - 1)))

    def config(self) -> dict:
        return {"arch": "conv_image_dae", "width": self.width}
