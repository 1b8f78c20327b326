"""What several commands share: device, condition options, loading a bundle, writing a run's outputs."""

from __future__ import annotations


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _add_condition_options(p) -> None:
    p.add_argument("--robust-k", type=int, default=None,
                   help="robust condition: average C's gradient over K random views of the image per step "
                        "(shift, scale 0.9–1.1, rotation; 0 = off; default: the preset's)")
    p.add_argument("--robust-blur", type=float, default=None, help="σ (px) of an extra blur in each robust view")
    p.add_argument("--realism", type=float, default=None,
                   help="weight of log D(real|x), the GAN discriminator shipped with G, as a second condition "
                        "(0 = off; default: the preset's)")
    p.add_argument("--p-target", type=float, default=None,
                   help="p(class) under C at which a chain is satisfied (see --at-target; 1 = never; "
                        "default: the preset's)")
    p.add_argument("--at-target", choices=["prior", "stop"], default=None,
                   help="what a chain does once p(class) reached --p-target: follow the prior alone, or stop "
                        "where it is until p falls below again (default: the preset's)")


def _add_condition_size(p) -> None:
    p.add_argument("--condition-size", type=int, default=None,
                   help="the side (px) C sees the images at (default: its own, 224 for Lite0); a probe on "
                        "held-out classes found 160 px far worse for the default preset (README)")


def set_condition_size(bundle, size: int | None) -> None:
    """Make C see images resized to ``size`` px (None: leave it as it is). A clear error for a side
    no classifier here can use."""
    if size is None:
        return
    if not 32 <= size <= 1024:
        raise ValueError(f"--condition-size must be between 32 and 1024 px, got {size}")
    bundle.classifier.input_size = int(size)


def _condition_overrides(args) -> dict:
    return {k: v for k, v in (("robust_k", args.robust_k), ("robust_blur", args.robust_blur),
                              ("realism", args.realism), ("p_target", args.p_target),
                              ("at_target", args.at_target)) if v is not None}


def _add_common(p) -> None:
    from ..presets import PHOTO_CHAIN_PRESET, DEFAULT_INPAINT_PRESET, DEFAULT_PRESET

    p.add_argument("--preset", default=None,
                   help=f"default: {DEFAULT_PRESET}; {PHOTO_CHAIN_PRESET} (a MALA-approx chain) when starting "
                        f"from an image; {DEFAULT_INPAINT_PRESET} when inpainting")
    p.add_argument("--steps", type=int, default=None,
                   help="steps (noise levels, for guided denoising); default: the preset's own "
                        "(inpaint with a MALA-approx chain: 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eps", type=float, nargs=3, metavar=("E1", "E2", "E3"), default=None)
    p.add_argument("--lr", type=float, default=None,
                   help="release step form: step size (× code spread); the preset's decay is kept in proportion")
    p.add_argument("--lr-end", type=float, default=None, help="the step size at the last step (default: as --lr says)")
    p.add_argument("--eps1-end", type=float, default=None,
                   help="ε1 goes linearly from ε1 to this by the last step (default: constant ε1)")
    p.add_argument("--step-form", choices=["eq5", "release"], default=None)
    _add_condition_options(p)
    p.add_argument("--snapshot-every", type=int, default=10)
    p.add_argument("--out", default="out")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--bundle", default="default",
                   help="default (shipped models), paper (the release's networks, see --weights) or tiny (random)")
    p.add_argument("--weights", default=None, help="folder of converted paper weights (--bundle paper)")
    p.add_argument("--classifier", default="lite0", help="condition network C: lite0, lite1, lite2 or a torchvision name")
    _add_condition_size(p)


def _load(args):
    from ..nets.registry import load_bundle, make_classifier, tiny_bundle

    device = args.device or _default_device()
    if args.bundle == "tiny":
        bundle = tiny_bundle().to(device)
    elif args.bundle == "paper":
        from ..nets.caffe import load_paper_bundle

        if not args.weights:
            raise ValueError("--bundle paper needs --weights DIR with generator.safetensors and caffenet.safetensors")
        bundle = load_paper_bundle(args.weights, device)
    else:
        bundle = load_bundle(args.bundle, device)
        if args.classifier != "lite0":
            bundle.classifier = make_classifier(args.classifier).to(device)
    set_condition_size(bundle, getattr(args, "condition_size", None))
    return bundle, device


def _write_outputs(out_dir, snaps, record, nrow) -> None:
    import json
    from pathlib import Path

    import torch

    from ..images import grid, save_gif, save_png, to_uint8

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chains = snaps[-1].image.shape[0]
    # grid: one row per chain, one column per snapshot
    stack = torch.stack([s.image for s in snaps], dim=1).flatten(0, 1)
    save_png(grid(stack, nrow=len(snaps)), out / "grid.png")
    frames = [grid(s.image, nrow=min(chains, 4)) for s in snaps]
    save_gif(frames, out / "chain.gif")
    (out / "result.json").write_text(json.dumps(record, indent=2))
    for i, image in enumerate(to_uint8(snaps[-1].image)):  # each chain's final picture
        save_png(image, out / "final" / f"{i:02d}.png")
