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


class NoiseConditionalCodeDAE(nn.Module):
    """R_h(h, σ) for every noise level σ at once: a denoiser of a spatial code whose noise level is an
    input, so that (R(h, σ) − h)/σ² estimates the score of the code density blurred by N(0, σ²)
    (Song & Ermon 2019; Vincent 2011). σ is in units of the code's own per-element spread.

    The code is standardised by the real codes' per-element ``mean``/``std`` (buffers, saved with the
    weights), and the network is preconditioned as in Karras et al. 2022 (EDM): with u the
    standardised code, û = c_skip·u + c_out·F(c_in·u, log σ), c_skip = 1/(1+σ²), c_out = σ/√(1+σ²),
    c_in = 1/√(1+σ²), so F's input and target have unit variance at every σ. F: a 1×1 convolution
    to ``width`` channels, ``depth`` residual 3×3 blocks, each modulated by a scale and shift
    computed from log σ (FiLM), and a 1×1 back."""

    def __init__(self, code_shape: tuple[int, ...], width: int = 256, depth: int = 4,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        if len(code_shape) != 3:
            raise ValueError(f"a noise-conditional R_h needs a spatial code (C×s×s), got shape {tuple(code_shape)}")
        self.code_shape, self.width, self.depth = tuple(code_shape), width, depth
        self.register_buffer("mean", torch.zeros(code_shape) if mean is None else mean.float().clone())
        self.register_buffer("std", torch.ones(code_shape) if std is None else std.float().clamp_min(1e-3).clone())
        self.conv_in = nn.Conv2d(code_shape[0], width, 1)
        self.blocks = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(depth))
        self.noise_embed = nn.Sequential(nn.Linear(1, 128), nn.SiLU(), nn.Linear(128, 2 * width * (depth + 1)))
        self.conv_out = nn.Conv2d(width, code_shape[0], 1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.act = nn.SiLU()

    @staticmethod
    def preconditioning(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in) for noise levels σ (standardised units, data variance 1)."""
        v = 1 + sigma ** 2
        return 1 / v, sigma / v.sqrt(), 1 / v.sqrt()

    def denoise_standardised(self, u: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """û from a noisy standardised code u at noise level σ (a tensor of B or a scalar)."""
        sigma = torch.as_tensor(sigma, dtype=u.dtype, device=u.device).expand(u.shape[0]).view(-1, 1, 1, 1)
        c_skip, c_out, c_in = self.preconditioning(sigma)
        film = self.noise_embed(sigma.view(-1, 1).log() / 4).view(u.shape[0], self.depth + 1, 2, self.width, 1, 1)
        x = self.act(self.conv_in(c_in * u) * (1 + film[:, 0, 0]) + film[:, 0, 1])
        for i, conv in enumerate(self.blocks, start=1):
            x = x + self.act(conv(x) * (1 + film[:, i, 0]) + film[:, i, 1])
        return c_skip * u + c_out * self.conv_out(x)

    def standardise(self, h: torch.Tensor) -> torch.Tensor:
        return (h - self.mean) / self.std

    def unstandardise(self, u: torch.Tensor) -> torch.Tensor:
        return self.mean + self.std * u

    def forward(self, h: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """R(h, σ): the denoised code, in the code's own units."""
        return self.unstandardise(self.denoise_standardised(self.standardise(h), sigma))

    def config(self) -> dict:
        return {"arch": "noise_conditional_code_dae", "code_shape": list(self.code_shape), "width": self.width,
                "depth": self.depth}


def build_code_dae(config: dict, code_shape: tuple[int, ...]) -> nn.Module:
    """R_h from its model-card config (``arch`` mlp_code_dae, the default, conv_code_dae, or
    noise_conditional_code_dae)."""
    arch = config.get("arch", "mlp_code_dae")
    if arch == "conv_code_dae":
        return ConvCodeDAE(code_shape, config["width"], config["depth"])
    if arch == "noise_conditional_code_dae":
        return NoiseConditionalCodeDAE(code_shape, config["width"], config["depth"])
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
