"""Training of the DAEs: R_h (on cached codes; MLP, convolutional, or noise-conditional at every σ)
and R_x (on images)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import load_folder, to_float
from ..nets.classifiers import LiteEncoder, load_efficientnet_lite
from ..nets.daes import ConvCodeDAE, ConvImageDAE, MLPCodeDAE, NoiseConditionalCodeDAE
from ..storage import atomic_save_torch, load_torch_checkpoint
from .codes import build_code_cache, code_statistics, elementwise_statistics
from .common import CsvLog, _step_generator
from .config import TrainConfig

DAE_FIELDS = ["step", "minutes", "loss", "loss_noisy_baseline"]


def score_dae_losses(model: NoiseConditionalCodeDAE, clean: torch.Tensor, sigma_min: float, sigma_max: float,
                     gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Denoising score matching over every noise level (σ log-uniform in [min, max], standardised
    units), weighted by (1 + σ²)/σ² (EDM) so that every level counts alike; and the same loss of
    the network's starting point (F = 0, û = c_skip·ũ), the baseline the loss should fall below."""
    u = model.standardise(clean)
    b = u.shape[0]
    log_s = torch.rand(b, generator=gen) * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)
    sigma = log_s.exp().to(u.device).view(-1, 1, 1, 1)
    noisy = u + torch.randn(u.shape, generator=gen).to(u.device) * sigma
    weight = (1 + sigma ** 2) / sigma ** 2
    loss = (weight * (model.denoise_standardised(noisy, sigma.flatten()) - u) ** 2).mean()
    c_skip = model.preconditioning(sigma)[0]
    with torch.no_grad():
        baseline = (weight * (c_skip * noisy - u) ** 2).mean()
    return loss, baseline


def train_dae(cfg: TrainConfig) -> dict:
    """Train R_h (``hdae``, on cached codes, S9.3) or R_x (``xdae``, on images, S9.2)."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.kind == "hdae":
        if cfg.dae_arch not in ("mlp", "conv", "score"):
            raise ValueError(f"dae_arch must be mlp, conv or score, got {cfg.dae_arch!r}")
        encoder = LiteEncoder(load_efficientnet_lite(cfg.encoder), cfg.h_block, cfg.h1_block, cfg.size).to(device)
        cache = build_code_cache(cfg, encoder, device)
        data = cache.h
        stats = code_statistics(data)
        sigma = cfg.dae_sigma * stats["mean_abs"]
        if cfg.dae_arch == "score":
            if not 0 < cfg.dae_sigma_min < cfg.dae_sigma_max:
                raise ValueError("need 0 < dae_sigma_min < dae_sigma_max")
            mean, std = elementwise_statistics(data)
            model: nn.Module = NoiseConditionalCodeDAE(tuple(data.shape[1:]), cfg.dae_width, cfg.dae_depth,
                                                       mean, std).to(device)
            sigma = None  # drawn per example
        elif cfg.dae_arch == "conv":
            model = ConvCodeDAE(tuple(data.shape[1:]), cfg.dae_width).to(device)
        else:
            model = MLPCodeDAE(tuple(data.shape[1:]), tuple(cfg.dae_hidden), cfg.dae_residual).to(device)
    else:
        images, _ = load_folder(cfg.data, cfg.size, cfg.limit, cfg.seed)
        data = torch.cat([images, images.flip(-1)])
        stats = {}
        sigma = cfg.dae_sigma
        model = ConvImageDAE(cfg.xdae_width).to(device)
    init = {}
    if cfg.init_dae:
        from ..nets.registry import load_safetensors_checked, sha256_of

        init = {"init_dae_sha256": sha256_of(Path(cfg.init_dae))}  # the export's lineage check
        weights = load_safetensors_checked(Path(cfg.init_dae), init["init_dae_sha256"])
        model.load_state_dict({k: v.float() for k, v in weights.items()})
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, minutes_before = 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        ck = load_torch_checkpoint(ckpt_path, ("model", "opt", "step", "minutes"))
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, minutes_before = int(ck["step"]), float(ck["minutes"])
    (out / "config.json").write_text(json.dumps({"config": asdict(cfg), "sigma": sigma, "stats": stats,
                                                 "model": model.config(), **init}, indent=2))
    log = CsvLog(out / "losses.csv", DAE_FIELDS)
    t0 = time.time()
    minutes_now = lambda: minutes_before + (time.time() - t0) / 60  # noqa: E731 (this run's, resumes included)
    last: dict = {}
    while step < cfg.steps:
        if cfg.max_minutes is not None and minutes_now() >= cfg.max_minutes:
            break
        gen = _step_generator(cfg.seed, step, 0)
        idx = torch.randint(0, len(data), (cfg.batch,), generator=gen)
        clean = data[idx].float().to(device) if cfg.kind == "hdae" else to_float(data[idx]).to(device)
        if sigma is None:
            loss, baseline = score_dae_losses(model, clean, cfg.dae_sigma_min, cfg.dae_sigma_max, gen)
        else:
            noisy = clean + torch.randn(clean.shape, generator=gen).to(device) * sigma
            loss, baseline = F.mse_loss(model(noisy), clean), F.mse_loss(noisy, clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        last = {"step": step, "loss": loss.item(), "loss_noisy_baseline": baseline.item()}
        if step % cfg.log_every == 0 or step == cfg.steps:
            last["minutes"] = round(minutes_now(), 3)
            log.write(last)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            _save_dae(ckpt_path, model, opt, step, minutes_now())
    if last and "minutes" not in last:  # the run ended between log lines: its last row still goes in the log
        last["minutes"] = round(minutes_now(), 3)
        log.write(last)
    _save_dae(ckpt_path, model, opt, step, minutes_now())
    return last


def _save_dae(path: Path, model: nn.Module, opt, step: int, minutes: float) -> None:
    atomic_save_torch({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "minutes": minutes}, path)
