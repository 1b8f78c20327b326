"""Commands for the app's chain tabs at scale: ``tsne`` (the t-SNE grid tab) and ``neurons`` (the Neurons tab)."""

from __future__ import annotations

from .common import _add_common, _load


def add_parsers(sub) -> dict:
    """This group's sub-commands; returns {name: handler}."""
    from ..presets import ROUND_LEVELS
    from ..studio.tsne import TSNE_STEPS

    p = sub.add_parser("tsne", help="chains of one class, their kept samples laid out by t-SNE on a grid")
    p.add_argument("--class", dest="cls", required=True, help="class name or index")
    p.add_argument("--chains", type=int, default=6)
    p.add_argument("--every", type=int, default=ROUND_LEVELS,
                   help="keep a sample every K steps (a denoising chain: the levels between its samples)")
    p.add_argument("--threshold", type=float, default=0.97, help="keep samples with p(class) under C ≥ this")
    _add_common(p)
    p.set_defaults(steps_default=TSNE_STEPS)
    p = sub.add_parser("neurons", help="the facets of a hidden unit: samples steered by it, grouped by k-means")
    p.add_argument("--neuron", required=True, help="hidden unit 'layer:unit' (see `layers`)")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--samples", type=int, default=3, help="samples a chain")
    p.add_argument("--every", type=int, default=ROUND_LEVELS,
                   help="steps between a chain's samples (a denoising chain: levels; mfv: steps per restart)")
    p.add_argument("--facets", type=int, default=3, help="k-means clusters")
    _add_common(p)
    return {"tsne": _run_tsne, "neurons": _run_neurons}


def _studio(args):
    from pathlib import Path

    from ..studio import Studio

    bundle, device = _load(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return Studio(bundle, device, workdir=str(out / ".runs")), out


def _run_tsne(args) -> int:
    import json
    import shutil

    from ..images import save_png, to_uint8
    from ..presets import DEFAULT_CHAIN_PRESET

    studio, out = _studio(args)
    steps = args.steps if args.steps is not None else args.steps_default
    last = None
    for last in studio.tsne.grid(args.cls, args.chains, steps, args.every, args.threshold,
                                 preset=args.preset or DEFAULT_CHAIN_PRESET, seed=args.seed,
                                 eps=tuple(args.eps) if args.eps else None, out_dir=out):
        if not last.final:
            print(f"\r{last.status}", end="", flush=True)
    print()
    rows, images = last.extra["samples"], last.extra["images"]
    for n, (image, row) in enumerate(images):
        rows[row]["file"] = f"samples/{n:03d}.png"
        save_png(to_uint8(image[None])[0], out / rows[row]["file"])
    record = {"class": studio.parse_class(args.cls), "preset": args.preset or DEFAULT_CHAIN_PRESET,
              "chains": args.chains, "steps": steps, "every": args.every, "threshold": args.threshold,
              "seed": args.seed, "eps": args.eps, "status": last.status, "samples": rows}
    (out / "tsne.json").write_text(json.dumps(record, indent=1))
    shutil.rmtree(out / ".runs", ignore_errors=True)
    print(f"{last.status}\nwrote {out}/tsne_grid.png, tsne.json, samples/ ({len(images)} images)")
    return 0 if last.extra.get("grid") is not None else 1


def _run_neurons(args) -> int:
    import shutil

    from ..studio.neurons import NEURON_PRESET

    studio, out = _studio(args)
    if ":" not in args.neuron:
        raise ValueError(f"--neuron must be 'layer:unit', e.g. blocks.11:7, got {args.neuron!r}")
    layer, unit = args.neuron.rsplit(":", 1)
    control = None
    if args.eps:
        from ..presets import get_preset
        from ..sampler import Control

        control = Control(get_preset(args.preset or NEURON_PRESET).settings(
            eps1=args.eps[0], eps2=args.eps[1], eps3=args.eps[2]))
    last = None
    for last in studio.neurons.facets(layer, int(unit), args.chains, args.samples, args.every, args.facets,
                                      args.seed, control=control, preset=args.preset or NEURON_PRESET, out_dir=out):
        if not last.final:
            print(f"\r{last.status}", end="", flush=True)
    print()
    shutil.rmtree(out / ".runs", ignore_errors=True)
    if last is None or not last.final:
        raise ValueError("no sample was drawn")
    print(f"{last.status}\nwrote {out}/facets.png, facets.json, samples/")
    return 0
