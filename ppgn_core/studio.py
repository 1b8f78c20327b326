"""The app's workflows without any UI: streaming sampling, neuron facets (MFV), t-SNE grids, and
side-by-side inpainting. ``app.py`` only lays these out and wires events to them."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .conditions import ClassCondition, InpaintContext, UnitCondition, class_index, imagenet_categories
from .images import grid, load_image, load_mask, save_gif, save_png, to_uint8
from .jobs import SampleRequest, chain_records, make_sampler, result_record
from .nets.registry import ModelBundle
from .presets import build_sampler, get_preset
from .sampler import Control

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
RUNS_KEPT = 40


@dataclass
class Update:
    """One streamed update of a long action."""

    step: int
    total: int
    images: list[np.ndarray]  # current image of each chain (H×W×3 uint8)
    status: str
    curves: list[list[float]] = field(default_factory=list)  # per chain, p(class) per snapshot
    curve_steps: list[int] = field(default_factory=list)
    filmstrip: np.ndarray | None = None
    files: list[str] = field(default_factory=list)
    record: dict | None = None
    final: bool = False
    extra: dict = field(default_factory=dict)


class Studio:
    """Holds the loaded models; every method is safe to call from several sessions at once
    (each run has its own sampler, generator and Control)."""

    def __init__(self, bundle: ModelBundle, device: str = "cpu", workdir: str | None = None):
        self.bundle, self.device = bundle, device
        self.categories = imagenet_categories()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="ppgn-studio-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._layers: list[tuple[str, int]] | None = None
        self._example_cache: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ helpers
    def class_choices(self) -> list[str]:
        return [f"{i}: {name}" for i, name in enumerate(self.categories)]

    def parse_class(self, value: str | int | None) -> int:
        """'980: volcano', 'volcano' or 980 → 980 (ValueError with suggestions otherwise)."""
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("pick a class")
        if isinstance(value, str) and ":" in value:
            value = value.split(":", 1)[0]
        return class_index(value, self.categories)

    def layers(self) -> list[tuple[str, int]]:
        if self._layers is None:
            self._layers = self.bundle.classifier.layers()
        return self._layers

    def _run_dir(self) -> Path:
        runs = sorted(self.workdir.glob("run-*"), key=lambda p: p.stat().st_mtime)
        for old in runs[:-RUNS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix="run-", dir=self.workdir))

    def examples(self) -> list[Path]:
        return sorted(EXAMPLES.glob("*.png"))

    # ------------------------------------------------------------------ Sample tab
    def sample_stream(self, req: SampleRequest, control: Control | None = None,
                      start_image: np.ndarray | None = None, film_chain: int = 0) -> Iterator[Update]:
        """Stream a sampling run; ``control`` may be changed (ε, lr) or stopped while it runs."""
        req.validate()
        sampler = make_sampler(self.bundle, req)
        if control is not None:
            control.update(**asdict(sampler.control.settings))
            sampler.control = control
        start = load_image(start_image, self.bundle.image_size).to(self.device) if start_image is not None else None
        z0 = sampler.init(req.chains, self.device, start)
        film_chain = min(max(0, film_chain), req.chains - 1)
        snaps = []
        curves: list[list[float]] = [[] for _ in range(req.chains)]
        steps: list[int] = []
        film: list[np.ndarray] = []
        t0 = time.time()
        for snap in sampler.run(z0, req.steps, req.snapshot_every):
            snaps.append(snap)
            imgs = to_uint8(snap.image)
            steps.append(snap.step)
            for i in range(req.chains):
                curves[i].append(float(snap.p_class[i]) if snap.p_class is not None else float(snap.condition[i]))
            film.append(imgs[film_chain])
            status = (f"step {snap.step} / {req.steps}" + (" (stopped)" if snap.final and snap.step < req.steps else "")
                      + (f" — {len(snap.recovered)} chain(s) recovered from a numerical blow-up" if snap.recovered
                         else ""))
            upd = Update(snap.step, req.steps, list(imgs), status, [list(c) for c in curves], list(steps),
                         np.concatenate(film[-12:], axis=1))
            if snap.final:
                record = result_record(req, sampler, snaps, time.time() - t0, self.device)
                upd.record, upd.files, upd.final = record, self._write_sample_files(snaps, record), True
            yield upd

    def _write_sample_files(self, snaps, record) -> list[str]:
        d = self._run_dir()
        stack = torch.stack([s.image for s in snaps], dim=1).flatten(0, 1)
        save_png(grid(stack, nrow=len(snaps)), d / "grid.png")
        chains = snaps[-1].image.shape[0]
        save_gif([grid(s.image, nrow=min(chains, 4)) for s in snaps], d / "chain.gif")
        (d / "settings.json").write_text(json.dumps(record, indent=2))
        return [str(d / "grid.png"), str(d / "chain.gif"), str(d / "settings.json")]

    # ------------------------------------------------------------------ Neurons tab (MFV)
    def random_unit(self, layer: str, seed: int) -> int:
        units = dict(self.layers())
        if layer not in units:
            raise ValueError(f"unknown layer {layer!r}")
        return int(np.random.default_rng(seed).integers(0, units[layer]))

    def neuron_facets(self, layer: str, unit: int, chains: int = 4, segments: int = 3, steps_per_segment: int = 40,
                      facets: int = 3, seed: int = 0, eps1_values: tuple[float, ...] = (1e-5, 1e-3, 1e-1),
                      control: Control | None = None) -> Iterator[Update]:
        """Multifaceted visualisation: chains restart from fresh codes every segment (the release's
        reset schedule) with ε1 varied per segment; final images are grouped into facets by
        k-means on the condition network's pooled features."""
        from sklearn.cluster import KMeans

        spec = f"{layer}:{int(unit)}"
        cond = UnitCondition(self.bundle.classifier, spec)
        preset = get_preset("mfv")
        total = segments * steps_per_segment
        if chains < 1 or segments < 1 or steps_per_segment < 1:
            raise ValueError("chains, segments and steps per segment must be ≥ 1")
        s = build_sampler(preset, self.bundle, cond, seed=seed, reset_every=0, control=control)
        samples, acts = [], []
        done = 0
        for seg in range(segments):
            if s.control.stopped:
                break
            s.control.update(eps1=float(eps1_values[seg % len(eps1_values)]))
            z0 = s.init(chains, self.device)
            for snap in s.run(z0, steps_per_segment, snapshot_every=max(1, steps_per_segment // 4)):
                yield Update(done + snap.step, total, list(to_uint8(snap.image)),
                             f"segment {seg + 1}/{segments} (ε1={s.control.settings.eps1:g}), step {snap.step}")
            done += snap.step
            samples.append(snap.image)
            acts.append(snap.condition)
        if not samples:
            return
        images = torch.cat(samples)
        activations = torch.cat(acts)
        feats = self._features(images)
        k = max(1, min(facets, len(images)))
        labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(feats.numpy()) if k > 1 \
            else np.zeros(len(images), int)
        rows = []
        for f in range(k):
            idx = [int(i) for i in np.argsort(-activations.numpy()) if labels[i] == f]
            rows.append({"facet": f, "indices": idx, "activations": [float(activations[i]) for i in idx]})
        sheet, sheet_rows = self._facet_sheet(images, rows)
        top = self.top_examples(cond)
        d = self._run_dir()
        save_png(sheet, d / "facets.png")
        record = {"unit": spec, "chains": chains, "segments": segments, "steps_per_segment": steps_per_segment,
                  "eps1_values": list(eps1_values), "seed": seed, "facets": rows,
                  "top_examples": [{"file": n, "activation": a} for n, a, _ in top]}
        (d / "facets.json").write_text(json.dumps(record, indent=2))
        yield Update(done, total, list(to_uint8(images)), f"done: {len(images)} samples in {k} facets",
                     files=[str(d / "facets.png"), str(d / "facets.json")], record=record, final=True,
                     extra={"sheet": sheet, "rows": sheet_rows, "top": top})

    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        clf = self.bundle.classifier
        layer = self.layers()[-2][0]  # the layer before the classifier's output
        with clf.capture([layer]) as acts:
            clf(images.to(self.device))
        f = acts[layer]
        return (f.flatten(2).mean(2) if f.dim() == 4 else f.flatten(1)).cpu()

    def _facet_sheet(self, images: torch.Tensor, rows: list[dict], per_row: int = 6):
        out_rows = []
        for r in rows:
            idx = r["indices"][:per_row]
            pad = per_row - len(idx)
            row = [images[i] for i in idx] + [torch.ones_like(images[0])] * pad
            out_rows.append(torch.stack(row))
        return grid(torch.cat(out_rows), nrow=per_row), [
            [(to_uint8(images[i:i + 1])[0], f"{a:.2f}") for i, a in zip(r["indices"][:per_row], r["activations"])]
            for r in rows]

    @torch.no_grad()
    def top_examples(self, cond: UnitCondition, k: int = 4) -> list[tuple[str, float, np.ndarray]]:
        """The shipped example images that activate the unit most."""
        files = self.examples()
        if not files:
            return []
        x = torch.cat([self._example(f) for f in files]).to(self.device)
        with cond.classifier.capture(list(cond.layers)) as acts:
            logits = cond.classifier(x)
        vals = cond.value(logits, acts).cpu()
        order = torch.argsort(vals, descending=True)[:k]
        imgs = to_uint8(x.cpu())
        return [(files[i].name, float(vals[i]), imgs[i]) for i in order.tolist()]

    def _example(self, path: Path) -> torch.Tensor:
        key = str(path)
        if key not in self._example_cache:
            self._example_cache[key] = load_image(path, self.bundle.image_size)
        return self._example_cache[key]

    # ------------------------------------------------------------------ t-SNE tab
    def tsne_grid(self, class_value: str | int, chains: int = 6, steps: int = 60, snapshot_every: int = 5,
                  threshold: float = 0.97, preset: str = "noiseless-joint-ppgn-h", seed: int = 0,
                  max_samples: int = 400, control: Control | None = None) -> Iterator[Update]:
        """Figs. S11–S12: many chain samples with p(class) ≥ threshold, embedded by t-SNE and
        snapped to a square grid (one image per cell, optimal assignment)."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        cls = self.parse_class(class_value)
        req = SampleRequest(classes=[cls], preset=preset, steps=steps, chains=chains, seed=seed,
                            snapshot_every=snapshot_every).validate()
        sampler = make_sampler(self.bundle, req)
        if control is not None:
            control.update(**asdict(sampler.control.settings))
            sampler.control = control
        kept, probs = [], []
        for snap in sampler.run(sampler.init(chains, self.device), steps, snapshot_every):
            if snap.step > 0:
                ok = snap.p_class >= threshold
                kept.extend(snap.image[ok])
                probs.extend(snap.p_class[ok].tolist())
            yield Update(snap.step, steps, list(to_uint8(snap.image)),
                         f"step {snap.step}/{steps}: {len(kept)} samples with p ≥ {threshold:g}")
        if len(kept) < 2:
            yield Update(steps, steps, [], f"only {len(kept)} sample(s) reached p ≥ {threshold:g}; lower the "
                         "threshold or run more steps", final=True, extra={"grid": None, "points": None})
            return
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(kept))[:max_samples]
        images = torch.stack([kept[i] for i in order])
        probs = [probs[i] for i in order]
        xy = embed_tsne(self._features(images).numpy(), seed)
        cells, side = snap_to_grid(xy)
        canvas = grid_image(images, cells, side)
        d = self._run_dir()
        save_png(canvas, d / "tsne_grid.png")
        yield Update(steps, steps, [], f"{len(images)} samples on a {side}×{side} grid", files=[str(d / "tsne_grid.png")],
                     final=True, extra={"grid": canvas, "points": xy, "thumbs": to_uint8(images), "probs": probs})

    # ------------------------------------------------------------------ Inpaint tab
    def inpaint_stream(self, image, mask, class_value: str | int | None = None, steps: int = 60,
                       eps4: float = 1.0, seed: int = 0, preset: str = "noiseless-joint-ppgn-h",
                       snapshot_every: int = 5, control: Control | None = None) -> Iterator[Update]:
        """PPGN (ε4 = 0) and PPGN-context (ε4 > 0) side by side (Sec. 4.2, S10), streaming; the
        unmasked pixels of both stay exactly the input's."""
        x = load_image(image, self.bundle.image_size).to(self.device)
        m = mask_to_tensor(mask, self.bundle.image_size).to(self.device)
        InpaintContext(x, m, eps4)  # validates mask and ε4
        if class_value in (None, "", "top class"):
            with torch.no_grad():
                cls = int(self.bundle.classifier(x).argmax(1)[0])
        else:
            cls = self.parse_class(class_value)
        runs = []
        for e4 in (0.0, eps4):
            ctx = InpaintContext(x, m, e4)
            s = build_sampler(preset, self.bundle, ClassCondition(self.bundle.classifier, cls), seed=seed,
                              context=ctx, eps4=e4)
            if control is not None:
                s.control = control  # one Stop ends both
            runs.append(s.run(s.init(1, self.device, start=x), steps, snapshot_every))
        x_u8 = to_uint8(x.cpu())[0]
        for a, b in zip(*runs):
            imgs = [to_uint8(a.image)[0], to_uint8(b.image)[0]]
            status = (f"class {cls}: {self.categories[cls]} — step {a.step}/{steps}; "
                      f"p(class): PPGN {float(a.p_class[0]):.3f}, PPGN-context {float(b.p_class[0]):.3f}")
            upd = Update(a.step, steps, imgs, status, extra={"input": x_u8, "class": cls})
            if a.final:
                keep = (m.cpu()[0, 0] == 0).numpy()
                diff = max(int(np.abs(im.astype(int) - x_u8.astype(int))[keep].max()) for im in imgs)
                upd.final = True
                upd.record = {"class": cls, "class_name": self.categories[cls], "steps_run": a.step, "eps4": eps4,
                              "unmasked_max_abs_diff_uint8": diff, "p_class": [float(a.p_class[0]), float(b.p_class[0])]}
                d = self._run_dir()
                save_png(np.concatenate([x_u8] + imgs, axis=1), d / "inpaint.png")
                upd.files = [str(d / "inpaint.png")]
            yield upd


# ---------------------------------------------------------------------- t-SNE helpers

def embed_tsne(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of features (scikit-learn), scaled to [0, 1]²."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 3:
        xy = np.zeros((n, 2)) if n == 0 else np.stack([np.linspace(0, 1, n), np.zeros(n)], 1)
        return xy
    f = features - features.mean(0)
    f = f / (f.std(0) + 1e-6)
    xy = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed).fit_transform(f)
    xy = xy - xy.min(0)
    return xy / np.maximum(xy.max(0), 1e-9)


def snap_to_grid(xy: np.ndarray) -> tuple[np.ndarray, int]:
    """Assign each point to its own cell of a side×side grid minimising the total squared distance
    (optimal assignment, scipy's linear_sum_assignment). Returns (cell index per point, side)."""
    from scipy.optimize import linear_sum_assignment

    n = len(xy)
    side = max(1, math.ceil(math.sqrt(n)))
    g = (np.arange(side) + 0.5) / side
    cells = np.stack(np.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    cost = ((xy[:, None, :] - cells[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    out = np.empty(n, dtype=int)
    out[rows] = cols
    return out, side


def grid_image(images: torch.Tensor, cells: np.ndarray, side: int, pad: int = 1) -> np.ndarray:
    arr = to_uint8(images)
    _, h, w, _ = arr.shape
    canvas = np.full((side * (h + pad) + pad, side * (w + pad) + pad, 3), 255, np.uint8)
    for i, c in enumerate(cells):
        r, col = divmod(int(c), side)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = arr[i]
    return canvas


def mask_to_tensor(mask, size: int) -> torch.Tensor:
    """A mask given as an array/image/path, or as an ImageEditor value (its painted layers), →
    1×1×size×size binary tensor (1 = fill). Painted strokes are resized with nearest neighbours."""
    from PIL import Image

    if isinstance(mask, dict):
        layers = [l for l in (mask.get("layers") or []) if l is not None]
        if not layers:
            raise ValueError("paint the region to fill on the image")
        alpha = None
        for l in layers:
            a = np.asarray(l)
            a = a[..., 3] if a.ndim == 3 and a.shape[2] == 4 else (a.max(axis=2) if a.ndim == 3 else a)
            alpha = a if alpha is None else np.maximum(alpha, a)
        mask = alpha
    if isinstance(mask, np.ndarray):
        m = (mask > 0).astype(np.uint8) * 255
        if m.shape != (size, size):
            h, w = m.shape[:2]
            s = size / min(w, h)
            im = Image.fromarray(m).resize((max(size, round(w * s)), max(size, round(h * s))), Image.NEAREST)
            w2, h2 = im.size
            im = im.crop(((w2 - size) // 2, (h2 - size) // 2, (w2 - size) // 2 + size, (h2 - size) // 2 + size))
            m = np.asarray(im)
        return load_mask(m, size)
    return load_mask(mask, size)


def editor_background(value) -> np.ndarray:
    """The uploaded image of an ImageEditor value (its background, else its composite)."""
    if isinstance(value, dict):
        bg = value.get("background")
        if bg is None:
            bg = value.get("composite")
        if bg is None:
            raise ValueError("upload an image first")
        return np.asarray(bg)
    if value is None:
        raise ValueError("upload an image first")
    return np.asarray(value)
