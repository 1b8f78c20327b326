"""Prior terms p(x) / p(h): the ε1 part of the MALA-approx step (paper Eq. 5–7, 11; Sec. S7).

A prior returns a *direction* d(z) in the sampled space such that ``z ← z + ε1·d``:

* :class:`NoPrior` — d = 0: plain activation maximisation, "fooling" images (ε = (0, 1, 0)).
* :class:`GaussianPrior` — d = −(z − μ): L2 decay, DGN-AM's implicit Gaussian prior (Eq. 10).
* :class:`DAEPrior` — d = R(z) − z ≈ σ²·∂log p(z)/∂z (Eq. 6–7): PPGN-x (R_x on pixels) and
  PPGN-h (R_h, a DAE on h: an MLP, paper S9.3, or convolutional for a spatial code; Eq. 11).
* :class:`AnnealedDAEPrior` — the same with a noise-conditional R_h(h, σ) whose σ falls from
  ``sigma_start`` to ``sigma_end`` over the chain (annealed Langevin, Song & Ermon 2019; not in
  the paper).
* :class:`DiffusionPrior` — (D(u; σ) − u)/σ², the score of the latent diffusion prior (or R_h(h, σ)) at the
  step's noise level σ; :func:`sample_codes` draws codes from it alone.
* :class:`JointPrior` — d = E(G(h)) − h: G and E as an autoencoder of h (Joint PPGN-h, Sec. 3.4
  with noise on x, h1 and h; Noiseless Joint PPGN-h, Sec. 3.5 without).
* :class:`ImagePrior` — hand-designed image priors of Sec. S7 (Gaussian blur, total variation),
  applied to the image and carried back to the sampled variable through the parameterisation.
"""

from __future__ import annotations

import math

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

ImageFn = Callable[[torch.Tensor], torch.Tensor]


class Prior:
    """Base class: ``direction(z, to_image, gen)`` returns d with the shape of z."""

    name = "prior"
    needs_grad = False  # True when d comes from autograd through the parameterisation

    def direction(self, z: torch.Tensor, to_image: ImageFn, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def energy(self, z: torch.Tensor, to_image: ImageFn) -> torch.Tensor | None:
        """Per-chain energy whose decrease the prior step aims at, where one is defined."""
        return None

    def set_progress(self, frac: float) -> None:
        """The chain's progress (0 at the first step, 1 at the last); annealed priors follow it."""


class NoPrior(Prior):
    name = "none"

    def direction(self, z, to_image, gen):
        return torch.zeros_like(z)


class GaussianPrior(Prior):
    """L2 decay toward ``center`` (DGN-AM's hand-designed Gaussian p(h); Eq. 10 with ε1 = λ)."""

    name = "gaussian"

    def __init__(self, center: torch.Tensor | float = 0.0):
        self.center = center

    def direction(self, z, to_image, gen):
        return -(z - self.center)

    def energy(self, z, to_image):
        return 0.5 * (z - self.center).pow(2).flatten(1).sum(1)


class DAEPrior(Prior):
    """∂log p(z)/∂z ≈ (R(z) − z)/σ² for a denoising autoencoder R (Eq. 6); σ² is pulled into ε1."""

    name = "dae"

    def __init__(self, dae: nn.Module):
        self.dae = dae.eval()
        for p in self.dae.parameters():
            p.requires_grad_(False)

    def direction(self, z, to_image, gen):
        with torch.no_grad():
            return self.dae(z) - z

    def energy(self, z, to_image):
        with torch.no_grad():
            return (self.dae(z) - z).pow(2).flatten(1).sum(1)


class AnnealedDAEPrior(Prior):
    """d = R(z, σ_t) − z for a noise-conditional R_h; σ_t falls geometrically from ``sigma_start`` to
    ``sigma_end`` (standardised code units) as the chain progresses: early steps see the code
    density blurred by a large noise (broad pulls toward where real codes lie), late steps the
    sharp one (annealed Langevin dynamics, Song & Ermon 2019; not in the paper)."""

    name = "annealed-dae"

    def __init__(self, dae: nn.Module, sigma_start: float, sigma_end: float):
        if not (sigma_start > 0 and sigma_end > 0):
            raise ValueError("the annealed prior's noise levels must be > 0")
        self.dae = dae.eval()
        for p in self.dae.parameters():
            p.requires_grad_(False)
        self.sigma_start, self.sigma_end = float(sigma_start), float(sigma_end)
        self.sigma = self.sigma_start

    def set_progress(self, frac: float) -> None:
        frac = min(1.0, max(0.0, float(frac)))
        self.sigma = self.sigma_start * (self.sigma_end / self.sigma_start) ** frac

    def direction(self, z, to_image, gen):
        with torch.no_grad():
            return self.dae(z, self.sigma) - z

    def energy(self, z, to_image):
        with torch.no_grad():
            return (self.dae(z, self.sigma) - z).pow(2).flatten(1).sum(1)


def noise_levels(steps: int, sigma_max: float, sigma_min: float, rho: float = 7.0) -> list[float]:
    """``steps`` noise levels from σ_max down to σ_min, spaced as in Karras et al. 2022 (ρ = 7)."""
    if steps < 1:
        raise ValueError("steps must be ≥ 1")
    if steps == 1:
        return [sigma_max]
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(a + i / (steps - 1) * (b - a)) ** rho for i in range(steps)]


class CodeDenoiser:
    """D(u, σ), the denoised standardised code of a noise-conditional code prior (R_h(h, σ) or the latent
    diffusion prior); with ``labels`` and ``cfg_scale`` w > 0, classifier-free guided toward those classes,
    D_∅ + w·(D_y − D_∅) (a class-conditional prior only). ``labels``: one class per code, or k classes
    repeated over a multiple of k codes (chains of several classes); w = 0 is the unconditional prior.
    ``cfg_interval`` (lo, hi), with w > 0: w applies only at levels lo < σ ≤ hi; outside them D = D_y, the conditional
    prior in one pass (Kynkäänniemi et al. 2024, guidance in a limited interval)."""

    def __init__(self, dae: nn.Module, labels: torch.Tensor | None = None, cfg_scale: float = 0.0,
                 cfg_interval: tuple[float, float] | None = None):
        if not (math.isfinite(cfg_scale) and 0 <= cfg_scale <= 20):
            raise ValueError(f"the classifier-free guidance scale must lie in 0..20, got {cfg_scale!r}")
        if labels is not None and cfg_scale > 0 and not hasattr(dae, "guided_denoise"):
            raise ValueError("classifier-free guidance needs a class-conditional prior (the code diffusion prior)")
        if cfg_interval is not None:
            lo, hi = (float(v) for v in cfg_interval)
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
                raise ValueError(f"the guidance interval must be (lo, hi) with 0 ≤ lo < hi, got {cfg_interval!r}")
            cfg_interval = (lo, hi)
        self.dae, self.cfg_scale, self.cfg_interval = dae, float(cfg_scale), cfg_interval
        self.labels = None if labels is None or cfg_scale == 0 else torch.as_tensor(labels, dtype=torch.long).view(-1)

    def scale_at(self, sigma: float) -> float:
        """The classifier-free guidance scale w at level σ (1 outside the guidance interval)."""
        if self.cfg_interval is None or self.cfg_interval[0] < float(sigma) <= self.cfg_interval[1]:
            return self.cfg_scale
        return 1.0

    def __call__(self, u: torch.Tensor, sigma: float) -> torch.Tensor:
        if self.labels is None:
            return self.dae.denoise_standardised(u, sigma)
        y = self.labels.to(u.device)
        if y.numel() != u.shape[0]:
            if u.shape[0] % y.numel():
                raise ValueError(f"{y.numel()} class labels for {u.shape[0]} codes")
            y = y.repeat(u.shape[0] // y.numel())
        return self.dae.guided_denoise(u, sigma, y, self.scale_at(sigma))


class DiffusionPrior(Prior):
    """The p(h) term of a noise-conditional code prior (the latent diffusion prior, or R_h(h, σ)) at noise
    level σ: ∂log p_σ(u)/∂u = (D(u; σ) − u)/σ² for the standardised code u, the same role as the DAE terms of
    Eq. 6–7 with σ known instead of pulled into ε1. ``denoise`` is D (:class:`CodeDenoiser`, classifier-free
    guidance included); the level is the step's: the denoising step rule (:mod:`ppgn_core.steps`) reads
    :meth:`score` at it."""

    name = "diffusion"

    def __init__(self, dae: nn.Module, denoise: "CodeDenoiser | None" = None):
        self.dae = dae
        self.denoise = denoise if denoise is not None else CodeDenoiser(dae)

    @staticmethod
    def score(u: torch.Tensor, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
        """(D − u)/σ² for a denoised estimate D of u at level σ."""
        return (denoised - u) / (sigma * sigma)

    def direction(self, z, to_image, gen):
        raise ValueError("the diffusion prior's term needs the step's noise level: sample it with its denoising "
                         "step rule (presets.build_sampler, sampler.denoising_sampler), not MALA-approx steps")


@torch.no_grad()
def sample_codes(dae: nn.Module, n: int, gen: torch.Generator, steps: int = 24, sigma_max: float = 10.0,
                 sigma_min: float = 0.05, device: torch.device | str = "cpu", solver: str = "heun",
                 labels: torch.Tensor | None = None, cfg_scale: float = 0.0,
                 levels: list[float] | None = None) -> torch.Tensor:
    """Codes drawn from a noise-conditional code prior alone (R_h(h, σ) or the latent diffusion prior): start
    from N(0, σ_max²) in standardised units and follow the prior's term down the noise levels to σ_min with the
    sampler's own solver step (:func:`ppgn_core.steps.prior_flow`: Heun, Karras et al. 2022, or
    DPM-Solver++(2M)), landing on the denoised code. ``labels`` and ``cfg_scale`` > 0: classifier-free guidance
    of a class-conditional prior toward those classes. ``levels``: the noise levels to take instead of
    ``steps`` levels from σ_max to σ_min. Seeded by ``gen``."""
    from .steps import prior_flow

    if solver not in ("heun", "dpmpp2m"):
        raise ValueError(f"solver must be heun or dpmpp2m, got {solver!r}")
    levels = noise_levels(steps, sigma_max, sigma_min) if levels is None else list(levels)
    u = torch.randn(n, *dae.code_shape, generator=gen).to(device) * levels[0]
    return dae.unstandardise(prior_flow(CodeDenoiser(dae, labels, cfg_scale), u, levels, solver))


class JointPrior(Prior):
    """R(h) = E(G(h)): the generator and the encoder as one autoencoder of h (Sec. 3.4–3.5).

    For Joint PPGN-h, Gaussian noise of the training levels is added to x and h1 on the way
    (``noise_x`` in pixel units of [0, 1], ``noise_h1`` absolute); Noiseless Joint uses zeros.
    """

    name = "joint"

    def __init__(self, generator: nn.Module, encoder: nn.Module, noise_x: float = 0.0,
                 noise_h1: float = 0.0):
        self.generator, self.encoder = generator, encoder
        self.noise_x, self.noise_h1 = noise_x, noise_h1

    def reconstruct(self, h: torch.Tensor, gen: torch.Generator | None = None,
                    to_image: ImageFn | None = None) -> torch.Tensor:
        """E(G(h)); ``to_image`` (if given) maps h to the image the prior sees (with inpainting, the
        observed pixels clamped), else G(h)."""
        with torch.no_grad():
            x = to_image(h) if to_image is not None else self.generator(h)
            if self.noise_x > 0 and gen is not None:
                x = x + _randn_like(x, gen) * self.noise_x
            h1 = self.encoder.encode_h1(x)
            if self.noise_h1 > 0 and gen is not None:
                h1 = h1 + _randn_like(h1, gen) * self.noise_h1
            return self.encoder.h1_to_h(h1)

    def direction(self, z, to_image, gen):
        return self.reconstruct(z, gen, to_image) - z

    def energy(self, z, to_image):
        return (self.reconstruct(z, None, to_image) - z).pow(2).flatten(1).sum(1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of B×C×H×W images (reflect padding)."""
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    xp = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    xp = F.conv2d(xp, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(xp, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per-image anisotropic total variation (sum of absolute neighbour differences)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1)
    return dh + dw


class ImagePrior(Prior):
    """Hand-designed image priors (Sec. S7): blur (Yosinski et al.) and total variation.

    The blur term is the regulariser r(x) = blur(x) of Eq. 17, i.e. a step toward the blurred
    image; the TV term is −∂TV/∂x (normalised per pixel). Both act on the image and reach the
    sampled variable through the parameterisation by autograd.
    """

    name = "hand-designed"
    needs_grad = True

    def __init__(self, blur_sigma: float = 0.5, blur_weight: float = 1.0, tv_weight: float = 1.0):
        self.blur_sigma, self.blur_weight, self.tv_weight = blur_sigma, blur_weight, tv_weight

    def energy_of_image(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        if self.blur_weight > 0 and self.blur_sigma > 0:
            target = gaussian_blur(x, self.blur_sigma).detach()
            e = e + self.blur_weight * 0.5 * (x - target).pow(2).flatten(1).sum(1)
        if self.tv_weight > 0:
            e = e + self.tv_weight * total_variation(x) / x[0].numel() * 3
        return e

    def direction(self, z, to_image, gen):
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            e = self.energy_of_image(to_image(zz)).sum()
            (g,) = torch.autograd.grad(e, zz)
        return -g

    def energy(self, z, to_image):
        with torch.no_grad():
            return self.energy_of_image(to_image(z))


def _randn_like(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
