"""The chain's three knobs, measured like the paper's ε sweeps, and whether chains mix without losing the
picture.

``knobs``: on held-out classes (in neither evaluation set), one chain a class of the default preset, each of
ε1, ε2, ε3 moved alone over a few values; per setting, the kept samples' robust top-1, precision, recall,
diversity (pairwise MS-SSIM within a chain) and mixing (judge-feature distance between a chain's consecutive
kept samples, in units of two real photos of a class).

``mixing``: the 110-class set, one chain a class, ``--steps`` steps: the same figures for the default
preset's chain and for ``ppgn-h``'s MALA-approx chains (its state every ``--every`` steps from step 30).

    python -m experiments.chain_knobs knobs --classes 12 --rounds 3 --out reports/chains/knobs.json
    python -m experiments.chain_knobs mixing --steps 210 --presets ldm-ppgn-h --out reports/chains/mixing_110.json
    python -m experiments.chain_knobs mixing --steps 210 --presets ppgn-h --class-step 2 \
        --out reports/chains/mixing_110_ppgn-h.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ppgn_core.evaluation.chains import chain_figures, run_chains
from ppgn_core.evaluation.classes import default_classes
from ppgn_core.evaluation.judging import Judge
from ppgn_core.judge import real_reference
from ppgn_core.nets.registry import load_bundle
from ppgn_core.presets import DEFAULT_PRESET, ROUND_LEVELS, get_preset
from ppgn_core.prior_report import tuning_classes

SWEEPS = {"eps1": [0.8, 1.0, 1.25], "eps2": [0.5, 1.0, 2.0], "eps3": [2.0, 4.0, 8.0]}


def _write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))


def knobs(args) -> None:
    bundle, judge = load_bundle("default"), Judge()
    reference = real_reference(judge)
    classes = tuning_classes(args.classes)
    p = get_preset(DEFAULT_PRESET)
    base = dict(zip(("eps1", "eps2", "eps3"), p.paper_eps))
    steps = p.levels + args.rounds * ROUND_LEVELS
    report = {"preset": p.name, "classes": classes, "held_out": "tuning_classes (seed 7): in neither evaluation set",
              "steps": steps, "every": ROUND_LEVELS, "seed": args.seed, "base": base, "rows": []}
    done = {}
    for knob, values in SWEEPS.items():
        for v in values:
            eps = base | {knob: v}
            key = tuple(eps.values())
            if key not in done:
                run = run_chains(bundle, p.name, classes, steps, ROUND_LEVELS, args.seed, overrides=eps)
                done[key] = chain_figures(judge, reference, run) | {"eps": eps}
                print(knob, v, {k: done[key][k] for k in ("robust_top1", "precision", "ms_ssim_within_chain",
                                                          "mixing_step_distance", "seconds")}, flush=True)
            report["rows"].append({"knob": knob, "value": v} | done[key])
            _write(args.out, report)
    plot_knobs(report, args.out.with_suffix(".png"))


def plot_knobs(report: dict, path: Path) -> None:
    """One column a knob, one row a figure: the kept samples' robust top-1, precision, diversity and mixing
    against the knob's value (the others at the preset's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = [("robust_top1", "robust top-1"), ("precision", "precision"),
               ("ms_ssim_within_chain", "MS-SSIM within a chain\n(lower: more diverse)"),
               ("mixing_step_distance", "mixing: judge distance\nbetween consecutive samples")]
    fig, axes = plt.subplots(len(figures), len(SWEEPS), figsize=(3.2 * len(SWEEPS), 2.2 * len(figures)), squeeze=False)
    for j, knob in enumerate(SWEEPS):
        rows = [r for r in report["rows"] if r["knob"] == knob]
        xs = [r["value"] for r in rows]
        for i, (key, label) in enumerate(figures):
            ax = axes[i][j]
            ax.plot(xs, [r[key] for r in rows], "o-")
            if key + "_ci95" in rows[0]:
                lo, hi = zip(*(r[key + "_ci95"] for r in rows))
                ax.fill_between(xs, lo, hi, alpha=0.2)
            ax.set_xticks(xs)
            if i == len(figures) - 1:
                ax.set_xlabel(knob.replace("eps", "ε"))
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(f"{report['preset']}: one knob moved at a time, {len(report['classes'])} held-out classes, "
                 f"{report['steps']} steps a chain (95% intervals over chains)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def mixing(args) -> None:
    bundle, judge = load_bundle("default"), Judge()
    reference = real_reference(judge)
    classes = default_classes()[::args.class_step]
    report = {"classes": f"the 110-class set (default_classes), every {args.class_step}. class",
              "n_classes": len(classes), "steps": args.steps,
              "every": args.every, "seed": args.seed, "runs": {}}
    for preset in args.presets:
        t0 = time.time()
        run = run_chains(bundle, preset, classes, args.steps, args.every, args.seed, first=30)
        report["runs"][preset] = {"all": chain_figures(judge, reference, run),
                                  "after_first": chain_figures(judge, reference, run, skip_first=True),
                                  "minutes": round((time.time() - t0) / 60, 1)}
        print(preset, {k: report["runs"][preset]["all"][k] for k in ("robust_top1", "precision", "recall",
                                                                     "ms_ssim_within_chain", "mixing_step_distance")},
              flush=True)
        _write(args.out, report)
        if args.save_images:
            torch.save({"images": (run.images * 255).round().to(torch.uint8), "steps": run.steps,
                        "targets": run.targets}, Path(args.save_images) / f"chains_{preset}.pt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["knobs", "mixing", "plot"], help="plot: the knobs' plot from --out's report")
    ap.add_argument("--classes", type=int, default=16, help="knobs: held-out classes")
    ap.add_argument("--rounds", type=int, default=4, help="knobs: kept samples after the first")
    ap.add_argument("--steps", type=int, default=210, help="mixing: steps a chain")
    ap.add_argument("--every", type=int, default=ROUND_LEVELS, help="mixing: steps between kept samples")
    ap.add_argument("--presets", nargs="+", default=[DEFAULT_PRESET, "ppgn-h"])
    ap.add_argument("--class-step", type=int, default=1, help="mixing: every n-th class of the set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-images", default=None, help="mixing: a folder for the kept samples (uint8 tensors)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.part == "plot":
        return plot_knobs(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
    (knobs if args.part == "knobs" else mixing)(args)


if __name__ == "__main__":
    main()
