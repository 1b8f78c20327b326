"""Training of the learned priors: the generator G (+ discriminator D), R_h and R_x (paper S9).

Designed for a 2-core CPU (and faster where a GPU or several processes are available):

* the photos are decoded once into a uint8 memory map, and the encoder's codes h = E(x) and
  feature targets h1 = E1(x) of every photo and of its mirror image are computed once into fp16
  memory maps (``cache/``, outside the repository), so a step never decodes WebP nor runs E on
  real images;
* the default is the 1,000-class set (``imagenet-1k-128/train``; labels from its
  ``classes.tsv``), h = block 10 of Lite0 (112×8×8) and h1 = block 4 (40×16×16);
* a short pixel-loss warm-up (no backward pass through E, higher learning rate) precedes the
  paper's losses: L_img + L_h1 + L_GAN (Noiseless Joint PPGN-h, S9.4), plus L_h and Gaussian
  noise on x, h1 and h for Joint PPGN-h (S9.5);
* every step draws its batch and noise from a generator seeded by (seed, step, rank), so a
  resumed run continues exactly as an uninterrupted one would;
* ``torchrun --nproc_per_node N -m ppgn_core train generator …`` trains data-parallel (DDP,
  gloo on CPU, nccl on GPUs).

Outputs in ``--out``: ``checkpoint.pt`` (state dicts only, loaded with weights_only=True),
``config.json``, ``losses.csv``, ``recon_XXXXXX.png`` / ``samples_XXXXXX.png``. With
``--resume FILE`` the run also keeps a compact checkpoint (fp16 G and D, step, minutes, config;
one safetensors file, replaced in place) that can live in the repository and continue a run on
a machine whose ``runs/`` is gone.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .data import IMAGENET_1K_ROOT, builder_tmp, cached_images, load_folder, to_float
from .nets.classifiers import LiteEncoder, load_efficientnet_lite
from .nets.daes import ConvCodeDAE, ConvImageDAE, MLPCodeDAE, NoiseConditionalCodeDAE
from .nets.generators import Discriminator, LaplacianGenerator, build_generator


@dataclass
class TrainConfig:
    """Settings of one training run (saved as config.json beside the weights)."""

    kind: str = "generator"  # generator | hdae | xdae
    data: str = str(IMAGENET_1K_ROOT / "train")
    out: str = "runs/generator"
    steps: int = 6000
    batch: int = 32
    lr: float = 2e-4
    seed: int = 0
    size: int = 128
    limit: int | None = None  # use only this many images (tests, quick runs)
    encoder: int = 0  # EfficientNet-Lite variant of E
    h_block: int = 10  # h = 112×8×8 (block 15, 320×4×4, drew almost nothing outside its classes; 16 = pooled head)
    h1_block: int = 4  # the feature-matching layer, below h (40×16×16)
    widths: list[int] = field(default_factory=lambda: [384, 256, 128, 64])
    # coarse-to-fine G (LAPGAN): ``widths`` draw the half-resolution image, a class-agnostic
    # refiner of this width adds the full-resolution residual; its own pixel loss on the coarse image
    coarse_to_fine: bool = False
    refiner_width: int = 48
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
    dae_residual: bool = True  # R_h(h) = h + MLP(h) (the Imagenette bundle's R_h was not residual)
    dae_arch: str = "mlp"  # R_h: "mlp" (paper S9.3), "conv" (a spatial code; residual), "score" (every σ)
    dae_width: int = 256  # width of the conv R_h
    dae_depth: int = 4  # 3×3 blocks of the noise-conditional R_h ("score")
    # "score": σ drawn log-uniformly in [min, max], in units of the code's per-element spread
    dae_sigma_min: float = 0.02
    dae_sigma_max: float = 12.0
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
    init_dae: str | None = None  # start R_h / R_x from these weights (e.g. assets/code_score_dae.safetensors)
    resume: str | None = None  # compact fp16 checkpoint (safetensors) to continue from and keep updated
    images_before: int | None = None  # images seen before a compact checkpoint that does not count them
    resume_ramp: int = 200  # steps of linear lr ramp after a compact resume (Adam's state is not kept)
    amp: bool = False  # bf16 autocast (meant for GPUs; slow on CPUs without bf16)
    decay_minutes: float = 0.0  # with max_minutes: lr falls linearly to 10% over the run's last minutes


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


@torch.no_grad()
def build_code_cache(cfg: TrainConfig, encoder: LiteEncoder, device: torch.device) -> CodeCache:
    """Decode the photos once (uint8 memory map) and cache E's h and h1 of each and of its mirror."""
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


# ----------------------------------------------------------------------------- generator

GEN_FIELDS = ["step", "minutes", "phase", "loss_img", "loss_h1", "loss_h", "loss_cls", "loss_gan_g", "loss_d",
              "d_paused", "g_gan_paused", "psnr", "lr", "loss_coarse"]


def class_output_loss(encoder: LiteEncoder, h_fake: torch.Tensor, h_real: torch.Tensor) -> torch.Tensor:
    """L_c = KL(p(y|x) ‖ p(y|G(h))): E's own 1000-way classifier output, read from the code h.

    It asks G to keep what the classifier sees in x (all 1000 classes, not only the training
    ten), so that E(G(h)), the joint prior's pull (Eq. 11), keeps the class of h.
    """
    with torch.no_grad():
        target = F.log_softmax(encoder.h_to_logits(h_real), dim=1)
    return F.kl_div(F.log_softmax(encoder.h_to_logits(h_fake), dim=1), target, log_target=True,
                    reduction="batchmean")


def _build_generator(cfg: TrainConfig, code_shape: tuple[int, ...]) -> nn.Module:
    """G for codes of ``code_shape``: a flat code (the pooled head) goes through a linear layer
    to 4×4; ``coarse_to_fine`` gives the Laplacian (LAPGAN) G; else the plain up-convolutions."""
    config: dict = {"widths": list(cfg.widths), "out_size": cfg.size}
    if len(code_shape) == 1:
        if cfg.coarse_to_fine:
            raise ValueError("coarse_to_fine needs a spatial code (h_block below the pooled head)")
        return build_generator({**config, "arch": "vector_upconv", "code_dim": code_shape[0]})
    config.update(code_channels=code_shape[0], code_size=code_shape[1])
    if cfg.coarse_to_fine:
        return build_generator({**config, "arch": "laplacian", "refiner_width": cfg.refiner_width})
    return build_generator({**config, "arch": "upconv"})


def generate(G: nn.Module, h: torch.Tensor, laplacian: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """G(h), and the coarse image of a Laplacian G (else None). ``G`` may be wrapped in DDP."""
    if laplacian:
        return G(h, with_coarse=True)
    return G(h), None


@dataclass
class CodeScales:
    """Spreads of the cached codes that scale the losses and the Joint PPGN-h noise."""

    h_var: float
    h1_var: float
    h1_mean_abs: float
    h_stats: dict

    @classmethod
    def of(cls, cache: CodeCache) -> "CodeScales":
        pick = torch.linspace(0, len(cache) - 1, min(len(cache), 4096)).long()  # a fixed subset
        h, h1 = cache.h[pick].float(), cache.h1[pick].float()
        return cls(h.var().item(), h1.var().item(), h1.abs().mean().item(), code_statistics(h))


def generator_losses(cfg: TrainConfig, encoder: LiteEncoder, D: nn.Module, x_fake: torch.Tensor,
                     x_real: torch.Tensor, h: torch.Tensor, h1_real: torch.Tensor, scales: CodeScales,
                     gen: torch.Generator, warm: bool, r: float,
                     x_coarse: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """G's loss for one batch: L_img (+ after the warm-up L_h1, L_h, L_c, L_GAN; S9.4/S9.5).
    ``x_coarse``: a Laplacian G's half-resolution image, with its own L_img against the
    area-downsampled photo (the coarse level of the pyramid)."""
    device = x_fake.device
    loss_img = F.mse_loss(x_fake, x_real)
    row = {"phase": "warmup" if warm else "full", "loss_img": loss_img.item()}
    loss = cfg.w_img * loss_img
    if x_coarse is not None:
        loss_coarse = F.mse_loss(x_coarse, F.avg_pool2d(x_real, 2))
        loss = loss + cfg.w_img * loss_coarse
        row["loss_coarse"] = loss_coarse.item()
    if warm:
        return loss, row
    x_seen = x_fake
    if cfg.noise:
        x_seen = x_fake + torch.randn(x_fake.shape, generator=gen).to(device) * cfg.noise_x
    h1_fake = encoder.encode_h1(x_seen)
    loss_h1 = F.mse_loss(h1_fake, h1_real) / scales.h1_var
    loss = loss + cfg.w_h1 * loss_h1
    row["loss_h1"] = loss_h1.item()
    if cfg.w_h > 0 or cfg.w_cls > 0:
        h1_seen = h1_fake
        if cfg.noise:
            h1_seen = h1_fake + torch.randn(h1_fake.shape, generator=gen).to(device) * cfg.noise_rel * scales.h1_mean_abs
        h_fake = encoder.h1_to_h(h1_seen)
        loss_h = F.mse_loss(h_fake, h) / scales.h_var
        row["loss_h"] = loss_h.item()
        if cfg.w_h > 0:
            loss = loss + cfg.w_h * loss_h
        if cfg.w_cls > 0:
            loss_cls = class_output_loss(encoder, h_fake, h)
            loss = loss + cfg.w_cls * loss_cls
            row["loss_cls"] = loss_cls.item()
    g_gan_paused, d_paused = r > 10.0, r < 0.1  # the pausing heuristic of S9.1 on r = lossD / lossG
    loss_gan_g = F.binary_cross_entropy_with_logits(D(x_fake), torch.ones(len(x_fake), device=device))
    if cfg.w_gan > 0 and not g_gan_paused:
        loss = loss + cfg.w_gan * loss_gan_g
    row.update(loss_gan_g=loss_gan_g.item(), g_gan_paused=int(g_gan_paused), d_paused=int(d_paused))
    return loss, row


def mixed_precision(device: torch.device, amp: bool):
    """bf16 autocast on ``device`` when ``amp`` (--amp), else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)


def discriminator_step(D: nn.Module, opt_d, x_real: torch.Tensor, x_fake: torch.Tensor, paused: bool,
                       amp: bool = False) -> float:
    """One D update on real vs. G's images (one forward, one backward, for DDP); returns L_D.
    ``amp``: the forward pass in bf16 autocast."""
    n = len(x_real)
    with mixed_precision(x_real.device, amp):
        logits = D(torch.cat([x_real, x_fake.detach()])).float()
    targets = torch.cat([torch.ones(n), torch.zeros(n)]).to(x_real.device)
    loss_d = 2 * F.binary_cross_entropy_with_logits(logits, targets)  # = BCE(real) + BCE(fake), batch means
    opt_d.zero_grad(set_to_none=True)
    if not paused:
        loss_d.backward()
        opt_d.step()
    return loss_d.item()


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
        from .nets.registry import load_safetensors_checked

        G.load_state_dict(load_safetensors_checked(Path(cfg.init_generator), None))
    return RunState()


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
    if rank == 0:
        cache = build_code_cache(cfg, encoder, device)
    if world > 1:
        dist.barrier()
        if rank != 0:
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


def _save_checkpoint(path: Path, G: nn.Module, D: nn.Module, opt_g, opt_d, st: RunState) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(), "step": st.step, "minutes": st.minutes, "r": st.r,
                "ramp_from": st.ramp_from, "images": st.images}, tmp)
    os.replace(tmp, path)


#: The compact checkpoint must stay small enough to commit (issue: ≤ 20 MB).
COMPACT_LIMIT_BYTES = 20 * 1024 * 1024


def save_compact_checkpoint(path: Path, G: nn.Module, D: nn.Module, st: RunState, meta: dict) -> None:
    """fp16 G and D with step, minutes, r and the run's config, as one safetensors file replaced in
    place. Adam's moments are left out: in fp16 they would double the file past 20 MB (a resume
    restarts Adam with a short learning-rate ramp instead)."""
    from safetensors.torch import save_file

    tensors = {f"G.{k}": v.detach().half().contiguous().cpu() for k, v in G.state_dict().items()}
    tensors.update({f"D.{k}": v.detach().half().contiguous().cpu() for k, v in D.state_dict().items()})
    info = {"step": str(st.step), "minutes": f"{st.minutes:.3f}", "r": f"{st.r:.6g}", "meta": json.dumps(meta)}
    if st.images is not None:
        info["images"] = str(st.images)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=info)
    size = tmp.stat().st_size
    if size > COMPACT_LIMIT_BYTES:
        tmp.unlink()
        raise ValueError(f"compact checkpoint would be {size / 2**20:.1f} MiB, over the 20 MiB limit")
    os.replace(tmp, path)


def load_compact_checkpoint(path: Path) -> dict:
    """Read a compact checkpoint: G and D state dicts (fp32), step, minutes, r, meta."""
    from safetensors import safe_open

    if path.suffix != ".safetensors":
        raise ValueError(f"a compact checkpoint is a .safetensors file, got {path.name}")
    with safe_open(str(path), framework="pt") as f:
        info = f.metadata() or {}
        state = {k: f.get_tensor(k).float() for k in f.keys()}
    if "step" not in info:
        raise ValueError(f"{path} is not a compact training checkpoint (no step in its metadata)")
    return {"G": {k[2:]: v for k, v in state.items() if k.startswith("G.")},
            "D": {k[2:]: v for k, v in state.items() if k.startswith("D.")},
            "step": int(info["step"]), "minutes": float(info["minutes"]), "r": float(info["r"]),
            "images": int(info["images"]) if "images" in info else None,
            "meta": json.loads(info.get("meta", "{}"))}


# ----------------------------------------------------------------------------- DAEs

DAE_FIELDS = ["step", "minutes", "loss", "loss_noisy_baseline"]


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
        from .nets.registry import load_safetensors_checked, sha256_of

        init = {"init_dae_sha256": sha256_of(Path(cfg.init_dae))}  # the export's lineage check
        weights = load_safetensors_checked(Path(cfg.init_dae), init["init_dae_sha256"])
        model.load_state_dict({k: v.float() for k, v in weights.items()})
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, minutes_before = 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
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
