"""Image folders → tensors. Folders of class sub-folders (ImageNet wnids) as in imagenette.

Labels come from the data set's own ``classes.tsv`` (wnid, index, name) when it has one (the
1,000-class set does); Imagenette's ten wnids are known without it. ``cached_images`` decodes a
folder once into a uint8 memory-mapped array outside the repository, so that training and
evaluation never decode WebP twice.
"""

from __future__ import annotations

import functools
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

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
DEFAULT_DATA_ROOT = SHARED_DATA / "imagenette-128"
#: All 1,000 ImageNet classes, ~40 train + 10 val photos each (the generator's training set).
IMAGENET_1K_ROOT = SHARED_DATA / "imagenet-1k-128"
CLASSES_FILE = "classes.tsv"
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / "cache"


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files under ``root`` (recursively), sorted for reproducibility."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return files


def read_classes(tsv: str | os.PathLike) -> dict[str, int]:
    """wnid → ImageNet-1k index from a ``classes.tsv`` (header ``wnid index name …``)."""
    rows = Path(tsv).read_text().splitlines()
    if not rows or rows[0].split("\t")[:2] != ["wnid", "index"]:
        raise ValueError(f"{tsv}: expected a header starting 'wnid<TAB>index'")
    table = {}
    for n, line in enumerate(rows[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            table[parts[0]] = int(parts[1])
        except (IndexError, ValueError) as err:
            raise ValueError(f"{tsv}:{n}: bad row {line!r}") from err
    return table


@functools.lru_cache(maxsize=64)
def _classes_near(folder: Path) -> dict[str, int]:
    """The classes.tsv of the data set that holds ``folder`` (it or its two parents), read once."""
    for parent in [folder, *list(folder.parents)[:2]]:
        tsv = parent / CLASSES_FILE
        if tsv.is_file():
            return read_classes(tsv)
    return IMAGENETTE_INDEX


def label_of(path: Path) -> int:
    """ImageNet index of an image from its parent folder's wnid, or -1 when unknown."""
    path = Path(path)
    return _classes_near(path.parent).get(path.parent.name, IMAGENETTE_INDEX.get(path.parent.name, -1))


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


def pick_files(root: str | os.PathLike, limit: int | None = None, seed: int = 0,
               per_class: int | None = None) -> list[Path]:
    """The image files a loader takes: all, ``per_class`` from each class folder (the first in
    sorted order: a fixed subset over all classes), or a seeded random subset of ``limit``."""
    files = list_images(root)
    if per_class is not None:
        if per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {per_class}")
        taken: dict[str, int] = {}
        kept = []
        for f in files:
            if taken.get(f.parent.name, 0) < per_class:
                taken[f.parent.name] = taken.get(f.parent.name, 0) + 1
                kept.append(f)
        files = kept
    if limit is not None and limit < len(files):
        rng = np.random.default_rng(seed)
        files = [files[i] for i in sorted(rng.choice(len(files), size=limit, replace=False))]
    return files


def load_folder(root: str | os.PathLike, size: int = 128, limit: int | None = None,
                seed: int = 0, per_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load images as a uint8 tensor N×3×size×size and their ImageNet labels (−1 if unknown).

    ``limit`` takes a seeded random subset (deterministic for a given seed); ``per_class`` the
    first photos of every class folder.
    """
    files = pick_files(root, limit, seed, per_class)
    arr = np.stack([load_rgb(f, size) for f in files])
    images = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([label_of(f) for f in files], dtype=torch.long)
    return images, labels


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float().div_(255.0)


def builder_tmp(path: Path) -> Path:
    """Where this builder (process and thread) writes a cache file before moving it in whole with
    ``os.replace``: two builders of one cache at once each finish with the same complete file."""
    import threading

    return path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def cached_images(root: str | os.PathLike, size: int = 128, limit: int | None = None, seed: int = 0,
                  per_class: int | None = None, cache_dir: str | os.PathLike | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`load_folder`, but decoded once into ``cache_dir`` (a uint8 ``.npy`` memory map
    plus labels) and memory-mapped on later calls: an epoch never re-decodes WebP.

    The cache's name holds the folder, size and subset, so a different request builds its own.
    """
    import hashlib

    root = Path(root)
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    key = hashlib.sha1(f"{root.resolve()}|{size}|{limit}|{seed}|{per_class}".encode()).hexdigest()[:12]
    base = cache_dir / f"images_{root.parent.name}_{root.name}_s{size}_{key}"
    img_path, lab_path = base.with_suffix(".u8.npy"), base.with_suffix(".labels.npy")
    if not (img_path.exists() and lab_path.exists()):
        files = pick_files(root, limit, seed, per_class)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = builder_tmp(img_path)
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), 3, size, size))
        from concurrent.futures import ThreadPoolExecutor

        def decode(i: int) -> None:  # PIL releases the GIL while it decodes: threads use every core
            arr[i] = load_rgb(files[i], size).transpose(2, 0, 1)

        with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
            list(pool.map(decode, range(len(files))))
        arr.flush()
        del arr
        lab_tmp = builder_tmp(lab_path)
        with open(lab_tmp, "wb") as out:
            np.save(out, np.array([label_of(f) for f in files], dtype=np.int64))
        os.replace(lab_tmp, lab_path)
        os.replace(tmp, img_path)
    images = torch.from_numpy(np.load(img_path, mmap_mode="c"))  # copy-on-write map: the file is never written
    labels = torch.from_numpy(np.load(lab_path))
    return images, labels


def rank_within_class(labels: torch.Tensor) -> torch.Tensor:
    """Each item's position among the items of its class, in order (0 for the first of a class)."""
    rank = torch.zeros(len(labels), dtype=torch.long)
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        rank[idx] = torch.arange(len(idx))
    return rank


def val_photos(ranks: range, max_classes: int | None = None, root: str | os.PathLike | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Val photos of the 1,000-class set whose position within their class is in ``ranks`` (so
    disjoint sets are easy to name: the reference set is ranks 0–2, the held-out set rank 3, the
    reconstruction set ranks 4–5), from the first ``max_classes`` classes (all by default)."""
    images, labels = cached_images(root or IMAGENET_1K_ROOT / "val", 128)
    rank = rank_within_class(labels)
    keep = (rank >= ranks.start) & (rank < ranks.stop)
    if max_classes is not None:
        keep &= labels < max_classes  # class indices follow classes.tsv: the first classes in index order
    idx = torch.nonzero(keep).flatten()
    if len(idx) == 0:
        raise ValueError(f"no val photos with ranks {ranks.start}..{ranks.stop - 1}")
    return images[idx], labels[idx]
