"""``train``: the generator G (+ D), R_h or R_x (the latent diffusion prior: ``train-prior``)."""

from __future__ import annotations

from dataclasses import fields


def add_parsers(sub) -> dict:
    from ..train import TrainConfig

    p = sub.add_parser("train", help="train the generator G (+D), the code DAE or the image DAE")
    p.add_argument("kind", choices=["generator", "hdae", "xdae"])
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name == "kind":
            continue
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", default=default)
        elif isinstance(default, list):
            p.add_argument(flag, type=int, nargs="+", default=default)
        elif f.name in ("limit", "threads", "images_before"):
            p.add_argument(flag, type=int, default=default)
        elif f.name == "max_minutes":
            p.add_argument(flag, type=float, default=default)
        elif f.name in ("cache", "init_generator", "init_dae", "resume"):
            p.add_argument(flag, type=str, default=default)
        else:
            p.add_argument(flag, type=type(default), default=default)
    return {"train": _run_train}


def _run_train(args) -> int:
    from ..train import TrainConfig, run

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "kind"},
                      kind=args.kind)
    last = run(cfg)
    print("last:", last)
    return 0
