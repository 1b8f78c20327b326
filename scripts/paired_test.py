"""Paired comparison of two presets under the robust judge, over several seeds: a sign test.

Each run is an ``evaluate`` report (evaluation.json) of one preset; runs are paired by seed and
must share the protocol that ``merge_evaluations.py`` asks for (``ppgn_core.evaluate.SAME_PROTOCOL``:
classes, chains, steps, seed, batch, networks), so sample i of one run has the same class, chain
index and starting point as sample i of the other. Per sample, the robust (down2) top-1 hit of A and of B; the sign test
counts the samples that only A hits against those only B hits (exact two-sided binomial, p = 1/2).
Where both reports hold each sample's membership of the real photos' manifold (``per_sample_in_manifold``,
which ``evaluate`` writes), precision is paired and tested the same way.

    python scripts/paired_test.py --a reports/paper20_s0_joint reports/paper20_s1_joint … \
        --b reports/paper20_s0_dgn reports/paper20_s1_dgn … --out reports/paired_paper20
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.evaluate import protocol_differences  # noqa: E402


def sign_test(only_a: int, only_b: int) -> float:
    """Exact two-sided sign test: the chance of a split at least this uneven if either side were
    equally likely to win each discordant pair."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _one_preset(path: Path) -> tuple[dict, str, dict]:
    report = json.loads((path / "evaluation.json").read_text() if path.is_dir() else path.read_text())
    if len(report["presets"]) != 1:
        raise ValueError(f"{path}: expected a report of one preset, got {list(report['presets'])}")
    name, preset = next(iter(report["presets"].items()))
    if preset.get("settings"):  # a preset run with overrides is named by them (two runs of one preset differ)
        name += " (" + ", ".join(f"{k}={v}" for k, v in sorted(preset["settings"].items())) + ")"
    return report, name, preset


def compare(runs_a: list[Path], runs_b: list[Path], steps_may_differ: bool = False,
            given_names: tuple[str, str] | None = None) -> dict:
    """The sign test over paired samples; ``steps_may_differ``: two samplers that draw from noise over
    their own numbers of noise levels (each run starts from the same seeded noise for the same sample).
    ``given_names``: what to call A and B where the reports cannot tell them apart (one preset, two sets of weights)."""
    if len(runs_a) != len(runs_b) or not runs_a:
        raise ValueError("give as many runs of A as of B (one pair per seed)")
    rows, inside_rows = [], []
    names = set()
    for pa, pb in zip(runs_a, runs_b):
        ra, na, a = _one_preset(pa)
        rb, nb, b = _one_preset(pb)
        names.add((na, nb))
        diff = [d for d in protocol_differences(ra, rb) if not (steps_may_differ and d == "steps")]
        if diff:
            raise ValueError(f"{pa} and {pb} differ in {', '.join(diff)}: their samples are not paired")
        if len(a["per_sample_robust_top1"]) != len(b["per_sample_robust_top1"]):
            raise ValueError(f"{pa} and {pb} hold different numbers of samples")
        rows.append(_paired_row(ra["seed"], a["per_sample_robust_top1"], b["per_sample_robust_top1"]))
        if "per_sample_in_manifold" in a and "per_sample_in_manifold" in b:
            inside_rows.append(_paired_row(ra["seed"], a["per_sample_in_manifold"], b["per_sample_in_manifold"]))
    if len(names) != 1:
        raise ValueError(f"the runs are not of one pair of presets: {sorted(names)}")
    (na, nb), = names
    if given_names is not None:
        na, nb = given_names[0] + f" ({na})", given_names[1] + f" ({nb})"
    result = {"a": na, "b": nb, "classes": ra["classes"], "chains_per_class": ra["chains_per_class"],
              "steps": ra["steps"] if ra["steps"] == rb["steps"] else f"{ra['steps']} (A), {rb['steps']} (B)",
              "metric": "robust (down2) judge top-1, per sample", "per_seed": rows,
              "total": _total(rows)}
    if inside_rows and len(inside_rows) == len(rows):  # every pair recorded its samples' manifold membership
        result["precision"] = {"metric": "inside the real photos' manifold in the judge's features, per sample",
                               "per_seed": inside_rows, "total": _total(inside_rows)}
    return result


def _total(rows: list[dict]) -> dict:
    total = {k: sum(r[k] for r in rows) for k in ("a", "b", "only_a", "only_b", "n")}
    total["p"] = sign_test(total["only_a"], total["only_b"])
    return total


def _paired_row(seed, hits_a: list[int], hits_b: list[int]) -> dict:
    row = {"seed": seed, "n": len(hits_a), "a": sum(hits_a), "b": sum(hits_b),
           "only_a": sum(1 for x, y in zip(hits_a, hits_b) if x and not y),
           "only_b": sum(1 for x, y in zip(hits_a, hits_b) if y and not x)}
    row["p"] = sign_test(row["only_a"], row["only_b"])
    return row


def markdown(result: dict) -> str:
    a, b = result["a"], result["b"]
    lines = [f"# {a} vs {b}: robust top-1, paired by sample, sign test", "",
             f"{len(result['classes'])} classes × {result['chains_per_class']} chains × {result['steps']} steps "
             "per seed.", ""]
    lines += _table(result["per_seed"], result["total"], a, b, "hits")
    if "precision" in result:
        lines += ["", "Precision, paired by sample: whether each sample lies inside the real photos' manifold in the "
                  "judge's features.", ""]
        lines += _table(result["precision"]["per_seed"], result["precision"]["total"], a, b, "inside")
    return "\n".join(lines) + "\n"


def _table(rows: list[dict], total: dict, a: str, b: str, what: str) -> list[str]:
    lines = [f"| seed | samples | {a} {what} | {b} {what} | only {a} | only {b} | sign test p |",
             "|---|---|---|---|---|---|---|"]
    for r in [*rows, {**total, "seed": "all"}]:
        lines.append(f"| {r['seed']} | {r['n']} | {r['a']} ({r['a'] / r['n']:.1%}) | {r['b']} ({r['b'] / r['n']:.1%}) "
                     f"| {r['only_a']} | {r['only_b']} | {r['p']:.4f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", nargs="+", type=Path, required=True, help="reports of preset A, one per seed")
    ap.add_argument("--b", nargs="+", type=Path, required=True, help="reports of preset B, same seeds, same order")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    ap.add_argument("--steps-may-differ", action="store_true",
                    help="guided denoising presets at their own numbers of noise levels (same starting noise)")
    ap.add_argument("--names", nargs=2, metavar=("A", "B"),
                    help="what to call A and B (e.g. two sets of weights under one preset's name)")
    args = ap.parse_args()
    result = compare(args.a, args.b, args.steps_may_differ, args.names)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
