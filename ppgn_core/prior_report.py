"""Reports on a code prior: quality against the number of noise levels, its own samples, and memorisation.

``python -m ppgn_core prior-report levels|own|memory …`` (see ``cli_prior``) writes JSON into
``reports/prior/``:

* :func:`levels_sweep` — a guided preset on held-out classes at 10, 15, 20, 30 and 60 noise levels:
  the robust judge's top-1, precision, recall and the seconds per sample, so the default can take
  the fewest levels within noise of the best;
* :func:`own_samples` — the prior alone (no condition; and with classifier-free guidance toward a
  class where the prior is class-conditional): how photo-like its samples are (precision) and how
  much of the photos' spread they cover (recall);
* :func:`memorisation` — nearest-neighbour distances, in standardised code units, from the prior's
  samples to the training codes, against those from unseen val photos' codes to the training codes:
  a sampler that copies training photos is not a prior.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from .nets.registry import ModelBundle
from .priors import sample_codes

LEVELS = (10, 15, 20, 30, 60)
TUNING_DRAW_SEED = 7


def tuning_classes(n: int, skip: int = 0) -> list[int]:
    """Held-out classes: drawn once (seed 7) from those in neither evaluation set (the 110-class set,
    the paper's 20), so that settings picked on them are judged on other classes."""
    from .conditions import class_index
    from .evaluate import EXTRA_CLASSES, default_classes

    used = set(default_classes()) | {class_index(c) for c in EXTRA_CLASSES}
    rest = np.array([c for c in range(1000) if c not in used])
    drawn = np.random.default_rng(TUNING_DRAW_SEED).permutation(rest)
    return [int(c) for c in drawn[skip:skip + n]]


def _judge_and_reference(device: str):
    from .evaluate import Judge
    from .judge import real_reference

    judge = Judge(device=device)
    return judge, real_reference(judge)


def _judged(judge, reference, images: torch.Tensor, targets: torch.Tensor) -> dict:
    from .judge import robust_report

    rob = robust_report(judge, images, targets, reference)
    return {"n": len(targets), "plain_top1": rob["accuracy"]["plain"]["top1"], "robust_top1": rob["robust_top1"],
            "precision": rob["precision"], "recall": rob["recall"]}


def levels_sweep(bundle: ModelBundle, preset: str, classes: list[int], chains: int = 2, seed: int = 0,
                 levels: tuple[int, ...] = LEVELS, device: str = "cpu", judge=None, reference=None,
                 overrides: dict | None = None, solver: str | None = None) -> dict:
    """``preset`` at each number of noise levels, on the same classes and seeds; ``solver`` replaces the
    preset's (a Heun level costs two passes of the prior and of C)."""
    from dataclasses import replace

    from .evaluate import run_preset_on_classes
    from .presets import get_preset

    if judge is None:
        judge, reference = _judge_and_reference(device)
    sampler_preset = get_preset(preset)
    if solver is not None:
        sampler_preset = replace(sampler_preset, solver=solver)
    rows = {}
    for n in levels:
        run = run_preset_on_classes(bundle, sampler_preset, classes, chains, n, seed, max(1, n), device, overrides,
                                    batch=8)
        rows[str(n)] = _judged(judge, reference, run.images, run.targets) | {
            "seconds_per_sample": round(run.seconds / len(run.targets), 3)}
    return {"preset": preset, "solver": sampler_preset.solver, "classes": classes, "chains": chains, "seed": seed,
            "levels": rows, "overrides": overrides or {}}


def fewest_levels_within_noise(sweep: dict, key: str = "robust_top1") -> int:
    """The fewest levels whose ``key`` lies within one binomial standard error of the best row's (the error
    of a proportion over the row's n samples, at least that of one sample in n, so a best of 100% still
    has one)."""
    rows = {int(k): v for k, v in sweep["levels"].items()}
    best = max(v[key] for v in rows.values())
    n = next(iter(rows.values()))["n"]
    se = math.sqrt(max(best * (1 - best), 1 / n) / n)
    return min(k for k, v in rows.items() if v[key] >= best - se)


@torch.no_grad()
def _prior_codes(bundle: ModelBundle, n: int, steps: int, seed: int, labels: torch.Tensor | None,
                 cfg_scale: float, prior: str) -> torch.Tensor:
    """Codes drawn by the prior alone (DPM-Solver++(2M) from σ 10 to 0.05), in code units, clamped."""
    net = bundle.code_diffusion if prior == "code_diffusion" else bundle.score_dae
    gen = torch.Generator().manual_seed(seed)
    codes = torch.cat([sample_codes(net, len(chunk), gen, steps, solver="dpmpp2m", labels=chunk, cfg_scale=cfg_scale)
                       for chunk in (labels if labels is not None else torch.zeros(n, dtype=torch.long)).split(16)])
    lo, hi = bundle.code_range
    return codes.clamp(lo, hi)


def own_samples(bundle: ModelBundle, classes: list[int], steps: int = 20, seed: int = 0, cfg_scales=(0.0, 1.0, 3.0),
                prior: str = "code_diffusion", device: str = "cpu", judge=None, reference=None) -> dict:
    """The prior's own samples (no gradient of C), one per class: unconditional (scale 0) and, for a
    class-conditional prior, with classifier-free guidance toward the class at each scale."""
    if judge is None:
        judge, reference = _judge_and_reference(device)
    targets = torch.tensor(classes)
    out = {}
    for w in cfg_scales if prior == "code_diffusion" else (0.0,):
        t0 = time.time()
        codes = _prior_codes(bundle, len(classes), steps, seed, targets, w, prior)
        images = torch.cat([bundle.generator(codes[i:i + 16]) for i in range(0, len(codes), 16)]).clamp(0, 1)
        out[f"cfg_{w:g}"] = _judged(judge, reference, images, targets) | {
            "seconds_per_sample": round((time.time() - t0) / len(classes), 3)}
    return {"prior": prior, "steps": steps, "seed": seed, "classes": len(classes), "samples": out}


def _nearest(query: torch.Tensor, bank: torch.Tensor, skip_self: bool = False, chunk: int = 4096) -> torch.Tensor:
    """Distance from each row of ``query`` to its nearest row of ``bank`` (flattened, L2)."""
    q = query.flatten(1).float()
    best = torch.full((len(q),), float("inf"))
    for i in range(0, len(bank), chunk):
        b = bank[i:i + chunk].flatten(1).float()
        d = torch.cdist(q, b)
        if skip_self:
            d[d < 1e-6] = float("inf")
        best = torch.minimum(best, d.min(1).values)
    return best


@torch.no_grad()
def memorisation(bundle: ModelBundle, train_codes: torch.Tensor, val_codes: torch.Tensor, samples: dict[str, torch.Tensor],
                 standardise) -> dict:
    """Nearest-training-code distances of each sample set against the val codes' (the reference: photos
    the prior never saw). ``standardise`` maps codes to the prior's standardised units."""
    train = standardise(train_codes.float())
    ref = _nearest(standardise(val_codes.float()), train)
    q01, q05, med = (float(torch.quantile(ref, q)) for q in (0.01, 0.05, 0.5))
    rows = {"val photos (reference)": {"n": len(ref), "median": med, "p05": q05, "p01": q01}}
    for name, codes in samples.items():
        d = _nearest(standardise(codes.float()), train)
        rows[name] = {"n": len(d), "median": float(d.median()), "p05": float(torch.quantile(d, 0.05)),
                      "p01": float(torch.quantile(d, 0.01)), "ratio_to_val_median": float(d.median()) / med,
                      "below_val_p01": float((d < q01).float().mean())}
    return {"units": "L2 distance between standardised codes (per-element mean and spread of the training codes)",
            "train_codes": len(train_codes), "rows": rows}


def save(report: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    return path
