"""Image folders → tensors. Folders of class sub-folders (ImageNet wnids) as in imagenette."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".webp", ".png", ".jpg", ".jpeg", ".bmp")

#: ImageNet-1k indices (torchvision order) of the Imagenette wnids.
IMAGENETTE_INDEX = {
    "n01440764": 0, "n02102040": 217, "n02979186": 482, "n03000684": 491, "n03028079": 497,
    "n03394916": 566, "n03417042": 569, "n03425413": 571, "n03445777": 574, "n03888257": 701,
}

DEFAULT_DATA_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "imagenette-128"


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files under ``root`` (recursively), sorted for reproducibility."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return files


def label_of(path: Path) -> int:
    """ImageNet index of an image from its parent folder's wnid, or -1 when unknown."""
    return IMAGENETTE_INDEX.get(path.parent.name, -1)


def load_rgb(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode one image as uint8 RGB size×size (shorter side resized, centre crop)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        if (w, h) != (size, size):
            im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
        return np.array(im, dtype=np.uint8)


def load_folder(root: str | os.PathLike, size: int = 128, limit: int | None = None,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Load images as a uint8 tensor N×3×size×size and their ImageNet labels (−1 if unknown).

    ``limit`` takes a seeded random subset (deterministic for a given seed).
    """
    files = list_images(root)
    if limit is not None and limit < len(files):
        rng = np.random.default_rng(seed)
        files = [files[i] for i in sorted(rng.choice(len(files), size=limit, replace=False))]
    arr = np.stack([load_rgb(f, size) for f in files])
    images = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([label_of(f) for f in files], dtype=torch.long)
    return images, labels


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float().div_(255.0)
