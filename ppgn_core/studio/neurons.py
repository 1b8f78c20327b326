"""Neurons tab: multifaceted visualisation (MFV) of one hidden unit of C."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..allocator import releasing_memory
from ..conditions import UnitCondition
from ..images import grid, save_png, to_uint8
from ..presets import build_sampler, get_preset
from ..sampler import Control
from .core import StudioCore, Update


#: The Neurons tab's sampler: the latent diffusion prior's chains steered by the unit. On 24 units of blocks.11, 4 samples
#: each, against the release's MFV chains (reports/prior/neuron_facets.json): activation 2.8× the highest among
#: 1,000 val photos against 5.3× (after a 2× down-and-up 2.3× against 3.1×), precision 15.6% against 6.3%,
#: recall 48.8% against 1.1%, the samples' spread in the judge's features 0.42 against 0.23, 13 against 17 s a unit.
NEURON_PRESET = "ldm-ppgn-h"
NEURON_PRESETS = ("ldm-ppgn-h", "mfv")


class NeuronWorkflow:
    def __init__(self, core: StudioCore):
        self.core = core

    def random_unit(self, layer: str, seed: int) -> int:
        units = dict(self.core.layers())
        if layer not in units:
            raise ValueError(f"unknown layer {layer!r}")
        return int(np.random.default_rng(seed).integers(0, units[layer]))

    @releasing_memory
    def facets(self, layer: str, unit: int, chains: int = 4, segments: int = 3, steps_per_segment: int = 12,
               facets: int = 3, seed: int = 0, eps1_values: tuple[float, ...] = (1e-5, 1e-3, 1e-1),
               control: Control | None = None, preset: str = NEURON_PRESET, out_dir=None) -> Iterator[Update]:
        """``segments`` samples a chain: a denoising preset's chains (``ldm-ppgn-h``) keep a sample every
        ``steps_per_segment`` levels after their first, without starting over; MALA-approx chains (the
        release's ``mfv``) restart from fresh codes for each, with ε1 varied per segment. The samples are
        grouped into facets by k-means on C's pooled features. ``out_dir`` (default: a new run folder) gets
        ``facets.png``, ``facets.json`` (each sample's activation and facet) and ``samples/NNN.png``."""
        if chains < 1 or segments < 1 or steps_per_segment < 1:
            raise ValueError("chains, segments and steps per segment must be ≥ 1")
        spec = f"{layer}:{int(unit)}"
        cond = UnitCondition(self.core.bundle.classifier, spec)
        p = get_preset(preset)
        samples: list[torch.Tensor] = []  # filled by the run below, one B×3×H×W batch a sample
        acts: list[torch.Tensor] = []
        if p.is_chain:
            run = self._mfv_rounds(p, cond, chains, segments, steps_per_segment, seed, eps1_values, control,
                                   samples, acts)
        else:
            run = self._chain_samples(p, cond, chains, segments, steps_per_segment, seed, control, samples, acts)
        for upd in run:
            yield upd
        if not samples:
            return
        core, done = self.core, upd.step
        images, activations = torch.cat(samples), torch.cat(acts)
        rows = group_facets(core.features(images).numpy(), activations.numpy(), facets, seed)
        sheet = facet_sheet(images, rows)
        top = self.top_examples(cond)
        d = core.run_dir() if out_dir is None else Path(out_dir)
        save_png(sheet, d / "facets.png")
        for i, img in enumerate(to_uint8(images)):
            save_png(img, d / "samples" / f"{i:03d}.png")
        record = {"unit": spec, "preset": preset, "chains": chains, "segments": segments, "steps_per_segment": steps_per_segment,
                  "eps1_values": list(eps1_values) if p.is_chain else None, "seed": seed, "facets": rows,
                  "activations": activations.tolist(),
                  "top_examples": [{"file": n, "activation": a} for n, a, _ in top]}
        (d / "facets.json").write_text(json.dumps(record, indent=2))
        yield Update(done, upd.total, list(to_uint8(images)), f"done: {len(images)} samples in {len(rows)} facets",
                     files=[str(d / "facets.png"), str(d / "facets.json")], record=record, final=True,
                     extra={"sheet": sheet, "top": top})

    def _chain_samples(self, p, cond, chains, segments, steps_per_segment, seed, control, samples, acts):
        """A denoising preset's chains: its first sample, then one every ``steps_per_segment`` levels."""
        total = (p.levels or p.steps) + (segments - 1) * steps_per_segment
        s = build_sampler(p, self.core.bundle, cond, seed=seed, control=control, round_levels=steps_per_segment)
        found = 0
        for snap in s.run(s.init(chains, self.core.device), total, max(1, steps_per_segment // 3)):
            if snap.kept or (snap.final and not found):  # stopped before a first sample: the state it reached
                samples.append(snap.image)
                acts.append(snap.condition)
                found += 1
            yield Update(snap.step, total, list(to_uint8(snap.image)),
                         f"step {snap.step}/{total}: {found} of {segments} samples a chain")

    def _mfv_rounds(self, p, cond, chains, segments, steps_per_segment, seed, eps1_values, control, samples, acts):
        """MALA-approx chains from fresh codes each segment, ε1 varied per segment."""
        total = segments * steps_per_segment
        s = build_sampler(p, self.core.bundle, cond, seed=seed, reset_every=0, control=control)
        done = 0
        for seg in range(segments):
            if s.control.stopped:
                break
            s.control.update(eps1=float(eps1_values[seg % len(eps1_values)]))
            for snap in s.run(s.init(chains, self.core.device), steps_per_segment, max(1, steps_per_segment // 4)):
                yield Update(done + snap.step, total, list(to_uint8(snap.image)),
                             f"segment {seg + 1}/{segments} (ε1={s.control.settings.eps1:g}), step {snap.step}")
            done += snap.step
            samples.append(snap.image)
            acts.append(snap.condition)

    @torch.no_grad()
    def top_examples(self, cond: UnitCondition, k: int = 4) -> list[tuple[str, float, np.ndarray]]:
        """The shipped example images that activate the unit most."""
        files = self.core.examples()
        if not files:
            return []
        x = torch.cat([self.core.example(f) for f in files]).to(self.core.device)
        with cond.classifier.capture(list(cond.layers)) as acts:
            logits = cond.classifier(x)
        vals = cond.value(logits, acts).cpu()
        order = torch.argsort(vals, descending=True)[:k]
        imgs = to_uint8(x.cpu())
        return [(files[i].name, float(vals[i]), imgs[i]) for i in order.tolist()]


def group_facets(features: np.ndarray, activations: np.ndarray, facets: int, seed: int) -> list[dict]:
    """k-means facets of the samples, each listing its samples strongest first."""
    from sklearn.cluster import KMeans

    k = max(1, min(facets, len(features)))
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(features) if k > 1 \
        else np.zeros(len(features), int)
    rows = []
    for f in range(k):
        idx = [int(i) for i in np.argsort(-activations) if labels[i] == f]
        rows.append({"facet": f, "indices": idx, "activations": [float(activations[i]) for i in idx]})
    return rows


def facet_sheet(images: torch.Tensor, rows: list[dict], per_row: int = 6) -> np.ndarray:
    """One row per facet (strongest sample first), padded with white."""
    out_rows = []
    for r in rows:
        idx = r["indices"][:per_row]
        out_rows.append(torch.stack([images[i] for i in idx] + [torch.ones_like(images[0])] * (per_row - len(idx))))
    return grid(torch.cat(out_rows), nrow=per_row)
