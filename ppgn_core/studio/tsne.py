"""t-SNE tab (paper Figs. S11–S12): the samples chains of one class keep along their runs, with p(class) ≥ a
threshold, embedded by t-SNE and snapped to a grid, one image per cell."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Iterator

import numpy as np
import torch

from ..allocator import releasing_memory
from ..images import save_png, to_uint8
from ..jobs import SampleRequest, make_sampler
from ..presets import DEFAULT_CHAIN_PRESET, ROUND_LEVELS, get_preset
from ..sampler import Control
from .core import StudioCore, Update

EMPTY_CELL = (228, 228, 228)
#: the tab's steps a chain: the default chain's first sample (30 levels) and 10 more, 12 levels apart
TSNE_STEPS = 150  # grid cells without a sample are drawn in this grey, crossed


class TsneWorkflow:
    def __init__(self, core: StudioCore):
        self.core = core

    @releasing_memory
    def grid(self, class_value: str | int, chains: int = 6, steps: int = TSNE_STEPS, every: int = ROUND_LEVELS,
             threshold: float = 0.97, preset: str = DEFAULT_CHAIN_PRESET, seed: int = 0,
             max_samples: int = 400, control: Control | None = None, eps: tuple[float, float, float] | None = None,
             out_dir=None) -> Iterator[Update]:
        """Run the chains, keep a sample every ``every`` steps (a denoising chain: each sample it finishes,
        ``every`` levels apart; a MALA-approx chain: its state) with p(class) ≥ ``threshold``, drop near-copies
        of a chain's previous kept sample (:func:`pick_distinct`), embed the rest and lay them on a grid.
        The final update's ``extra`` holds every kept sample (``kept``: chain, step, p(class), whether it is on
        the grid) and ``out_dir`` (default: a new run folder) gets ``tsne_grid.png``."""
        core = self.core
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"every must be a whole number ≥ 1, got {every!r}")
        cls = core.parse_class(class_value)
        mala = get_preset(preset).is_chain  # a MALA-approx chain keeps its state; a denoising chain its samples
        req = SampleRequest(classes=[cls], preset=preset, steps=steps, chains=chains, seed=seed, eps=eps,
                            snapshot_every=every if mala else max(1, every // 2)).validate()
        sampler = make_sampler(core.bundle, req, **({} if mala else {"round_levels": every}))
        if control is not None:
            control.update(**asdict(sampler.control.settings))
            sampler.control = control
        kept, rows = [], []
        last: list[np.ndarray] = []
        for snap in sampler.run(sampler.init(chains, core.device), steps, req.snapshot_every):
            last = list(to_uint8(snap.image))
            if snap.kept or (mala and snap.step > 0):
                for i in range(chains):
                    p = float(snap.p_class[i])
                    rows.append({"chain": i, "step": snap.step, "p_class": round(p, 5), "kept": p >= threshold})
                    if p >= threshold:
                        kept.append((snap.image[i], len(rows) - 1))
            yield Update(snap.step, steps, last, f"step {snap.step}/{steps}: {len(kept)} samples with p ≥ {threshold:g}")
        if len(kept) < 2:
            yield Update(steps, steps, last, f"only {len(kept)} sample(s) reached p ≥ {threshold:g}; lower the "
                         "threshold or run more steps", final=True,
                         extra={"grid": None, "points": None, "samples": rows, "images": kept})
            return
        images_all = torch.stack([im for im, _ in kept])
        feats = core.features(images_all).numpy()
        keep = pick_distinct(feats, np.array([rows[r]["chain"] for _, r in kept]))
        order = np.random.default_rng(seed).permutation(keep)[:max_samples]
        on_grid = set(order.tolist())
        for j, (_, r) in enumerate(kept):
            rows[r]["on_grid"] = j in on_grid
        images = images_all[torch.as_tensor(order)]
        xy = embed_tsne(feats[order], seed)
        cells, n_rows, cols = snap_to_grid(xy)
        canvas = grid_image(images, cells, n_rows, cols)
        d = core.run_dir() if out_dir is None else out_dir
        save_png(canvas, d / "tsne_grid.png")
        dropped = len(kept) - len(keep)
        yield Update(steps, steps, last, f"{len(images)} samples on a {n_rows}×{cols} grid ({dropped} near-copies of "
                     f"a chain's previous sample left out)", files=[str(d / "tsne_grid.png")], final=True,
                     extra={"grid": canvas, "points": xy, "thumbs": to_uint8(images),
                            "probs": [rows[kept[i][1]]["p_class"] for i in order], "samples": rows,
                            "images": kept})


def pick_distinct(features: np.ndarray, chain: np.ndarray, fraction: float = 0.5) -> list[int]:
    """Indices of samples to keep: walking each chain in order, a sample is kept when it lies at least
    ``fraction`` × (the median distance between samples of different chains) from the chain's last
    kept sample, so that consecutive near-copies do not fill the embedding and it shows the class's
    modes rather than the chains. With one chain, the median over all pairs is used."""
    f = torch.as_tensor(features, dtype=torch.float32)
    d = torch.cdist(f, f).numpy()  # N×N (an N×N×D difference array would not fit for long runs)
    other = chain[:, None] != chain[None]
    pairs = d[other] if other.any() else d[np.triu_indices(len(d), 1)]
    tau = fraction * float(np.median(pairs)) if len(pairs) else 0.0
    keep: list[int] = []
    last_of: dict[int, int] = {}
    for i in range(len(features)):
        j = last_of.get(int(chain[i]))
        if j is None or d[i, j] >= tau:
            keep.append(i)
            last_of[int(chain[i])] = i
    return keep


def embed_tsne(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of features (scikit-learn), scaled to [0, 1]²."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 3:
        return np.zeros((n, 2)) if n == 0 else np.stack([np.linspace(0, 1, n), np.zeros(n)], 1)
    f = features - features.mean(0)
    f = f / (f.std(0) + 1e-6)
    xy = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed).fit_transform(f)
    xy = xy - xy.min(0)
    return xy / np.maximum(xy.max(0), 1e-9)


def snap_to_grid(xy: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Assign each point its own cell of a rows×cols grid (cols = ⌈√n⌉, rows = ⌈n/cols⌉, so fewer than
    one row of cells stays empty), minimising the total squared distance (optimal assignment, scipy's
    linear_sum_assignment). Returns (cell index per point, rows, cols)."""
    from scipy.optimize import linear_sum_assignment

    n = len(xy)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    gx, gy = (np.arange(cols) + 0.5) / cols, (np.arange(rows) + 0.5) / rows
    cells = np.stack(np.meshgrid(gx, gy, indexing="xy"), -1).reshape(-1, 2)
    cost = ((xy[:, None, :] - cells[None, :, :]) ** 2).sum(-1)
    r, c = linear_sum_assignment(cost)
    out = np.empty(n, dtype=int)
    out[r] = c
    return out, rows, cols


def grid_image(images: torch.Tensor, cells: np.ndarray, rows: int, cols: int, pad: int = 1) -> np.ndarray:
    """The grid picture; a cell without a sample is grey with a cross (plainly empty, not a white image)."""
    arr = to_uint8(images)
    _, h, w, _ = arr.shape
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    filled = set(int(c) for c in cells)
    for cell in range(rows * cols):
        r, col = divmod(cell, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        if cell in filled:
            continue
        canvas[y:y + h, x:x + w] = EMPTY_CELL
        diag = np.arange(min(h, w))
        canvas[y + diag, x + diag] = canvas[y + diag, x + w - 1 - diag] = (160, 160, 160)
    for i, c in enumerate(cells):
        r, col = divmod(int(c), cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y:y + h, x:x + w] = arr[i]
    return canvas
