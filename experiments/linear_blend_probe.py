"""Samples from the latent diffusion prior blended with the best linear denoiser (weights per noise level
from ``linear_blend.py``, fitted on training codes): D' = a(σ)·D_prior + (1 − a(σ))·D_linear at every level,
classifier-free guidance acting on the prior's part (the linear part has no class). On held-out classes:
the prior's own samples (unconditional and w = 2) for the shipped prior and the blend, and the default
preset steered by C with the blend (the shipped prior's row on the same classes and seed:
``reports/prior/interval.json``, "the default's guidance").

python experiments/linear_blend_probe.py --out reports/prior/linear_blend_probe.json
"""

import argparse
import copy
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from prior_spectrum import linear_denoise, principal_components  # noqa: E402

from ppgn_core.evaluate import run_preset_on_classes  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.presets import DEFAULT_PRESET, get_preset  # noqa: E402
from ppgn_core.prior_report import _judge_and_reference, _judged, own_samples, tuning_classes  # noqa: E402


def blend_weight(table: dict[float, float], sigma: float) -> float:
    """a(σ): linear in ln σ between the fitted levels, the end values beyond them."""
    levels = sorted(table)
    return float(np.interp(math.log(sigma), [math.log(v) for v in levels], [table[v] for v in levels]))


def blended(net, pcs, table: dict[float, float]):
    """A copy of ``net`` whose denoise_standardised is the blend (guided_denoise calls it for both rows)."""
    out = copy.deepcopy(net)
    own = out.denoise_standardised

    def denoise(u, sigma, labels=None):
        s = float(torch.as_tensor(sigma).flatten()[0])  # one level for the whole batch while sampling
        a = blend_weight(table, s)
        return a * own(u, sigma, labels) + (1 - a) * linear_denoise(u.flatten(1), s, *pcs).view_as(u)

    out.denoise_standardised = denoise
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="reports/prior/linear_blend.json")
    ap.add_argument("--pcs", default="runs/pcs.pt", help="where the training codes' principal components are kept")
    ap.add_argument("--cache", default="cache")
    ap.add_argument("--own-classes", type=int, default=64)
    ap.add_argument("--classes", type=int, default=96)
    ap.add_argument("--levels", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reports/prior/linear_blend_probe.json")
    args = ap.parse_args()
    bundle = load_bundle("default")
    table = {float(k): v["weight_on_prior"] for k, v in json.loads(Path(args.weights).read_text())["rows"].items()}
    if Path(args.pcs).exists():
        pcs = torch.load(args.pcs)
    else:
        pcs = principal_components(bundle.code_diffusion, Path(args.cache), 4)
        torch.save(pcs, args.pcs)
    blend = replace(bundle, code_diffusion=blended(bundle.code_diffusion, pcs, table))
    judge, reference = _judge_and_reference("cpu")
    report = {"weights": table, "seed": args.seed, "held_out": "tuning_classes (seed 7): in neither evaluation set"}
    own = tuning_classes(args.own_classes)
    report["own"] = {name: own_samples(b, own, 20, args.seed, (0.0, 2.0), judge=judge, reference=reference)["samples"]
                     for name, b in (("shipped", bundle), ("blend", blend))}
    print(json.dumps(report["own"]), flush=True)
    preset = get_preset(DEFAULT_PRESET)
    run = run_preset_on_classes(blend, preset, tuning_classes(args.classes), 1, args.levels, args.seed, args.levels)
    report["guided_blend"] = _judged(judge, reference, run.images, run.targets) | {
        "seconds_per_sample": round(run.seconds / len(run.targets), 3)}
    print(json.dumps(report["guided_blend"]), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
