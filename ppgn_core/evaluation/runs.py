"""A preset run on a set of classes, and the judge's figures on its samples."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..conditions import ClassCondition, imagenet_categories
from ..judge import RealReference, per_sample, robust_report, saturation, strip_private
from ..nets.registry import ModelBundle
from ..presets import build_sampler, get_preset
from .judging import Judge


@dataclass
class PresetRun:
    preset: str
    images: torch.Tensor  # N×3×H×W final samples
    targets: torch.Tensor  # N
    p_class: torch.Tensor  # N, under C
    trajectory: torch.Tensor  # S×N×3×H×W snapshots (for mixing)
    seconds: float
    p_trajectory: torch.Tensor | None = None  # S×N p(class) under C at the same snapshots


def class_batches(targets: torch.Tensor, batch: int, seed: int):
    """(seed, targets) of each run of ``batch`` chains: batch k is seeded ``seed·1000 + k``, so every preset
    starts from the same codes for the same classes."""
    for k, lo in enumerate(range(0, len(targets), batch)):
        yield seed * 1000 + k, targets[lo:lo + batch]


def run_preset_on_classes(bundle: ModelBundle, preset: str, classes: list[int], chains: int, steps: int,
                          seed: int = 0, snapshot_every: int = 10, device: str = "cpu",
                          overrides: dict | None = None, batch: int = 8,
                          condition_mode: str = "log_softmax") -> PresetRun:
    """``chains`` chains for each class (one target per chain), run ``batch`` chains at a time; a chain's
    picture is its state after ``steps`` steps (a denoising preset: its first sample, over ``steps`` noise
    levels; :mod:`.chains` judges the samples a chain keeps after that).

    Batch k is seeded with ``seed·1000 + k``, so every preset starts from the same codes for the
    same classes (same seeds across presets)."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    if not p.is_chain:
        overrides = {"levels": steps} | dict(overrides or {})
    targets = torch.tensor([c for c in classes for _ in range(chains)])
    t0 = time.time()
    images, p_class, trajs, p_trajs = [], [], [], []
    for batch_seed, tb in class_batches(targets, batch, seed):
        condition = ClassCondition(bundle.classifier, tb, mode=condition_mode)
        s = build_sampler(preset, bundle, condition, seed=batch_seed, **(overrides or {}))
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
    judge's report (``robust``; headline ``robust_top1``, ``precision``), per-sample robust hits and
    membership of the real photos' manifold (what precision counts);
    ``_features`` holds the judge's pooled features of the samples (dropped before JSON)."""
    extra: dict = {}
    if reference is not None:
        rob = robust_report(judge, run.images, run.targets, reference)
        logits = rob["_logits"]["plain"]
        extra = {"robust": strip_private(rob), "robust_top1": rob["robust_top1"], "robust_top5": rob["robust_top5"],
                 "precision": rob["precision"], "recall": rob["recall"],
                 "per_sample_robust_top1": per_sample(rob, run.targets),
                 "per_sample_in_manifold": rob["_inside"].int().tolist(), "_features": rob["_logits"]["features"]}
    h = judge.hits(run.images, run.targets, logits)
    return extra | {"preset": run.preset, "n": int(len(run.targets)), "judge_top1": float(h["top1"].float().mean()),
            "judge_top5": float(h["top5"].float().mean()),
            "judge_p_target": float(h["p_target"].mean()),
            "c_p_class_mean": float(run.p_class.mean()), "c_pass_097": float((run.p_class >= 0.97).float().mean()),
            "saturation": saturation(run.images), "seconds": round(run.seconds, 1),
            "per_sample_top1": h["top1"].int().tolist(), "per_sample_pred": h["pred"].tolist()}


def save_sheet(run: PresetRun, path: Path, chains: int) -> None:
    """A sample sheet (4 classes per row); large runs are shown at half size with a 256-colour
    palette so that a committed report stays small."""
    from PIL import Image

    from ..images import grid

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
