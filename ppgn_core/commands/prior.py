"""Command-line commands of the latent diffusion prior: ``train-prior``, ``add-prior`` and ``prior-report``.

    python -m ppgn_core train-prior --resume checkpoints/code_diffusion.safetensors --more-minutes 60
    torchrun --nproc_per_node 8 -m ppgn_core train-prior --device cuda --batch 1024 …   # data-parallel (DDP)
    python -m ppgn_core add-prior checkpoints/code_diffusion.safetensors
    python -m ppgn_core prior-report inpaint --photos 10      # ppgn-h against ldm-ppgn-h on masked val photos
"""

from __future__ import annotations

import json
import os
from dataclasses import fields


def add_parsers(sub) -> dict:
    """The two sub-commands; returns {name: handler}."""
    from ..training.diffusion import DiffusionConfig

    p = sub.add_parser("train-prior", help="train (or continue) the latent diffusion prior over h on cached codes")
    defaults = DiffusionConfig()
    for f in fields(DiffusionConfig):
        default = getattr(defaults, f.name)
        kind = {"max_minutes": float, "more_minutes": float, "threads": int, "limit": int}.get(
            f.name, str if default is None else type(default))
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=default)
    p = sub.add_parser("add-prior", help="ship a trained latent diffusion prior (EMA weights) in assets/")
    p.add_argument("source", help="the run folder or its compact checkpoint (.safetensors)")
    p.add_argument("--assets", default=None)
    p.add_argument("--note", default=None)
    p = sub.add_parser("prior-report", help="a code prior's quality against its noise levels, its own samples, "
                                            "a memorisation check, and inpainting beside the MALA-approx chain (reports/prior/)")
    p.add_argument("part", choices=["levels", "own", "memory", "inpaint"])
    p.add_argument("--preset", default="ldm-ppgn-h", help="levels: the guided preset to sweep")
    p.add_argument("--levels", type=int, nargs="+", default=None)
    p.add_argument("--solver", choices=["euler", "heun", "dpmpp2m"], default=None,
                   help="levels: the solver over the noise levels (default: the preset's)")
    p.add_argument("--classes", type=int, default=32, help="held-out classes (levels, own)")
    p.add_argument("--skip-classes", type=int, default=0,
                   help="levels, own: start after this many held-out classes (a second draw of the same kind)")
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--samples", type=int, default=256, help="memory: samples per setting")
    p.add_argument("--photos", type=int, default=10, help="inpaint: masked val photos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prior", choices=["code_diffusion", "score_dae"], default="code_diffusion")
    p.add_argument("--cache", default="cache", help="memory: folder of the cached training codes")
    p.add_argument("--out", default=None, help="JSON file (default reports/prior/<part>_<preset or prior>.json)")
    p.add_argument("--bundle", default="default")
    return {"train-prior": run_train_prior, "add-prior": run_add_prior, "prior-report": run_prior_report}


def run_train_prior(args) -> int:
    from ..training.diffusion import DiffusionConfig, run_training

    cfg = DiffusionConfig(**{f.name: getattr(args, f.name) for f in fields(DiffusionConfig)})
    result = run_training(cfg)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        print(json.dumps(result))
    return 0


def run_add_prior(args) -> int:
    from pathlib import Path

    from ..export import add_code_diffusion
    from ..nets.registry import ASSETS

    card = add_code_diffusion(args.source, Path(args.assets) if args.assets else ASSETS, args.note)
    print(json.dumps(card["code_diffusion"], indent=2))
    return 0


def run_prior_report(args) -> int:
    from pathlib import Path

    import torch

    from ..nets.registry import load_bundle
    from .. import prior_report as pr

    bundle = load_bundle(args.bundle)
    classes = pr.tuning_classes(args.classes, args.skip_classes)
    if args.part == "levels":
        report = pr.levels_sweep(bundle, args.preset, classes, args.chains, args.seed,
                                 tuple(args.levels or pr.LEVELS), solver=args.solver)
        report["fewest_levels_within_noise"] = pr.fewest_levels_within_noise(report)
        name = f"levels_{args.preset}" + (f"_{args.solver}" if args.solver else "")
    elif args.part == "own":
        report = pr.own_samples(bundle, classes, seed=args.seed, prior=args.prior)
        name = f"own_{args.prior}"
    elif args.part == "inpaint":
        from ..evaluation.inpainting import inpainting_eval
        from ..presets import PHOTO_CHAIN_PRESET, inpaint_steps

        report = {name: inpainting_eval(bundle, args.photos, inpaint_steps(name), seed=args.seed, preset=name)
                  for name in (PHOTO_CHAIN_PRESET, args.preset)}
        name = f"inpaint_{args.preset}"
    else:
        from ..data import to_float, val_photos
        from ..nets.classifiers import LiteEncoder, load_efficientnet_lite
        from ..train import TrainConfig, build_code_cache

        cfg = TrainConfig(kind="hdae", cache=args.cache)
        encoder = LiteEncoder(load_efficientnet_lite(0), cfg.h_block, cfg.h1_block, cfg.size)
        train = build_code_cache(cfg, encoder, torch.device("cpu")).h
        photos, _ = val_photos(range(4, 5))  # the 5th val photo of every class: 1,000 unseen photos
        with torch.no_grad():
            val = torch.cat([encoder(to_float(photos[i:i + 64])) for i in range(0, len(photos), 64)])
        net = bundle.code_diffusion if args.prior == "code_diffusion" else bundle.score_dae
        drawn = torch.arange(0, 1000, max(1, 1000 // args.samples))[: args.samples]  # classes spread over all 1,000
        samples = {"prior, unconditional": pr._prior_codes(bundle, len(drawn), 20, args.seed, None, 0.0, args.prior)}
        if args.prior == "code_diffusion":
            for w in (1.0, 3.0):
                samples[f"prior, class-conditional, CFG {w:g}"] = pr._prior_codes(bundle, len(drawn), 20, args.seed,
                                                                                   drawn, w, args.prior)
        report = pr.memorisation(bundle, train, val, samples, net.standardise)
        name = f"memory_{args.prior}"
    path = pr.save(report, Path(args.out or f"reports/prior/{name}.json"))
    print(json.dumps(report, indent=2)[:4000])
    print(f"written: {path}")
    return 0
