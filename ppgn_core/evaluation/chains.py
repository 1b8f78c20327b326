"""Chains as the paper measures them: the samples one chain keeps along its run, judged as samples
(robust top-1, precision, recall against real photos), for diversity (pairwise MS-SSIM within a chain)
and for mixing (how far a chain moves between consecutive kept samples, in the judge's features)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..conditions import ClassCondition
from ..judge import RealReference, robust_report
from ..nets.registry import ModelBundle
from ..presets import build_sampler, get_preset
from ..sampler import Snapshot
from .diversity import mean_pairwise_ms_ssim, real_feature_scale
from .judging import Judge
from .runs import class_batches


@dataclass
class ChainRun:
    """The kept samples of one chain a class: ``images`` K×N×3×H×W (K kept samples of N chains), their
    steps, p(class) under C, the chains' targets."""

    preset: str
    images: torch.Tensor
    steps: list[int]
    p_class: torch.Tensor  # K×N
    targets: torch.Tensor  # N
    seconds: float


def is_kept(sn: Snapshot, mala: bool, every: int, first: int) -> bool:
    """Whether a run keeps this snapshot as a sample: a denoising chain's finished samples (``Snapshot.kept``);
    for a MALA-approx chain, its state at step ``first`` and every ``every`` steps after (and at its last step)."""
    if not mala:
        return sn.kept
    return sn.step >= first and ((sn.step - first) % every == 0 or sn.final)


def run_chains(bundle: ModelBundle, preset: str, classes: list[int], steps: int, every: int, seed: int = 0,
               overrides: dict | None = None, batch: int = 8, first: int | None = None,
               device: str = "cpu") -> ChainRun:
    """One chain a class, ``steps`` steps each, ``batch`` chains at a time (batch k seeded ``seed·1000 + k``,
    as :func:`~ppgn_core.evaluation.runs.run_preset_on_classes`). A denoising preset keeps a sample every
    ``every`` levels after its first (``round_levels = every``); a MALA-approx chain keeps its state at
    step ``first`` (default: the preset's ``levels``, else its ``steps``) and every ``every`` steps after."""
    p = get_preset(preset)
    o = dict(overrides or {})
    if not p.is_chain:
        o.setdefault("round_levels", every)
    first = (p.levels or p.steps) if first is None else first
    t0 = time.time()
    images, p_class, step_list = [], [], None
    targets = torch.tensor(classes)
    snapshot_every = 1 if p.is_chain else steps + 1  # a denoising chain's samples come as kept snapshots
    for batch_seed, tb in class_batches(targets, batch, seed):
        s = build_sampler(p, bundle, ClassCondition(bundle.classifier, tb), seed=batch_seed, **o)
        snaps = [sn for sn in s.run(s.init(len(tb), device), steps, snapshot_every)
                 if is_kept(sn, p.is_chain, every, first)]
        step_list = [sn.step for sn in snaps]
        images.append(torch.stack([sn.image for sn in snaps]))
        p_class.append(torch.stack([sn.p_class for sn in snaps]))
    return ChainRun(p.name, torch.cat(images, 1), step_list or [], torch.cat(p_class, 1), targets,
                    time.time() - t0)


def _bootstrap(per_chain: np.ndarray, seed: int = 0, draws: int = 2000) -> list[float]:
    """A 95% interval of the mean over chains, resampling chains (a chain's samples are not independent)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_chain), (draws, len(per_chain)))
    means = per_chain[idx].mean(1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def chain_figures(judge: Judge, reference: RealReference, run: ChainRun, skip_first: bool = False) -> dict:
    """The figures of a run's kept samples (all of them, or without each chain's first with ``skip_first``):
    robust top-1 and precision (with 95% intervals over chains), recall, diversity (mean pairwise MS-SSIM of
    a chain's samples, lower = more diverse; and their mean pairwise judge-feature distance) and mixing (mean
    judge-feature distance between a chain's consecutive samples); distances in units of the distance between
    two real photos of a class."""
    images = run.images[1:] if skip_first else run.images
    k, n = images.shape[:2]
    flat = images.transpose(0, 1).flatten(0, 1)  # chain-major: chain i's samples together
    targets = run.targets.repeat_interleave(k)
    rob = robust_report(judge, flat, targets, reference)
    hits = (rob["_logits"]["down2"].argmax(1) == targets).float().view(n, k).mean(1).numpy()
    inside = rob["_inside"].float().view(n, k).mean(1).numpy()
    feats = rob["_logits"]["features"].view(n, k, -1)
    scale = real_feature_scale(reference.features, reference.labels)
    step_dist = (feats[:, 1:] - feats[:, :-1]).norm(dim=-1) / scale if k > 1 else torch.zeros(n, 0)
    spread = float(torch.stack([torch.pdist(f).mean() for f in feats]).mean()) / scale if k > 1 else float("nan")
    ssim = [mean_pairwise_ms_ssim(images[:, i]) for i in range(n)] if k > 1 else [float("nan")]
    return {"preset": run.preset, "chains": n, "kept_per_chain": k, "samples": n * k,
            "kept_steps": run.steps[1:] if skip_first else run.steps,
            "robust_top1": float(hits.mean()), "robust_top1_ci95": _bootstrap(hits),
            "precision": float(rob["precision"]), "precision_ci95": _bootstrap(inside), "recall": float(rob["recall"]),
            "c_p_class_mean": float(run.p_class.mean()),
            "ms_ssim_within_chain": float(np.nanmean(ssim)), "feature_spread_within_chain": spread,
            "mixing_step_distance": float(step_dist.mean()) if k > 1 else float("nan"),
            "seconds": round(run.seconds, 1),
            "per_chain_robust_top1": hits.round(4).tolist(), "per_chain_in_manifold": inside.round(4).tolist()}
