"""Command-line interface: ``python -m ppgn_core {sample,inpaint,layers,train,…}``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields


def _add_train(sub) -> None:
    from .train import TrainConfig

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


def _run_train(args) -> int:
    from .train import TrainConfig, run

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "kind"},
                      kind=args.kind)
    last = run(cfg)
    print("last:", last)
    return 0


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
    from .presets import DEFAULT_CHAIN_PRESET, DEFAULT_PRESET

    p.add_argument("--preset", default=None,
                   help=f"default: {DEFAULT_PRESET}; {DEFAULT_CHAIN_PRESET} (a MALA-approx chain) when inpainting or "
                        "starting from an image")
    p.add_argument("--steps", type=int, default=100)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ppgn_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sample", help="sample images conditioned on classes and/or a hidden unit")
    p.add_argument("--class", dest="classes", action="append", default=None,
                   help="class name or index; repeat for several (product of experts)")
    p.add_argument("--weight", dest="weights", type=float, action="append", default=None)
    p.add_argument("--neuron", default=None, help="hidden unit 'layer:unit' (see `layers`)")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--start-image", default=None, help="start from the code E(x) of this image")
    _add_common(p)
    p = sub.add_parser("inpaint", help="fill the masked region of an image (Sec. 4.2, S10)")
    p.add_argument("--image", required=True)
    p.add_argument("--mask", required=True, help="white (or opaque) = fill, black = keep")
    p.add_argument("--class", dest="classes", action="append", default=None,
                   help="default: the classifier's top class for the image")
    p.add_argument("--eps4", type=float, default=1.0, help="weight of the pixel context term (0: plain PPGN)")
    p.add_argument("--chains", type=int, default=1)
    _add_common(p)
    p = sub.add_parser("layers", help="list the condition network's layers and unit counts")
    p.add_argument("--classifier", default="lite0")
    p.add_argument("--bundle", default="default")
    p = sub.add_parser("presets", help="list the presets and their ε")
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
    p.add_argument("--recon-per-class", type=int, default=2, choices=[0, 1, 2],
                   help="val photos per class for the reconstructions G(E(x)) (1,000-class set; 0: none)")
    p.add_argument("--inpaint", type=int, default=0, help="also evaluate inpainting on this many val photos")
    p.add_argument("--out", default="reports")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--bundle", default="default")
    p.add_argument("--classifier", default="lite0")
    p.add_argument("--weights", default=None)
    _add_condition_size(p)
    p = sub.add_parser("export", help="write trained runs to assets/ (fp16 safetensors + model card)")
    p.add_argument("--generator", required=True)
    p.add_argument("--hdae", default=None)
    p.add_argument("--xdae", default=None)
    p.add_argument("--val-images", type=int, default=2000,
                   help="val photos (1,000-class set, 2 per class) for the card's metrics (0: none)")
    p.add_argument("--note", default=None, help="a note on how the generator was trained, kept in the card")
    p.add_argument("--ablation", default=None, help="JSON of the loss ablation (scripts/ablation.py) for the card")
    p.add_argument("--extends-shipped-run", action="store_true",
                   help="the generator run resumed the shipped G's own checkpoint: keep the card's lineage")
    p.add_argument("--data", default=None,
                   help="the training photos on this machine, when the run was trained elsewhere (e.g. a lent GPU)")
    p.add_argument("--cache", default=None, help="cache folder for their codes (with --data)")
    p.add_argument("--assets", default=None,
                   help="write to this folder instead of the shipped assets/ (a design-search variant)")
    p.add_argument("--score-hdae", default=None, help="run folder of a noise-conditional R_h (guided-ppgn-h)")
    p = sub.add_parser("add-dae", help="put newly trained DAEs into an exported bundle, leaving G as it is")
    p.add_argument("--hdae", default=None)
    p.add_argument("--score-hdae", default=None, help="run folder of a noise-conditional R_h (train hdae --dae-arch score)")
    p.add_argument("--xdae", default=None)
    p.add_argument("--assets", default=None, help="the bundle's folder (default: the shipped assets/)")
    p = sub.add_parser("bench", help="ms per sampling step per preset, and the networks' floor")
    p.add_argument("--quick", action="store_true", help="two presets, 1 chain, few repeats")
    p.add_argument("--app", action="store_true",
                   help="time the app instead: launch to serving, first streamed image, ms/step for 1/4/8 chains")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--bundle", default="default")
    p.add_argument("--classifier", default="lite0")
    p.add_argument("--weights", default=None)
    _add_condition_size(p)
    p.add_argument("--out", default="reports/bench.json")
    p = sub.add_parser("convert-caffe", help="convert a Caffe .caffemodel (the paper's release) to safetensors")
    p.add_argument("--caffemodel", required=True)
    p.add_argument("--prototxt", default=None)
    p.add_argument("--out", required=True)
    _add_train(sub)
    return parser


def _load(args):
    from .nets.registry import load_bundle, make_classifier, tiny_bundle

    device = args.device or _default_device()
    if args.bundle == "tiny":
        bundle = tiny_bundle().to(device)
    elif args.bundle == "paper":
        from .nets.caffe import load_paper_bundle

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

    from .images import grid, save_gif, save_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chains = snaps[-1].image.shape[0]
    # grid: one row per chain, one column per snapshot
    stack = torch.stack([s.image for s in snaps], dim=1).flatten(0, 1)
    save_png(grid(stack, nrow=len(snaps)), out / "grid.png")
    frames = [grid(s.image, nrow=min(chains, 4)) for s in snaps]
    save_gif(frames, out / "chain.gif")
    (out / "result.json").write_text(json.dumps(record, indent=2))


def _run_sample(args) -> int:
    import torch

    from .images import load_image
    from .jobs import SampleRequest, run_sample

    from .presets import default_preset

    preset = args.preset or default_preset(needs_chain=bool(args.start_image))
    req = SampleRequest(classes=args.classes or [], weights=args.weights, neuron=args.neuron, preset=preset,
                        steps=args.steps, chains=args.chains, seed=args.seed,
                        eps=tuple(args.eps) if args.eps else None, lr=args.lr, lr_end=args.lr_end,
                        eps1_end=args.eps1_end, step_form=args.step_form, snapshot_every=args.snapshot_every,
                        robust_k=args.robust_k, robust_blur=args.robust_blur, realism=args.realism,
                        p_target=args.p_target, at_target=args.at_target).validate()
    bundle, device = _load(args)
    start = load_image(args.start_image, bundle.image_size).to(device) if args.start_image else None
    with torch.inference_mode(False):
        snaps, record = run_sample(bundle, req, start, device, progress=True)
    _write_outputs(args.out, snaps, record, len(snaps))
    for c in record["chains"]:
        vals = ", ".join(f"{k}={v:.4g}" for k, v in c.items() if k != "chain")
        print(f"chain {c['chain']}: {vals}")
    print(f"wrote {args.out}/grid.png, chain.gif, result.json ({record['seconds']:.1f} s)")
    return 0


def _run_inpaint(args) -> int:
    import json
    from pathlib import Path

    import torch

    from .conditions import InpaintContext
    from .images import grid, load_image, load_mask, save_png
    from .inpaint import run_inpaint
    from .presets import default_preset

    bundle, device = _load(args)
    x = load_image(args.image, bundle.image_size).to(device)
    mask = load_mask(args.mask, bundle.image_size).to(device)
    InpaintContext(x, mask, args.eps4)  # validates
    result = run_inpaint(bundle, x, mask, classes=args.classes,
                         preset=args.preset or default_preset(needs_chain=True), steps=args.steps,
                         seed=args.seed, eps4=args.eps4, chains=args.chains,
                         eps=tuple(args.eps) if args.eps else None, lr=args.lr, lr_end=args.lr_end,
                         eps1_end=args.eps1_end, **_condition_overrides(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    masked = x * (1 - mask) + mask * 0.5
    row = torch.cat([x.cpu(), masked.cpu(), result["images"]])
    save_png(grid(row, nrow=row.shape[0]), out / "result.png")
    rec = {k: v for k, v in result.items() if k not in ("images", "snapshots")}
    (out / "result.json").write_text(json.dumps(rec, indent=2))
    print(f"class {rec['class_name']!r}: p_class {rec['p_class_start']} → {rec['p_class']}; "
          f"unmasked pixels changed: {rec['unmasked_max_abs_diff']}")
    print(f"wrote {out}/result.png, result.json")
    return 0


def _run_layers(args) -> int:
    args.device = "cpu"
    from .nets.registry import make_classifier, tiny_bundle

    clf = tiny_bundle().classifier if args.bundle == "tiny" else make_classifier(args.classifier)
    print(f"{clf.name}: layer  units   (name a unit as layer:unit, e.g. blocks.10:37)")
    for name, units in clf.layers():
        print(f"  {name:<12} {units}")
    return 0


def _run_evaluate(args) -> int:
    from pathlib import Path

    from .evaluate import EXTRA_CLASSES, IMAGENETTE_CLASSES, class_ids, default_classes, evaluate
    from .presets import LEARNED_H_PRIORS, get_preset

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
        overrides[p] = o
    inpaint, inpaint_steps = (1, 2) if args.quick else (args.inpaint, steps)
    evaluate(bundle, Path(args.out), presets, classes, chains, steps, args.seed, device, real_classes=real_classes,
             recon_limit=recon_limit, recon_per_class=args.recon_per_class, overrides=overrides, mixing_chains=args.mixing_chains, batch=args.batch,
             inpaint=inpaint, inpaint_steps=inpaint_steps)
    print((Path(args.out) / "evaluation.md").read_text())
    return 0


def _run_export(args) -> int:
    from pathlib import Path

    from .data import to_float, val_photos
    from .evaluate import RECON_RANKS, Judge, reconstruction_metrics
    from .export import export, write_metrics
    from .judge import real_reference
    from .nets.registry import ASSETS, load_bundle

    assets = Path(args.assets) if args.assets else ASSETS
    card = export(args.generator, args.hdae, args.xdae, assets=assets, note=args.note,
                  extends_shipped_run=args.extends_shipped_run, data=args.data, cache=args.cache,
                  score_hdae_run=args.score_hdae)
    if args.val_images:
        per_class = 1 if args.val_images <= 1000 else 2  # a subset over all classes, not the first classes
        images, labels = val_photos(range(RECON_RANKS.start, RECON_RANKS.start + per_class))
        images, labels = images[:args.val_images], labels[:args.val_images]
        judge = Judge()
        metrics = {"val_set": f"imagenet-1k-128/val, photo(s) {RECON_RANKS.start + 1}–{RECON_RANKS.start + per_class} "
                              f"of every class ({len(labels)} photos, {len(labels.unique())} classes)",
                   "reconstruction": reconstruction_metrics(load_bundle("default", assets=assets), to_float(images),
                                                            judge=judge,
                                                            labels=labels, reference=real_reference(judge))}
        if args.ablation:
            import json

            metrics["ablation"] = json.loads(Path(args.ablation).read_text())
        card = write_metrics(metrics, assets=assets)
        print(metrics)
    print(f"wrote {assets}/: {', '.join(f['file'] for f in card['files'].values())}")
    return 0


def _run_bench(args) -> int:
    import json
    from pathlib import Path

    from .bench import bench_app, run_bench

    if args.app:
        print(json.dumps(bench_app(args.bundle, repeats=2 if args.quick else 3, out=Path(args.out)), indent=2))
        return 0
    bundle, device = _load(args)
    if args.quick:
        from .presets import DEFAULT_PRESET

        res = run_bench(bundle, device, ["dgn-am", DEFAULT_PRESET], (1,), steps=2, repeats=2,
                        out=Path(args.out))
    else:
        res = run_bench(bundle, device, out=Path(args.out))
    print(json.dumps(res, indent=2))
    return 0


def _run_convert(args) -> int:
    from .nets.caffe import convert

    shapes = convert(args.caffemodel, args.out, args.prototxt)
    for k, v in shapes.items():
        print(f"  {k:<24} {v}")
    print(f"wrote {args.out} ({len(shapes)} tensors)")
    return 0


def _run_presets(args) -> int:
    from .presets import PRESETS

    for p in PRESETS.values():
        print(f"{p.name:<24} space={p.space:<8} prior={p.prior:<14} {p.describe().replace('**', '')}")
    return 0


def _run_add_dae(args) -> int:
    from pathlib import Path

    from .export import add_daes
    from .nets.registry import ASSETS

    if not (args.hdae or args.score_hdae or args.xdae):
        raise ValueError("name at least one run: --hdae, --score-hdae or --xdae")
    assets = Path(args.assets) if args.assets else ASSETS
    card = add_daes(assets, args.hdae, args.xdae, args.score_hdae)
    print(f"wrote {assets}/: {', '.join(f['file'] for f in card['files'].values())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        handler = {"train": _run_train, "sample": _run_sample, "inpaint": _run_inpaint,
                   "layers": _run_layers, "presets": _run_presets,
                   "convert-caffe": _run_convert, "bench": _run_bench, "evaluate": _run_evaluate, "export": _run_export,
                   "add-dae": _run_add_dae}[args.command]
        return handler(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2
