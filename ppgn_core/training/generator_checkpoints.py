"""The generator run's state and checkpoints: the full ``checkpoint.pt`` (exact resume) and the compact
fp16 file kept in the repository (a resume on a machine whose ``runs/`` is gone)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..storage import (
    CheckpointError,
    atomic_save_safetensors,
    atomic_save_torch,
    load_checked_safetensors,
)
from .config import TrainConfig


@dataclass
class RunState:
    step: int = 0
    minutes: float = 0.0
    r: float = 1.0
    ramp_from: int | None = None  # step at which a compact resume restarted Adam
    images: int | None = 0  # images seen over every stage (None: unknown, a checkpoint from before the count)


def _restore(cfg: TrainConfig, out: Path, G: nn.Module, D: nn.Module, opt_g, opt_d) -> RunState:
    """Continue from ``out/checkpoint.pt`` (exact) or the compact ``--resume`` file, whichever is
    further on; else start fresh (from ``--init-generator`` if given). A checkpoint from before the
    image count takes ``images_before`` (None: the count stays unknown)."""
    st = _restored_state(cfg, out, G, D, opt_g, opt_d)
    if st.images is None:
        st.images = cfg.images_before
    return st


def _restored_state(cfg: TrainConfig, out: Path, G: nn.Module, D: nn.Module, opt_g, opt_d) -> RunState:
    full = out / "checkpoint.pt"
    full_step = -1
    if full.exists():
        ck = torch.load(full, map_location="cpu", weights_only=True)
        full_step = int(ck["step"])
    compact = load_compact_checkpoint(Path(cfg.resume)) if cfg.resume and Path(cfg.resume).exists() else None
    if compact is not None and compact["step"] > full_step:
        G.load_state_dict(compact["G"])
        D.load_state_dict(compact["D"])
        return RunState(compact["step"], compact["minutes"], compact["r"], ramp_from=compact["step"],
                        images=compact["images"])
    if full_step >= 0:
        G.load_state_dict(ck["G"])
        D.load_state_dict(ck["D"])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        return RunState(full_step, float(ck["minutes"]), float(ck["r"]), ck.get("ramp_from"), ck.get("images"))
    if cfg.init_generator:
        from ..nets.registry import load_safetensors_checked

        G.load_state_dict(load_safetensors_checked(Path(cfg.init_generator), None))
    return RunState()


def _save_checkpoint(path: Path, G: nn.Module, D: nn.Module, opt_g, opt_d, st: RunState) -> None:
    atomic_save_torch({"G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(),
                       "opt_d": opt_d.state_dict(), "step": st.step, "minutes": st.minutes, "r": st.r,
                       "ramp_from": st.ramp_from, "images": st.images}, path)


#: The compact checkpoint must stay small enough to commit (issue: ≤ 20 MB).
COMPACT_LIMIT_BYTES = 20 * 1024 * 1024


def save_compact_checkpoint(path: Path, G: nn.Module, D: nn.Module, st: RunState, meta: dict) -> None:
    """fp16 G and D with step, minutes, r and the run's config, as one safetensors file replaced in
    place. Adam's moments are left out: in fp16 they would double the file past 20 MB (a resume
    restarts Adam with a short learning-rate ramp instead)."""
    tensors = {f"G.{k}": v.detach().half().contiguous().cpu() for k, v in G.state_dict().items()}
    tensors.update({f"D.{k}": v.detach().half().contiguous().cpu() for k, v in D.state_dict().items()})
    info = {"step": str(st.step), "minutes": f"{st.minutes:.3f}", "r": f"{st.r:.6g}", "meta": json.dumps(meta)}
    if st.images is not None:
        info["images"] = str(st.images)
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if size > COMPACT_LIMIT_BYTES:
        raise ValueError(f"compact checkpoint would be {size / 2**20:.1f} MiB, over the 20 MiB limit")
    atomic_save_safetensors(tensors, path, info)


def load_compact_checkpoint(path: Path) -> dict:
    """Read a compact checkpoint: G and D state dicts (fp32), step, minutes, r, meta."""
    if path.suffix != ".safetensors":
        raise ValueError(f"a compact checkpoint is a .safetensors file, got {path.name}")
    tensors, info = load_checked_safetensors(path)
    state = {k: v.float() for k, v in tensors.items()}
    if "step" not in info:
        raise CheckpointError(f"{path} is not a compact training checkpoint (no step in its metadata)")
    return {"G": {k[2:]: v for k, v in state.items() if k.startswith("G.")},
            "D": {k[2:]: v for k, v in state.items() if k.startswith("D.")},
            "step": int(info["step"]), "minutes": float(info["minutes"]), "r": float(info["r"]),
            "images": int(info["images"]) if "images" in info else None,
            "meta": json.loads(info.get("meta", "{}"))}
