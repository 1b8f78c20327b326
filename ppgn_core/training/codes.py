"""The code cache: training photos decoded once, and E's codes h and h1 of every photo and of its
mirror image computed once (fp16 memory maps under ``cache/``), so no training step runs E on a photo."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed

from ..data import builder_tmp, cached_images, to_float
from ..nets.classifiers import LiteEncoder
from .common import _rank
from .config import TrainConfig


class CodeCache:
    """Training photos and E's codes of them and of their mirror images.

    ``images`` (N×3×s×s uint8) and ``h``/``h1`` (2N×…, fp16; rows N… are the mirror images) are
    memory maps under the cache folder; item i < N is photo i, item N + i its mirror image.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, h: torch.Tensor, h1: torch.Tensor):
        if len(h) != 2 * len(images) or len(h1) != len(h):
            raise ValueError("code cache is inconsistent: need 2 codes (photo, mirror) per photo")
        self.images, self.labels, self.h, self.h1 = images, labels, h, h1

    def __len__(self) -> int:
        return len(self.h)

    def to(self, device: torch.device) -> "CodeCache":
        """The whole cache in ``device`` memory (on a GPU: no host gather or copy per step)."""
        return CodeCache(self.images.to(device), self.labels.to(device), self.h.to(device), self.h1.to(device))

    def photos(self, idx: torch.Tensor) -> torch.Tensor:
        """Items ``idx`` as float images in [0, 1] (mirrored where idx ≥ N)."""
        n = len(self.images)
        idx = idx.to(self.images.device)
        x = to_float(self.images[idx % n])
        flip = idx >= n
        if flip.any():
            x[flip] = x[flip].flip(-1)
        return x


def _open_f16(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)


def build_code_cache(cfg: TrainConfig, encoder: LiteEncoder, device: torch.device) -> CodeCache:
    """Decode the photos once (uint8 memory map) and cache E's h and h1 of each and of its mirror. In a
    process group, rank 0 builds a missing cache while the other ranks wait, then every rank opens it."""
    rank, world = _rank()
    if world == 1:
        return _build_code_cache(cfg, encoder, device)
    cache = _build_code_cache(cfg, encoder, device) if rank == 0 else None
    torch.distributed.barrier()
    return cache if cache is not None else _build_code_cache(cfg, encoder, device)


@torch.no_grad()
def _build_code_cache(cfg: TrainConfig, encoder: LiteEncoder, device: torch.device) -> CodeCache:
    cache_dir = Path(cfg.cache or Path(cfg.out) / "cache")
    if Path(cfg.data).name == "val":
        raise ValueError(f"refusing to train on a val/ folder: {cfg.data}")
    images, labels = cached_images(cfg.data, cfg.size, cfg.limit, cfg.seed, cache_dir=cache_dir)
    tag = f"lite{cfg.encoder}_b{cfg.h_block}_b{cfg.h1_block}_s{cfg.size}_n{cfg.limit}_{Path(cfg.data).parent.name}"
    h_path, h1_path = cache_dir / f"codes_{tag}.h.npy", cache_dir / f"codes_{tag}.h1.npy"
    rank, _ = _rank()
    if not (h_path.exists() and h1_path.exists()):
        if rank != 0:
            raise RuntimeError("code cache missing on a non-zero rank (rank 0 builds it first)")
        n = len(images)
        probe_h1, probe_h = encoder.encode_both(to_float(images[:1]).to(device))
        tmp_h, tmp_h1 = builder_tmp(h_path), builder_tmp(h1_path)
        hs = _open_f16(tmp_h, (2 * n, *probe_h.shape[1:]))
        h1s = _open_f16(tmp_h1, (2 * n, *probe_h1.shape[1:]))
        from tqdm import tqdm

        with tqdm(total=2 * n, desc="E's codes of the photos and their mirrors", unit="img", mininterval=20,
                  ncols=100) as bar:  # a one-time pass of E over every photo: minutes to an hour on a CPU
            for i in range(0, n, 64):
                x = to_float(images[i: i + 64]).to(device)
                for offset, xi in ((0, x), (n, x.flip(-1))):
                    h1, h = encoder.encode_both(xi)
                    hs[offset + i: offset + i + len(x)] = h.half().cpu().numpy()
                    h1s[offset + i: offset + i + len(x)] = h1.half().cpu().numpy()
                    bar.update(len(x))
        hs.flush(), h1s.flush()
        del hs, h1s
        os.replace(tmp_h, h_path)
        os.replace(tmp_h1, h1_path)
    h = torch.from_numpy(np.load(h_path, mmap_mode="c"))
    h1 = torch.from_numpy(np.load(h1_path, mmap_mode="c"))
    return CodeCache(images, labels, h, h1)


def code_statistics(h: torch.Tensor) -> dict[str, float]:
    """Range and spread of the codes, used to clamp and scale sampling steps (issue: use the
    range the chosen encoder's codes really take)."""
    if len(h) > 4096:  # a fixed, evenly spaced subset: enough for these statistics, cheap on memory maps
        h = h[torch.linspace(0, len(h) - 1, 4096).long()]
    hf = h.float()
    q = torch.quantile(hf.flatten()[:: max(1, hf.numel() // 1_000_000)], torch.tensor([0.001, 0.999]))
    return {"mean": hf.mean().item(), "std": hf.std().item(), "mean_abs": hf.abs().mean().item(),
            "min": hf.min().item(), "max": hf.max().item(),
            "q001": q[0].item(), "q999": q[1].item()}


@torch.no_grad()
def elementwise_statistics(h: torch.Tensor, chunk: int = 4096, unbiased: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element mean and standard deviation of codes (a memory map of fp16 codes is read in chunks)."""
    total = torch.zeros(h.shape[1:], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for i in range(0, len(h), chunk):
        c = h[i:i + chunk].double()
        total += c.sum(0)
        total_sq += (c * c).sum(0)
    n = len(h)
    mean = total / n
    var = (total_sq / n - mean * mean).clamp_min(0) * (n / max(1, n - 1) if unbiased else 1)
    return mean.float(), var.sqrt().float()
