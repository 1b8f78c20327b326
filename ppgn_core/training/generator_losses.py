"""The generator's losses (paper S9.4–S9.5): pixels, features h1, code h, class output, GAN, and the
discriminator's step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nets.classifiers import LiteEncoder
from ..nets.generators import build_generator
from .codes import CodeCache, code_statistics
from .common import mixed_precision
from .config import TrainConfig

GEN_FIELDS = ["step", "minutes", "phase", "loss_img", "loss_h1", "loss_h", "loss_cls", "loss_gan_g", "loss_d",
              "d_paused", "g_gan_paused", "psnr", "lr", "loss_coarse"]


def class_output_loss(encoder: LiteEncoder, h_fake: torch.Tensor, h_real: torch.Tensor) -> torch.Tensor:
    """L_c = KL(p(y|x) ‖ p(y|G(h))): E's own 1000-way classifier output, read from the code h.

    It asks G to keep what the classifier sees in x (all 1000 classes, not only the training
    ten), so that E(G(h)), the joint prior's pull (Eq. 11), keeps the class of h.
    """
    with torch.no_grad():
        target = F.log_softmax(encoder.h_to_logits(h_real), dim=1)
    return F.kl_div(F.log_softmax(encoder.h_to_logits(h_fake), dim=1), target, log_target=True,
                    reduction="batchmean")


def _build_generator(cfg: TrainConfig, code_shape: tuple[int, ...]) -> nn.Module:
    """G for codes of ``code_shape``: a flat code (the pooled head) goes through a linear layer
    to 4×4; ``coarse_to_fine`` gives the Laplacian (LAPGAN) G; else the plain up-convolutions."""
    config: dict = {"widths": list(cfg.widths), "out_size": cfg.size}
    if len(code_shape) == 1:
        if cfg.coarse_to_fine:
            raise ValueError("coarse_to_fine needs a spatial code (h_block below the pooled head)")
        return build_generator({**config, "arch": "vector_upconv", "code_dim": code_shape[0]})
    config.update(code_channels=code_shape[0], code_size=code_shape[1])
    if cfg.coarse_to_fine:
        return build_generator({**config, "arch": "laplacian", "refiner_width": cfg.refiner_width})
    return build_generator({**config, "arch": "upconv"})


def generate(G: nn.Module, h: torch.Tensor, laplacian: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """G(h), and the coarse image of a Laplacian G (else None). ``G`` may be wrapped in DDP."""
    if laplacian:
        return G(h, with_coarse=True)
    return G(h), None


@dataclass
class CodeScales:
    """Spreads of the cached codes that scale the losses and the Joint PPGN-h noise."""

    h_var: float
    h1_var: float
    h1_mean_abs: float
    h_stats: dict

    @classmethod
    def of(cls, cache: CodeCache) -> "CodeScales":
        pick = torch.linspace(0, len(cache) - 1, min(len(cache), 4096)).long()  # a fixed subset
        h, h1 = cache.h[pick].float(), cache.h1[pick].float()
        return cls(h.var().item(), h1.var().item(), h1.abs().mean().item(), code_statistics(h))


def generator_losses(cfg: TrainConfig, encoder: LiteEncoder, D: nn.Module, x_fake: torch.Tensor,
                     x_real: torch.Tensor, h: torch.Tensor, h1_real: torch.Tensor, scales: CodeScales,
                     gen: torch.Generator, warm: bool, r: float,
                     x_coarse: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """G's loss for one batch: L_img (+ after the warm-up L_h1, L_h, L_c, L_GAN; S9.4/S9.5).
    ``x_coarse``: a Laplacian G's half-resolution image, with its own L_img against the
    area-downsampled photo (the coarse level of the pyramid)."""
    device = x_fake.device
    loss_img = F.mse_loss(x_fake, x_real)
    row = {"phase": "warmup" if warm else "full", "loss_img": loss_img.item()}
    loss = cfg.w_img * loss_img
    if x_coarse is not None:
        loss_coarse = F.mse_loss(x_coarse, F.avg_pool2d(x_real, 2))
        loss = loss + cfg.w_img * loss_coarse
        row["loss_coarse"] = loss_coarse.item()
    if warm:
        return loss, row
    x_seen = x_fake
    if cfg.noise:
        x_seen = x_fake + torch.randn(x_fake.shape, generator=gen).to(device) * cfg.noise_x
    h1_fake = encoder.encode_h1(x_seen)
    loss_h1 = F.mse_loss(h1_fake, h1_real) / scales.h1_var
    loss = loss + cfg.w_h1 * loss_h1
    row["loss_h1"] = loss_h1.item()
    if cfg.w_h > 0 or cfg.w_cls > 0:
        h1_seen = h1_fake
        if cfg.noise:
            h1_seen = h1_fake + torch.randn(h1_fake.shape, generator=gen).to(device) * cfg.noise_rel * scales.h1_mean_abs
        h_fake = encoder.h1_to_h(h1_seen)
        loss_h = F.mse_loss(h_fake, h) / scales.h_var
        row["loss_h"] = loss_h.item()
        if cfg.w_h > 0:
            loss = loss + cfg.w_h * loss_h
        if cfg.w_cls > 0:
            loss_cls = class_output_loss(encoder, h_fake, h)
            loss = loss + cfg.w_cls * loss_cls
            row["loss_cls"] = loss_cls.item()
    g_gan_paused, d_paused = r > 10.0, r < 0.1  # the pausing heuristic of S9.1 on r = lossD / lossG
    loss_gan_g = F.binary_cross_entropy_with_logits(D(x_fake), torch.ones(len(x_fake), device=device))
    if cfg.w_gan > 0 and not g_gan_paused:
        loss = loss + cfg.w_gan * loss_gan_g
    row.update(loss_gan_g=loss_gan_g.item(), g_gan_paused=int(g_gan_paused), d_paused=int(d_paused))
    return loss, row


def discriminator_step(D: nn.Module, opt_d, x_real: torch.Tensor, x_fake: torch.Tensor, paused: bool,
                       amp: bool = False) -> float:
    """One D update on real vs. G's images (one forward, one backward, for DDP); returns L_D.
    ``amp``: the forward pass in bf16 autocast."""
    n = len(x_real)
    with mixed_precision(x_real.device, amp):
        logits = D(torch.cat([x_real, x_fake.detach()])).float()
    targets = torch.cat([torch.ones(n), torch.zeros(n)]).to(x_real.device)
    loss_d = 2 * F.binary_cross_entropy_with_logits(logits, targets)  # = BCE(real) + BCE(fake), batch means
    opt_d.zero_grad(set_to_none=True)
    if not paused:
        loss_d.backward()
        opt_d.step()
    return loss_d.item()
