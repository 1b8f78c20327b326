"""Commands that measure: ``evaluate`` (the judge's report per preset) and ``bench`` (speed)."""

from __future__ import annotations

from .common import (
    _add_condition_options,
    _add_condition_size,
    _condition_overrides,
    _load,
)


def add_parsers(sub) -> dict:
    """This group's sub-commands; returns {name: handler}."""
    p = sub.add_parser("evaluate", help="judge accuracy (Lite2), diversity and reconstructions per preset")
    p.add_argument("--quick", action="store_true", help="2 classes, 2 chains, 5 steps, 2 presets (smoke test)")
    p.add_argument("--presets", nargs="+", default=["guided-ppgn-h", "noiseless-joint-ppgn-h", "joint-ppgn-h", "ppgn-h",
                                                     "dgn-am", "ppgn-x", "hand-designed", "no-prior"])
    p.add_argument("--classes", nargs="+", default=None,
                   help="class names or indices; default: the 10 Imagenette classes + 100 drawn once (seed 2017)")
    p.add_argument("--class-set", choices=["default", "paper20"], default="default",
                   help="paper20: the 10 Imagenette classes + volcano, pool table, cardoon, … (issue 3's comparison)")
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--steps", type=int, default=60,
                   help="steps per chain (the h presets' small default step needs 60+; the paper ran 200)")
    p.add_argument("--mixing-chains", type=int, default=48, help="chains per preset measured for mixing")
    p.add_argument("--batch", type=int, default=8,
                   help="chains run at once (8 is fastest per chain on a 2-core CPU; batch k is seeded seed·1000+k)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=None, help="override the presets' step size (a constant step)")
    p.add_argument("--eps1", type=float, default=None, help="override ε1 of the learned h-space priors (joint, joint-noisy, R_h)")
    p.add_argument("--eps1-end", type=float, default=None,
                   help="the learned h priors' ε1 goes linearly to this by the last step (default: constant)")
    _add_condition_options(p)
    p.add_argument("--churn", type=float, default=None,
                   help="guided denoising presets: fresh noise raising σ by this fraction before each level but the "
                        "last (0 = the deterministic ODE; default: the preset's)")
    p.add_argument("--recon-per-class", type=int, default=2, choices=[0, 1, 2],
                   help="val photos per class for the reconstructions G(E(x)) (1,000-class set; 0: none)")
    p.add_argument("--inpaint", type=int, default=0, help="also evaluate inpainting on this many val photos")
    p.add_argument("--out", default="reports")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--bundle", default="default")
    p.add_argument("--classifier", default="lite0")
    p.add_argument("--weights", default=None)
    _add_condition_size(p)
    p = sub.add_parser("bench", help="ms per sampling step per preset, and the networks' floor")
    p.add_argument("--quick", action="store_true", help="two presets, 1 chain, few repeats")
    p.add_argument("--presets", nargs="+", default=None, help="only these presets (default: all)")
    p.add_argument("--app", action="store_true",
                   help="time the app instead: launch to serving, first streamed image, ms/step for 1/4/8 chains")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--bundle", default="default")
    p.add_argument("--classifier", default="lite0")
    p.add_argument("--weights", default=None)
    _add_condition_size(p)
    p.add_argument("--out", default="reports/bench.json")
    return {"evaluate": _run_evaluate, "bench": _run_bench}


def _run_evaluate(args) -> int:
    from pathlib import Path

    from ..evaluate import (
        EXTRA_CLASSES,
        IMAGENETTE_CLASSES,
        class_ids,
        default_classes,
        evaluate,
    )
    from ..presets import LEARNED_H_PRIORS, get_preset

    bundle, device = _load(args)
    if args.classes:
        classes = class_ids(args.classes)
    elif args.class_set == "paper20":
        classes = IMAGENETTE_CLASSES + class_ids(EXTRA_CLASSES)
    else:
        classes = default_classes()
    chains, steps, presets, real_classes, recon_limit = args.chains, args.steps, args.presets, None, None
    if args.quick:  # real photos of the first 12 classes only, 20 reconstructions
        quick = [p for p in presets if p in ("noiseless-joint-ppgn-h", "dgn-am")] or presets[:2]
        classes, chains, steps, presets, real_classes, recon_limit = classes[:2], 2, 5, quick, 12, 20
    overrides = {}
    for p in presets:
        o = {}
        if args.lr is not None:
            o.update(lr=args.lr, lr_end=args.lr)
        if get_preset(p).prior in LEARNED_H_PRIORS:
            o.update({k: v for k, v in (("eps1", args.eps1), ("eps1_end", args.eps1_end)) if v is not None})
        o.update(_condition_overrides(args))
        if args.churn is not None and get_preset(p).sampler == "guided":
            o.update(churn=args.churn)
        overrides[p] = o
    inpaint, inpaint_steps = (1, 2) if args.quick else (args.inpaint, steps)
    evaluate(bundle, Path(args.out), presets, classes, chains, steps, args.seed, device, real_classes=real_classes,
             recon_limit=recon_limit, recon_per_class=args.recon_per_class, overrides=overrides, mixing_chains=args.mixing_chains, batch=args.batch,
             inpaint=inpaint, inpaint_steps=inpaint_steps)
    print((Path(args.out) / "evaluation.md").read_text())
    return 0


def _run_bench(args) -> int:
    import json
    from pathlib import Path

    from ..bench import bench_app, run_bench

    if args.app:
        print(json.dumps(bench_app(args.bundle, repeats=2 if args.quick else 3, out=Path(args.out)), indent=2))
        return 0
    bundle, device = _load(args)
    if args.quick:
        from ..presets import DEFAULT_PRESET

        res = run_bench(bundle, device, ["dgn-am", DEFAULT_PRESET], (1,), steps=2, repeats=2,
                        out=Path(args.out))
    else:
        res = run_bench(bundle, device, args.presets, out=Path(args.out))
    print(json.dumps(res, indent=2))
    return 0
