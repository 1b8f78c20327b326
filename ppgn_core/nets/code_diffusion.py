"""A latent diffusion prior over E's spatial code h (112×8×8): p(h) and p(h|y) in one network.

:class:`CodeDiffusionUNet` is an EDM denoiser (Karras et al. 2022): for a standardised code u (the
real codes' per-element mean and spread, kept as buffers) with Gaussian noise of level σ, it
returns the denoised estimate D(u; σ, y) = c_skip·u + c_out·F(c_in·u; c_noise, y), with
c_skip = 1/(1+σ²), c_out = σ/√(1+σ²), c_in = 1/√(1+σ²), c_noise = ln(σ)/4 (σ_data = 1). F is a small
U-Net over the 8×8 grid: residual blocks whose group norms are modulated by the noise level and
the class (adaptive scale and shift), self-attention at 8×8 and at 4×4, one downsampling and one
upsampling with skip connections. The class y is an embedding of 1,000 classes plus one "no class"
entry, trained with label dropout, so that one network gives the unconditional prior
(y = ``null_class``), the class-conditional one, and classifier-free guidance between them
(:meth:`CodeDiffusionUNet.guided_denoise`). (D − u)/σ² estimates ∂log p_σ(u)/∂u, the score that the
PPGN sampler uses as its prior term.

The interface matches :class:`~ppgn_core.nets.daes.NoiseConditionalCodeDAE` (``code_shape``,
``denoise_standardised``, ``standardise``, ``unstandardise``, ``forward(h, σ)``, ``config``), so the
guided sampler and :func:`~ppgn_core.priors.sample_codes` accept either.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels, eps=1e-6)


class NoiseEmbedding(nn.Module):
    """c_noise = ln(σ)/4 as sinusoidal features of ``dim`` frequencies, then an MLP to ``out``."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.register_buffer("freqs", torch.exp(-math.log(1000.0) * torch.arange(dim // 2) / (dim // 2)),
                             persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, out), nn.SiLU(), nn.Linear(out, out))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        a = c_noise.view(-1, 1) * self.freqs.view(1, -1) * 100.0
        return self.mlp(torch.cat([a.cos(), a.sin()], dim=1))


class ResBlock(nn.Module):
    """GN → SiLU → 3×3 conv → GN modulated by the embedding (scale, shift) → SiLU → 3×3 conv (zero-initialised),
    plus the input (through a 1×1 convolution where the width changes)."""

    def __init__(self, cin: int, cout: int, emb: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb, 2 * cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.affine(emb).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(self.dropout(h))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the grid's positions (pre-norm, residual, output zero-initialised)."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads, self.norm = heads, _norm(channels)
        self.qkv, self.proj = nn.Conv2d(channels, 3 * channels, 1), nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, 3, self.heads, c // self.heads, hgt * wid).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, hgt, wid))


class Level(nn.Module):
    """A residual block and, where asked, self-attention after it."""

    def __init__(self, cin: int, cout: int, emb: int, attention: bool, heads: int, dropout: float):
        super().__init__()
        self.block = ResBlock(cin, cout, emb, dropout)
        self.attn = SelfAttention(cout, heads) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.block(x, emb))


class CodeDiffusionUNet(nn.Module):
    """EDM denoiser of a spatial code (see the module's text). ``channels`` at 8×8, twice that at 4×4;
    ``blocks`` residual blocks per resolution on each side; attention at both resolutions."""

    def __init__(self, code_shape: tuple[int, ...], channels: int = 128, blocks: int = 2, num_classes: int = 1000,
                 heads: int = 4, dropout: float = 0.0, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None):
        super().__init__()
        if len(code_shape) != 3 or code_shape[1] % 2 or code_shape[2] % 2:
            raise ValueError(f"the code diffusion prior needs a spatial code C×s×s with even s, got {tuple(code_shape)}")
        self.code_shape, self.channels, self.blocks = tuple(code_shape), channels, blocks
        self.num_classes, self.heads, self.dropout = num_classes, heads, dropout
        self.null_class = num_classes  # the "no class" entry that label dropout trains
        self.register_buffer("mean", torch.zeros(code_shape) if mean is None else mean.float().clone())
        self.register_buffer("std", torch.ones(code_shape) if std is None else std.float().clamp_min(1e-3).clone())
        c1, c2, emb = channels, 2 * channels, 4 * channels
        self.noise_embed = NoiseEmbedding(channels, emb)
        self.class_embed = nn.Embedding(num_classes + 1, emb)
        nn.init.normal_(self.class_embed.weight, std=0.02)
        self.conv_in = nn.Conv2d(code_shape[0], c1, 3, padding=1)
        self.down_hi = nn.ModuleList(Level(c1, c1, emb, i == blocks - 1, heads, dropout) for i in range(blocks))
        self.downsample = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.down_lo = nn.ModuleList(Level(c2, c2, emb, True, heads, dropout) for _ in range(blocks))
        self.middle = nn.ModuleList([Level(c2, c2, emb, True, heads, dropout), Level(c2, c2, emb, False, heads, dropout)])
        self.up_lo = nn.ModuleList(Level(2 * c2, c2, emb, True, heads, dropout) for _ in range(blocks))
        self.upsample = nn.Conv2d(c2, c1, 3, padding=1)
        self.up_hi = nn.ModuleList(Level(2 * c1, c1, emb, i == blocks - 1, heads, dropout) for i in range(blocks))
        self.norm_out = _norm(c1)
        self.conv_out = nn.Conv2d(c1, code_shape[0], 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    # ------------------------------------------------------------------ EDM
    @staticmethod
    def preconditioning(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in) for noise levels σ (standardised units, σ_data = 1)."""
        v = 1 + sigma ** 2
        return 1 / v, sigma / v.sqrt(), 1 / v.sqrt()

    def _labels(self, labels: torch.Tensor | int | None, batch: int, device) -> torch.Tensor:
        if labels is None:
            return torch.full((batch,), self.null_class, dtype=torch.long, device=device)
        y = torch.as_tensor(labels, dtype=torch.long, device=device).expand(batch) if not torch.is_tensor(labels) \
            or labels.dim() == 0 else labels.to(device=device, dtype=torch.long)
        if len(y) != batch:
            raise ValueError(f"{len(y)} labels for {batch} codes")
        if ((y < 0) | (y > self.null_class)).any():
            raise ValueError(f"class labels must lie in 0..{self.num_classes - 1} (or {self.null_class}: no class)")
        return y

    def network(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """F: the U-Net on a preconditioned input."""
        emb = F.silu(self.noise_embed(c_noise) + self.class_embed(labels))
        h = self.conv_in(x)
        skips = []
        for lvl in self.down_hi:
            h = lvl(h, emb)
            skips.append(h)
        h = self.downsample(h)
        for lvl in self.down_lo:
            h = lvl(h, emb)
            skips.append(h)
        for lvl in self.middle:
            h = lvl(h, emb)
        for lvl in self.up_lo:
            h = lvl(torch.cat([h, skips.pop()], dim=1), emb)
        h = self.upsample(F.interpolate(h, scale_factor=2, mode="nearest"))
        for lvl in self.up_hi:
            h = lvl(torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    def denoise_standardised(self, u: torch.Tensor, sigma, labels: torch.Tensor | int | None = None) -> torch.Tensor:
        """D(u; σ, y): the denoised standardised code. σ: a scalar or one per code; ``labels``: one class
        per code, a single class, or None for the unconditional prior."""
        b = u.shape[0]
        sigma = torch.as_tensor(sigma, dtype=u.dtype, device=u.device).expand(b).reshape(b, 1, 1, 1)
        c_skip, c_out, c_in = self.preconditioning(sigma)
        f = self.network(c_in * u, sigma.flatten().log() / 4, self._labels(labels, b, u.device))
        return c_skip * u + c_out * f

    def guided_denoise(self, u: torch.Tensor, sigma, labels: torch.Tensor | int | None, cfg_scale: float) -> torch.Tensor:
        """Classifier-free guidance: D_∅ + w·(D_y − D_∅) (Ho & Salimans 2022). w = 0: the unconditional
        prior; w = 1: the class-conditional one; w > 1 pushes further toward the class. One batched pass."""
        if labels is None or cfg_scale == 0:
            return self.denoise_standardised(u, sigma, None)
        if cfg_scale == 1:
            return self.denoise_standardised(u, sigma, labels)
        b = u.shape[0]
        y = self._labels(labels, b, u.device)
        sig = torch.as_tensor(sigma, dtype=u.dtype, device=u.device).expand(b)
        both = self.denoise_standardised(torch.cat([u, u]), torch.cat([sig, sig]),
                                         torch.cat([y, torch.full_like(y, self.null_class)]))
        cond, uncond = both[:b], both[b:]
        return uncond + cfg_scale * (cond - uncond)

    # ------------------------------------------------------------------ code units
    def standardise(self, h: torch.Tensor) -> torch.Tensor:
        return (h - self.mean) / self.std

    def unstandardise(self, u: torch.Tensor) -> torch.Tensor:
        return self.mean + self.std * u

    def forward(self, h: torch.Tensor, sigma, labels: torch.Tensor | int | None = None) -> torch.Tensor:
        """The denoised code in the code's own units."""
        return self.unstandardise(self.denoise_standardised(self.standardise(h), sigma, labels))

    def config(self) -> dict:
        return {"arch": "code_diffusion_unet", "code_shape": list(self.code_shape), "channels": self.channels,
                "blocks": self.blocks, "num_classes": self.num_classes, "heads": self.heads}


def build_code_diffusion(config: dict) -> CodeDiffusionUNet:
    """The network from its model-card config."""
    if config.get("arch") != "code_diffusion_unet":
        raise ValueError(f"not a code diffusion config: {config.get('arch')!r}")
    return CodeDiffusionUNet(tuple(config["code_shape"]), config["channels"], config["blocks"],
                             config["num_classes"], config["heads"])
