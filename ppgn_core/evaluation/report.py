"""The evaluation report (``python -m ppgn_core evaluate``): JSON and Markdown, merging and pairing rules."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from ..conditions import imagenet_categories
from ..data import to_float, val_photos
from ..judge import HEADLINE, real_reference
from ..nets.registry import ModelBundle
from .diversity import diversity, feature_spread, mixing
from .inpainting import inpainting_eval
from .judging import RECON_RANKS, Judge, real_val_summary, reconstruction_metrics
from .runs import judge_summary, run_preset_on_classes, save_sheet


def fmt_pct(x: float | None, missing: str = "n/a") -> str:
    return missing if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def evaluate(bundle: ModelBundle, out: Path, presets: list[str], classes: list[int], chains: int, steps: int,
             seed: int = 0, device: str = "cpu", real_classes: int | None = None, recon_limit: int | None = None,
             recon_per_class: int = 2,
             overrides: dict | None = None, snapshot_every: int | None = None, mixing_chains: int = 48,
             batch: int = 8, inpaint: int = 0, inpaint_steps: int | None = None) -> dict:
    """The evaluation report: judge accuracy (plain and robust, precision/recall) per preset vs real
    photos, diversity, mixing, reconstructions, and with ``inpaint`` > 0 inpainting on that many val
    photos (``inpaint_steps``, default ``steps``). Real photos come from the 1,000-class val set
    (``real_classes``: only the first classes, for quick runs); reconstructions use photos 5–6 of
    every class (``recon_per_class`` of them: ≈ 2,000 by default; 0 = none; ``recon_limit`` caps them)."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    judge = Judge(device=device)
    names = imagenet_categories()
    snapshot_every = snapshot_every or max(1, steps // 6)
    report: dict = {"condition": bundle.classifier.name, "condition_input_size": bundle.classifier.input_size,
                    "judge": judge.classifier.name, "classes": [names[c] for c in classes],
                    "chains_per_class": chains, "steps": steps, "seed": seed, "snapshot_every": snapshot_every,
                    "batch": batch,
                    "presets": {}}
    reference = real_reference(judge, real_classes, seed=seed)
    report["real_val"] = real_val_summary(judge, reference, chains, real_classes)
    scale = report["real_val"]["feature_scale"]
    if recon_per_class > 0 and bundle.generator is not None and bundle.encoder is not None and bundle.image_size == 128:
        ranks = range(RECON_RANKS.start, RECON_RANKS.start + min(recon_per_class, len(RECON_RANKS)))
        rec_u8, rec_labels = val_photos(ranks, real_classes)
        rec_u8, rec_labels = rec_u8[:recon_limit], rec_labels[:recon_limit]
        report["reconstruction"] = reconstruction_metrics(bundle, to_float(rec_u8).to(device), judge=judge,
                                                          labels=rec_labels, reference=reference)
    for p in presets:
        run = run_preset_on_classes(bundle, p, classes, chains, steps, seed, snapshot_every, device,
                                    (overrides or {}).get(p), batch)
        summary = judge_summary(judge, run, reference=reference)
        feats = summary.pop("_features")  # from the same pass as the robust report
        summary.update(diversity(run, chains))
        groups = [torch.arange(k, min(k + chains, len(run.images))) for k in range(0, len(run.images), chains)]
        summary["feature_spread"] = feature_spread(feats, groups) / scale
        summary["mixing"] = mixing(judge, run, snapshot_every, scale, mixing_chains)
        summary["settings"] = dict((overrides or {}).get(p, {}))
        report["presets"][p] = summary
        save_sheet(run, out / f"sheet_{p}.png", chains)
        report["minutes"] = round((time.time() - t0) / 60, 1)
        (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    if inpaint:
        report["inpainting"] = inpainting_eval(bundle, inpaint, inpaint_steps or steps, device=device)
        (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    write_markdown(report, out / "evaluation.md")
    return report


#: what must agree for two evaluation runs to share one table
SAME_PROTOCOL = ("condition", "judge", "classes", "chains_per_class", "steps", "seed", "batch")


def protocol_differences(a: dict, b: dict) -> list[str]:
    """The keys of ``SAME_PROTOCOL`` on which two evaluation reports differ, and the side C saw the
    images at where both reports record it (runs from before it was recorded saw C's own side)."""
    diff = [k for k in SAME_PROTOCOL if a.get(k) != b.get(k)]
    sides = a.get("condition_input_size"), b.get("condition_input_size")
    if None not in sides and sides[0] != sides[1]:
        diff.append("condition_input_size")
    return diff


def merge_reports(base: dict, other: dict, source: str) -> dict:
    """Add ``other``'s presets that ``base`` lacks, each marked with ``source`` (the run it came from).
    Refused unless both runs used the same classes, chains, steps, seeds and networks, so every
    row of the merged table was sampled from the same starting points and judged alike."""
    diff = protocol_differences(base, other)
    if diff:
        raise ValueError(f"the runs differ in {', '.join(diff)}; their rows are not comparable")
    merged = dict(base, presets=dict(base["presets"]))
    for name, summary in other["presets"].items():
        if name not in merged["presets"]:
            merged["presets"][name] = dict(summary, source=source)
    return merged


PAPER_ROWS = {"PPGN (paper, 256 px, Inception judge)": (0.596, 0.23), "real ImageNet (paper)": (0.761, 0.10)}


def _robust_cells(r: dict, real: dict) -> str:
    """The robust columns of a row: down2 top-1, robust/plain, share of the real photos' down2 top-1,
    precision and recall (– where the row was judged before the robust judge existed)."""
    if "robust_top1" not in r:
        return "– | – | – | – | –"
    ratio = r["robust_top1"] / r["judge_top1"] if r.get("judge_top1") else float("nan")
    of_real = r["robust_top1"] / real["robust_top1"] if real.get("robust_top1") else float("nan")
    return (f"**{fmt_pct(r['robust_top1'])}** | {ratio:.2f} | {fmt_pct(of_real)} | {fmt_pct(r.get('precision'))} "
            f"| {fmt_pct(r.get('recall'))}")


def _transform_rows(report: dict) -> list[str]:
    """Top-1 / top-5 under every transform, for each preset, the reconstructions and real photos."""
    rows = [(p, r.get("robust", {}).get("accuracy")) for p, r in report["presets"].items()]
    if "robust" in report.get("reconstruction", {}):
        rows.append(("reconstructions G(E(x))", report["reconstruction"]["robust"]["accuracy"]))
    rows.append(("real photos (held out)", report["real_val"].get("robust", {}).get("accuracy")))
    rows = [(n, acc) for n, acc in rows if acc]
    if not rows:
        return []
    names = list(rows[0][1])
    lines = ["", "## The judge under transforms (top-1 / top-5)", "",
             "| images | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for n, acc in rows:
        lines.append(f"| {n} | " + " | ".join(f"{fmt_pct(acc[t]['top1'])} / {fmt_pct(acc[t]['top5'])}"
                                             for t in names) + " |")
    lines += ["", "blur: Gaussian σ = 1 px; down2/down4: area-downsample 2×/4× then bilinear up; jpeg30: JPEG "
                  "quality 30; crops: logits averaged over 4 seeded random 85% crops."]
    return lines


def write_markdown(report: dict, path: Path) -> None:
    rv = report["real_val"]
    c_side = f" at {report['condition_input_size']} px" if report.get("condition_input_size") else ""
    lines = [f"# Evaluation: C = {report['condition']}{c_side}, judge = {report['judge']}", "",
             f"{len(report['classes'])} classes × {report['chains_per_class']} chains × {report['steps']} steps, "
             f"seed {report['seed']}; took {report.get('minutes', '?')} min.", "",
             f"Headline: **robust top-1** = the judge's top-1 after 2× down-and-up sampling ({HEADLINE}); precision "
             f"and recall (k = 3) against real val photos in the judge's features. Real photos: {rv.get('set', '')}.",
             "", "| samples | judge top-1 | judge top-5 | robust top-1 | robust / plain | of real robust "
             "| precision | recall | C p ≥ 0.97 | within-class MS-SSIM | judge-feature spread "
             "| dist. per snapshot | modes per chain | saturated px | min |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p, r in report["presets"].items():
        m = r.get("mixing", {})
        step_key = next((k for k in m if k.startswith("dist_")), None)
        mix = f"{m[step_key]:.2f} | {m['modes_per_chain']:.2f}" if step_key else "– | –"
        mark = " †" if r.get("source") else ""
        lines.append(f"| {p}{mark} | {fmt_pct(r['judge_top1'])} | {fmt_pct(r['judge_top5'])} | {_robust_cells(r, rv)} "
                     f"| {fmt_pct(r['c_pass_097'])} "
                     f"| {r.get('ms_ssim_within_class', float('nan')):.3f} | {r.get('feature_spread', float('nan')):.2f} "
                     f"| {mix} | {fmt_pct(r.get('saturation'), '–')} | {r['seconds'] / 60:.1f} |")
    lines.append(f"| real val photos ({rv['n']}) | {fmt_pct(rv['judge_top1'])} | {fmt_pct(rv['judge_top5'])} "
                 f"| {_robust_cells(rv, rv)} | – | {rv['ms_ssim_within_class']:.3f} "
                 f"| {rv.get('feature_spread', float('nan')):.2f} | – | – | {fmt_pct(rv.get('saturation'), '–')} | – |")
    for name, (acc, ms) in PAPER_ROWS.items():
        lines.append(f"| {name} | {fmt_pct(acc)} | – | – | – | – | – | – | – | {ms:.2f} | – | – | – | – | – |")
    lines += ["", "Robust / plain: robust top-1 over plain top-1 (real photos keep about 0.7). Of real robust: "
                  "the samples' robust top-1 as a share of the real photos'. Precision: share of samples inside the "
                  "real photos' manifold (each real photo's ball reaching its 3rd nearest real neighbour); recall: "
                  "share of real photos inside the samples' manifold (few samples per class keep it low). "
                  "Judge-feature spread: mean pairwise distance of the judge's pooled features within a class "
                  "(groups of chains-per-class images), divided by the median distance between two real val photos "
                  "of one class. Mixing (first chains of the run): mean feature distance between snapshots "
              f"{report.get('snapshot_every', '?')} steps apart in the same unit, and the number of modes a chain "
                  "visits (leader clusters of radius 1 in that unit, start excluded). Saturated px: share of pixel "
                  "values within 0.03 of black or white (flat blown-out blobs)."]
    sources: dict[str, list[str]] = {}
    for p, r in report["presets"].items():
        if r.get("source"):
            sources.setdefault(r["source"], []).append(p)
    if sources:
        lines += ["", "† from another run with the same classes, chains, steps and seeds: " +
                  "; ".join(f"{', '.join(ps)}: {src}" for src, ps in sources.items()) + "."]
    if "reconstruction" in report:
        r = report["reconstruction"]
        judged = (f"; the judge's top-1 on G(E(x)) = {fmt_pct(r['judge_top1'])}, top-5 {fmt_pct(r['judge_top5'])} "
                  f"(on real photos: {fmt_pct(rv['judge_top1'])})") if "judge_top1" in r else ""
        if "robust" in r:
            rob = r["robust"]
            judged += (f"; robust top-1/top-5 {fmt_pct(rob['robust_top1'])} / {fmt_pct(rob['robust_top5'])}, "
                       f"precision {fmt_pct(rob.get('precision'))}, recall {fmt_pct(rob.get('recall'))}")
        lines += ["", f"Reconstructions on {r['n']} val photos: PSNR of G(E(x)) = {r['psnr_db']:.2f} dB, "
                      f"cosine(E(G(E(x))), E(x)) = {r['cosine_h']:.3f}{judged}."]
    lines += _transform_rows(report)
    lines += ["", "Classes: " + ", ".join(report["classes"])]
    if "inpainting" in report:
        lines += ["", "## Inpainting (filled 48-px square vs the original, val photos)", "",
                  "| method | PSNR | SSIM |", "|---|---|---|"]
        lines += [f"| {k} | {report['inpainting'][k]['psnr_db']:.2f} dB | {report['inpainting'][k]['ssim']:.3f} |"
                  for k in ("ppgn", "ppgn_context", "telea")]
    path.write_text("\n".join(lines) + "\n")
