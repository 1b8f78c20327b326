"""The PPGN sampler (paper Eq. 5): batched, seeded, streaming chains over pixels, codes or a Fourier image,

    z ← z + ε1·(prior term) + ε2·(condition term) + N(0, ε3²),

with one run loop (:class:`Sampler`) and the step rule plugged in (:mod:`ppgn_core.steps`: MALA-approx, or a
noise-conditional code prior's levels with DPM-Solver++, Heun or Euler). The condition's part is one
objective, an explicit sum (:class:`ConditionGradient`): ε2·log p(y|x) (a class, a unit, several) +
realism·log D(real|x) − ε4·‖(1−M)⊙(x_real − x)‖² (inpainting context). Settings live in a :class:`Control`
that may change between steps (live sliders) and can stop a chain.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field, replace
from typing import Iterator

import numpy as np
import torch

from .conditions import Condition, InpaintContext, RealismCondition, evaluate, evaluate_robust
from .priors import CodeDenoiser, DiffusionPrior, Prior
from .spaces import Space
from .steps import DenoisingStep, MalaStep

STEP_FORMS = ("eq5", "release")
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
    kept: bool = False  # a finished sample of a chain (denoising: the end of the anneal and of each round)
    sigma: float | None = None  # the step's noise level (denoising rules)

    @classmethod
    def at(cls, t: int, x: torch.Tensor, z: torch.Tensor, out, s: StepSettings, recovered: list[int],
           reset: bool, final: bool = False, kept: bool = False, sigma: float | None = None) -> "Snapshot":
        """The snapshot of step ``t`` from the tensors of that step (detached, on the CPU)."""
        return cls(step=t, image=x.detach().clamp(0, 1).cpu(), z=z.detach().cpu(),
                   p_class=None if out.p_class is None else out.p_class.detach().cpu(),
                   condition=out.objective.detach().cpu(), settings=s,
                   recovered=list(recovered), reset=reset, final=final, kept=kept, sigma=sigma)


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

    #: a function of the gradient wrt z (B×…) returning the one the step uses (research probes: a projection,
    #: a preconditioner), on one sampler's ``condition_gradient`` or on the class for every sampler; None: as it is
    hook = None

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

    def objective(self, out, x: torch.Tensor, raw: torch.Tensor, s: StepSettings) -> torch.Tensor:
        """The sum the condition's term ascends, summed over chains: ε2·log p(y|x) (a class, a hidden unit or a
        weighted product of several; satisfied chains left out with ``at_target="prior"``) + realism·log D(real|x)
        − ε4·‖(1−M)⊙(x_real − G(z))‖² (inpainting context, on the generator's own image)."""
        condition = gated_objective(out, s.p_target) if s.at_target == "prior" else out.objective
        terms = [s.eps2 * condition.sum()]
        if s.realism > 0:
            terms.append(s.realism * self.realism_term().value(x).sum())
        if self.context is not None and s.eps4 > 0:
            terms.append(-s.eps4 * self.context.context_loss(raw).sum())
        return sum(terms[1:], terms[0])

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
                (grad,) = torch.autograd.grad(self.objective(out, x, raw, s), zz)
                if self.hook is not None:
                    grad = self.hook(grad)
        return x.detach(), out, grad


class Sampler:
    """Batched PPGN chains: ``space`` + ``prior`` + ``condition`` (+ inpainting ``context``), stepped by
    ``rule`` (:class:`~ppgn_core.steps.MalaStep` unless given).

    ``seed`` fixes every random draw (a local torch generator; nothing global is touched), so the same seed
    gives the same chains. ``max_abs`` bounds |z| for MALA-approx: a chain whose state becomes non-finite or
    runs past it is put back where the rule says (its last state; a denoising rule: the prior's own estimate)
    and reported."""

    def __init__(self, space: Space, prior: Prior, condition: Condition, control: Control,
                 context: InpaintContext | None = None, seed: int = 0, max_abs: float | None = None,
                 reuse_image: bool = True, realism: RealismCondition | None = None, rule=None):
        self.space, self.prior, self.condition, self.control = space, prior, condition, control
        self.seed = int(seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        # the objective: ε2·log p(y|x) + realism·log D(real|x) − ε4·context (None: no D)
        self.condition_gradient = ConditionGradient(condition, self.gen, context, realism)
        self.np_rng = np.random.default_rng(self.seed)
        self.max_abs = max_abs
        self.rule = (rule if rule is not None else MalaStep(space, prior, reuse_image)).bind(self)
        self.schedule: list[dict] = []  # the settings of every step run
        self.levels: list[float] = []  # the noise level of each step of the last run (denoising rules)
        self.recoveries = 0

    @property
    def context(self) -> InpaintContext | None:
        """The inpainting context (held by the condition's part of the step, which also uses it)."""
        return self.condition_gradient.context

    @property
    def realism(self) -> RealismCondition | None:
        return self.condition_gradient.realism

    @property
    def starts_from_image(self) -> bool:
        """Whether init(start=photo) begins at the photo's code (a denoising rule: with its photo_sigma)."""
        return self.rule.starts_from_image

    @property
    def evaluations(self) -> int:
        """The levels (and Heun's second evaluations) of a denoising rule's last run at which C's gradient was
        taken (0 for MALA-approx, which takes it at every step)."""
        return getattr(self.rule, "evaluations", 0)

    # ---------------------------------------------------------------- starting points
    def init(self, batch: int, device: torch.device | str = "cpu", start: torch.Tensor | None = None) -> torch.Tensor:
        """Where chains start: the rule's random start, or real start images' codes (paper Fig. S13)."""
        return self.rule.init(batch, torch.device(device), start)

    def encode_starts(self, batch: int, device: torch.device | str, start: torch.Tensor) -> torch.Tensor:
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

    def satisfied_chains(self, out, s: StepSettings) -> torch.Tensor | None:
        """The chains that stay put this step (``at_target="stop"`` and p(class) ≥ p_target), or None."""
        return satisfied(out, s.p_target) if s.at_target == "stop" else None

    # ---------------------------------------------------------------- the chain
    def run(self, z0: torch.Tensor, steps: int, snapshot_every: int = 1) -> Iterator[Snapshot]:
        """Run ``steps`` steps from z0, yielding a snapshot at step 0 and every ``snapshot_every`` steps (the
        state the step reads), one with ``kept=True`` after each step that lands on a finished sample, and a
        last one (``final=True``, also when stopped early: then the last finished sample where there is one)."""
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be ≥ 1")
        if not torch.isfinite(z0).all():
            raise ValueError("the starting point has non-finite values")
        rule = self.rule
        z = rule.begin(z0, steps)
        if self.control.settings.realism > 0:
            self.condition_gradient.realism_term()  # a clear error before any step, not midway
        if rule.bad(z).any():
            raise ValueError("the starting point has non-finite or out-of-range values")
        self.levels = []
        t, recovered, reset, last_kept = 0, [], False, None
        while t < steps and not self.control.stopped:
            s = self.control.settings
            plan = rule.plan(t, s)
            z = rule.perturb(z, s, plan)
            reset = reset or plan.reset
            shows = t % snapshot_every == 0
            terms = rule.terms(z, s, plan, shows)
            self.schedule.append({"step": t, **asdict(s)})
            if plan.sigma is not None:
                self.levels.append(plan.sigma)
            if shows:
                yield Snapshot.at(t, terms.x, terms.shown, terms.out, s, recovered, reset, sigma=plan.sigma)
                recovered, reset = [], False
            z_new = rule.update(z, terms, s, plan)
            with torch.no_grad():
                bad = rule.bad(z_new)
                if bad.any():
                    z_new[bad] = rule.fallback(z, terms)[bad]
                    recovered = bad.nonzero().flatten().tolist()
                    self.recoveries += len(recovered)
            z, t = z_new, t + 1
            if plan.finishes and t < steps and not self.control.stopped:
                x, out, code = rule.finished_sample(z, s)
                last_kept = Snapshot.at(t, x, code, out, s, recovered, False, kept=True, sigma=0.0)
                yield last_kept
        if last_kept is not None and not rule.on_sample:  # stopped between samples: the last one finished is the result
            yield replace(last_kept, step=t, final=True, kept=False, recovered=list(recovered))
            return
        s = self.control.settings
        x, out, shown, finished = rule.final(z, s)
        yield Snapshot.at(t, x, shown, out, s, recovered, reset, final=True, kept=finished,
                          sigma=0.0 if finished else None)


def run_to_end(sampler: Sampler, z0: torch.Tensor, steps: int, snapshot_every: int = 1) -> list[Snapshot]:
    """Run a chain and return all its snapshots (the last one is final)."""
    return list(sampler.run(z0, steps, snapshot_every))


def denoising_sampler(space: Space, dae, condition: Condition, control: Control, sigma_max: float = 10.0,
                      sigma_min: float = 0.05, seed: int = 0, realism: RealismCondition | None = None,
                      labels: torch.Tensor | None = None, cfg_scale: float = 0.0,
                      cfg_interval: tuple[float, float] | None = None, context: InpaintContext | None = None,
                      **rule) -> Sampler:
    """A sampler whose prior is a noise-conditional code prior ``dae`` (the latent diffusion prior D(h; σ, y)
    or R_h(h, σ)) and whose step rule is :class:`~ppgn_core.steps.DenoisingStep` (``rule``: its solver,
    churn, guidance_until, guide_every, guide_on, photo_sigma, levels, round_levels). With ``labels`` and
    ``cfg_scale`` w > 0 the prior's estimate is classifier-free guided toward those classes,
    D_∅ + w·(D_y − D_∅) (inside ``cfg_interval`` only where one is given). Not in the paper: Dhariwal &
    Nichol 2021 (classifier guidance), Ho & Salimans 2022 (classifier-free guidance), Karras et al. 2022
    (the levels), Lu et al. 2022 (DPM-Solver++)."""
    prior = DiffusionPrior(dae, CodeDenoiser(dae, labels, cfg_scale, cfg_interval))
    step = DenoisingStep(space, prior, sigma_max, sigma_min, **rule)
    return Sampler(space, prior, condition, control, context=context, seed=seed, realism=realism, rule=step)
