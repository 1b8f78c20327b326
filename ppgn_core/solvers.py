"""One step of the probability-flow ODE du/dσ = (u − D(u, σ))/σ of a noise-conditional code prior, from
level σ to ``s_next`` (0: the last step, which lands on the denoised estimate). D may be guided (the
condition's push added to the prior's estimate). Used by the denoising step rule (:mod:`ppgn_core.steps`) and by ``priors.sample_codes``.

* :func:`euler` — first order, one evaluation of D a level;
* :func:`heun` — EDM Alg. 1 (Karras et al. 2022): a second evaluation at the next level, averaged;
* :func:`dpmpp2m` — DPM-Solver++(2M) (Lu et al. 2022): second order from the previous level's estimate,
  one evaluation a level. In this parameterisation (u = h + σ·n) its first-order form is Euler's.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

SOLVERS = ("euler", "heun", "dpmpp2m")


def euler(u: torch.Tensor, sigma: float, s_next: float, denoised: torch.Tensor) -> torch.Tensor:
    """u + (s_next − σ)·(u − D)/σ = (s_next/σ)·u + (1 − s_next/σ)·D."""
    return u + (s_next - sigma) / sigma * (u - denoised)


def heun(u: torch.Tensor, sigma: float, s_next: float, denoised: torch.Tensor,
         denoise_next: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Euler's step, corrected by the slope at its end (``denoise_next(u_next)``: D there) unless s_next = 0."""
    u_next = euler(u, sigma, s_next, denoised)
    if s_next == 0:
        return u_next
    d2 = denoise_next(u_next)
    return u + (s_next - sigma) * 0.5 * ((u - denoised) / sigma + (u_next - d2) / s_next)


def dpmpp2m_weights(sigma_prev: float, sigma: float, s_next: float) -> tuple[float, float]:
    """(a, b) with DPM-Solver++(2M)'s estimate a·D + b·D_prev over the step from σ to s_next > 0."""
    r = math.log(sigma_prev / sigma) / math.log(sigma / s_next)
    return 1 + 1 / (2 * r), -1 / (2 * r)


def dpmpp2m(u: torch.Tensor, sigma: float, s_next: float, denoised: torch.Tensor,
            previous: tuple[float, torch.Tensor] | None) -> torch.Tensor:
    """D extrapolated from ``previous`` = (σ, D) of the level before (None at the first level: Euler)."""
    if previous is None or s_next == 0 or previous[0] == sigma or sigma == s_next:  # (equal levels: no slope to extrapolate)
        return euler(u, sigma, s_next, denoised)
    sigma_prev, denoised_prev = previous
    a, b = dpmpp2m_weights(sigma_prev, sigma, s_next)
    extrapolated = a * denoised + b * denoised_prev
    return (s_next / sigma) * u + (1 - s_next / sigma) * extrapolated
