"""Diversity and mixing of samples: MS-SSIM within a class, spread in the judge's features, modes visited."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: these modules import this one
    from .judging import Judge
    from .runs import PresetRun


import numpy as np
import torch
import torch.nn.functional as F


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
