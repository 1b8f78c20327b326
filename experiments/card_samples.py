"""Write the model card's sample metrics (``metrics.samples_110_classes``) from the evaluation
reports of the shipped default preset (guided-ppgn-h), the default MALA
chain (PPGN-h with the conv R_h, the default before it), DGN-AM and the defaults before those
(Noiseless Joint PPGN-h with and without the stopping rule), and the paired sign tests
(``scripts/paired_test.py``) between them. The reconstruction metrics are kept.

    python experiments/card_samples.py          # rewrites assets/model_card.json and MODEL_CARD.md

Every figure is read from a committed report; nothing is measured here except the sign test on
the 100 drawn classes (the 110-class reports' samples after the 10 Imagenette classes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from paired_test import compare, sign_test  # noqa: E402

from ppgn_core.export import ASSETS, write_metrics  # noqa: E402

REPORTS = Path(__file__).resolve().parent.parent / "reports"
DEFAULT = [REPORTS / f"eval_1k_g2_guided_seed{s}" for s in (0, 1, 2)]
CHAIN = [REPORTS / f"eval_1k_g2_rh_seed{s}" for s in (0, 1, 2)]
JOINT_STOP = [REPORTS / f"eval_1k_g2_stop_seed{s}" for s in (0, 1, 2)]
DGN = [REPORTS / "eval_1k_g2_dgn", REPORTS / "eval_1k_g2_seed1" / "dgn", REPORTS / "eval_1k_g2_seed2" / "dgn"]
BEFORE = [REPORTS / "eval_1k_g2_joint", REPORTS / "eval_1k_g2_seed1" / "joint", REPORTS / "eval_1k_g2_seed2" / "joint"]
PAPER20 = REPORTS / "paper20_1k_g"
FIGURES = ("judge_top1", "judge_top5", "robust_top1", "robust_top5", "precision", "recall", "saturation")


def _report(path: Path) -> dict:
    return json.loads((path / "evaluation.json").read_text())


def _figures(path: Path) -> dict:
    report = _report(path)
    (preset,) = report["presets"].values()
    row = {k: round(float(preset[k]), 4) for k in FIGURES}
    row["robust_plain_ratio"] = round(preset["robust_top1"] / preset["judge_top1"], 3)
    return {"seed": report["seed"], **row, "report": str(path.relative_to(REPORTS.parent))}


def _by_seed(paths: list[Path]) -> dict:
    rows = [_figures(p) for p in paths]
    mean = {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in (*FIGURES, "robust_plain_ratio")}
    return {"seeds": rows, "mean": mean}


def _total(result: dict, report: str | None = None) -> dict:
    out = {"preset_a": result["a"], "preset_b": result["b"], **result["total"]}
    return out | ({"report": report} if report else {})


def drawn_classes_only(paths_a: list[Path], paths_b: list[Path], skip_classes: int = 10) -> dict:
    """The sign test on the samples of the drawn classes (after the first ``skip_classes``)."""
    only_a = only_b = hits_a = hits_b = n = 0
    for pa, pb in zip(paths_a, paths_b):
        ra, rb = _report(pa), _report(pb)
        ((name_a, a),), ((name_b, b),) = ra["presets"].items(), rb["presets"].items()
        skip = skip_classes * ra["chains_per_class"]
        ha, hb = a["per_sample_robust_top1"][skip:], b["per_sample_robust_top1"][skip:]
        only_a += sum(1 for x, y in zip(ha, hb) if x and not y)
        only_b += sum(1 for x, y in zip(ha, hb) if y and not x)
        hits_a, hits_b, n = hits_a + sum(ha), hits_b + sum(hb), n + len(ha)
    return {"preset_a": name_a, "preset_b": name_b, "a": hits_a, "b": hits_b, "only_a": only_a, "only_b": only_b, "n": n, "p": sign_test(only_a, only_b)}


def _paper20(a_name: str, seeds: tuple[int, ...]) -> dict | None:
    a = [PAPER20 / f"{a_name}_s{s}" for s in seeds]
    b = [PAPER20 / f"dgn_s{s}" for s in seeds]
    if all((p / "evaluation.json").exists() for p in (*a, *b)):
        return _total(compare(a, b))
    return None


def samples_metrics() -> dict:
    real = _report(DEFAULT[0])["real_val"]
    return {
        "setup": "110 classes (the 10 Imagenette classes + 100 drawn once, seed 2017) × 2 chains × 60 steps, "
                 "seeds 0–2; every preset starts from the same codes for the same classes; judged by Lite2 "
                 "plain and after 2× down-and-up (robust), precision/recall against 3,000 real val photos",
        "default_preset": {"name": "guided-ppgn-h",
                           "settings": "guided denoising of R_h(h, σ) over 60 noise levels σ 10 → 0.05, guidance "
                                       "ε2 = 1, robust condition K = 2 (the default before the latent diffusion prior)",
                           **_by_seed(DEFAULT)},
        "default_chain_preset": {"name": "ppgn-h",
                                 "settings": "conv R_h, ε1 1e-4, step 0.05, robust condition K = 2, a chain stops "
                                             "while C's p(class) ≥ 0.999 (the default chain; "
                                             "inpainting, starts from a photo, t-SNE chains)",
                                 **_by_seed(CHAIN)},
        "dgn_am": _by_seed(DGN),
        "noiseless_joint_with_stopping_rule": {"settings": "the default before R_h: step 0.05, "
                                                           "K = 2, stop at p ≥ 0.999", **_by_seed(JOINT_STOP)},
        "noiseless_joint_before_stopping_rule": {"settings": "step 0.05, robust condition K = 2, no stopping rule",
                                                 **_by_seed(BEFORE)},
        "dgn_am_with_robust_condition_k2_seed_0": _figures(REPORTS / "eval_1k_g2_dgn_k2"),
        "real_held_out": {k: round(float(real[k]), 4) for k in ("judge_top1", "robust_top1", "precision", "recall")},
        "paired_robust_top1": {
            "default_vs_dgn_am_110_classes": _total(compare(DEFAULT, DGN),
                                                    "reports/paired_110_guided_vs_dgn_seed012.md"),
            "default_vs_dgn_am_100_drawn_classes": drawn_classes_only(DEFAULT, DGN),
            "default_vs_chain_default_110_classes": _total(compare(DEFAULT, CHAIN),
                                                           "reports/paired_110_guided_vs_default_seed012.md"),
            "default_vs_chain_default_100_drawn_classes": drawn_classes_only(DEFAULT, CHAIN),
            "default_vs_dgn_am_k2_seed_0": _total(compare(DEFAULT[:1], [REPORTS / "eval_1k_g2_dgn_k2"]),
                                                  "reports/paired_110_guided_vs_dgn_k2_seed0.md"),
            "chain_default_vs_dgn_am_110_classes": _total(compare(CHAIN, DGN), "reports/paired_110_rh_vs_dgn.md"),
            "chain_default_vs_dgn_am_100_drawn_classes": drawn_classes_only(CHAIN, DGN),
            "chain_default_vs_noiseless_joint_with_stopping_rule_110_classes": _total(
                compare(CHAIN, JOINT_STOP), "reports/paired_110_rh_vs_joint_stop.md"),
            "chain_default_vs_dgn_am_k2_seed_0": _total(compare(CHAIN[:1], [REPORTS / "eval_1k_g2_dgn_k2"])),
            "noiseless_joint_with_stopping_rule_vs_dgn_am_110_classes": _total(
                compare(JOINT_STOP, DGN), "reports/paired_110_stop_vs_dgn.md"),
            "paper20_default_vs_dgn_am_seeds_0_2": _paper20("guided", (0, 1, 2)),
            "paper20_default_vs_chain_default_seeds_0_2": _total(compare(
                [PAPER20 / f"guided_s{s}" for s in (0, 1, 2)], [PAPER20 / f"rh_s{s}" for s in (0, 1, 2)])),
            "paper20_chain_default_vs_dgn_am_seeds_0_2": _paper20("rh", (0, 1, 2)),
            "paper20_noiseless_joint_with_stopping_rule_vs_dgn_am": {
                "seeds_0_2": _paper20("stop", (0, 1, 2)), "seeds_3_5_replication": _paper20("stop", (3, 4, 5))},
        },
    }


def main() -> None:
    card = json.loads((ASSETS / "model_card.json").read_text())
    metrics = card["metrics"]
    metrics["samples_110_classes"] = samples_metrics()
    write_metrics(metrics)
    print(json.dumps(metrics["samples_110_classes"]["paired_robust_top1"], indent=1))


if __name__ == "__main__":
    main()
