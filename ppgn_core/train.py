"""Training of the learned priors: the generator G (+ discriminator D), R_h and R_x (paper S9).

Designed for a 2-core CPU (and faster where a GPU or several processes are available):

* the encoder's codes h = E(x) and feature targets h1 = E1(x) of every training image (and of
  its mirror image) are computed once and cached, so a step never runs E on real images;
* a short pixel-loss warm-up (no backward pass through E, higher learning rate) precedes the
  paper's losses: L_img + L_h1 + L_GAN (Noiseless Joint PPGN-h, S9.4), plus L_h and Gaussian
  noise on x, h1 and h for Joint PPGN-h (S9.5);
* every step draws its batch and noise from a generator seeded by (seed, step, rank), so a
  resumed run continues exactly as an uninterrupted one would;
* ``torchrun --nproc_per_node N -m ppgn_core train generator …`` trains data-parallel (DDP,
  gloo on CPU, nccl on GPUs).

Outputs in ``--out``: ``checkpoint.pt`` (state dicts only, loaded with weights_only=True),
``config.json``, ``losses.csv``, ``recon_XXXXXX.png`` / ``samples_XXXXXX.png``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .data import DEFAULT_DATA_ROOT, load_folder, to_float
from .nets.classifiers import LiteEncoder, load_efficientnet_lite
from .nets.daes import ConvImageDAE, MLPCodeDAE
from .nets.generators import Discriminator, UpconvGenerator


@dataclass
class TrainConfig:
    """Settings of one training run (saved as config.json beside the weights)."""

    kind: str = "generator"  # generator | hdae | xdae
    data: str = str(DEFAULT_DATA_ROOT / "train")
    out: str = "runs/generator"
    steps: int = 6000
    batch: int = 32
    lr: float = 2e-4
    seed: int = 0
    size: int = 128
    limit: int | None = None  # use only this many images (tests, quick runs)
    encoder: int = 0  # EfficientNet-Lite variant of E
    h_block: int = 15
    h1_block: int = 10
    widths: list[int] = field(default_factory=lambda: [256, 256, 128, 64, 32])
    warmup_steps: int = 400  # pixel-only phase
    warmup_lr: float = 1e-3
    w_img: float = 10.0
    w_h1: float = 1.0
    w_h: float = 0.0  # Joint PPGN-h adds L_h (S9.5)
    w_gan: float = 0.02
    # L_c: KL from E's own classifier output on the real image to that on G(h) (the analogue of
    # matching fc8 above the paper's fc6/pool5 losses; not in the paper). 0 = off.
    w_cls: float = 0.0
    noise: bool = False  # Joint PPGN-h: Gaussian noise on x, h1, h (S9.5)
    noise_x: float = 0.01  # ~1% of the mean pixel value
    noise_rel: float = 0.1  # ~10% of the mean |activation| of h1 and h
    dae_sigma: float = 0.1  # R_h: fraction of mean |h|; R_x: absolute, in [0,1] units
    dae_hidden: list[int] = field(default_factory=lambda: [1024, 512, 256])
    xdae_width: int = 16
    weight_decay: float = 0.0
    log_every: int = 25
    image_every: int = 500
    ckpt_every: int = 100
    max_minutes: float | None = None
    threads: int | None = None
    device: str = "cpu"
    cache: str | None = None  # folder for cached codes (default: <out>/cache)
    init_generator: str | None = None  # start G from these safetensors weights (e.g. assets/generator.safetensors)


# ----------------------------------------------------------------------------- helpers

def _rank() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 131 + rank)


def _save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    from torchvision.utils import save_image

    save_image(images.clamp(0, 1), str(path), nrow=nrow, padding=2)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) of images in [0, 1]."""
    mse = F.mse_loss(a.clamp(0, 1), b.clamp(0, 1)).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def build_code_cache(cfg: TrainConfig, encoder: LiteEncoder, device: torch.device) -> dict[str, torch.Tensor]:
    """Images (uint8) and their codes h and features h1 (fp16), with mirrored copies; cached on disk."""
    cache_dir = Path(cfg.cache or Path(cfg.out) / "cache")
    tag = f"lite{cfg.encoder}_b{cfg.h_block}_b{cfg.h1_block}_s{cfg.size}_n{cfg.limit}"
    path = cache_dir / f"codes_{tag}.pt"
    rank, world = _rank()
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    if rank != 0:
        raise RuntimeError("code cache missing on a non-zero rank (rank 0 builds it first)")
    images, labels = load_folder(cfg.data, cfg.size, cfg.limit, cfg.seed)
    images = torch.cat([images, images.flip(-1)])
    labels = torch.cat([labels, labels])
    hs, h1s = [], []
    for i in range(0, len(images), 64):
        x = to_float(images[i: i + 64]).to(device)
        h1, h = encoder.encode_both(x)
        hs.append(h.half().cpu())
        h1s.append(h1.half().cpu())
    cache = {"images": images, "labels": labels, "h": torch.cat(hs), "h1": torch.cat(h1s)}
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(cache, tmp)
    os.replace(tmp, path)
    return cache


def code_statistics(h: torch.Tensor) -> dict[str, float]:
    """Range and spread of the codes, used to clamp and scale sampling steps (issue: use the
    range the chosen encoder's codes really take)."""
    hf = h.float()
    q = torch.quantile(hf.flatten()[:: max(1, hf.numel() // 1_000_000)], torch.tensor([0.001, 0.999]))
    return {"mean": hf.mean().item(), "std": hf.std().item(), "mean_abs": hf.abs().mean().item(),
            "min": hf.min().item(), "max": hf.max().item(),
            "q001": q[0].item(), "q999": q[1].item()}


class CsvLog:
    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, fields
        if not path.exists():
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(fields)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self.fields])


# ----------------------------------------------------------------------------- generator

GEN_FIELDS = ["step", "minutes", "phase", "loss_img", "loss_h1", "loss_h", "loss_cls", "loss_gan_g", "loss_d",
              "d_paused", "g_gan_paused", "psnr"]


def class_output_loss(encoder: LiteEncoder, h_fake: torch.Tensor, h_real: torch.Tensor) -> torch.Tensor:
    """L_c = KL(p(y|x) ‖ p(y|G(h))): E's own 1000-way classifier output, read from the code h.

    It asks G to keep what the classifier sees in x (all 1000 classes, not only the training
    ten), so that E(G(h)), the joint prior's pull (Eq. 11), keeps the class of h.
    """
    with torch.no_grad():
        target = F.log_softmax(encoder.h_to_logits(h_real), dim=1)
    return F.kl_div(F.log_softmax(encoder.h_to_logits(h_fake), dim=1), target, log_target=True,
                    reduction="batchmean")


def _build_generator(cfg: TrainConfig, code_shape: tuple[int, int, int]) -> UpconvGenerator:
    return UpconvGenerator(code_shape[0], code_shape[1], tuple(cfg.widths), cfg.size)


def train_generator(cfg: TrainConfig) -> dict:
    """Train G (and D) to invert E's code (paper S9.4/S9.5). Returns the last logged losses."""
    rank, world = _rank()
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = LiteEncoder(load_efficientnet_lite(cfg.encoder), cfg.h_block, cfg.h1_block, cfg.size).to(device)
    if rank == 0:
        cache = build_code_cache(cfg, encoder, device)
    if world > 1:
        dist.barrier()
        if rank != 0:
            cache = build_code_cache(cfg, encoder, device)
    images, h_all, h1_all = cache["images"], cache["h"], cache["h1"]
    code_shape = tuple(h_all.shape[1:])
    h1_var = h1_all.float().var().item()
    h_var = h_all.float().var().item()
    h_stats = code_statistics(h_all)
    h1_mean_abs = h1_all.float().abs().mean().item()

    G = _build_generator(cfg, code_shape).to(device)
    D = Discriminator(cfg.size).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    step, minutes_before = 0, 0.0
    state = {"r": 1.0}
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        G.load_state_dict(ck["G"])
        D.load_state_dict(ck["D"])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        step, minutes_before = int(ck["step"]), float(ck["minutes"])
        state["r"] = float(ck["r"])
    elif cfg.init_generator:  # a fresh run that starts from given weights (a resume uses its checkpoint)
        from .nets.registry import load_safetensors_checked

        G.load_state_dict(load_safetensors_checked(Path(cfg.init_generator), None))
    Gm, Dm = G, D
    if world > 1:
        G = nn.parallel.DistributedDataParallel(G)
        D = nn.parallel.DistributedDataParallel(D)
    if rank == 0:
        meta = {"config": asdict(cfg), "code_shape": list(code_shape), "h_stats": h_stats,
                "h1_var": h1_var, "h_var": h_var, "h1_mean_abs": h1_mean_abs,
                "generator": Gm.config(), "world_size": world,
                "n_train_images": int(len(images) // 2)}
        (out / "config.json").write_text(json.dumps(meta, indent=2))
    log = CsvLog(out / "losses.csv", GEN_FIELDS) if rank == 0 else None
    fixed = torch.arange(0, min(8, len(images)))
    per_rank = max(1, cfg.batch // world)
    t0 = time.time()
    last: dict = {}
    bce = nn.BCEWithLogitsLoss()
    try:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=step, disable=rank != 0, mininterval=20, desc="train G")
    except ImportError:  # pragma: no cover
        bar = None
    while step < cfg.steps:
        minutes = minutes_before + (time.time() - t0) / 60
        if cfg.max_minutes is not None and minutes >= cfg.max_minutes:
            break
        gen = _step_generator(cfg.seed, step, rank)
        idx = torch.randint(0, len(images), (per_rank,), generator=gen)
        x_real = to_float(images[idx]).to(device)
        h = h_all[idx].float().to(device)
        h1_real = h1_all[idx].float().to(device)
        warm = step < cfg.warmup_steps
        for group in opt_g.param_groups:
            group["lr"] = cfg.warmup_lr if warm else cfg.lr
        h_in = h
        if cfg.noise and not warm:
            h_in = h + torch.randn(h.shape, generator=gen).to(device) * cfg.noise_rel * h_stats["mean_abs"]
        x_fake = G(h_in)
        loss_img = F.mse_loss(x_fake, x_real)
        row = {"step": step + 1, "phase": "warmup" if warm else "full", "loss_img": loss_img.item()}
        loss_g = cfg.w_img * loss_img
        if not warm:
            x_seen = x_fake
            if cfg.noise:
                x_seen = x_fake + torch.randn(x_fake.shape, generator=gen).to(device) * cfg.noise_x
            h1_fake = encoder.encode_h1(x_seen)
            loss_h1 = F.mse_loss(h1_fake, h1_real) / h1_var
            loss_g = loss_g + cfg.w_h1 * loss_h1
            row["loss_h1"] = loss_h1.item()
            if cfg.w_h > 0 or cfg.w_cls > 0:
                h1_seen = h1_fake
                if cfg.noise:
                    h1_seen = h1_fake + torch.randn(h1_fake.shape, generator=gen).to(device) * cfg.noise_rel * h1_mean_abs
                h_fake = encoder.h1_to_h(h1_seen)
                loss_h = F.mse_loss(h_fake, h) / h_var
                row["loss_h"] = loss_h.item()
                if cfg.w_h > 0:
                    loss_g = loss_g + cfg.w_h * loss_h
                if cfg.w_cls > 0:
                    loss_cls = class_output_loss(encoder, h_fake, h)
                    loss_g = loss_g + cfg.w_cls * loss_cls
                    row["loss_cls"] = loss_cls.item()
            r = state["r"]
            g_gan_paused = r > 10.0
            d_paused = r < 0.1
            loss_gan_g = bce(Dm(x_fake), torch.ones(per_rank, device=device))  # D's own replica: no DDP sync
            if cfg.w_gan > 0 and not g_gan_paused:
                loss_g = loss_g + cfg.w_gan * loss_gan_g
            row.update(loss_gan_g=loss_gan_g.item(), g_gan_paused=int(g_gan_paused), d_paused=int(d_paused))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if not warm and cfg.w_gan > 0:
            logits_d = D(torch.cat([x_real, x_fake.detach()]))  # one forward, one backward (DDP)
            targets = torch.cat([torch.ones(per_rank), torch.zeros(per_rank)]).to(device)
            loss_d = 2 * bce(logits_d, targets)  # = BCE(real) + BCE(fake), each a batch mean
            opt_d.zero_grad(set_to_none=True)
            if not row["d_paused"]:
                loss_d.backward()
                opt_d.step()
            row["loss_d"] = loss_d.item()
            # Pausing heuristic of S9.1 on r = lossD / lossG (adversarial parts), averaged over
            # ranks so that every process pauses the same network.
            pair = torch.tensor([loss_d.item(), row["loss_gan_g"]])
            if world > 1:
                dist.all_reduce(pair)
            state["r"] = float(pair[0] / pair[1].clamp_min(1e-8))
        step += 1
        if bar is not None:
            bar.update(1)
        last = row
        if rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps):
            row["minutes"] = round(minutes_before + (time.time() - t0) / 60, 3)
            row["psnr"] = round(psnr(x_fake.detach(), x_real), 3)
            log.write(row)
        if rank == 0 and (step % cfg.image_every == 0 or step == cfg.steps):
            with torch.no_grad():
                G.eval()
                rec = Gm(h_all[fixed].float().to(device))
                G.train()
            _save_grid(torch.cat([to_float(images[fixed]).to(device), rec]), out / f"recon_{step:06d}.png", len(fixed))
        if rank == 0 and (step % cfg.ckpt_every == 0 or step == cfg.steps):
            _save_checkpoint(ckpt_path, Gm, Dm, opt_g, opt_d, step, minutes_before + (time.time() - t0) / 60, state["r"])
    if rank == 0:
        _save_checkpoint(ckpt_path, Gm, Dm, opt_g, opt_d, step, minutes_before + (time.time() - t0) / 60, state["r"])
    if bar is not None:
        bar.close()
    return last


def _save_checkpoint(path: Path, G: nn.Module, D: nn.Module, opt_g, opt_d, step: int, minutes: float,
                     r: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(), "step": step, "minutes": minutes, "r": r}, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- DAEs

DAE_FIELDS = ["step", "minutes", "loss", "loss_noisy_baseline"]


def train_dae(cfg: TrainConfig) -> dict:
    """Train R_h (``hdae``, on cached codes, S9.3) or R_x (``xdae``, on images, S9.2)."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.kind == "hdae":
        encoder = LiteEncoder(load_efficientnet_lite(cfg.encoder), cfg.h_block, cfg.h1_block, cfg.size).to(device)
        cache = build_code_cache(cfg, encoder, device)
        data = cache["h"]
        stats = code_statistics(data)
        sigma = cfg.dae_sigma * stats["mean_abs"]
        model: nn.Module = MLPCodeDAE(tuple(data.shape[1:]), tuple(cfg.dae_hidden)).to(device)
    else:
        images, _ = load_folder(cfg.data, cfg.size, cfg.limit, cfg.seed)
        data = torch.cat([images, images.flip(-1)])
        stats = {}
        sigma = cfg.dae_sigma
        model = ConvImageDAE(cfg.xdae_width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, minutes_before = 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, minutes_before = int(ck["step"]), float(ck["minutes"])
    (out / "config.json").write_text(json.dumps({"config": asdict(cfg), "sigma": sigma, "stats": stats,
                                                 "model": model.config()}, indent=2))
    log = CsvLog(out / "losses.csv", DAE_FIELDS)
    t0 = time.time()
    last: dict = {}
    while step < cfg.steps:
        if cfg.max_minutes is not None and minutes_before + (time.time() - t0) / 60 >= cfg.max_minutes:
            break
        gen = _step_generator(cfg.seed, step, 0)
        idx = torch.randint(0, len(data), (cfg.batch,), generator=gen)
        clean = data[idx].float().to(device) if cfg.kind == "hdae" else to_float(data[idx]).to(device)
        noisy = clean + torch.randn(clean.shape, generator=gen).to(device) * sigma
        loss = F.mse_loss(model(noisy), clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        last = {"step": step, "loss": loss.item(), "loss_noisy_baseline": F.mse_loss(noisy, clean).item()}
        if step % cfg.log_every == 0 or step == cfg.steps:
            last["minutes"] = round(minutes_before + (time.time() - t0) / 60, 3)
            log.write(last)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            _save_dae(ckpt_path, model, opt, step, minutes_before + (time.time() - t0) / 60)
    _save_dae(ckpt_path, model, opt, step, minutes_before + (time.time() - t0) / 60)
    return last


def _save_dae(path: Path, model: nn.Module, opt, step: int, minutes: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "minutes": minutes}, tmp)
    os.replace(tmp, path)


def run(cfg: TrainConfig) -> dict:
    """Entry point used by the CLI; sets up torch.distributed when launched by torchrun."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if cfg.device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        if cfg.device.startswith("cuda"):
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            cfg.device = f"cuda:{local}"
    try:
        if cfg.kind == "generator":
            return train_generator(cfg)
        if cfg.kind in ("hdae", "xdae"):
            return train_dae(cfg)
        raise ValueError(f"unknown training kind {cfg.kind!r}: generator, hdae or xdae")
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
