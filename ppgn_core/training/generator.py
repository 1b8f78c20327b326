"""The generator's training loop (G with D; DDP under torchrun)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from ..nets.classifiers import LiteEncoder, load_efficientnet_lite
from ..nets.generators import Discriminator, LaplacianGenerator
from .codes import CodeCache, build_code_cache
from .common import CsvLog, _rank, _save_grid, _step_generator, mixed_precision, psnr
from .config import TrainConfig
from .generator_checkpoints import (
    RunState,
    _restore,
    _save_checkpoint,
    save_compact_checkpoint,
)
from .generator_losses import (
    GEN_FIELDS,
    CodeScales,
    _build_generator,
    discriminator_step,
    generate,
    generator_losses,
)


def _place_on_device(device: torch.device, cache: CodeCache, nets: tuple[nn.Module, ...]) -> CodeCache:
    """On a GPU the whole cache moves into its memory (a few GB: every batch is gathered there).
    The networks use channels-last convolutions on every device (on the 2-core CPU in fp32 too:
    the shipped G's design trains at about 19 images/s on one core instead of 13)."""
    if device.type == "cuda":
        cache = cache.to(device)
        torch.backends.cudnn.benchmark = True
    for net in nets:
        net.to(memory_format=torch.channels_last)
    return cache


@torch.no_grad()
def _save_reconstructions(G: nn.Module, cache: CodeCache, fixed: torch.Tensor, path: Path) -> None:
    """A grid of fixed training photos (top) and G's reconstructions of them from their codes."""
    device = next(G.parameters()).device
    G.eval()
    rec = G(cache.h[fixed.to(cache.h.device)].float().to(device)).float()
    G.train()
    _save_grid(torch.cat([cache.photos(fixed).to(device), rec]), path, len(fixed))


def _learning_rate(cfg: TrainConfig, st: RunState, minutes_now: float | None = None) -> float:
    """Warm-up lr, then a linear ramp after a compact resume, then (``decay_minutes`` with
    ``max_minutes``) a linear fall to 10% over the run's last minutes."""
    if st.step < cfg.warmup_steps:
        return cfg.warmup_lr
    if st.ramp_from is not None and st.step - st.ramp_from < cfg.resume_ramp:
        return cfg.lr * (st.step - st.ramp_from + 1) / cfg.resume_ramp
    if cfg.decay_minutes > 0 and cfg.max_minutes is not None and minutes_now is not None:
        left = cfg.max_minutes - minutes_now
        return cfg.lr * min(1.0, max(0.1, left / cfg.decay_minutes))
    return cfg.lr


def _progress(cfg: TrainConfig, st: RunState, rank: int):
    """tqdm counting this run's images (so it shows images/s and the ETA of the steps left; earlier
    stages may have used other batch sizes, so step × batch is not what G saw before)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=max(0, cfg.steps - st.step) * cfg.batch, disable=rank != 0, mininterval=20,
                desc=f"train G from step {st.step}", unit="img", unit_scale=False, dynamic_ncols=False, ncols=100)


def train_generator(cfg: TrainConfig) -> dict:
    """Train G (and D) to invert E's code (paper S9.4/S9.5). Returns the last logged losses."""
    rank, world = _rank()
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = LiteEncoder(load_efficientnet_lite(cfg.encoder), cfg.h_block, cfg.h1_block, cfg.size).to(device)
    cache = build_code_cache(cfg, encoder, device)
    scales = CodeScales.of(cache)
    code_shape = tuple(cache.h.shape[1:])
    G = _build_generator(cfg, code_shape).to(device)
    D = Discriminator(cfg.size).to(device)
    cache = _place_on_device(device, cache, (G, D, encoder))
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    st = _restore(cfg, out, G, D, opt_g, opt_d)
    Gm, Dm = G, D
    laplacian = isinstance(Gm, LaplacianGenerator)
    if world > 1:
        G = nn.parallel.DistributedDataParallel(G)
        D = nn.parallel.DistributedDataParallel(D)
    meta = {"config": asdict(cfg), "code_shape": list(code_shape), "h_stats": scales.h_stats,
            "h1_var": scales.h1_var, "h_var": scales.h_var, "h1_mean_abs": scales.h1_mean_abs,
            "generator": Gm.config(), "world_size": world, "n_train_images": len(cache.images)}
    if rank == 0:
        (out / "config.json").write_text(json.dumps(meta, indent=2))
    log = CsvLog(out / "losses.csv", GEN_FIELDS) if rank == 0 else None
    fixed = torch.arange(0, min(8, len(cache.images)))
    per_rank = max(1, cfg.batch // world)
    images_per_step = per_rank * world
    t0, minutes_before = time.time(), st.minutes
    last: dict = {}
    bar = _progress(cfg, st, rank)

    def save() -> None:
        st.minutes = minutes_before + (time.time() - t0) / 60
        _save_checkpoint(out / "checkpoint.pt", Gm, Dm, opt_g, opt_d, st)
        if cfg.resume:
            save_compact_checkpoint(Path(cfg.resume), Gm, Dm, st, meta | {"last_losses": last})

    while st.step < cfg.steps:
        if cfg.max_minutes is not None and minutes_before + (time.time() - t0) / 60 >= cfg.max_minutes:
            break
        gen = _step_generator(cfg.seed, st.step, rank)
        idx = torch.randint(0, len(cache), (per_rank,), generator=gen)
        x_real = cache.photos(idx).to(device)
        h = cache.h[idx].float().to(device)
        h1_real = cache.h1[idx].float().to(device)
        warm = st.step < cfg.warmup_steps
        lr = _learning_rate(cfg, st, minutes_before + (time.time() - t0) / 60)
        for group in [*opt_g.param_groups, *opt_d.param_groups]:  # D is not stepped in the warm-up
            group["lr"] = lr
        h_in = h
        if cfg.noise and not warm:
            h_in = h + torch.randn(h.shape, generator=gen).to(device) * cfg.noise_rel * scales.h_stats["mean_abs"]
        x_real = x_real.contiguous(memory_format=torch.channels_last)
        with mixed_precision(device, cfg.amp):
            x_fake, x_coarse = generate(G, h_in, laplacian)
            loss_g, row = generator_losses(cfg, encoder, Dm, x_fake, x_real, h, h1_real, scales, gen, warm, st.r,
                                           x_coarse)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if not warm and cfg.w_gan > 0:
            row["loss_d"] = discriminator_step(D, opt_d, x_real, x_fake, bool(row["d_paused"]), cfg.amp)
            pair = torch.tensor([row["loss_d"], row["loss_gan_g"]])  # same r on every rank
            if world > 1:
                dist.all_reduce(pair)
            st.r = float(pair[0] / pair[1].clamp_min(1e-8))
        st.step += 1
        if st.images is not None:
            st.images += images_per_step
        row["step"] = st.step
        if bar is not None:
            bar.update(images_per_step)
        last = row
        if rank == 0 and (st.step % cfg.log_every == 0 or st.step == cfg.steps):
            row["minutes"] = round(minutes_before + (time.time() - t0) / 60, 3)
            row["psnr"] = round(psnr(x_fake.detach().float(), x_real), 3)
            row["lr"] = lr
            log.write(row)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
        if rank == 0 and (st.step % cfg.image_every == 0 or st.step == cfg.steps):
            _save_reconstructions(Gm, cache, fixed, out / f"recon_{st.step:06d}.png")
        if rank == 0 and (st.step % cfg.ckpt_every == 0 or st.step == cfg.steps):
            save()
    if rank == 0:
        save()
    if bar is not None:
        bar.close()
    return last
