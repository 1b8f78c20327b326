"""Probes of the default preset's precision (the judge's realism figure) on the 32 held-out classes
of the re-tuning, 2 chains × 60 steps, seed 7 (batch k seeded 7000 + k, 16 chains a batch). None of
them changes the shipped sampler; they ask where the samples' realism could come from.

python scripts/precision_probes.py polish OUT.json      # post-chain variants of the final codes
python scripts/precision_probes.py precondition OUT.json [--power 1]

``polish``: run the default preset, then judge the final codes and, from them, h ← clamp(R_h(h))
1/3/10/30 times, h ← E(G(h)) once and twice, and h pulled toward the code mean (0.8, 0.6).
``precondition``: the default preset with the condition's step multiplied, at every location of
the 8×8 code, by the real codes' channel covariance (112×112, from E's codes of 4 training photos a
class, raised to ``--power``, mean diagonal 1), judged at steps 0, 20, 40, 60.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ppgn_core.conditions import ClassCondition, evaluate  # noqa: E402
from ppgn_core.data import IMAGENET_1K_ROOT, cached_images, to_float  # noqa: E402
from ppgn_core.evaluate import Judge  # noqa: E402
from ppgn_core.judge import real_reference  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.presets import build_sampler, get_preset, make_prior, make_space  # noqa: E402
from tune_heldout import judged_row, tuning_classes  # noqa: E402

PRESET, STEPS, BATCH, SEED = "ppgn-h", 60, 16, 7


def chains(bundle, targets, step_hook=None, every: int = STEPS) -> dict[int, list]:
    """The default preset's snapshots by step, batch k seeded SEED·1000 + k: the batches and seeds of
    ``evaluate.run_preset_on_classes``, which keeps neither the codes nor a hook on the step."""
    snaps: dict[int, list] = {}
    for k, lo in enumerate(range(0, len(targets), BATCH)):
        tb = targets[lo:lo + BATCH]
        s = build_sampler(PRESET, bundle, ClassCondition(bundle.classifier, tb), seed=SEED * 1000 + k)
        if step_hook is not None:
            orig = s.step_direction
            s.step_direction = lambda z, g, st, t, n, x=None, _o=orig: _o(z, step_hook(g), st, t, n, x)
        for sn in s.run(s.init(len(tb)), STEPS, every):
            snaps.setdefault(sn.step, []).append(sn)
    return snaps


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
    return {f"step {t}": (torch.cat([s.image for s in sn]), torch.cat([s.p_class for s in sn]))
            for t, sn in snaps.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("probe", choices=["polish", "precondition"])
    ap.add_argument("out")
    ap.add_argument("--power", type=float, default=1.0)
    args = ap.parse_args()
    bundle, judge = load_bundle(), Judge()
    reference = real_reference(judge)
    targets = torch.tensor([c for c in tuning_classes(32) for _ in range(2)])
    t0 = time.time()
    if args.probe == "polish":
        judged = {name: (x, p_class(bundle, x, targets)) for name, x in polish(bundle, targets).items()}
    else:
        judged = precondition(bundle, targets, args.power)
    rows = {}
    for name, (x, p) in judged.items():
        rows[name] = judged_row(judge, x, targets, reference, p)
        print(name, {k: round(v, 3) for k, v in rows[name].items() if isinstance(v, float)}, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"probe": args.probe, "power": args.power, "seconds": round(time.time() - t0, 1),
                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
