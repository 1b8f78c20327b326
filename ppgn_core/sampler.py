"""MALA-approx sampling (paper Eq. 5, 7, 11) over pixels, codes or a Fourier image; batched, seeded,
streaming.

One step over the sampled variable z (x itself, or a code h with image G(h)):

    eq5:      z ← z + ε1·d_prior(z) + ε2·∂log p(y|x(z))/∂z − ε4·∂‖(1−M)⊙(x_real − x(z))‖²/∂z + N(0, ε3²)
    release:  d = ε1·d_prior + ε2·∂log p/∂z − ε4·∂ctx/∂z;  z ← z + lr_t·scale·d/mean|d| + N(0, ε3²)

where ``release`` is the original code's normalised step (lr_t linear from lr to lr_end, in
units of the code's own spread ``scale``). With ``prior_conflict="project"`` (not in the paper)
the ε1 term first loses its component along the condition's gradient where the two point apart.
z is then clamped to its range. Settings live in a
:class:`Control` that may change between steps (live sliders) and can stop a chain.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field, replace
from typing import Iterator

import numpy as np
import torch

from . import solvers
from .conditions import Condition, InpaintContext, RealismCondition, evaluate, evaluate_robust
from .priors import Prior
from .spaces import Space

STEP_FORMS = ("eq5", "release")
#: where guided denoising takes the condition's gradient: wrt the noisy state (through the prior) or the denoised code
GUIDE_ON = ("noisy", "denoised")
PRIOR_CONFLICT = ("keep", "project")
AT_TARGET = ("prior", "stop")  # what a chain does once p(class) reached p_target
MAX_ROBUST_K = 16


@dataclass(frozen=True)
class StepSettings:
    """The ε of Eq. 5 (ε4: inpainting context, Sec. S10) and the step form."""

    eps1: float = 1e-5
    eps2: float = 1.0
    eps3: float = 1e-17
    eps4: float = 0.0
    step_form: str = "release"
    lr: float = 0.1
    lr_end: float = 0.1
    eps1_end: float | None = None  # None: constant ε1; else ε1 goes linearly to this by the last step
    prior_conflict: str = "keep"  # "project": drop the part of the prior term that opposes the condition
    jitter: int = 0  # random shift (pixels) of the image the condition sees (Sec. S7)
    reset_every: int = 0  # MFV schedule: restart chains from new random codes every N steps
    robust_k: int = 0  # > 0: the condition's gradient averaged over this many random views of x (EOT)
    robust_blur: float = 0.0  # σ (pixels) of an extra blur in each robust view; 0 = none
    realism: float = 0.0  # weight of log D(real|x), the GAN discriminator as a second condition; 0 = off
    p_target: float = 1.0  # a chain whose p(class) under C reaches this is satisfied (1 = never)
    at_target: str = "prior"  # a satisfied chain: "prior" (no condition term, the prior alone) or "stop" (stays put)

    def validate(self) -> "StepSettings":
        optional = ("eps1_end",) if self.eps1_end is not None else ()  # None: no ε1 schedule
        for name in ("eps1", "eps2", "eps3", "eps4", "lr", "lr_end", "realism", *optional):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        for name in ("eps1", "eps3", "eps4", "lr", "lr_end", "realism", *optional):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.prior_conflict not in PRIOR_CONFLICT:
            raise ValueError(f"prior_conflict must be one of {PRIOR_CONFLICT}, got {self.prior_conflict!r}")
        if self.step_form not in STEP_FORMS:
            raise ValueError(f"step_form must be one of {STEP_FORMS}, got {self.step_form!r}")
        if self.jitter < 0 or self.reset_every < 0:
            raise ValueError("jitter and reset_every must be ≥ 0")
        if not isinstance(self.robust_k, int) or not 0 <= self.robust_k <= MAX_ROBUST_K:
            raise ValueError(f"robust_k must be an integer in 0..{MAX_ROBUST_K}, got {self.robust_k!r}")
        if not isinstance(self.p_target, (int, float)) or not 0 < self.p_target <= 1:
            raise ValueError(f"p_target must be a probability in (0, 1], got {self.p_target!r}")
        if self.at_target not in AT_TARGET:
            raise ValueError(f"at_target must be one of {AT_TARGET}, got {self.at_target!r}")
        if not isinstance(self.robust_blur, (int, float)) or not 0 <= self.robust_blur <= 3:
            raise ValueError(f"robust_blur must be a number in 0..3 pixels, got {self.robust_blur!r}")
        return self

    def step_sizes(self, lr: float) -> dict[str, float]:
        """``lr`` and ``lr_end`` for a step size a user picked: this schedule's decay kept in
        proportion (a constant step stays constant)."""
        ratio = self.lr_end / self.lr if self.lr > 0 else 1.0
        return {"lr": lr, "lr_end": lr * ratio}


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


class Control:
    """Thread-safe live settings and a stop flag, shared by a running chain and its UI."""

    def __init__(self, settings: StepSettings):
        self._settings = settings.validate()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @property
    def settings(self) -> StepSettings:
        with self._lock:
            return self._settings

    def update(self, **changes) -> StepSettings:
        """Change some settings; they take effect at the next step."""
        with self._lock:
            self._settings = replace(self._settings, **changes).validate()
            return self._settings

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


@dataclass
class Snapshot:
    """The state of all chains at one step (image, z, p(y=c|x), condition value)."""

    step: int
    image: torch.Tensor  # B×3×H×W in [0, 1], on the CPU
    z: torch.Tensor  # B×…, on the CPU
    p_class: torch.Tensor | None  # B
    condition: torch.Tensor  # B (the objective ε2 ascends)
    settings: StepSettings
    recovered: list[int] = field(default_factory=list)  # chains reverted this step (non-finite)
    reset: bool = False
    final: bool = False

    @classmethod
    def at(cls, t: int, x: torch.Tensor, z: torch.Tensor, out, s: StepSettings, recovered: list[int],
           reset: bool, final: bool = False) -> "Snapshot":
        """The snapshot of step ``t`` from the tensors of that step (detached, on the CPU)."""
        return cls(step=t, image=x.detach().clamp(0, 1).cpu(), z=z.detach().cpu(),
                   p_class=None if out.p_class is None else out.p_class.detach().cpu(),
                   condition=out.objective.detach().cpu(), settings=s,
                   recovered=list(recovered), reset=reset, final=final)


def satisfied(out, p_target: float) -> torch.Tensor | None:
    """The stopping rule's mask: per chain, whether p(class) reached ``p_target`` (the condition as
    a constraint, not a quantity to push forever; not in the paper); None when no chain can be
    (p_target 1, or no class condition)."""
    if p_target >= 1 or out.p_class is None:
        return None
    return out.p_class.detach() >= p_target


def gated_objective(out, p_target: float) -> torch.Tensor:
    """The condition's objective without the satisfied chains: they follow the prior alone until
    p falls below the target again (``at_target="prior"``)."""
    done = satisfied(out, p_target)
    return out.objective if done is None else torch.where(done, torch.zeros_like(out.objective), out.objective)


class ConditionGradient:
    """The condition's part of a step: ∂/∂z of ε2·log p(y|x(z)) (over K robust views of a jittered
    x when ``robust_k`` > 0; satisfied chains gated out with ``at_target="prior"``), plus the
    realism term log D(real|x) and minus the inpainting context loss on the generator's own image.
    ``raw_image(z)`` is that image; with a context, C and D see it with the observed pixels clamped.
    ``gen`` is the sampler's generator, so the views and jitter are seeded with the chain."""

    def __init__(self, condition: Condition, gen: torch.Generator,
                 context: InpaintContext | None = None, realism: RealismCondition | None = None):
        self.condition, self.gen = condition, gen
        self.context, self.realism = context, realism

    def _jitter(self, x: torch.Tensor, amount: int) -> torch.Tensor:
        if amount <= 0:
            return x
        dy, dx = (int(v) for v in torch.randint(-amount, amount + 1, (2,), generator=self.gen))
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))

    def realism_term(self) -> RealismCondition:
        if self.realism is None:
            raise ValueError("realism > 0 needs a discriminator D in the model bundle (this bundle has none)")
        return self.realism

    def __call__(self, z: torch.Tensor, raw_image, s: StepSettings, need_grad: bool):
        """(x(z), the condition's output, the gradient wrt z or None); ``raw_image`` maps z to the
        generator's image (one pass of G serves C, D and the context term)."""
        with torch.enable_grad() if need_grad else torch.no_grad():
            zz = z.detach().requires_grad_(need_grad)
            raw = raw_image(zz)
            x = raw if self.context is None else self.context.clamp(raw)
            if need_grad and s.robust_k > 0:
                out = evaluate_robust(self.condition, self._jitter(x, s.jitter), s.robust_k, self.gen, s.robust_blur)
            else:
                out = evaluate(self.condition, self._jitter(x, s.jitter) if need_grad else x)
            grad = None
            if need_grad:
                total = s.eps2 * (gated_objective(out, s.p_target) if s.at_target == "prior" else out.objective).sum()
                if s.realism > 0:
                    total = total + s.realism * self.realism_term().value(x).sum()
                if self.context is not None and s.eps4 > 0:
                    total = total - s.eps4 * self.context.context_loss(raw).sum()
                (grad,) = torch.autograd.grad(total, zz)
        return x.detach(), out, grad


class Sampler:
    """Batched MALA-approx chains: ``space`` + ``prior`` + ``condition`` (+ inpainting ``context``).

    ``seed`` fixes every random draw (a local torch generator; nothing global is touched), so
    the same seed gives the same chains. ``max_abs`` bounds |z|: a chain whose state becomes
    non-finite or runs past it is reverted to its last good state and reported.
    """

    starts_from_image = True  # init(start=photo) begins at the photo's code (guided denoising: see its photo_sigma)

    def __init__(self, space: Space, prior: Prior, condition: Condition, control: Control,
                 context: InpaintContext | None = None, seed: int = 0, max_abs: float | None = None,
                 reuse_image: bool = True, realism: RealismCondition | None = None):
        self.space, self.prior, self.condition, self.control = space, prior, condition, control
        self.reuse_image = reuse_image  # the prior reuses x(z) from the condition pass (False: recompute; bench)
        self.seed = int(seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        # realism: log D(real|x), weighted by StepSettings.realism (None: no D)
        self.condition_gradient = ConditionGradient(condition, self.gen, context, realism)
        self.np_rng = np.random.default_rng(self.seed)
        self.max_abs = max_abs
        self.schedule: list[dict] = []
        self.recoveries = 0

    @property
    def context(self) -> InpaintContext | None:
        """The inpainting context (held by the condition's part of the step, which also uses it)."""
        return self.condition_gradient.context

    @property
    def realism(self) -> RealismCondition | None:
        return self.condition_gradient.realism

    # ---------------------------------------------------------------- starting points
    def init(self, batch: int, device: torch.device | str = "cpu", start: torch.Tensor | None = None) -> torch.Tensor:
        """Random starts, or E(start) for real start images (paper Fig. S13)."""
        device = torch.device(device)
        if start is not None:
            return self.space.clamp(self._encode_starts(batch, device, start))
        return self.space.init(batch, self.gen, device)

    def _encode_starts(self, batch: int, device: torch.device | str, start: torch.Tensor) -> torch.Tensor:
        """E(start) for real start images, one image repeated over ``batch`` chains where one is given."""
        z = self.space.encode(start.to(device))
        if z.shape[0] == 1 and batch > 1:
            z = z.expand(batch, *z.shape[1:]).clone()
        return z

    def init_for_photo(self, batch: int, device: torch.device | str, photo: torch.Tensor) -> torch.Tensor:
        """Where a run on ``photo`` (inpainting) starts: at its code where the sampler can start from an image,
        else from noise (the photo then steers through the inpainting context only). When inpainting, the
        photo is the context's own, read as ``InpaintContext.hidden`` (the region to fill replaced: filled from
        its surroundings, or grey): the pixels under the mask are what the run must fill, never an input."""
        if self.context is not None:
            photo = self.context.hidden
        return self.init(batch, device, start=photo if self.starts_from_image else None)

    def image(self, z: torch.Tensor) -> torch.Tensor:
        """x(z), with observed pixels clamped when inpainting."""
        x = self.space.to_image(z)
        return self.context.clamp(x) if self.context is not None else x

    # ---------------------------------------------------------------- one step
    def _evaluate(self, z: torch.Tensor, s: StepSettings, need_grad: bool):
        return self.condition_gradient(z, self.space.to_image, s, need_grad)

    def step_direction(self, z: torch.Tensor, grad_term: torch.Tensor, s: StepSettings, t: int,
                       steps: int, x: torch.Tensor | None = None) -> torch.Tensor:
        """The deterministic part of the update (without noise). ``x`` is the image of z already
        computed for the condition term; the prior reuses it instead of running G again."""
        d = grad_term
        frac = t / max(1, steps - 1)
        eps1 = s.eps1 if s.eps1_end is None else _linear(s.eps1, s.eps1_end, frac)
        if eps1 != 0:
            self.prior.set_progress(frac)
            to_image = self.image
            if x is not None and self.reuse_image and not self.prior.needs_grad:
                to_image = lambda zz: x if zz is z else self.image(zz)  # noqa: E731
            prior_term = eps1 * self.prior.direction(z, to_image, self.gen)
            if s.prior_conflict == "project":
                prior_term = drop_conflict(prior_term, grad_term)
            d = d + prior_term
        if s.step_form == "eq5":
            return d
        lr_t = _linear(s.lr, s.lr_end, frac)
        norm = d.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, *([1] * (d.dim() - 1)))
        return lr_t * self.space.step_scale * d / norm

    def _bad(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(1)
        bad = ~torch.isfinite(flat).all(1)
        if self.max_abs is not None:
            bad |= flat.abs().amax(1).nan_to_num(float("inf")) > self.max_abs
        return bad

    # ---------------------------------------------------------------- the chain
    def run(self, z0: torch.Tensor, steps: int, snapshot_every: int = 1) -> Iterator[Snapshot]:
        """Run ``steps`` steps from z0, yielding a snapshot at step 0, every ``snapshot_every``
        steps, and at the end (``final=True``, also when stopped early)."""
        if steps < 0:
            raise ValueError("steps must be ≥ 0")
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be ≥ 1")
        z = self.space.clamp(z0.detach().clone())
        if self.control.settings.realism > 0:
            self.condition_gradient.realism_term()  # a clear error before any step, not midway
        if self._bad(z).any():
            raise ValueError("the starting point has non-finite or out-of-range values")
        last_good = z.clone()
        t = 0
        recovered: list[int] = []
        reset = False
        while t < steps and not self.control.stopped:
            s = self.control.settings
            if s.reset_every and t > 0 and t % s.reset_every == 0:
                z = self.space.init(z.shape[0], self.gen, z.device)
                reset = True
            x, out, grad = self._evaluate(z, s, need_grad=True)
            self.schedule.append({"step": t, **{k: v for k, v in asdict(s).items()}})
            if t % snapshot_every == 0:
                yield Snapshot.at(t, x, z, out, s, recovered, reset)
                recovered, reset = [], False
            with torch.no_grad():
                dz = self.step_direction(z, grad, s, t, steps, x)
                if s.eps3 > 0:
                    dz = dz + s.eps3 * torch.randn(z.shape, generator=self.gen).to(z.device)
                done = satisfied(out, s.p_target) if s.at_target == "stop" else None
                if done is not None:
                    dz[done.to(dz.device)] = 0  # satisfied chains stay where they are
                z_new = z + dz
                z_new = self.space.clamp(z_new)
                bad = self._bad(z_new)
                if bad.any():
                    z_new[bad] = last_good[bad]
                    recovered = bad.nonzero().flatten().tolist()
                    self.recoveries += len(recovered)
                z = z_new
                last_good = z.clone()
            t += 1
        s = self.control.settings
        x, out, _ = self._evaluate(z, s, need_grad=False)
        yield Snapshot.at(t, x, z, out, s, recovered, reset, final=True)


def run_to_end(sampler: Sampler, z0: torch.Tensor, steps: int, snapshot_every: int = 1) -> list[Snapshot]:
    """Run a chain and return all its snapshots (the last one is final)."""
    return list(sampler.run(z0, steps, snapshot_every))


class LevelGuidance:
    """What the condition says at one noise level of guided denoising: the prior's denoised code D of the
    state u (``denoise``), G's image of it, the condition's output and its gradient, and that gradient
    as the push g/rms(g) the sampler scales by ε2·σ. ``guide_on``: ``"noisy"`` takes g wrt the state u,
    back through the prior (Chung et al. 2023); ``"denoised"`` takes it wrt D itself (He et al. 2024,
    manifold-preserving guidance): no backward pass through the prior, and the push acts where the
    prior's estimate is."""

    def __init__(self, denoise, dae, space: Space, condition_gradient: ConditionGradient, guide_on: str = "noisy"):
        if guide_on not in GUIDE_ON:
            raise ValueError(f"guide_on must be one of {GUIDE_ON}, got {guide_on!r}")
        self.denoise, self.dae, self.space = denoise, dae, space
        self.condition_gradient, self.guide_on = condition_gradient, guide_on

    def code_of(self, d: torch.Tensor) -> torch.Tensor:
        """G's input for a standardised code: in the code's units, clamped to its range."""
        return self.space.clamp(self.dae.unstandardise(d))

    def _image(self, d: torch.Tensor) -> torch.Tensor:
        return self.space.to_image(self.code_of(d))

    def read(self, u: torch.Tensor, s: StepSettings, sigma: float, guide: bool = True):
        """(x, the condition's output, its gradient (zeros when not ``guide``), D). D comes from the
        condition's own pass, not computed again for the step and the snapshot."""
        if self.guide_on == "denoised":
            with torch.no_grad():
                d = self.denoise(u, sigma)
            x, out, grad = self.condition_gradient(d, self._image, s, need_grad=guide)
            return x, out, (grad if guide else torch.zeros_like(u)), d
        denoised: list[torch.Tensor] = []

        def image(uu: torch.Tensor) -> torch.Tensor:
            denoised.append(self.denoise(uu, sigma))
            return self._image(denoised[-1])

        x, out, grad = self.condition_gradient(u, image, s, need_grad=guide)
        return x, out, (grad if guide else torch.zeros_like(u)), denoised[-1].detach()

    def push(self, u: torch.Tensor, s: StepSettings, sigma: float, guide: bool = True):
        """(x, the condition's output, the push g/rms(g) (zeros where g is), D)."""
        x, out, grad, d = self.read(u, s, sigma, guide)
        with torch.no_grad():
            rms = grad.pow(2).flatten(1).mean(1).sqrt().view(-1, *([1] * (u.dim() - 1)))
            return x, out, torch.where(rms > 0, grad / rms.clamp_min(1e-30), torch.zeros_like(grad)), d


class GuidedDenoisingSampler(Sampler):
    """Guided denoising of a noise-conditional code prior (not in the paper; Dhariwal & Nichol 2021 for
    classifier guidance, Ho & Salimans 2022 for classifier-free guidance, Karras et al. 2022 for the
    sampler, Lu et al. 2022 for DPM-Solver++, Chung et al. 2023 for reading the condition on the
    denoised estimate). The prior is R_h(h, σ) or the latent diffusion prior D(h; σ, y). The state u is
    the standardised code plus noise of level σ; the chain's ``steps`` are noise levels σ_max → σ_min.
    At each: D = the prior's denoised code (with ``labels`` and ``cfg_scale`` w > 0 for a class-conditional
    prior: D_∅ + w·(D_y − D_∅), at levels inside ``cfg_interval`` only where one is given), the image
    x = G(D), the condition's gradient g = ∂(ε2·log p(y|x))/∂u (robust views, jitter, stopping gate and
    realism as in MALA-approx), the guided estimate D' = D + ε2·σ·g/rms(g), and a step of the
    probability-flow ODE du/dσ = (u − D')/σ by ``solver`` (:mod:`ppgn_core.solvers`: euler, heun with
    2·steps − 1 evaluations, dpmpp2m). Most of each image comes from the prior's own density of codes;
    the condition only steers it, by at most ε2·σ per element at level σ. Snapshots report
    the denoised code D (what G draws) as z. ε1 and ε3 are not used.

    ``churn`` γ > 0 makes the chain stochastic (Karras et al. 2022, Alg. 2): before each level but
    the last, fresh noise raises σ to σ(1 + γ). ``guidance_until``: below this σ the condition no
    longer steers (no gradient is taken there): the finest levels are the prior's alone.
    ``guide_every`` n > 1: the condition's gradient is taken at every n-th level only (the first
    included); a level between keeps the last taken direction g/rms(g), scaled by its own ε2·σ, so
    it costs one pass of the prior alone (and G and C forward where a snapshot is due).
    ``guide_on``: where g is taken, wrt u through the prior or wrt D (:class:`LevelGuidance`).

    Inpainting (``context``): C sees G(D) with the observed pixels clamped, and −ε4·‖(1−M)⊙(x_real − G(D))‖²
    joins the condition's objective before its gradient is normalised, so the surroundings steer every
    level as the class does (guidance on the denoised estimate, as Chung et al. 2023 do for inverse
    problems).

    ``photo_sigma``: where a run may start from a photo (inpainting, a start image): the photo's code E(x),
    standardised, plus noise of level ``photo_sigma``, from which the levels run down to σ_min (SDEdit,
    Meng et al. 2022); the photo's content above that level of detail is kept, the rest drawn again.
    None: every run starts from noise at σ_max, and the photo steers through the inpainting context only."""

    def __init__(self, space: Space, dae, condition: Condition, control: Control, sigma_max: float = 10.0,
                 sigma_min: float = 0.05, seed: int = 0, realism: RealismCondition | None = None,
                 churn: float = 0.0, guidance_until: float = 0.0, solver: str = "euler",
                 labels: torch.Tensor | None = None, cfg_scale: float = 0.0,
                 context: InpaintContext | None = None, guide_every: int = 1, guide_on: str = "noisy",
                 cfg_interval: tuple[float, float] | None = None, photo_sigma: float | None = None):
        from .priors import CodeDenoiser, NoPrior

        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if not (0 <= churn <= 1 and guidance_until >= 0):
            raise ValueError(f"need 0 ≤ churn ≤ 1 and guidance_until ≥ 0, got {churn}, {guidance_until}")
        if solver not in solvers.SOLVERS:
            raise ValueError(f"solver must be one of {solvers.SOLVERS}, got {solver!r}")
        if not (isinstance(guide_every, int) and guide_every >= 1):
            raise ValueError(f"guide_every must be a whole number ≥ 1, got {guide_every!r}")
        if photo_sigma is not None and not (sigma_min < photo_sigma and math.isfinite(photo_sigma)):
            raise ValueError(f"photo_sigma must be a finite level above sigma_min = {sigma_min:g}, got {photo_sigma}")
        if guide_every > 1 and solver == "heun":
            raise ValueError("guide_every > 1 reuses the last gradient between levels; Heun's second evaluation "
                             "is guided afresh, so use euler or dpmpp2m")
        super().__init__(space, NoPrior(), condition, control, context=context, seed=seed, realism=realism)
        self.dae, self.sigma_max, self.sigma_min = dae, float(sigma_max), float(sigma_min)
        self.photo_sigma = None if photo_sigma is None else float(photo_sigma)
        self.start_sigma = self.sigma_max  # the first level of the next run: σ_max, or photo_sigma after a photo start
        self.churn, self.guidance_until, self.solver = float(churn), float(guidance_until), solver
        # D(u, σ): the prior's denoised standardised code, and what the condition says of it at a level
        self.guidance = LevelGuidance(CodeDenoiser(dae, labels, cfg_scale, cfg_interval), dae, space,
                                      self.condition_gradient, guide_on)
        self.guide_every = guide_every
        self.levels: list[float] = []  # the noise level of each step of the last run
        self.evaluations = 0  # the levels of the last run at which the condition's gradient was taken

    @property
    def starts_from_image(self) -> bool:  # type: ignore[override]
        return self.photo_sigma is not None

    def init(self, batch: int, device: torch.device | str = "cpu", start: torch.Tensor | None = None) -> torch.Tensor:
        """Noise of level σ_max, or for real ``start`` images (with ``photo_sigma``) their standardised codes
        plus noise of level ``photo_sigma``; the next run begins at that level."""
        noise = torch.randn(batch, *self.dae.code_shape, generator=self.gen).to(device)
        if start is None:
            self.start_sigma = self.sigma_max
            return noise * self.sigma_max
        if self.photo_sigma is None:
            raise ValueError("this guided denoising preset starts from noise; it cannot start from an image "
                             "(use one with photo_sigma, or a MALA-approx preset such as ppgn-h)")
        u = self.dae.standardise(self._encode_starts(batch, device, start))
        if u.shape[0] != batch:
            raise ValueError(f"{u.shape[0]} start images for {batch} chains")
        self.start_sigma = self.photo_sigma
        return u + noise * self.photo_sigma

    @property
    def denoise(self):
        """D(u, σ): the prior's denoised standardised code (classifier-free guidance included)."""
        return self.guidance.denoise

    def _code_of(self, d: torch.Tensor) -> torch.Tensor:
        return self.guidance.code_of(d)

    def denoised_code(self, u: torch.Tensor, sigma: float) -> torch.Tensor:
        """G's input for state u at level σ: the denoised code in the code's units, clamped to its range."""
        return self._code_of(self.denoise(u, sigma))

    def _guided(self, u: torch.Tensor, s: StepSettings, sigma: float):
        """(x, the condition's output, the push g/rms(g), D the prior's own) at level σ: the guided estimate
        is D + ε2·σ·push."""
        self.evaluations += 1
        return self.guidance.push(u, s, sigma, guide=sigma >= self.guidance_until)

    def _reusing(self, u: torch.Tensor, s: StepSettings, sigma: float, push: torch.Tensor, snapshot: bool):
        """A level between two gradients (``guide_every`` > 1): the prior's D, and x and the condition's
        output (no gradient) only when a snapshot shows them; the push is the last one taken."""
        if snapshot:
            x, out, _, d = self.guidance.read(u, s, sigma, guide=False)
        else:
            with torch.no_grad():
                x, out, d = None, None, self.denoise(u, sigma)
        return x, out, (push if sigma >= self.guidance_until else torch.zeros_like(push)), d

    def run(self, z0: torch.Tensor, steps: int, snapshot_every: int = 1) -> Iterator[Snapshot]:
        from .priors import noise_levels

        if steps < 1:
            raise ValueError("guided denoising needs steps ≥ 1 (one per noise level)")
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be ≥ 1")
        if not torch.isfinite(z0).all():
            raise ValueError("the starting point has non-finite values")
        if self.control.settings.realism > 0:
            self.condition_gradient.realism_term()
        levels = self.levels = noise_levels(steps, self.start_sigma, self.sigma_min)  # the step's σ, not a setting
        u, recovered, t = z0.detach().clone(), [], 0
        self.evaluations = 0
        previous: tuple[float, torch.Tensor] | None = None  # (σ, D') of the last level (DPM-Solver++(2M))
        push: torch.Tensor | None = None  # the last level's g/rms(g) (reused between gradients: guide_every)
        while t < steps and not self.control.stopped:
            s, sigma = self.control.settings, levels[t]
            if self.churn > 0 and t + 1 < steps:
                raised = sigma * (1 + self.churn)
                u = u + (raised ** 2 - sigma ** 2) ** 0.5 * torch.randn(u.shape, generator=self.gen).to(u.device)
                sigma = raised
            shows = t % snapshot_every == 0
            if push is None or t % self.guide_every == 0:
                x, out, push, d = self._guided(u, s, sigma)
            else:
                x, out, push, d = self._reusing(u, s, sigma, push, shows)
            target = d + s.eps2 * sigma * push
            self.schedule.append({"step": t, **asdict(s)})
            if shows:
                yield Snapshot.at(t, x, self._code_of(d), out, s, recovered, False)
                recovered = []
            s_next = levels[t + 1] if t + 1 < steps else 0.0
            u_new = self._solver_step(u, sigma, s_next, target, previous, s)
            previous = (sigma, target)
            with torch.no_grad():
                bad = ~torch.isfinite(u_new.flatten(1)).all(1)
                if bad.any():
                    u_new[bad] = d[bad]  # fall back to the unguided denoised code
                    recovered = bad.nonzero().flatten().tolist()
                    self.recoveries += len(recovered)
            u = u_new
            t += 1
        s = self.control.settings
        final_sigma = levels[t] if t < steps else None  # stopped early: still noisy, denoise at its level
        with torch.no_grad():
            code = self._code_of(u) if final_sigma is None else self.denoised_code(u, final_sigma)
        x, out, _ = self.condition_gradient(code, self.space.to_image, s, need_grad=False)
        yield Snapshot.at(t, x, code, out, s, recovered, False, final=True)

    def _solver_step(self, u: torch.Tensor, sigma: float, s_next: float, target: torch.Tensor,
                     previous: tuple[float, torch.Tensor] | None, s: StepSettings) -> torch.Tensor:
        """u at level ``s_next`` from u at σ with guided estimate ``target`` (s_next = 0: the estimate)."""
        if self.solver == "heun":  # the second evaluation is guided too, so it needs the gradient
            def guided_next(v: torch.Tensor) -> torch.Tensor:
                _, _, push, d = self._guided(v, s, s_next)
                return d + s.eps2 * s_next * push

            return solvers.heun(u, sigma, s_next, target, guided_next).detach()
        with torch.no_grad():
            if self.solver == "dpmpp2m":
                return solvers.dpmpp2m(u, sigma, s_next, target, previous)
            return solvers.euler(u, sigma, s_next, target)
