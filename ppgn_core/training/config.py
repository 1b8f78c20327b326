"""Settings of a training run of G, R_h or R_x (saved as config.json beside the weights)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data import IMAGENET_1K_ROOT


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
