"""Inpainting measured on val photos: PSNR and SSIM of the filled region, PPGN against PPGN-context."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data import DEFAULT_DATA_ROOT, load_folder, to_float
from ..nets.registry import ModelBundle


def _ssim_region(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=1.0))


def inpainting_eval(bundle: ModelBundle, n: int = 10, steps: int = 40, patch: int = 48, seed: int = 0,
                    eps4: float = 1.0, device: str = "cpu", preset: str | None = None) -> dict:
    """PSNR/SSIM of the filled square against the original on masked val photos (paper Sec. S10:
    a random patch; here 48 px of 128): PPGN (ε4 = 0), PPGN-context (ε4 > 0), OpenCV Telea. ``preset``:
    the sampler (default: the default MALA-approx chain)."""
    import cv2

    from ..inpaint import run_inpaint
    from ..presets import DEFAULT_CHAIN_PRESET

    preset = preset or DEFAULT_CHAIN_PRESET

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
            out = run_inpaint(bundle, x, mask, classes=[int(labels[i])], preset=preset, steps=steps, seed=seed,
                              eps4=e4)
            filled = out["images"][0].permute(1, 2, 0).numpy()[crop]
            rows[key].append((_psnr_np(filled, ref), _ssim_region(filled, ref)))
        u8 = images[i].permute(1, 2, 0).numpy().copy()
        m8 = (mask[0, 0].cpu().numpy() * 255).astype(np.uint8)
        telea = cv2.inpaint(np.ascontiguousarray(u8[..., ::-1]), m8, 5, cv2.INPAINT_TELEA)[..., ::-1] / 255.0
        rows["telea"].append((_psnr_np(telea[crop], ref), _ssim_region(telea[crop].astype(np.float32), ref)))
    return {k: {"psnr_db": float(np.mean([r[0] for r in v])), "ssim": float(np.mean([r[1] for r in v])), "n": len(v)}
            for k, v in rows.items()} | {"patch": patch, "steps": steps, "eps4": eps4, "preset": preset}


def _psnr_np(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - b) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-12))
