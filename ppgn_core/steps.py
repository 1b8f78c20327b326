"""Step rules: how one step of the sampler's loop (:class:`ppgn_core.sampler.Sampler`) reads the terms of
Eq. 5 at the state z and applies them,

    z ← z + ε1·(prior term) + ε2·(condition term) + N(0, ε3²).

* :class:`MalaStep` — MALA-approx (paper Eq. 5, 7, 11) over pixels, codes or a Fourier image, as written
  (``step_form="eq5"``) or as the original code's normalised step (``"release"``: the sum of the ε1 and ε2
  terms scaled to a mean |Δz| of lr_t·(the code's spread), lr_t linear from lr to lr_end).
* :class:`DenoisingStep` — a noise-conditional code prior (the latent diffusion prior, or R_h(h, σ)) as a
  PPGN chain over the standardised code u. Each step sits at a noise level σ and goes to the next σ'; its
  prior term is the prior's score (D(u; σ) − u)/σ² (:class:`~ppgn_core.priors.DiffusionPrior`) and its
  condition term C's gradient normalised to unit RMS. With ε1 = 1 a step is the prior's probability-flow ODE
  from σ to σ' (the solver: Euler, Heun or DPM-Solver++(2M) in :mod:`ppgn_core.solvers`), steered by C by
  ε2·σ per element. The chain anneals from σ_max to σ_min over its first ``levels`` steps and lands on a
  sample; from then on each round noises the last sample to level ε3 (the N(0, ε3²) term) and runs
  ``round_levels`` levels from ε3 back down, so the chain keeps a new sample every ``round_levels`` steps
  without starting over from noise.

A rule is bound to one sampler (its condition gradient and random generator) and keeps the state of one run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from . import solvers
from .priors import CodeDenoiser, DiffusionPrior, Prior, noise_levels
from .spaces import Space

#: where guided denoising takes the condition's gradient: wrt the noisy state (through the prior) or the denoised code
GUIDE_ON = ("noisy", "denoised")


def drop_conflict(term: torch.Tensor, against: torch.Tensor) -> torch.Tensor:
    """Per chain, remove from ``term`` its component along ``against`` where the two point apart
    (negative inner product), so the prior never pulls straight against the condition's gradient.
    Not in the paper: the projection of multi-task "gradient surgery" (Yu et al. 2020, PCGrad)."""
    t, a = term.flatten(1), against.flatten(1)
    dot = (t * a).sum(1, keepdim=True)
    coef = torch.where(dot < 0, dot / (a * a).sum(1, keepdim=True).clamp_min(1e-30), torch.zeros_like(dot))
    return (t - coef * a).view_as(term)


def _linear(start: float, end: float, frac: float) -> float:
    """A schedule value: ``start`` at frac 0, ``end`` at frac 1 (the release's step-size decay)."""
    return start + (end - start) * frac


def _per_chain(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def unit_rms(g: torch.Tensor) -> torch.Tensor:
    """g/rms(g) per chain (zeros where g is zero)."""
    rms = _per_chain(g.pow(2).flatten(1).mean(1).sqrt(), g)
    return torch.where(rms > 0, g / rms.clamp_min(1e-30), torch.zeros_like(g))


@dataclass
class Plan:
    """What one step is: its index, the chain's progress (0 → 1 over the run), and for a denoising rule its
    noise level σ, the next level σ' (0: the step lands on a sample) and the noise it adds first."""

    t: int
    frac: float
    sigma: float | None = None
    sigma_next: float | None = None
    noise: float = 0.0
    reset: bool = False
    guide: bool = True  # whether this step takes C's gradient afresh

    @property
    def finishes(self) -> bool:
        """Whether the state after this step is a finished sample."""
        return self.sigma_next == 0.0


@dataclass
class Terms:
    """What a step reads at the state z: the image and the condition's output (for the snapshot), the
    prior's and the condition's terms, and what the snapshot reports as z."""

    x: torch.Tensor | None
    out: object | None  # conditions.ConditionOutput
    prior: torch.Tensor
    condition: torch.Tensor
    shown: torch.Tensor
    denoised: torch.Tensor | None = None  # denoising: D(u; σ), the prior's own estimate (the fallback)


class MalaStep:
    """MALA-approx: prior term d_prior(z) (the prior's direction), condition term ∂(ε2·log p(y|x(z)) +
    realism·log D(real|x) − ε4·context)/∂z (the objective, :class:`~ppgn_core.sampler.ConditionGradient`),
    noise N(0, ε3²) after. ``prior_conflict="project"`` drops the part of the prior term that opposes the
    condition's gradient; satisfied chains (``at_target="stop"``) stay put; ``reset_every`` restarts chains
    from fresh random codes (the release's multifaceted visualisation)."""

    name = "mala-approx"
    starts_from_image = True  # init(start=photo) begins at the photo's code

    def __init__(self, space: Space, prior: Prior, reuse_image: bool = True):
        self.space, self.prior, self.reuse_image = space, prior, reuse_image
        #: what the condition reads of z: the image x(z) (research probes may read the code itself)
        self.condition_image = space.to_image
        self.sampler = None

    def bind(self, sampler) -> "MalaStep":
        self.sampler = sampler
        return self

    # ------------------------------------------------------------- a run
    def init(self, batch: int, device: torch.device, start: torch.Tensor | None) -> torch.Tensor:
        """Random starts, or E(start) for real start images (paper Fig. S13)."""
        if start is not None:
            return self.space.clamp(self.sampler.encode_starts(batch, device, start))
        return self.space.init(batch, self.sampler.gen, device)

    def begin(self, z0: torch.Tensor, steps: int) -> torch.Tensor:
        if steps < 0:
            raise ValueError("steps must be ≥ 0")
        self.steps = steps
        return self.space.clamp(z0.detach().clone())

    def plan(self, t: int, s) -> Plan:
        return Plan(t, t / max(1, self.steps - 1), reset=bool(s.reset_every and t > 0 and t % s.reset_every == 0))

    def perturb(self, z: torch.Tensor, s, plan: Plan) -> torch.Tensor:
        """MFV: fresh random codes at a reset step."""
        return self.space.init(z.shape[0], self.sampler.gen, z.device) if plan.reset else z

    def eps1_at(self, s, plan: Plan) -> float:
        return s.eps1 if s.eps1_end is None else _linear(s.eps1, s.eps1_end, plan.frac)

    def terms(self, z: torch.Tensor, s, plan: Plan, shows: bool = True) -> Terms:
        x, out, grad = self.sampler.condition_gradient(z, self.condition_image, s, need_grad=True)
        prior = torch.zeros_like(z)
        if self.eps1_at(s, plan) != 0:
            self.prior.set_progress(plan.frac)
            to_image = self.sampler.image
            if self.reuse_image and not self.prior.needs_grad:
                to_image = lambda zz: x if zz is z else self.sampler.image(zz)  # noqa: E731
            prior = self.prior.direction(z, to_image, self.sampler.gen)
        return Terms(x, out, prior, grad, z)

    def update(self, z: torch.Tensor, terms: Terms, s, plan: Plan) -> torch.Tensor:
        """z + the step; the three terms one line each."""
        d = self.eps1_at(s, plan) * terms.prior  # ε1: the prior's pull
        if s.prior_conflict == "project":
            d = drop_conflict(d, terms.condition)
        d = d + terms.condition  # ε2: ε2·∂log p(y|x)/∂z (the realism and context terms at their own weights)
        if s.step_form == "release":  # the sum scaled to a mean |Δz| of lr_t × the code's spread
            norm = _per_chain(d.abs().flatten(1).mean(1).clamp_min(1e-12), d)
            d = _linear(s.lr, s.lr_end, plan.frac) * self.space.step_scale * d / norm
        if s.eps3 > 0:
            d = d + s.eps3 * torch.randn(z.shape, generator=self.sampler.gen).to(z.device)  # ε3: N(0, ε3²)
        done = self.sampler.satisfied_chains(terms.out, s)
        if done is not None:
            d[done.to(d.device)] = 0  # satisfied chains stay where they are
        return self.space.clamp(z + d)

    on_sample = False  # a MALA-approx chain keeps no finished samples (its samples are its snapshots)

    def bad(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(1)
        bad = ~torch.isfinite(flat).all(1)
        if self.sampler.max_abs is not None:
            bad |= flat.abs().amax(1).nan_to_num(float("inf")) > self.sampler.max_abs
        return bad

    def fallback(self, z: torch.Tensor, terms: Terms) -> torch.Tensor:
        """Where a chain whose new state is bad goes: back to its state before the step."""
        return z

    def final(self, z: torch.Tensor, s):
        """(x, the condition's output, z reported, whether it is a kept sample) of the state a run ends in; a
        MALA-approx chain marks none as kept (its samples are its snapshots)."""
        x, out, _ = self.sampler.condition_gradient(z, self.space.to_image, s, need_grad=False)
        return x, out, z, False


class LevelSchedule:
    """The noise levels of a denoising chain: ``levels`` steps from the start level to σ_min (None: all the run's
    steps), landing on a sample; then rounds of ``round_levels`` from ε3 (read as each round starts, so a slider
    moved during a round applies to the next) down to σ_min, each starting from the last sample noised to ε3.
    ``churn`` γ > 0 raises each level but a segment's last to σ(1 + γ) with fresh noise (Karras et al. 2022)."""

    def __init__(self, sigma_min: float, levels: int | None, round_levels: int, churn: float):
        for name, v in (("levels", levels), ("round_levels", round_levels)):
            if v is not None and not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name} must be a whole number ≥ 1, got {v!r}")
        self.sigma_min, self.levels, self.round_levels, self.churn = sigma_min, levels, round_levels, churn

    def begin(self, steps: int, start_sigma: float) -> None:
        first = steps if self.levels is None else min(steps, self.levels)
        self.segment, self.i = noise_levels(first, start_sigma, self.sigma_min), 0

    @property
    def finished(self) -> bool:
        """Whether the last level taken landed on a sample."""
        return self.i == len(self.segment)

    @property
    def level(self) -> float:
        """The level the chain's state is at (before the next step)."""
        return self.segment[self.i]

    def next(self, eps3: float) -> tuple[float, float, float, bool]:
        """(σ, σ' (0: the step lands on a sample), the noise to add first, whether a new round starts)."""
        noise, fresh = 0.0, False
        if self.finished:
            # ε3 at or below σ_min: the round stays at σ_min (ε3 = 0: the chain keeps its sample)
            self.segment = (noise_levels(self.round_levels, eps3, self.sigma_min) if eps3 > self.sigma_min
                            else [self.sigma_min] * self.round_levels)
            self.i, noise, fresh = 0, float(eps3), True
        sigma = self.segment[self.i]
        self.i += 1
        last = self.finished
        if self.churn > 0 and not last:
            raised = sigma * (1 + self.churn)
            noise, sigma = (noise ** 2 + raised ** 2 - sigma ** 2) ** 0.5, raised
        return sigma, 0.0 if last else self.segment[self.i], noise, fresh


class LevelReader:
    """What the condition says at a level σ: the prior's denoised code D of the state u, G's image of it, the
    condition's output and its gradient as the unit-RMS push. ``guide_on="noisy"`` takes the gradient wrt u
    through the prior (Chung et al. 2023), ``"denoised"`` wrt D (He et al. 2024: no pass back through the
    prior); below ``guidance_until`` C does not steer; ``guide_every`` n > 1: a step that takes no fresh
    gradient reuses the last push (and runs G and C only where a snapshot shows them)."""

    def __init__(self, prior: DiffusionPrior, space: Space, guidance_until: float, guide_every: int, guide_on: str):
        if not (isinstance(guide_every, int) and guide_every >= 1):
            raise ValueError(f"guide_every must be a whole number ≥ 1, got {guide_every!r}")
        if guide_on not in GUIDE_ON:
            raise ValueError(f"guide_on must be one of {GUIDE_ON}, got {guide_on!r}")
        self.prior, self.space = prior, space
        self.guidance_until, self.guide_every, self.guide_on = float(guidance_until), guide_every, guide_on
        self.objective = None  # the sampler's ConditionGradient (bound by the step rule)
        self.push: torch.Tensor | None = None
        self.evaluations = 0

    def code_of(self, d: torch.Tensor) -> torch.Tensor:
        """G's input for a standardised code: in the code's units, clamped to its range."""
        return self.space.clamp(self.prior.dae.unstandardise(d))

    def _image(self, d: torch.Tensor) -> torch.Tensor:
        return self.space.to_image(self.code_of(d))

    def _gradient(self, u: torch.Tensor, s, sigma: float, guide: bool):
        """(x, out, ∂objective/∂u with ε2 = 1 (zeros when not ``guide``), D); D comes from the condition's pass."""
        s1 = s if s.eps2 == 1.0 else _with_eps2_one(s)
        if self.guide_on == "denoised":
            with torch.no_grad():
                d = self.prior.denoise(u, sigma)
            x, out, grad = self.objective(d, self._image, s1, need_grad=guide)
            return x, out, (grad if guide else torch.zeros_like(u)), d
        denoised: list[torch.Tensor] = []

        def image(uu: torch.Tensor) -> torch.Tensor:
            denoised.append(self.prior.denoise(uu, sigma))
            return self._image(denoised[-1])

        x, out, grad = self.objective(u, image, s1, need_grad=guide)
        return x, out, (grad if guide else torch.zeros_like(u)), denoised[-1].detach()

    def read(self, u: torch.Tensor, s, sigma: float, fresh: bool, shows: bool = True):
        """(x, out, D, push) at level σ: push = g/rms(g) taken afresh, or the last one."""
        steer = sigma >= self.guidance_until
        if fresh or self.push is None:
            self.evaluations += 1
            x, out, grad, d = self._gradient(u, s, sigma, guide=steer)
            with torch.no_grad():
                self.push = unit_rms(grad)  # the one normalisation of C's term: ε2 is then in units of σ
            return x, out, d, self.push
        if shows:
            x, out, _, d = self._gradient(u, s, sigma, guide=False)
        else:
            with torch.no_grad():
                x, out, d = None, None, self.prior.denoise(u, sigma)
        return x, out, d, (self.push if steer else torch.zeros_like(self.push))


def level_estimate(z: torch.Tensor, denoised: torch.Tensor, push: torch.Tensor, s, sigma: float) -> torch.Tensor:
    """The clean code a denoising step at level σ heads for, u + ε1·(D − u) + ε2·σ·push, written so that ε1 = 1
    is the prior's own estimate D bit for bit. A step toward it over the level, u' = u + (1 − σ'/σ)·(estimate −
    u), is Δu = (σ − σ')·[ε1·σ·∂log p_σ(u)/∂u + ε2·push]: Eq. 5's two terms with the ODE's step size."""
    target = denoised + (s.eps1 - 1) * (denoised - z)  # ε1: the prior's pull, D − u = σ²·∂log p_σ(u)/∂u
    return target + s.eps2 * sigma * push  # ε2: C's push, ε2·σ per element (RMS) over the level


def _check_denoising(sigma_min, sigma_max, churn, guidance_until, solver, photo_sigma, guide_every) -> None:
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if not (0 <= churn <= 1 and guidance_until >= 0):
        raise ValueError(f"need 0 ≤ churn ≤ 1 and guidance_until ≥ 0, got {churn}, {guidance_until}")
    if solver not in solvers.SOLVERS:
        raise ValueError(f"solver must be one of {solvers.SOLVERS}, got {solver!r}")
    if photo_sigma is not None and not (sigma_min < photo_sigma and math.isfinite(photo_sigma)):
        raise ValueError(f"photo_sigma must be a finite level above sigma_min = {sigma_min:g}, got {photo_sigma}")
    if guide_every != 1 and solver == "heun":
        raise ValueError("guide_every > 1 reuses the last gradient between levels; Heun's second evaluation "
                         "is guided afresh, so use euler or dpmpp2m")


class DenoisingStep:
    """A noise-conditional code prior as a PPGN chain (see the module's text): the levels of a
    :class:`LevelSchedule`, the condition read by a :class:`LevelReader`, a ``solver`` step per level (euler,
    heun, dpmpp2m). ``photo_sigma``: a run on a photo starts from its code noised to that level (SDEdit,
    Meng et al. 2022); None: from noise only."""

    name = "denoising"

    def __init__(self, space: Space, prior: DiffusionPrior, sigma_max: float = 10.0, sigma_min: float = 0.05,
                 solver: str = "euler", churn: float = 0.0, guidance_until: float = 0.0, guide_every: int = 1,
                 guide_on: str = "noisy", photo_sigma: float | None = None, levels: int | None = None,
                 round_levels: int = 12):
        _check_denoising(sigma_min, sigma_max, churn, guidance_until, solver, photo_sigma, guide_every)
        self.space, self.prior, self.solver, self.churn = space, prior, solver, float(churn)
        self.sigma_max, self.sigma_min = float(sigma_max), float(sigma_min)
        self.photo_sigma = None if photo_sigma is None else float(photo_sigma)
        self.start_sigma = self.sigma_max  # the first level of the next run: σ_max, or photo_sigma after a photo start
        self.schedule = LevelSchedule(self.sigma_min, levels, round_levels, self.churn)
        self.reader = LevelReader(prior, space, guidance_until, guide_every, guide_on)
        self.sampler = None

    def bind(self, sampler) -> "DenoisingStep":
        self.sampler, self.reader.objective = sampler, sampler.condition_gradient
        return self

    @property
    def denoise(self) -> CodeDenoiser:
        return self.prior.denoise

    @property
    def evaluations(self) -> int:
        """The levels of the last run (and Heun's second evaluations) at which C's gradient was taken."""
        return self.reader.evaluations

    @property
    def starts_from_image(self) -> bool:
        return self.photo_sigma is not None

    def init(self, batch: int, device: torch.device, start: torch.Tensor | None) -> torch.Tensor:
        """Noise of level σ_max, or for real ``start`` images (with ``photo_sigma``) their standardised codes
        plus noise of level ``photo_sigma``; the next run begins at that level."""
        dae = self.prior.dae
        noise = torch.randn(batch, *dae.code_shape, generator=self.sampler.gen).to(device)
        if start is None:
            self.start_sigma = self.sigma_max
            return noise * self.sigma_max
        if self.photo_sigma is None:
            raise ValueError("this guided denoising preset starts from noise; it cannot start from an image "
                             "(use one with photo_sigma, or a MALA-approx preset such as ppgn-h)")
        u = dae.standardise(self.sampler.encode_starts(batch, device, start))
        if u.shape[0] != batch:
            raise ValueError(f"{u.shape[0]} start images for {batch} chains")
        self.start_sigma = self.photo_sigma
        return u + noise * self.photo_sigma

    def begin(self, z0: torch.Tensor, steps: int) -> torch.Tensor:
        if steps < 1:
            raise ValueError("guided denoising needs steps ≥ 1 (one per noise level)")
        self.steps = steps
        self.schedule.begin(steps, self.start_sigma)
        self._previous: tuple[float, torch.Tensor] | None = None  # (σ, estimate) of the last level (DPM-Solver++)
        self.reader.push, self.reader.evaluations = None, 0
        return z0.detach().clone()

    def plan(self, t: int, s) -> Plan:
        sigma, s_next, noise, new_round = self.schedule.next(float(s.eps3))
        if new_round:
            self._previous = None
        return Plan(t, t / max(1, self.steps - 1), sigma, s_next, noise, guide=t % self.reader.guide_every == 0)

    def perturb(self, z: torch.Tensor, s, plan: Plan) -> torch.Tensor:
        """ε3: a round starts from the last sample noised to level ε3 (and churn raises a level the same way)."""
        if plan.noise > 0:
            z = z + plan.noise * torch.randn(z.shape, generator=self.sampler.gen).to(z.device)
        return z

    def terms(self, z: torch.Tensor, s, plan: Plan, shows: bool = True) -> Terms:
        x, out, d, push = self.reader.read(z, s, plan.sigma, plan.guide, shows)
        with torch.no_grad():
            prior = DiffusionPrior.score(z, plan.sigma, d)
        return Terms(x, out, prior, push, self.reader.code_of(d), d)

    def update(self, z: torch.Tensor, terms: Terms, s, plan: Plan) -> torch.Tensor:
        """z at the next level σ' by the solver, toward the level's :func:`level_estimate` (ε1's and ε2's terms;
        ε3's noise: :meth:`perturb`, at the next round's first step)."""
        sigma, s_next = plan.sigma, plan.sigma_next
        target = level_estimate(z, terms.denoised, terms.condition, s, sigma)
        if self.solver == "heun":  # the second evaluation is guided too, so it needs the gradient
            def target_next(v: torch.Tensor) -> torch.Tensor:
                _, _, d2, push2 = self.reader.read(v, s, s_next, fresh=True, shows=False)
                return level_estimate(v, d2, push2, s, s_next)

            return solvers.heun(z, sigma, s_next, target, target_next).detach()
        with torch.no_grad():
            if self.solver == "dpmpp2m":
                z_next = solvers.dpmpp2m(z, sigma, s_next, target, self._previous)
            else:
                z_next = solvers.euler(z, sigma, s_next, target)
        self._previous = (sigma, target)
        return z_next

    @property
    def on_sample(self) -> bool:
        """Whether the state is a finished sample (the last step landed on one)."""
        return self.schedule.finished

    def bad(self, z: torch.Tensor) -> torch.Tensor:
        return ~torch.isfinite(z.flatten(1)).all(1)

    def fallback(self, z: torch.Tensor, terms: Terms) -> torch.Tensor:
        """Where a chain whose new state is not finite goes: the prior's own (unguided) denoised code."""
        return terms.denoised

    def finished_sample(self, z: torch.Tensor, s):
        """(x, the condition's output, the code) of the sample a finishing step landed on."""
        code = self.reader.code_of(z)
        x, out, _ = self.sampler.condition_gradient(code, self.space.to_image, s, need_grad=False)
        return x, out, code

    def final(self, z: torch.Tensor, s):
        """The state a run ends in: the sample it landed on, or (stopped between levels) its denoised code at
        the level it reached, which is not a finished sample."""
        if self.on_sample:
            return (*self.finished_sample(z, s), True)
        with torch.no_grad():
            code = self.reader.code_of(self.denoise(z, self.schedule.level))
        x, out, _ = self.sampler.condition_gradient(code, self.space.to_image, s, need_grad=False)
        return x, out, code, False


def _with_eps2_one(s):
    return replace(s, eps2=1.0)


@torch.no_grad()
def prior_flow(denoise, u: torch.Tensor, levels: list[float], solver: str = "heun") -> torch.Tensor:
    """The prior's term alone (ε1 = 1, ε2 = ε3 = 0) followed down ``levels`` to the denoised code: the
    probability-flow ODE du/dσ = (u − D(u; σ))/σ by Heun's method or DPM-Solver++(2M)."""
    previous = None
    for i, s in enumerate(levels):
        s_next = levels[i + 1] if i + 1 < len(levels) else 0.0
        d = denoise(u, s)
        if solver == "heun":
            u = solvers.heun(u, s, s_next, d, lambda v, s_next=s_next: denoise(v, s_next))
        else:
            u, previous = solvers.dpmpp2m(u, s, s_next, d, previous), (s, d)
    return u
