"""Training of the learned networks: the generator G (+ discriminator D), R_h and R_x (paper S9); the
latent diffusion prior trains in :mod:`ppgn_core.training.diffusion`.

The pieces live in :mod:`ppgn_core.training` (``config``, ``common``, ``codes``, ``generator_losses``,
``generator_checkpoints``, ``generator``, ``daes``); this module is the entry point and keeps their
names importable from one place.

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

import torch

from .training.codes import (  # noqa: F401
    CodeCache,
    build_code_cache,
    code_statistics,
    elementwise_statistics,
)
from .training.common import CsvLog, distributed, mixed_precision, psnr  # noqa: F401
from .training.config import TrainConfig
from .training.daes import DAE_FIELDS, score_dae_losses, train_dae  # noqa: F401
from .training.generator import _learning_rate, train_generator  # noqa: F401
from .training.generator_checkpoints import (  # noqa: F401
    COMPACT_LIMIT_BYTES,
    RunState,
    load_compact_checkpoint,
    save_compact_checkpoint,
)
from .training.generator_losses import (  # noqa: F401
    class_output_loss,
    discriminator_step,
    generator_losses,
)


def run(cfg: TrainConfig) -> dict:
    """Entry point used by the CLI; sets up torch.distributed when launched by torchrun."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with distributed(cfg.device) as device:
        cfg.device = device
        if cfg.kind == "generator":
            return train_generator(cfg)
        if cfg.kind in ("hdae", "xdae"):
            return train_dae(cfg)
        raise ValueError(f"unknown training kind {cfg.kind!r}: generator, hdae or xdae")
