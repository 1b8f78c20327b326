"""Commands that put weights into ``assets/``: ``export``, ``add-dae``, ``convert-caffe``."""

from __future__ import annotations


def add_parsers(sub) -> dict:
    """This group's sub-commands; returns {name: handler}."""
    p = sub.add_parser("export", help="write trained runs to assets/ (fp16 safetensors + model card)")
    p.add_argument("--generator", required=True)
    p.add_argument("--hdae", default=None)
    p.add_argument("--xdae", default=None)
    p.add_argument("--val-images", type=int, default=2000,
                   help="val photos (1,000-class set, 2 per class) for the card's metrics (0: none)")
    p.add_argument("--note", default=None, help="a note on how the generator was trained, kept in the card")
    p.add_argument("--ablation", default=None, help="JSON of the loss ablation (experiments/ablation.py) for the card")
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
    p = sub.add_parser("convert-caffe", help="convert a Caffe .caffemodel (the paper's release) to safetensors")
    p.add_argument("--caffemodel", required=True)
    p.add_argument("--prototxt", default=None)
    p.add_argument("--out", required=True)
    return {"export": _run_export, "add-dae": _run_add_dae, "convert-caffe": _run_convert}


def _run_export(args) -> int:
    from pathlib import Path

    from ..data import to_float, val_photos
    from ..evaluate import RECON_RANKS, Judge, reconstruction_metrics
    from ..export import export, write_metrics
    from ..judge import real_reference
    from ..nets.registry import ASSETS, load_bundle

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


def _run_add_dae(args) -> int:
    from pathlib import Path

    from ..export import add_daes
    from ..nets.registry import ASSETS

    if not (args.hdae or args.score_hdae or args.xdae):
        raise ValueError("name at least one run: --hdae, --score-hdae or --xdae")
    assets = Path(args.assets) if args.assets else ASSETS
    card = add_daes(assets, args.hdae, args.xdae, args.score_hdae)
    print(f"wrote {assets}/: {', '.join(f['file'] for f in card['files'].values())}")
    return 0


def _run_convert(args) -> int:
    from ..nets.caffe import convert

    shapes = convert(args.caffemodel, args.out, args.prototxt)
    for k, v in shapes.items():
        print(f"  {k:<24} {v}")
    print(f"wrote {args.out} ({len(shapes)} tensors)")
    return 0
