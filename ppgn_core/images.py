"""Reading user images and masks safely, and writing grids, GIFs and PNGs."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence, UnidentifiedImageError

#: uploads larger than this many pixels are refused before decoding (decompression bombs)
MAX_PIXELS = 40_000_000


def _open_checked(source: str | os.PathLike | bytes, max_pixels: int) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ValueError("the image is empty")
        fp = io.BytesIO(source)
        label = "the image"
    else:
        path = Path(source)
        if not path.exists():
            raise ValueError(f"image not found: {path}")
        if path.stat().st_size == 0:
            raise ValueError(f"the image {path.name} is empty")
        fp = path
        label = path.name
    try:
        im = Image.open(fp)  # reads the header only
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{label} is not a readable image") from err
    w, h = im.size
    if w * h > max_pixels:
        raise ValueError(f"{label} is {w}×{h} = {w * h:,} pixels; the limit is {max_pixels:,}")
    if w < 8 or h < 8:
        raise ValueError(f"{label} is {w}×{h}; images must be at least 8×8")
    return im


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Any PIL mode (RGBA, L, P, I;16, I, F, …; first frame of animations) → uint8 RGB."""
    if getattr(im, "is_animated", False):
        im = next(ImageSequence.Iterator(im)).copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
        return np.stack([arr] * 3, axis=-1)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def load_image(source: str | os.PathLike | bytes | Image.Image | np.ndarray, size: int,
               max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """A user image as a 1×3×size×size float tensor in [0, 1] (shorter side resized, centre crop).

    Raises ValueError with a clear message for missing, empty, corrupt or oversized images.
    """
    if isinstance(source, np.ndarray):
        if source.ndim == 2:
            source = np.stack([source] * 3, axis=-1)
        if source.ndim != 3 or source.shape[2] not in (3, 4) or source.size == 0:
            raise ValueError(f"image array must be H×W×3 or H×W×4, got shape {source.shape}")
        if source.shape[0] * source.shape[1] > max_pixels:
            raise ValueError(f"image has {source.shape[0] * source.shape[1]:,} pixels; limit {max_pixels:,}")
        arr = source.astype(np.float64)
        if arr.max() <= 1.0 and source.dtype != np.uint8:
            arr = arr * 255.0
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    elif isinstance(source, Image.Image):
        im = source
        if im.size[0] * im.size[1] > max_pixels:
            raise ValueError(f"image has {im.size[0] * im.size[1]:,} pixels; limit {max_pixels:,}")
    else:
        im = _open_checked(source, max_pixels)
    try:
        arr = to_rgb_array(im)
    except (OSError, ValueError, SyntaxError) as err:
        raise ValueError("the image is corrupt or truncated") from err
    pil = Image.fromarray(arr)
    w, h = pil.size
    s = size / min(w, h)
    pil = pil.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = pil.size
    left, top = (w - size) // 2, (h - size) // 2
    pil = pil.crop((left, top, left + size, top + size))
    t = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return t.unsqueeze(0).contiguous()


def load_mask(source: str | os.PathLike | bytes | Image.Image | np.ndarray, size: int,
              max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """A binary mask (1 = fill, 0 = keep) as 1×1×size×size. Non-binary masks are refused."""
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 3:
            arr = arr[..., -1] if arr.shape[2] == 4 else arr.max(axis=2)
    else:
        im = source if isinstance(source, Image.Image) else _open_checked(source, max_pixels)
        if im.mode in ("RGBA", "LA"):
            arr = np.asarray(im)[..., -1]
        else:
            arr = np.asarray(im.convert("L"))
    if arr.ndim != 2:
        raise ValueError(f"mask must be a 2-D image, got shape {arr.shape}")
    if arr.shape != (size, size):
        raise ValueError(f"mask is {arr.shape[1]}×{arr.shape[0]}, the image is {size}×{size}: sizes must match")
    vals = np.unique(arr)
    hi = vals.max() if vals.size else 0
    if not set(vals.tolist()) <= {0, hi}:
        raise ValueError("mask must be binary: only black (keep) and one other value (fill)")
    m = (arr > 0).astype(np.float32)
    if m.sum() == 0:
        raise ValueError("mask is empty: paint the region to fill")
    if m.min() == 1:
        raise ValueError("mask covers the whole image: leave some pixels as context")
    return torch.from_numpy(m).view(1, 1, size, size)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """B×3×H×W in [0, 1] → B×H×W×3 uint8 (non-finite values are refused, never shown)."""
    if not torch.isfinite(images).all():
        raise ValueError("refusing to render non-finite image values")
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def grid(images: torch.Tensor, nrow: int, pad: int = 2) -> np.ndarray:
    """Tile B×3×H×W images row by row (``nrow`` per row) into one uint8 H'×W'×3 array."""
    arr = to_uint8(images)
    b, h, w, _ = arr.shape
    rows = (b + nrow - 1) // nrow
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(b):
        r, c = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = arr[i]
    return out


def save_png(array: np.ndarray, path: str | os.PathLike, optimize: bool = True) -> None:
    """A PNG at ``path`` (its folder made where missing); ``optimize=False`` writes it several times faster,
    a little larger (the app's downloads)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, optimize=optimize, **({} if optimize else {"compress_level": 1}))


def save_gif(frames: list[np.ndarray], path: str | os.PathLike, ms_per_frame: int = 120) -> None:
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=ms_per_frame, loop=0)
