"""Small pieces every training loop shares: ranks, per-step seeded generators, logs, grids, PSNR,
mixed precision."""

from __future__ import annotations

import contextlib
import csv
import math
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _rank() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def distributed(device: str):
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on CUDA, each rank on its own GPU;
    gloo on the CPU) for the body, and leave it after. Yields the rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    joined = world > 1 and not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
    try:
        yield device
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def all_ranks_agree(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on rank 0 (a decision taken by one clock, such as a time
    limit, that every rank must follow at the same step)."""
    rank, world = _rank()
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag and rank == 0 else 0.0])
    dist.broadcast(t, src=0)
    return bool(t.item())


def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 131 + rank)


def _save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    from torchvision.utils import save_image

    save_image(images.clamp(0, 1), str(path), nrow=nrow, padding=2)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) of images in [0, 1]."""
    mse = F.mse_loss(a.clamp(0, 1), b.clamp(0, 1)).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


class CsvLog:
    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, fields
        if path.exists():  # a resumed run keeps its file's columns
            with open(path, newline="") as f:
                self.fields = next(csv.reader(f), fields)
        else:
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(fields)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self.fields])


def mixed_precision(device: torch.device, amp: bool):
    """bf16 autocast on ``device`` when ``amp`` (--amp), else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
