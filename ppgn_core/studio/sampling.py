"""Sample tab: a streaming sampling run, its live ε, and small downloads."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..allocator import releasing_memory
from ..images import grid, load_image, save_gif, save_png, to_uint8
from ..jobs import SampleRequest, make_sampler, result_record
from ..sampler import Control
from .core import StudioCore, Update

GIF_FRAMES = 16  # at most this many snapshots in chain.gif
PROGRESS_COLUMNS = 10  # snapshots per chain in progress.png (half size)


class SamplingWorkflow:
    def __init__(self, core: StudioCore):
        self.core = core

    @releasing_memory
    def stream(self, req: SampleRequest, control: Control | None = None, start_image: np.ndarray | None = None,
               film_chain: int = 0) -> Iterator[Update]:
        """Stream a sampling run; ``control`` may be changed (ε, lr) or stopped while it runs."""
        core = self.core
        req.validate()
        sampler = make_sampler(core.bundle, req)
        if control is not None:
            control.update(**asdict(sampler.control.settings))
            sampler.control = control
        start = load_image(start_image, core.bundle.image_size).to(core.device) if start_image is not None else None
        z0 = sampler.init(req.chains, core.device, start)
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
                record = result_record(req, sampler, snaps, time.time() - t0, core.device)
                upd.record, upd.files, upd.final = record, self.write_files(snaps, record), True
            yield upd

    def write_files(self, snaps, record) -> list[str]:
        """grid.png: the final image of every chain at native size; progress.png: up to 10 evenly spaced
        snapshots per chain at half size; chain.gif: up to 16 snapshots at half size; settings.json: the
        request, ε and their changes. PNGs are written unoptimised: the run's end waits for them."""
        d = self.core.run_dir()
        chains = snaps[-1].image.shape[0]
        save_png(grid(snaps[-1].image, nrow=min(chains, 4)), d / "grid.png", optimize=False)
        picked = _evenly(snaps, PROGRESS_COLUMNS)
        stack = torch.stack([F.avg_pool2d(s.image, 2) for s in picked], dim=1).flatten(0, 1)
        save_png(grid(stack, nrow=len(picked)), d / "progress.png", optimize=False)
        save_gif([grid(F.avg_pool2d(s.image, 2), nrow=min(chains, 4)) for s in _evenly(snaps, GIF_FRAMES)],
                 d / "chain.gif")  # half size, as progress.png: a quarter of the colour quantisation
        (d / "settings.json").write_text(json.dumps(record, indent=1))
        return [str(d / n) for n in ("grid.png", "progress.png", "chain.gif", "settings.json")]


def _evenly(items: list, n: int) -> list:
    """At most ``n`` items, evenly spaced, always with the first and the last."""
    if len(items) <= n:
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]
