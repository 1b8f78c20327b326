"""Hidden units of C (the Neurons tab's target): what the latent diffusion prior steered by a unit draws
against the tab's MALA-approx sampler (``mfv``, the release's multifaceted visualisation with the joint
prior). For units drawn by a seed from one layer of C, 4 samples each: the unit's activation (the spatial
mean of its channel) as a share of the highest among 1,000 unseen val photos (one per class), the same
after a 2× down-and-up of the samples (does the picture drive the unit, or pixel patterns?), the judge's
precision and recall against real photos (are they photo-like?), and the spread of the 4 samples in the
judge's features (mean pairwise cosine distance: the facets), beside that of the 4 real photos that
activate the unit most.

    OMP_NUM_THREADS=1 python experiments/neuron_facets.py --layer blocks.11 --units 24 \\
        --out reports/prior/neuron_facets.json
    OMP_NUM_THREADS=1 python experiments/neuron_facets.py --units 6 --out reports/prior/neuron_facets_sheet.json \\
        --sheet reports/prior/neuron_facets_sheet.png      # per unit: real top 4 | mfv | ldm-ppgn-h
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.conditions import UnitCondition  # noqa: E402
from ppgn_core.data import to_float, val_photos  # noqa: E402
from ppgn_core.images import grid, save_png  # noqa: E402
from ppgn_core.judge import down_up, precision_recall  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.presets import build_sampler, get_preset  # noqa: E402
from ppgn_core.prior_report import _judge_and_reference  # noqa: E402


@torch.no_grad()
def layer_means(classifier, layer: str, images: torch.Tensor, batch: int = 50) -> torch.Tensor:
    """Every unit's spatial-mean activation of ``layer`` for ``images`` (N × units)."""
    out = []
    for i in range(0, len(images), batch):
        with classifier.capture([layer]) as acts:
            classifier(images[i:i + batch])
        out.append(acts[layer].flatten(2).mean(2))
    return torch.cat(out)


def spread(features: torch.Tensor) -> float:
    """Mean pairwise cosine distance among the rows of ``features``."""
    f = F.normalize(features, dim=1)
    sim = f @ f.T
    n = len(f)
    return float((1 - sim)[~torch.eye(n, dtype=torch.bool)].mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", default="blocks.11", help="the Neurons tab's default layer")
    ap.add_argument("--units", type=int, default=24)
    ap.add_argument("--samples", type=int, default=4, help="samples (chains) per unit and sampler")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--mfv-steps", type=int, default=40, help="the tab's steps per segment (one segment)")
    ap.add_argument("--out", default="reports/prior/neuron_facets.json")
    ap.add_argument("--sheet", default=None, help="also a PNG: per unit, the real photos that activate it most, "
                                                  "then each sampler's samples")
    args = ap.parse_args()
    torch.set_num_threads(1)
    bundle = load_bundle("default")
    C = bundle.classifier
    judge, reference = _judge_and_reference("cpu")
    photos, _ = val_photos(range(4, 5))  # the 5th val photo of every class: 1,000 unseen photos
    real = to_float(photos)
    width = dict(C.layers())[args.layer]
    units = sorted(np.random.default_rng(args.seed).choice(width, args.units, replace=False).tolist())
    real_acts = layer_means(C, args.layer, real)[:, units]  # 1,000 × units
    real_feats = judge.predict(real)[1]
    samplers = {"mfv": (args.mfv_steps, {"reset_every": 0}), "ldm-ppgn-h": (get_preset("ldm-ppgn-h").steps, {})}
    rows: dict = {name: {"per_unit": []} for name in samplers}
    real_rows, sheet = [], []
    for j, unit in enumerate(units):
        spec = f"{args.layer}:{unit}"
        top = real_acts[:, j].max().item()
        best = torch.argsort(real_acts[:, j], descending=True)[: args.samples]
        real_rows.append({"unit": spec, "max_activation": top, "spread_top": spread(real_feats[best])})
        sheet.append(real[best])
        for name, (steps, extra) in samplers.items():
            s = build_sampler(name, bundle, UnitCondition(C, spec), seed=args.seed + unit, **extra)
            t0 = time.perf_counter()
            final = list(s.run(s.init(args.samples), steps, snapshot_every=steps))[-1]
            seconds = time.perf_counter() - t0
            x = final.image
            sheet.append(x)
            act = layer_means(C, args.layer, x)[:, unit]  # the unit's value: its channel's spatial mean
            act_du = layer_means(C, args.layer, down_up(x, 2))[:, unit]
            feats = judge.predict(x)[1]
            rows[name]["per_unit"].append({
                "unit": spec, "activation_of_real_max": (act / top).tolist(),
                "down_up_activation_of_real_max": (act_du / top).tolist(), "spread": spread(feats),
                "seconds": round(seconds, 2), "_features": feats})
            print(f"{spec} {name}: activation {float(act.mean() / top):.2f} of the real max, after down-up "
                  f"{float(act_du.mean() / top):.2f}, spread {spread(feats):.3f} ({seconds:.1f} s)", flush=True)
    for name, r in rows.items():
        feats = torch.cat([u.pop("_features") for u in r["per_unit"]])
        pr = precision_recall(feats, reference.features, reference_radii=reference.radii)
        a = np.array([u["activation_of_real_max"] for u in r["per_unit"]])
        b = np.array([u["down_up_activation_of_real_max"] for u in r["per_unit"]])
        r["summary"] = {"samples": int(a.size), "activation_of_real_max_median": float(np.median(a)),
                        "share_above_real_max": float((a > 1).mean()),
                        "down_up_activation_of_real_max_median": float(np.median(b)),
                        "down_up_share_above_real_max": float((b > 1).mean()),
                        "precision": pr["precision"], "recall": pr["recall"],
                        "spread_mean": float(np.mean([u["spread"] for u in r["per_unit"]])),
                        "seconds_per_unit_median": float(np.median([u["seconds"] for u in r["per_unit"]]))}
        print(name, r["summary"], flush=True)
    real_pr = precision_recall(real_feats, reference.features, reference_radii=reference.radii)
    report = {"layer": args.layer, "units": units, "seed": args.seed, "samples_per_unit": args.samples,
              "threads": 1, "mfv_steps": args.mfv_steps, "real_photos": {
                  "n": len(real), "precision": real_pr["precision"], "recall": real_pr["recall"],
                  "spread_of_top_photos_mean": float(np.mean([r["spread_top"] for r in real_rows])),
                  "per_unit": real_rows}, "samplers": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    if args.sheet:
        save_png(grid(torch.cat(sheet), nrow=args.samples * (1 + len(samplers))), Path(args.sheet))


if __name__ == "__main__":
    main()
