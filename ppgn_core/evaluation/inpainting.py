"""Inpainting measured on val photos: PSNR and SSIM of the filled region, PPGN against PPGN-context."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..conditions import DEFAULT_START_FILL
from ..data import DEFAULT_DATA_ROOT, load_folder, to_float
from ..nets.registry import ModelBundle


def _ssim_region(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=1.0))


def masked_val_photos(n: int, patch: int = 48, seed: int = 0, device: str = "cpu"):
    """``n`` seeded val photos at 128 px, each with a seeded square of side ``patch`` to fill: yields
    (photo 1×3×128×128, mask 1×1×128×128, the square's (rows, cols) slices, its ImageNet label)."""
    images, labels = load_folder(DEFAULT_DATA_ROOT / "val", 128, n, seed)
    rng = np.random.default_rng(seed)
    for i in range(len(images)):
        top, left = (int(v) for v in rng.integers(8, 128 - patch - 8, 2))
        mask = torch.zeros(1, 1, 128, 128, device=device)
        mask[..., top:top + patch, left:left + patch] = 1
        yield (to_float(images[i:i + 1]).to(device), mask, (slice(top, top + patch), slice(left, left + patch)),
               int(labels[i]))


def inpainting_eval(bundle: ModelBundle, n: int = 10, steps: int = 40, patch: int = 48, seed: int = 0,
                    eps4: float = 1.0, device: str = "cpu", preset=None, start_fill: str = DEFAULT_START_FILL,
                    **overrides) -> dict:
    """PSNR/SSIM of the filled square against the original on masked val photos (paper Sec. S10:
    a random patch; here 48 px of 128): PPGN (ε4 = 0), PPGN-context (ε4 > 0), OpenCV Telea. ``preset``:
    the sampler, a name or a Preset (default: inpainting's); ``overrides``: what ``run_inpaint`` may change
    (step settings, a guided preset's ``photo_sigma``); ``start_fill``: what stands for the square where a
    run starts from the photo's code (``InpaintContext``). No method sees the pixels under the square; each
    row's ``psnr_per_photo`` lists its photos in order (for paired comparisons)."""
    from ..conditions import telea_fill
    from ..inpaint import run_inpaint
    from ..presets import DEFAULT_INPAINT_PRESET, Preset, get_preset

    preset = get_preset(preset or DEFAULT_INPAINT_PRESET) if not isinstance(preset, Preset) else preset

    rows = {"ppgn": [], "ppgn_context": [], "telea": []}
    for x, mask, crop, label in masked_val_photos(n, patch, seed, device):
        ref = x[0].permute(1, 2, 0).cpu().numpy()[crop]
        for key, e4 in (("ppgn", 0.0), ("ppgn_context", eps4)):
            out = run_inpaint(bundle, x, mask, classes=[label], preset=preset, steps=steps, seed=seed,
                              eps4=e4, start_fill=start_fill, **overrides)
            filled = out["images"][0].permute(1, 2, 0).numpy()[crop]
            rows[key].append((_psnr_np(filled, ref), _ssim_region(filled, ref)))
        telea = telea_fill(x, mask)[0].permute(1, 2, 0).cpu().numpy()
        rows["telea"].append((_psnr_np(telea[crop], ref), _ssim_region(telea[crop].astype(np.float32), ref)))
    return {k: {"psnr_db": float(np.mean([r[0] for r in v])), "ssim": float(np.mean([r[1] for r in v])), "n": len(v),
                "psnr_per_photo": [round(r[0], 3) for r in v]}
            for k, v in rows.items()} | {"patch": patch, "steps": steps, "eps4": eps4, "preset": preset.name,
                                         "photo_sigma": overrides.get("photo_sigma", preset.photo_sigma),
                                         "start_fill": start_fill}


def _psnr_np(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - b) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-12))
