"""Training of the latent diffusion prior over E's code (:mod:`ppgn_core.nets.code_diffusion`).

The network learns on cached codes only (``train.build_code_cache``: E's codes of every training
photo and of its mirror image, computed once), so a step runs no image network and a 2-core CPU
can afford it. The pieces, each small:

* :func:`edm_sigmas` — the EDM training noise distribution, ln σ ~ N(P_mean, P_std²);
* :func:`edm_loss` — denoising loss at those levels with EDM's weight (σ² + 1)/σ² (σ_data = 1);
* :func:`drop_labels` — label dropout: a fraction of the classes become the "no class" entry, so one
  network learns p(h) and p(h|y) (classifier-free guidance);
* :class:`EMA` — an exponential moving average of the weights (what is exported and sampled);
* :class:`EDMObjective` — the loss as a module, so that DDP can wrap it;
* :func:`train_code_diffusion` — the loop: every step draws its batch, levels, noise and dropped
  labels from a generator seeded by (seed, step, rank), so a run resumed from ``checkpoint.pt``
  continues bit for bit as an uninterrupted one; tqdm shows images/s and the ETA. Under
  ``torchrun --nproc_per_node N -m ppgn_core train-prior …`` it trains data-parallel (DDP; gloo on
  the CPU, NCCL on GPUs): each rank draws ``batch / N`` codes a step, rank 0 logs and saves.

Checkpoints: ``<out>/checkpoint.pt`` (fp32 weights, EMA, Adam, step; written atomically) for an
exact resume, and with ``resume`` a compact fp16 file (weights, EMA, step, minutes, config; one
safetensors file replaced in place) that lives in the repository and continues a run on a machine
whose ``runs/`` is gone (Adam restarts, with a short learning-rate ramp).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn

from ..data import IMAGENET_1K_ROOT
from ..nets.code_diffusion import CodeDiffusionUNet
from ..storage import (
    CheckpointError,
    atomic_save_safetensors,
    atomic_save_torch,
    load_checked_safetensors,
    load_torch_checkpoint,
)
from .common import CsvLog, _rank, _step_generator, all_ranks_agree, distributed


@dataclass
class DiffusionConfig:
    """Settings of one training run of the code diffusion prior (saved as config.json)."""

    data: str = str(IMAGENET_1K_ROOT / "train")
    cache: str | None = "cache"  # where the cached codes live (built on first use)
    out: str = "runs/code_diffusion"
    steps: int = 100_000
    batch: int = 128
    lr: float = 2e-4
    warmup_steps: int = 200
    seed: int = 0
    channels: int = 64  # width at 8×8 (twice that at 4×4)
    blocks: int = 2
    heads: int = 4
    dropout: float = 0.1
    label_dropout: float = 0.1
    p_mean: float = -0.4  # ln σ ~ N(p_mean, p_std²), standardised code units (EDM2's latent setting)
    p_std: float = 1.2
    ema_decay: float = 0.999
    log_every: int = 50
    ckpt_every: int = 250
    max_minutes: float | None = None  # the prior's total training minutes, resumed runs' included
    more_minutes: float | None = None  # or: this many minutes more than the run it resumes had trained
    threads: int | None = None
    device: str = "cpu"
    limit: int | None = None  # use only this many photos (tests)
    resume: str | None = None  # compact fp16 checkpoint (safetensors) to continue from and keep updated
    resume_ramp: int = 100
    decay_steps: int = 0  # cool-down: the lr falls linearly to lr_end over the last decay_steps before `steps`
    lr_end: float = 0.0


# ----------------------------------------------------------------------------- pieces

def edm_sigmas(batch: int, p_mean: float, p_std: float, gen: torch.Generator) -> torch.Tensor:
    """Training noise levels: ln σ ~ N(p_mean, p_std²) (Karras et al. 2022)."""
    return (torch.randn(batch, generator=gen) * p_std + p_mean).exp()


def drop_labels(labels: torch.Tensor, p: float, null_class: int, gen: torch.Generator) -> torch.Tensor:
    """Labels with a fraction ``p`` replaced by ``null_class`` (classifier-free guidance training)."""
    drop = torch.rand(len(labels), generator=gen) < p
    return torch.where(drop, torch.full_like(labels, null_class), labels)


def edm_loss(model: CodeDiffusionUNet, u: torch.Tensor, labels: torch.Tensor, sigma: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """Mean of λ(σ)·‖D(u + σn; σ, y) − u‖² with λ = (σ² + 1)/σ² (σ_data = 1), per element."""
    s = sigma.view(-1, 1, 1, 1)
    weight = (s ** 2 + 1) / s ** 2
    return (weight * (model.denoise_standardised(u + s * noise, sigma, labels) - u) ** 2).mean()


class EDMObjective(nn.Module):
    """:func:`edm_loss` of ``model`` as a module's forward (what DDP wraps and synchronises)."""

    def __init__(self, model: CodeDiffusionUNet):
        super().__init__()
        self.model = model

    def forward(self, u: torch.Tensor, labels: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return edm_loss(self.model, u, labels, sigma, noise)


class EMA:
    """Exponential moving average of a network's weights; the decay ramps up over the first steps
    (min(decay, (1 + t)/(10 + t))) so that the average forgets the random start."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


def _learning_rate(cfg: DiffusionConfig, step: int, ramp_from: int | None) -> float:
    """Warm-up, a ramp after a compact resume, then ``lr`` until the cool-down, over whose ``decay_steps`` steps
    it falls linearly to ``lr_end`` at step ``steps``."""
    lr = cfg.lr
    start = cfg.steps - cfg.decay_steps
    if cfg.decay_steps > 0 and step >= start:
        lr = cfg.lr + (cfg.lr_end - cfg.lr) * min(1.0, (step - start + 1) / cfg.decay_steps)
    lr *= min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if ramp_from is not None:  # after a compact resume Adam's moments are new: ramp up again
        lr *= min(1.0, (step - ramp_from + 1) / max(1, cfg.resume_ramp))
    return lr


def _minutes_limit(cfg: DiffusionConfig, minutes_before: float) -> float | None:
    """The total training minutes at which the run stops: ``max_minutes``, or the resumed run's minutes plus
    ``more_minutes``, whichever comes first (None: no limit)."""
    limits = [m for m in (cfg.max_minutes, None if cfg.more_minutes is None else minutes_before + cfg.more_minutes)
              if m is not None]
    return min(limits) if limits else None


def build_model(cfg: DiffusionConfig, code_shape: tuple[int, ...], mean: torch.Tensor | None = None,
                std: torch.Tensor | None = None) -> CodeDiffusionUNet:
    return CodeDiffusionUNet(code_shape, cfg.channels, cfg.blocks, 1000, cfg.heads, cfg.dropout, mean, std)


# ----------------------------------------------------------------------------- checkpoints

def save_compact(path: Path, model: nn.Module, ema: EMA, step: int, minutes: float, cfg: DiffusionConfig) -> None:
    """fp16 weights and EMA, step and minutes in one safetensors file, replaced atomically."""
    tensors = {f"model.{k}": v.detach().half().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().half().contiguous() for k, v in ema.model.state_dict().items()})
    meta = {"step": str(step), "minutes": f"{minutes:.4f}", "config": json.dumps(asdict(cfg)),
            "network": json.dumps(model.config())}
    atomic_save_safetensors(tensors, path, meta)


def load_compact(path: Path) -> dict:
    """The compact checkpoint: ``model`` and ``ema`` state dicts (fp32), ``step``, ``minutes``, ``network``."""
    tensors, meta = load_checked_safetensors(path)
    tensors = {k: v.float() for k, v in tensors.items()}
    if "step" not in meta or "network" not in meta:
        raise CheckpointError(f"checkpoint {path} is not a code diffusion checkpoint (no step/network metadata)")
    split = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    return {"model": split("model."), "ema": split("ema."), "step": int(meta["step"]),
            "minutes": float(meta["minutes"]), "network": json.loads(meta["network"])}


# ----------------------------------------------------------------------------- loop

def codes_and_labels(cfg: DiffusionConfig, device: torch.device):
    """E's cached codes (photos, then their mirrors) and one label per code."""
    from ..nets.classifiers import LiteEncoder, load_efficientnet_lite
    from ..train import TrainConfig, build_code_cache

    tcfg = TrainConfig(kind="hdae", data=cfg.data, cache=cfg.cache, out=cfg.out, limit=cfg.limit, seed=cfg.seed)
    encoder = LiteEncoder(load_efficientnet_lite(tcfg.encoder), tcfg.h_block, tcfg.h1_block, tcfg.size).to(device)
    cache = build_code_cache(tcfg, encoder, device)
    labels = cache.labels.long()
    return cache.h, torch.cat([labels, labels])


def run_training(cfg: DiffusionConfig) -> dict:
    """The command's entry point: :func:`train_code_diffusion`, in a process group under torchrun."""
    with distributed(cfg.device) as device:
        return train_code_diffusion(replace(cfg, device=device))


def train_code_diffusion(cfg: DiffusionConfig, codes: torch.Tensor | None = None,
                         labels: torch.Tensor | None = None) -> dict:
    """Train (or continue) the prior; ``codes``/``labels`` given directly skip the code cache (tests).
    In a process group, every rank runs this with the same settings."""
    from tqdm import tqdm

    from ..train import elementwise_statistics

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not 0 <= cfg.label_dropout < 1:
        raise ValueError("label_dropout must lie in [0, 1)")
    if not (0 <= cfg.decay_steps <= cfg.steps and 0 <= cfg.lr_end <= cfg.lr):
        raise ValueError(f"need 0 ≤ decay_steps ≤ steps and 0 ≤ lr_end ≤ lr, got decay_steps {cfg.decay_steps}, "
                         f"steps {cfg.steps}, lr_end {cfg.lr_end}, lr {cfg.lr}")
    rank, world = _rank()
    device = torch.device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if codes is None:
        codes, labels = codes_and_labels(cfg, device)
    if labels is None or len(labels) != len(codes):
        raise ValueError("need one class label per code")
    mean, std = elementwise_statistics(codes)
    torch.manual_seed(cfg.seed)  # the starting weights: part of the run's seeded draw
    model = build_model(cfg, tuple(codes.shape[1:]), mean, std).to(device)
    ema = EMA(model, cfg.ema_decay)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, minutes_before, ramp_from = 0, 0.0, None
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():  # exact resume
        ck = load_torch_checkpoint(ckpt_path, ("model", "ema", "opt", "step", "minutes"))
        model.load_state_dict(ck["model"])
        ema.model.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        step, minutes_before = int(ck["step"]), float(ck["minutes"])
    elif cfg.resume and Path(cfg.resume).exists():  # continue from the repository's compact checkpoint
        ck = load_compact(Path(cfg.resume))
        if ck["network"] != model.config():
            raise ValueError(f"checkpoint {cfg.resume} holds {ck['network']}, this run builds {model.config()}")
        model.load_state_dict(ck["model"])
        ema.model.load_state_dict(ck["ema"])
        step, minutes_before, ramp_from = ck["step"], ck["minutes"], ck["step"]
    limit = _minutes_limit(cfg, minutes_before)
    objective = EDMObjective(model)
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(objective)
    per_rank = max(1, cfg.batch // world)
    if rank == 0:
        (out / "config.json").write_text(json.dumps({"config": asdict(cfg), "network": model.config(),
                                                     "codes": len(codes), "world_size": world}, indent=2))
    t0 = time.time()
    minutes_now = lambda: minutes_before + (time.time() - t0) / 60  # noqa: E731

    def save() -> None:
        if rank != 0:
            return
        atomic_save_torch({"model": model.state_dict(), "ema": ema.model.state_dict(), "opt": opt.state_dict(),
                           "step": step, "minutes": minutes_now()}, ckpt_path)
        if cfg.resume:
            save_compact(Path(cfg.resume), model, ema, step, minutes_now(), cfg)

    log = CsvLog(out / "losses.csv", ["step", "minutes", "loss", "lr"]) if rank == 0 else None
    last: dict = {}
    first = step
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="code diffusion prior", unit="step", mininterval=10, ncols=100,
               disable=rank != 0)
    try:
        while step < cfg.steps:
            if all_ranks_agree(limit is not None and minutes_now() >= limit):
                break
            gen = _step_generator(cfg.seed, step, rank)
            idx = torch.randint(0, len(codes), (per_rank,), generator=gen)
            u = model.standardise(codes[idx].float().to(device))
            y = drop_labels(labels[idx], cfg.label_dropout, model.null_class, gen).to(device)
            sigma = edm_sigmas(per_rank, cfg.p_mean, cfg.p_std, gen).to(device)
            noise = torch.randn(u.shape, generator=gen).to(device)
            torch.manual_seed(cfg.seed * 7919 + step + 1_000_003 * rank)  # dropout masks: the step's seeded draw
            loss = objective(u, y, sigma, noise)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the diffusion loss is {loss.item()} at step {step}; stopping without saving")
            for g in opt.param_groups:
                g["lr"] = _learning_rate(cfg, step, ramp_from)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # under DDP the gradients are averaged over the ranks here
            opt.step()
            ema.update(model, step)
            step += 1
            bar.update(1)
            rate = (step - first) * per_rank * world / max(1e-9, time.time() - t0)
            left = {} if limit is None else {"min_left": f"{max(0.0, limit - minutes_now()):.1f}"}
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.0f}", **left, refresh=False)
            last = {"step": step, "loss": loss.item()}
            if log is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                log.write({"step": step, "minutes": round(minutes_now(), 3), "loss": round(loss.item(), 6),
                           "lr": opt.param_groups[0]["lr"]})
            if step % cfg.ckpt_every == 0:
                save()
    finally:
        bar.close()
    save()
    return {**last, "step": step, "minutes": round(minutes_now(), 3), "world_size": world}


def read_run(source: Path) -> dict:
    """A prior's run, from its folder (``checkpoint.pt``, ``config.json``) or its compact checkpoint: ``ema``
    (fp32 state), ``network`` (its config), ``step``, ``minutes``."""
    source = Path(source)
    if source.suffix == ".safetensors":
        ck = load_compact(source)
        return {"ema": ck["ema"], "network": ck["network"], "step": ck["step"], "minutes": ck["minutes"]}
    ck = load_torch_checkpoint(source / "checkpoint.pt", ("ema", "step", "minutes"))
    return {"ema": ck["ema"], "network": json.loads((source / "config.json").read_text())["network"],
            "step": int(ck["step"]), "minutes": float(ck["minutes"])}


def ema_network(source: Path, like: CodeDiffusionUNet) -> tuple[CodeDiffusionUNet, dict]:
    """A copy of ``like`` (e.g. the shipped prior) holding the EMA weights of the run at ``source`` (see
    :func:`read_run`), in eval mode, and that run."""
    run = read_run(source)
    net = copy.deepcopy(like)
    net.load_state_dict(run["ema"])
    return net.eval(), run


def export_ema(checkpoint: Path, path: Path) -> dict:
    """The EMA weights of a run (its folder or its compact file) as fp16 safetensors; returns the network
    config and the step."""
    run = read_run(checkpoint)
    atomic_save_safetensors({k: v.half().contiguous() for k, v in run["ema"].items()}, Path(path))
    return {"config": run["network"], "steps": run["step"]}
