"""Evaluation: an independent judge's accuracy, diversity (MS-SSIM), mixing, reconstructions.

The judge is EfficientNet-Lite2, which never takes part in sampling (C = Lite0): a condition
network's own p(class) is easy to push to 0.9+ with images no other network recognises. Every
judge figure is also given under the robust judge's transforms (``down2`` the headline), as a
fraction of real photos' figure, with precision/recall against real val photos (``judge.py``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .conditions import ClassCondition, imagenet_categories
from .data import DEFAULT_DATA_ROOT, load_folder, to_float, val_photos
from .judge import (HEADLINE, RealReference, RobustJudge, per_sample, real_reference, robust_report, saturation,
                    strip_private, topk_hits)
from .nets.registry import ModelBundle
from .presets import build_sampler

#: the paper's extra classes of interest, beside the 10 Imagenette (training) classes
EXTRA_CLASSES = ["volcano", "pool table", "cardoon", "planetarium", "junco", "bell pepper", "lemon",
                 "monarch", "castle", "daisy"]
IMAGENETTE_CLASSES = [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]
#: seed of the one-time draw of the evaluation's 100 further classes
CLASS_DRAW_SEED = 2017


def default_classes(n_random: int = 100, seed: int = CLASS_DRAW_SEED) -> list[int]:
    """The evaluation's default classes: the 10 Imagenette classes, then ``n_random`` classes drawn
    once (fixed seed) from the other 990 ImageNet classes, in drawn order."""
    rest = np.array([c for c in range(1000) if c not in IMAGENETTE_CLASSES])
    drawn = np.random.default_rng(seed).choice(rest, n_random, replace=False)
    return IMAGENETTE_CLASSES + [int(c) for c in drawn]


# ----------------------------------------------------------------------------- MS-SSIM

def _gauss_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(t ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _filter(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    x = F.conv2d(x, win.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, win.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _ssim_parts(a: torch.Tensor, b: torch.Tensor, win: torch.Tensor, data_range: float = 1.0):
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter(a, win), _filter(b, win)
    saa = _filter(a * a, win) - mu_a ** 2
    sbb = _filter(b * b, win) - mu_b ** 2
    sab = _filter(a * b, win) - mu_a * mu_b
    cs = (2 * sab + c2) / (saa + sbb + c2)
    ssim_map = ((2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)) * cs
    return ssim_map.flatten(2).mean(-1), cs.flatten(2).mean(-1)  # B×C each


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim(a: torch.Tensor, b: torch.Tensor, weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
            win_size: int = 7) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003) of images in [0, 1], per image (B). Gaussian window
    ``win_size`` (σ 1.5; 7 so that 128-px images fit five scales), 2× average-pool between scales;
    needs a side > (win_size−1)·2^(scales−1)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if min(a.shape[-2:]) <= (win_size - 1) * 2 ** (len(weights) - 1):
        raise ValueError(f"images of side {min(a.shape[-2:])} are too small for {len(weights)} scales")
    win = _gauss_window(win_size, 1.5, a.device)
    w = torch.tensor(weights, device=a.device)
    vals = []
    for i in range(len(weights)):
        ssim, cs = _ssim_parts(a, b, win)
        vals.append(torch.relu(ssim if i == len(weights) - 1 else cs))
        if i < len(weights) - 1:
            a = F.avg_pool2d(a, 2)
            b = F.avg_pool2d(b, 2)
    stack = torch.stack(vals, dim=0)  # S×B×C
    return torch.prod(stack ** w.view(-1, 1, 1), dim=0).mean(1)


def mean_pairwise_ms_ssim(images: torch.Tensor, max_pairs: int = 200, seed: int = 0) -> float:
    """Mean MS-SSIM over (up to ``max_pairs`` random) pairs of distinct images: lower = more diverse."""
    n = images.shape[0]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if not pairs:
        return float("nan")
    rng = np.random.default_rng(seed)
    if len(pairs) > max_pairs:
        pairs = [pairs[k] for k in rng.choice(len(pairs), max_pairs, replace=False)]
    ia = torch.tensor([p[0] for p in pairs])
    ib = torch.tensor([p[1] for p in pairs])
    return float(ms_ssim(images[ia], images[ib]).mean())


# ----------------------------------------------------------------------------- judge

class Judge(RobustJudge):
    """EfficientNet-Lite2 (never used in sampling) classifying images in [0, 1]; the robust judge's
    transforms come with it (:class:`ppgn_core.judge.RobustJudge`)."""

    def logits(self, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
        return self.predict(images)[0]

    def features(self, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
        return self.predict(images)[1]

    def hits(self, images: torch.Tensor, targets: torch.Tensor,
             logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Top-1/top-5 hits on ``targets``; pass ``logits`` already computed for ``images`` to skip the pass."""
        logits = self.logits(images) if logits is None else logits
        t = targets.view(-1, 1)
        return topk_hits(logits, targets) | {"p_target": F.softmax(logits, 1).gather(1, t).squeeze(1),
                                             "pred": logits.argmax(1)}


def real_image_accuracy(judge: Judge, root: Path = DEFAULT_DATA_ROOT / "val", limit: int | None = 500,
                        seed: int = 0) -> dict:
    """The judge's own accuracy on real photos (the ceiling), from its real predictions."""
    images_u8, labels = load_folder(root, 128, limit, seed)
    h = judge.hits(to_float(images_u8), labels)
    return {"n": int(len(labels)), "top1": float(h["top1"].float().mean()), "top5": float(h["top5"].float().mean())}


# ----------------------------------------------------------------------------- reconstructions

@torch.no_grad()
def reconstruction_metrics(bundle: ModelBundle, images: torch.Tensor, batch: int = 32,
                           judge: Judge | None = None, labels: torch.Tensor | None = None,
                           reference: RealReference | None = None) -> dict:
    """PSNR of G(E(x)) against x and cosine similarity of E(G(E(x))) to E(x), on real images; with a
    ``judge`` and the photos' ``labels``, also the judge's top-1/top-5 on the reconstructions G(E(x))
    (how much of the class a reconstruction keeps for a network that took no part in training);
    with a real ``reference`` too, the robust judge's full report on them (``robust``)."""
    if judge is not None and (labels is None or len(labels) != len(images)):
        raise ValueError("judging reconstructions needs one label per image")
    psnrs, coss, recons = [], [], []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        h = bundle.encoder(x)
        xr = bundle.generator(h).clamp(0, 1)
        mse = ((xr - x) ** 2).flatten(1).mean(1)
        psnrs.append(10 * torch.log10(1 / mse.clamp_min(1e-10)))
        coss.append(F.cosine_similarity(bundle.encoder(xr).flatten(1), h.flatten(1), dim=1))
        if judge is not None:
            recons.append(xr.cpu())
    p, c = torch.cat(psnrs), torch.cat(coss)
    out = {"n": int(len(images)), "psnr_db": float(p.mean()), "psnr_std": float(p.std()),
           "cosine_h": float(c.mean()), "cosine_std": float(c.std())}
    if judge is not None and reference is not None:
        rob = strip_private(robust_report(judge, torch.cat(recons), labels.cpu(), reference))
        out["judge_top1"], out["judge_top5"] = rob["accuracy"]["plain"]["top1"], rob["accuracy"]["plain"]["top5"]
        out["robust"] = rob
    elif judge is not None:
        hits = judge.hits(torch.cat(recons), labels.cpu())  # one pass, batched by the judge itself
        out["judge_top1"], out["judge_top5"] = float(hits["top1"].float().mean()), float(hits["top5"].float().mean())
    return out


# ----------------------------------------------------------------------------- sampling evaluation

@dataclass
class PresetRun:
    preset: str
    images: torch.Tensor  # N×3×H×W final samples
    targets: torch.Tensor  # N
    p_class: torch.Tensor  # N, under C
    trajectory: torch.Tensor  # S×N×3×H×W snapshots (for mixing)
    seconds: float
    p_trajectory: torch.Tensor | None = None  # S×N p(class) under C at the same snapshots


def run_preset_on_classes(bundle: ModelBundle, preset: str, classes: list[int], chains: int, steps: int,
                          seed: int = 0, snapshot_every: int = 10, device: str = "cpu",
                          overrides: dict | None = None, batch: int = 8,
                          condition_mode: str = "log_softmax") -> PresetRun:
    """``chains`` chains for each class (one target per chain), run ``batch`` chains at a time.

    Batch k is seeded with ``seed·1000 + k``, so every preset starts from the same codes for the
    same classes (same seeds across presets)."""
    targets = torch.tensor([c for c in classes for _ in range(chains)])
    t0 = time.time()
    images, p_class, trajs, p_trajs = [], [], [], []
    for k, lo in enumerate(range(0, len(targets), batch)):
        tb = targets[lo:lo + batch]
        condition = ClassCondition(bundle.classifier, tb, mode=condition_mode)
        s = build_sampler(preset, bundle, condition, seed=seed * 1000 + k, **(overrides or {}))
        snaps = list(s.run(s.init(len(tb), device), steps, snapshot_every))
        images.append(snaps[-1].image)
        p_class.append(snaps[-1].p_class)
        trajs.append(torch.stack([sn.image for sn in snaps]))
        p_trajs.append(torch.stack([sn.p_class for sn in snaps]))
    return PresetRun(preset, torch.cat(images), targets, torch.cat(p_class), torch.cat(trajs, dim=1),
                     time.time() - t0, torch.cat(p_trajs, dim=1))


def judge_summary(judge: Judge, run: PresetRun, logits: torch.Tensor | None = None,
                  reference: RealReference | None = None) -> dict:
    """The judge's figures on a run's final samples; with a real ``reference``, also the robust
    judge's report (``robust``; headline ``robust_top1``, ``precision``) and per-sample robust hits;
    ``_features`` holds the judge's pooled features of the samples (dropped before JSON)."""
    extra: dict = {}
    if reference is not None:
        rob = robust_report(judge, run.images, run.targets, reference)
        logits = rob["_logits"]["plain"]
        extra = {"robust": strip_private(rob), "robust_top1": rob["robust_top1"], "robust_top5": rob["robust_top5"],
                 "precision": rob["precision"], "recall": rob["recall"],
                 "per_sample_robust_top1": per_sample(rob, run.targets), "_features": rob["_logits"]["features"]}
    h = judge.hits(run.images, run.targets, logits)
    return extra | {"preset": run.preset, "n": int(len(run.targets)), "judge_top1": float(h["top1"].float().mean()),
            "judge_top5": float(h["top5"].float().mean()),
            "judge_p_target": float(h["p_target"].mean()),
            "c_p_class_mean": float(run.p_class.mean()), "c_pass_097": float((run.p_class >= 0.97).float().mean()),
            "saturation": saturation(run.images), "seconds": round(run.seconds, 1),
            "per_sample_top1": h["top1"].int().tolist(), "per_sample_pred": h["pred"].tolist()}


def class_ids(names: list[str | int]) -> list[int]:
    from .conditions import class_index

    return [class_index(n) for n in names]


def save_sheet(run: PresetRun, path: Path, chains: int) -> None:
    """A sample sheet (4 classes per row); large runs are shown at half size with a 256-colour
    palette so that a committed report stays small."""
    from PIL import Image

    from .images import grid

    large = len(run.images) > 64
    images = F.avg_pool2d(run.images, 2) if large else run.images
    sheet = Image.fromarray(grid(images, nrow=chains * 4 if len(images) >= chains * 4 else chains))
    if large:
        sheet = sheet.quantize(256)
    sheet.save(path, optimize=True)


def compare_priors(bundle: ModelBundle, presets: list[str], classes: list[int], chains: int, steps: int,
                   out: Path, seed: int = 0, device: str = "cpu", overrides: dict | None = None) -> dict:
    """Judge accuracy for several presets on the same classes and seeds (issue: learned prior vs DGN-AM)."""
    out.mkdir(parents=True, exist_ok=True)
    judge = Judge(device=device)
    names = imagenet_categories()
    results = {"classes": [names[c] for c in classes], "chains": chains, "steps": steps, "seed": seed,
               "condition": bundle.classifier.name, "judge": judge.classifier.name, "presets": {}}
    for p in presets:
        run = run_preset_on_classes(bundle, p, classes, chains, steps, seed, steps, device,
                                    (overrides or {}).get(p))
        results["presets"][p] = judge_summary(judge, run)
        save_sheet(run, out / f"sheet_{p}.png", chains)
        (out / "compare_priors.json").write_text(json.dumps(results, indent=2))
    return results


def fmt_pct(x: float | None, missing: str = "n/a") -> str:
    return missing if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def diversity(run: PresetRun, chains: int) -> dict:
    """Mean within-class pairwise MS-SSIM of final samples (lower = more diverse)."""
    vals = []
    for k in range(0, len(run.images), chains):
        group = run.images[k:k + chains]
        if len(group) >= 2:
            vals.append(mean_pairwise_ms_ssim(group))
    return {"ms_ssim_within_class": float(np.mean(vals)) if vals else float("nan")}


def feature_spread(feats: torch.Tensor, groups: list[torch.Tensor]) -> float:
    """Mean pairwise Euclidean distance of judge features within each group (class), averaged."""
    vals = [float(torch.pdist(feats[g]).mean()) for g in groups if len(g) >= 2]
    return float(np.mean(vals)) if vals else float("nan")


def real_feature_scale(feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Median distance between judge features of two real photos of the same class: the unit in
    which mixing distances and modes are measured ("as different as two real photos")."""
    d = [torch.pdist(feats[labels == c]) for c in labels.unique() if int((labels == c).sum()) >= 2]
    return float(torch.cat(d).median())


def count_modes(feats: torch.Tensor, radius: float) -> int:
    """Leader clustering of one chain's samples (in order): a sample farther than ``radius`` from
    every mode found so far opens a new mode. Returns the number of modes."""
    leaders: list[torch.Tensor] = []
    for f in feats:
        if not leaders or float(torch.cdist(f[None], torch.stack(leaders)).min()) > radius:
            leaders.append(f)
    return len(leaders)


def mixing(judge: Judge, run: PresetRun, snapshot_every: int, scale: float, max_chains: int = 48) -> dict:
    """How far chains travel and how many modes they visit (paper Figs. S13–S15), in the judge's
    feature space, for the first ``max_chains`` chains. Distances are divided by ``scale`` (the
    real-photo same-class distance); a mode is a cluster of radius ``scale``; the starting
    point (step 0) is left out of the mode count."""
    traj = run.trajectory[:, :max_chains]  # S×N×3×H×W
    n_snap, n = traj.shape[:2]
    if n_snap < 3 or n == 0:  # nothing to measure (e.g. --mixing-chains 0)
        return {}
    feats = judge.features(traj.flatten(0, 1)).view(n_snap, n, -1)
    out = {"chains": n, "snapshot_every": snapshot_every, "scale": scale}
    for k in (1, 2):
        if n_snap - 1 > k:
            d = (feats[1 + k:] - feats[1:-k]).norm(dim=-1)  # from the first step on
            out[f"dist_{k * snapshot_every}_steps"] = float(d.mean() / scale)
    modes = [count_modes(feats[1:, i], scale) for i in range(n)]
    out["modes_per_chain"] = float(np.mean(modes))
    out["modes_max"] = int(max(modes))
    return out


RECON_RANKS = range(4, 6)  # val photos 5–6 of every class: disjoint from the judge's reference and held-out sets


def real_val_summary(judge: Judge, reference: RealReference, chains: int, max_classes: int | None) -> dict:
    """The real photos' row: the judge's ceiling (held-out photos, plain and robust), their
    precision/recall and saturation, and the same-class feature scale that mixing is measured in."""
    acc = reference.ceiling
    out = {"set": reference.description, "n": len(reference.labels.unique()), "judge_top1": acc["plain"]["top1"],
           "judge_top5": acc["plain"]["top5"], "robust_top1": acc[HEADLINE]["top1"],
           "robust_top5": acc[HEADLINE]["top5"], "saturation": reference.heldout_saturation,
           "robust": reference.to_dict(), "precision": reference.heldout_pr["precision"],
           "recall": reference.heldout_pr["recall"]}
    out["feature_scale"] = scale = real_feature_scale(reference.features, reference.labels)
    groups = [torch.nonzero(reference.labels == c).flatten()[:chains] for c in reference.labels.unique()]
    out["feature_spread"] = feature_spread(reference.features, groups) / scale
    imgs, labels = val_photos(range(0, 3), max_classes)
    per_class = [mean_pairwise_ms_ssim(to_float(imgs[labels == c])) for c in labels.unique()[:10]]
    out["ms_ssim_within_class"] = float(np.mean(per_class))
    return out


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


# ----------------------------------------------------------------------------- inpainting

def _ssim_region(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=1.0))


def inpainting_eval(bundle: ModelBundle, n: int = 10, steps: int = 40, patch: int = 48, seed: int = 0,
                    eps4: float = 1.0, device: str = "cpu") -> dict:
    """PSNR/SSIM of the filled square against the original on masked val photos (paper Sec. S10:
    a random patch; here 48 px of 128): PPGN (ε4 = 0), PPGN-context (ε4 > 0), OpenCV Telea."""
    import cv2

    from .inpaint import run_inpaint

    images, labels = load_folder(DEFAULT_DATA_ROOT / "val", 128, n, seed)
    rng = np.random.default_rng(seed)
    rows = {"ppgn": [], "ppgn_context": [], "telea": []}
    for i in range(len(images)):
        x = to_float(images[i:i + 1]).to(device)
        top, left = (int(v) for v in rng.integers(8, 128 - patch - 8, 2))
        mask = torch.zeros(1, 1, 128, 128, device=device)
        mask[..., top:top + patch, left:left + patch] = 1
        crop = (slice(top, top + patch), slice(left, left + patch))
        ref = x[0].permute(1, 2, 0).cpu().numpy()[crop]
        for key, e4 in (("ppgn", 0.0), ("ppgn_context", eps4)):
            out = run_inpaint(bundle, x, mask, classes=[int(labels[i])], steps=steps, seed=seed, eps4=e4)
            filled = out["images"][0].permute(1, 2, 0).numpy()[crop]
            rows[key].append((_psnr_np(filled, ref), _ssim_region(filled, ref)))
        u8 = images[i].permute(1, 2, 0).numpy().copy()
        m8 = (mask[0, 0].cpu().numpy() * 255).astype(np.uint8)
        telea = cv2.inpaint(np.ascontiguousarray(u8[..., ::-1]), m8, 5, cv2.INPAINT_TELEA)[..., ::-1] / 255.0
        rows["telea"].append((_psnr_np(telea[crop], ref), _ssim_region(telea[crop].astype(np.float32), ref)))
    return {k: {"psnr_db": float(np.mean([r[0] for r in v])), "ssim": float(np.mean([r[1] for r in v])), "n": len(v)}
            for k, v in rows.items()} | {"patch": patch, "steps": steps, "eps4": eps4}


def _psnr_np(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - b) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-12))
