"""Probes of the default preset's precision (the judge's realism figure) on the 32 held-out classes
of the re-tuning, 2 chains × 60 steps, seed 7 (batch k seeded 7000 + k, 16 chains a batch). None of
them changes the shipped sampler; they ask where the samples' realism could come from.

python experiments/precision_probes.py default OUT.json --condition-size 160   # C sees the images at 160 px
python experiments/precision_probes.py polish OUT.json      # post-chain variants of the final codes
python experiments/precision_probes.py precondition OUT.json [--power 1]
python experiments/precision_probes.py realstart OUT.json   # chains start from real photos' codes
python experiments/precision_probes.py score OUT.json --score-dae runs/NAME [--variant start|anneal ...]
python experiments/precision_probes.py guided OUT.json --score-dae runs/NAME|assets --guidance W [--levels 60]
        [--churn G] [--guidance-until S]
python experiments/precision_probes.py photostart OUT.json --score-dae assets --guidance 1 --sigma-max S --levels L
python experiments/precision_probes.py codecond OUT.json --eps1 E [--p-target P]   # C read on the code h itself

``default``: the default preset as shipped, judged at steps 0, 20, 40, 60; with ``--condition-size``
(any probe) the condition network C sees G's 128-px images resized to that side instead of its own
224 px (the judge is untouched): C's cost falls with the square of the side.
``polish``: run the default preset, then judge the final codes and, from them, h ← clamp(R_h(h))
1/3/10/30 times, h ← E(G(h)) once and twice, and h pulled toward the code mean (0.8, 0.6).
``precondition``: the default preset with the condition's step multiplied, at every location of
the 8×8 code, by the real codes' channel covariance (112×112, from E's codes of 4 training photos a
class, raised to ``--power``, mean diagonal 1), judged at steps 0, 20, 40, 60.
``realstart``: the default preset with every chain started from E(x) of a real training photo of
another class (one seeded draw) instead of a random code: the ceiling of a perfect sampler of p(h)
as the start, judged at steps 0, 20, 40, 60.
``score``: with a noise-conditional R_h (``train hdae --dae-arch score``): ``start`` runs the
default preset from codes drawn from that R_h alone (:func:`sample_codes`; step 0 judges those
unconditional samples), ``anneal`` also replaces the prior by the annealed one (σ from
``--sigma-start`` to ``--sigma-end``, ε1 ``--eps1``), ``gauss-anneal`` the annealed prior from the
default random start.
``guided``: classifier guidance of the noise-conditional R_h's probability-flow ODE (Dhariwal &
Nichol 2021, with the class read on the denoised code's image as in Chung et al. 2023): at each of
``--levels`` noise levels σ, D = R(u, σ), the condition's gradient g = ∂log p(c|G(D))/∂u (over the
robust views), D' = D + W·σ·g/rms(g), and an Euler step of du/dσ = (u − D')/σ; judged on G(D) at
levels 0, 20, 40 and at the end (σ_min's denoised code). ``--churn`` re-noises each level (σ → σ(1 + G),
Karras et al. 2022); ``--guidance-until`` leaves the levels below σ = S to R_h alone; ``--score-dae
assets`` uses the shipped R_h(h, σ).
``codecond``: the default preset with the class read on the code h itself, by Lite0's blocks above E's
code layer (``LiteEncoder.h_to_logits``), instead of on C(G(h)): the condition's gradient never passes
through G or the pixels, so it cannot write pixel patterns, and a step skips G and C's 224-px pass.
ε1 ``--eps1``, the stopping rule at ``--p-target``; no robust views (they are views of an image);
judged on G of the codes at steps 0, 20, 40, 60.
"""

import argparse
import contextlib
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ppgn_core.cli import set_condition_size  # noqa: E402
from ppgn_core.conditions import ClassCondition, evaluate  # noqa: E402
from ppgn_core.data import IMAGENET_1K_ROOT, cached_images, to_float  # noqa: E402
from ppgn_core.evaluate import Judge  # noqa: E402
from ppgn_core.judge import real_reference  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.presets import build_sampler, get_preset, make_prior, make_space  # noqa: E402
from tune_heldout import judged_row, tuning_classes  # noqa: E402

PRESET, STEPS, BATCH, SEED = "ppgn-h", 60, 16, 7


def chains(bundle, targets, step_hook=None, every: int = STEPS, starts: torch.Tensor | None = None,
           prior=None, preset=PRESET, steps: int = STEPS, classifier_of=None, on_code: bool = False,
           **overrides) -> dict[int, list]:
    """The default preset's snapshots by step, batch k seeded SEED·1000 + k: the batches and seeds of
    ``evaluate.run_preset_on_classes``, which keeps neither the codes nor a hook on the step.
    ``classifier_of(k)``: the class condition's network for batch k (default: C); ``on_code``: the
    condition pass sees the code z itself instead of its image G(z)."""
    snaps: dict[int, list] = {}
    for k, lo in enumerate(range(0, len(targets), BATCH)):
        tb = targets[lo:lo + BATCH]
        clf = bundle.classifier if classifier_of is None else classifier_of(k)
        s = build_sampler(preset, bundle, ClassCondition(clf, tb), seed=SEED * 1000 + k, **overrides)
        if prior is not None:
            s.prior = prior
        if prior is not None:
            s.rule.prior = prior
        if on_code:
            s.rule.condition_image = lambda zz: zz
        s.condition_gradient.hook = step_hook
        z0 = s.init(len(tb)) if starts is None else starts[lo:lo + BATCH]
        for sn in s.run(z0, steps, every):
            snaps.setdefault(sn.step, []).append(sn)
    return snaps


class CodeClassifier(torch.nn.Module):
    """Lite0's blocks above E's code layer as a classifier of codes h (for a ClassCondition)."""

    name = "lite0 above h"

    def __init__(self, encoder, noise: float = 0.0, views: int = 1, std=1.0, seed: int = SEED):
        super().__init__()
        self.encoder, self.noise, self.views = encoder, noise, views
        self.std = torch.as_tensor(std, dtype=torch.float32)
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Logits of h; with ``noise`` > 0, log of the class probabilities averaged over ``views``
        copies of h with Gaussian noise of ``noise`` code standard deviations added (randomised
        smoothing: only a class that survives the noise counts)."""
        if self.noise <= 0:
            return self.encoder.h_to_logits(h)
        noisy = torch.cat([h + self.noise * self.std * torch.randn(h.shape, generator=self.gen)
                           for _ in range(self.views)])
        logp = torch.log_softmax(self.encoder.h_to_logits(noisy), dim=1).view(self.views, len(h), -1)
        return torch.logsumexp(logp, dim=0) - math.log(self.views)

    @contextlib.contextmanager
    def capture(self, layers):
        if layers:
            raise ValueError("the code classifier exposes no hidden layers")
        yield {}


def code_condition_chains(bundle, targets, eps1: float, p_target: float, noise: float = 0.0,
                          views: int = 1) -> dict[int, list]:
    """``chains`` with the class condition read on h by :class:`CodeClassifier`: the sampler's
    condition pass sees the code itself (no G, no C), its prior is the preset's R_h."""
    return chains(bundle, targets, every=20, eps1=eps1, robust_k=0, p_target=p_target, on_code=True,
                  classifier_of=lambda k: CodeClassifier(bundle.encoder, noise, views, bundle.code_std,
                                                         SEED * 1000 + k).eval())


def by_step(snaps: dict[int, list]) -> dict[str, tuple]:
    """Images and C's p(class) of every chain, by the step they were taken at (``chains``' output)."""
    return {f"step {t}": (torch.cat([s.image for s in sn]), torch.cat([s.p_class for s in sn]))
            for t, sn in snaps.items()}


@torch.no_grad()
def images_of(bundle, h):
    return torch.cat([bundle.generator(h[i:i + 32]).clamp(0, 1) for i in range(0, len(h), 32)])


@torch.no_grad()
def p_class(bundle, x, targets):
    """p(class) under C, as the sampler's snapshots report it for plain images."""
    return torch.cat([evaluate(ClassCondition(bundle.classifier, targets[i:i + 32]), x[i:i + 32]).p_class
                      for i in range(0, len(x), 32)])


def polish(bundle, targets) -> dict[str, torch.Tensor]:
    z = torch.cat([sn.z for sn in chains(bundle, targets)[STEPS]])
    preset = get_preset(PRESET)
    r_h, space = make_prior(preset, bundle).dae, make_space(preset, bundle)
    variants = {"final": z}
    with torch.no_grad():
        h = z.clone()
        for n in range(1, 31):
            h = space.clamp(r_h(h))
            if n in (1, 3, 10, 30):
                variants[f"rh{n}"] = h.clone()
        h = z.clone()
        for n in (1, 2):
            h = space.clamp(bundle.encoder(images_of(bundle, h)))
            variants[f"eg{n}"] = h.clone()
        mean = torch.as_tensor(bundle.code_mean)
        for a in (0.8, 0.6):
            variants[f"trunc{a}"] = space.clamp(mean + a * (z - mean))
    return {name: images_of(bundle, h) for name, h in variants.items()}


def channel_covariance(bundle) -> torch.Tensor:
    images, _ = cached_images(IMAGENET_1K_ROOT / "train", 128, per_class=4)
    with torch.no_grad():
        h = torch.cat([bundle.encoder(to_float(images[i:i + 64])) for i in range(0, len(images), 64)])
    v = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
    return torch.cov(v.T)


def precondition(bundle, targets, power: float) -> dict[str, tuple]:
    evals, evecs = torch.linalg.eigh(channel_covariance(bundle))
    evals = evals.clamp_min(1e-6 * evals.max())
    P = evecs @ torch.diag(evals ** power) @ evecs.T
    P = P / torch.diag(P).mean()
    snaps = chains(bundle, targets, lambda g: torch.einsum("dc,bchw->bdhw", P, g), every=20)
    return by_step(snaps)


def real_starts(bundle, targets) -> torch.Tensor:
    """E(x) of one training photo per chain, drawn (seed SEED) from the classes other than its target."""
    images, labels = cached_images(IMAGENET_1K_ROOT / "train", 128, per_class=4)
    g = torch.Generator().manual_seed(SEED)
    picks = []
    for t in targets.tolist():
        while True:
            i = int(torch.randint(0, len(labels), (1,), generator=g))
            if int(labels[i]) != t:
                picks.append(i)
                break
    with torch.no_grad():
        return torch.cat([bundle.encoder(to_float(images[picks[i:i + 32]])) for i in range(0, len(picks), 32)])


def default(bundle, targets) -> dict[str, tuple]:
    snaps = chains(bundle, targets, every=20)
    return by_step(snaps)


def realstart(bundle, targets) -> dict[str, tuple]:
    snaps = chains(bundle, targets, every=20, starts=real_starts(bundle, targets))
    return by_step(snaps)


def codecond(bundle, targets, args) -> dict[str, tuple]:
    snaps = code_condition_chains(bundle, targets, args.eps1, args.p_target, args.code_noise, args.robust_k)
    return {f"step {t}": (images_of(bundle, torch.cat([s.z for s in sn])), torch.cat([s.p_class for s in sn]))
            for t, sn in snaps.items()}


def load_score_dae(bundle, run: str):
    """A noise-conditional R_h from a training run folder (its config.json and checkpoint.pt), or the
    bundle's own for ``assets``."""
    from ppgn_core.nets.daes import build_code_dae

    if run == "assets":
        return bundle.score_dae
    cfg = json.loads((Path(run) / "config.json").read_text())["model"]
    dae = build_code_dae(cfg, tuple(cfg["code_shape"]))
    dae.load_state_dict(torch.load(Path(run) / "checkpoint.pt", map_location="cpu", weights_only=True)["model"])
    return dae.eval()


def score(bundle, targets, args) -> dict[str, tuple]:
    from ppgn_core.priors import AnnealedDAEPrior, sample_codes

    dae = load_score_dae(bundle, args.score_dae)
    space = make_space(get_preset(PRESET), bundle)
    starts = None
    if args.variant != "gauss-anneal":
        starts = space.clamp(sample_codes(dae, len(targets), torch.Generator().manual_seed(SEED), args.ode_steps,
                                          args.sigma_max, args.sigma_min))
    prior, overrides = None, {}
    if args.variant in ("anneal", "gauss-anneal"):
        prior, overrides = AnnealedDAEPrior(dae, args.sigma_start, args.sigma_end), {"eps1": args.eps1}
    snaps = chains(bundle, targets, every=20, starts=starts, prior=prior, **overrides)
    return by_step(snaps)


def guided(bundle, targets, args, start_codes: torch.Tensor | None = None) -> dict[str, tuple]:
    """The shipped guided-ppgn-h sampler with a run's noise-conditional R_h and guidance ``W``; with
    ``start_codes``, every chain starts from that code (standardised) plus noise of level ``--sigma-max``."""
    dae = bundle.score_dae = load_score_dae(bundle, args.score_dae)
    preset = replace(get_preset("guided-ppgn-h"), sigma_start=args.sigma_max, sigma_end=args.sigma_min,
                     churn=args.churn, guidance_until=args.guidance_until)
    starts = None
    if start_codes is not None:
        noise = torch.randn(start_codes.shape, generator=torch.Generator().manual_seed(SEED))
        starts = dae.standardise(start_codes) + args.sigma_max * noise
    snaps = chains(bundle, targets, every=20, preset=preset, steps=args.levels, eps2=args.guidance,
                   robust_k=args.robust_k, starts=starts)
    return {("end" if t == args.levels else f"level {t}"): (torch.cat([s.image for s in sn]),
                                                            torch.cat([s.p_class for s in sn]))
            for t, sn in snaps.items()}


def photostart(bundle, targets, args) -> dict[str, tuple]:
    """guided-ppgn-h started part-way (SDEdit, Meng et al. 2022): every chain's state is the
    standardised code of a real training photo of another class (``real_starts``) plus noise of level
    ``--sigma-max``, and the ``--levels`` levels run from there to σ_min. At a large enough σ this is an
    exact draw from the training codes' noised density, where R_h's coarse levels only approximate it."""
    return guided(bundle, targets, args, start_codes=real_starts(bundle, targets))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("probe", choices=["default", "polish", "precondition", "realstart", "score", "guided", "codecond", "photostart"])
    ap.add_argument("out")
    ap.add_argument("--power", type=float, default=1.0)
    ap.add_argument("--score-dae", default=None, help="run folder of a noise-conditional R_h (score)")
    ap.add_argument("--variant", default="start", choices=["start", "anneal", "gauss-anneal"])
    ap.add_argument("--ode-steps", type=int, default=24)
    ap.add_argument("--sigma-max", type=float, default=10.0)
    ap.add_argument("--sigma-min", type=float, default=0.05)
    ap.add_argument("--sigma-start", type=float, default=1.0)
    ap.add_argument("--sigma-end", type=float, default=0.1)
    ap.add_argument("--eps1", type=float, default=1e-3)
    ap.add_argument("--guidance", type=float, default=0.5)
    ap.add_argument("--levels", type=int, default=60)
    ap.add_argument("--robust-k", type=int, default=2)
    ap.add_argument("--churn", type=float, default=0.0, help="guided: noise raising σ to σ(1 + churn) per level")
    ap.add_argument("--guidance-until", type=float, default=0.0, help="guided: the condition steers only while σ ≥ this")
    ap.add_argument("--code-noise", type=float, default=0.0,
                    help="codecond: noise (code std units) of the smoothed code classifier, over --robust-k copies")
    ap.add_argument("--p-target", type=float, default=0.999, help="codecond: the stopping rule's p(class)")
    ap.add_argument("--condition-size", type=int, default=None, help="the side C sees (default: its own, 224)")
    args = ap.parse_args()
    bundle, judge = load_bundle(), Judge()
    set_condition_size(bundle, args.condition_size)
    reference = real_reference(judge)
    targets = torch.tensor([c for c in tuning_classes(32) for _ in range(2)])
    t0 = time.time()
    if args.probe == "polish":
        judged = {name: (x, p_class(bundle, x, targets)) for name, x in polish(bundle, targets).items()}
    elif args.probe == "default":
        judged = default(bundle, targets)
    elif args.probe == "realstart":
        judged = realstart(bundle, targets)
    elif args.probe == "score":
        judged = score(bundle, targets, args)
    elif args.probe == "guided":
        judged = guided(bundle, targets, args)
    elif args.probe == "codecond":
        judged = codecond(bundle, targets, args)
    elif args.probe == "photostart":
        judged = photostart(bundle, targets, args)
    else:
        judged = precondition(bundle, targets, args.power)
    rows = {}
    for name, (x, p) in judged.items():
        rows[name] = judged_row(judge, x, targets, reference, p)
        print(name, {k: round(v, 3) for k, v in rows[name].items() if isinstance(v, float)}, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(out.read_text()) if out.exists() else {}
    name = args.probe
    if args.probe == "score":
        name = (f"score-{args.variant} ode{args.ode_steps} σ{args.sigma_max:g}→{args.sigma_min:g}"
                + (f" anneal σ{args.sigma_start:g}→{args.sigma_end:g} ε1 {args.eps1:g}" if "anneal" in args.variant else ""))
    elif args.probe == "photostart":
        name = (f"photostart W{args.guidance:g} {args.levels} levels σ{args.sigma_max:g}→{args.sigma_min:g} "
                f"K{args.robust_k} ({args.score_dae})")
    elif args.probe == "guided":
        name = (f"guided W{args.guidance:g} {args.levels} levels σ{args.sigma_max:g}→{args.sigma_min:g} "
                f"K{args.robust_k}" + (f" churn {args.churn:g}" if args.churn else "")
                + (f" guidance σ≥{args.guidance_until:g}" if args.guidance_until else "") + f" ({args.score_dae})")
    elif args.probe == "codecond":
        name = f"codecond ε1 {args.eps1:g} p≥{args.p_target:g}" + (
            f" noise {args.code_noise:g}×{args.robust_k}" if args.code_noise else "")
    name += f" C at {args.condition_size} px" if args.condition_size else ""
    report[name] = {"args": {k: v for k, v in vars(args).items() if k != "out"}, "seconds": round(time.time() - t0, 1),
                    "rows": rows}
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
