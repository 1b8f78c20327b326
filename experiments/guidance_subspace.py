"""Does C's guidance write the samples' non-photo patterns into directions real codes hardly use?

The prior's own samples carry 1.6-6.3x the codes' variance along principal components (PCs) past the
1,000th (reports/prior/spectrum.json). Those are directions in which G's images of real photos' codes
hardly move, and so where a push that pleases C need not look like a photo. Here C's gradient wrt the
prior's state u (standardised code units, flattened to 7168) is changed before the sampler normalises it
to g/rms(g):

* ``pcs K``: projected onto the training codes' top K PCs (the push lives where real codes vary);
* ``sqrt-cov``: multiplied by Σ^{1/2} (each PC's share scaled by its standard deviation: a push
  shaped like the codes' own spread); ``cov``: by Σ (the natural step under a Gaussian prior's metric);
  with ε2 1.5, C's push raised to win back the class.

Judged on held-out classes (seed 7) by the robust judge's top-1 and precision / recall, as every
held-out choice (docs/results.md); the default's own row comes from the same run, same seeds.

python experiments/guidance_subspace.py --classes 96 --only default "pcs 1024" --out reports/prior/guidance_subspace.json

``--evaluate-seed S --components K``: ``python -m ppgn_core evaluate`` of the default on the 110-class set (2 chains,
30 levels, seed S) with C's push kept to the top K PCs, into reports/eval_ldm_pcsK_seedS/ (paired with the
default's own reports by scripts/paired_test.py).
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ldm_guidance import evaluate_default  # noqa: E402
from prior_spectrum import principal_components  # noqa: E402

from ppgn_core import sampler as sampler_module  # noqa: E402
from ppgn_core.evaluate import run_preset_on_classes  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.presets import get_preset  # noqa: E402
from ppgn_core.prior_report import _judge_and_reference, _judged, tuning_classes  # noqa: E402

#: label → (kind, parameter, ε2)
SETTINGS = {"default": ("none", None, 1.0), "pcs 256": ("pcs", 256, 1.0), "pcs 1024": ("pcs", 1024, 1.0),
            "pcs 3000": ("pcs", 3000, 1.0), "sqrt-cov": ("cov", 0.5, 1.0), "cov": ("cov", 1.0, 1.0),
            "sqrt-cov, ε2 1.5": ("cov", 0.5, 1.5)}


def gradient_map(kind: str, param, lam: torch.Tensor, vec: torch.Tensor):
    """g (N × 7168) → the changed gradient, or None for the default."""
    if kind == "none":
        return None
    if kind == "pcs":
        basis = vec[:, :param].contiguous()
        return lambda g: (g @ basis) @ basis.T
    scale = lam.clamp_min(0).pow(param)
    return lambda g: ((g @ vec) * scale) @ vec.T


def gradient_hook(change):
    """C's gradient wrt the state, changed by ``change`` (None: as it is), for ``ConditionGradient.hook``."""
    if change is None:
        return None
    return staticmethod(lambda grad: change(grad.flatten(1)).view_as(grad))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", type=int, default=30)
    ap.add_argument("--classes", type=int, default=96)
    ap.add_argument("--skip-classes", type=int, default=0)
    ap.add_argument("--chains", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="run only these labels: " + ", ".join(SETTINGS))
    ap.add_argument("--cache", default="cache")
    ap.add_argument("--pcs", default="/tmp/code_pcs.pt", help="where the PCs are kept between runs")
    ap.add_argument("--out", default="reports/prior/guidance_subspace.json")
    ap.add_argument("--evaluate-seed", type=int, default=None, help="evaluate on the 110-class set at this seed")
    ap.add_argument("--components", type=int, default=3000, help="with --evaluate-seed: the top K PCs")
    args = ap.parse_args()
    t0 = time.time()
    bundle = load_bundle("default")
    pcs = Path(args.pcs)
    if pcs.exists():
        mean, lam, vec = torch.load(pcs)
    else:
        mean, lam, vec = principal_components(bundle.code_diffusion, Path(args.cache), 2)
        torch.save((mean, lam, vec), pcs)
    print(f"PCs ready ({time.time() - t0:.0f} s)", flush=True)
    if args.evaluate_seed is not None:
        sampler_module.ConditionGradient.hook = gradient_hook(gradient_map("pcs", args.components, lam, vec))
        sys.exit(evaluate_default(args.evaluate_seed, args.levels,
                                  f"reports/eval_ldm_pcs{args.components}_seed{args.evaluate_seed}"))
    judge, reference = _judge_and_reference("cpu")
    classes = tuning_classes(args.classes, args.skip_classes)
    preset = get_preset("ldm-ppgn-h")
    out, rows = Path(args.out), {}
    if out.exists():
        rows = json.loads(out.read_text()).get("rows", {})
    for label, (kind, param, eps2) in SETTINGS.items():
        if args.only and label not in args.only:
            continue
        sampler_module.ConditionGradient.hook = gradient_hook(gradient_map(kind, param, lam, vec))
        try:
            run = run_preset_on_classes(bundle, replace(preset, paper_eps=(preset.paper_eps[0], eps2, preset.paper_eps[2])), classes, args.chains, args.levels, args.seed, args.levels)
        finally:
            sampler_module.ConditionGradient.hook = None
        rows[label] = {"eps2": eps2, **_judged(judge, reference, run.images, run.targets),
                       "seconds_per_sample": round(run.seconds / len(run.targets), 3)}
        print(label, json.dumps(rows[label]), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"preset": "ldm-ppgn-h", "levels": args.levels, "classes": classes,
                                   "chains": args.chains, "seed": args.seed,
                                   "held_out": "tuning_classes (seed 7): in neither evaluation set",
                                   "pcs": "every 2nd standardised training code", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
