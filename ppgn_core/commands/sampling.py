"""Commands that draw pictures or list what can be drawn: ``sample``, ``inpaint``, ``layers``, ``presets``."""

from __future__ import annotations

from .common import _add_common, _condition_overrides, _load, _write_outputs


def add_parsers(sub) -> dict:
    """This group's sub-commands; returns {name: handler}."""
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
    return {"sample": _run_sample, "inpaint": _run_inpaint, "layers": _run_layers, "presets": _run_presets}


def _run_sample(args) -> int:
    import torch

    from ..images import load_image
    from ..jobs import SampleRequest, run_sample
    from ..presets import default_preset

    from ..presets import get_preset

    preset = args.preset or default_preset(needs_chain=bool(args.start_image))
    steps = args.steps if args.steps is not None else get_preset(preset).steps
    req = SampleRequest(classes=args.classes or [], weights=args.weights, neuron=args.neuron, preset=preset,
                        steps=steps, chains=args.chains, seed=args.seed,
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
    print(f"wrote {args.out}/grid.png, final/, chain.gif, result.json ({record['seconds']:.1f} s)")
    return 0


def _run_inpaint(args) -> int:
    import json
    from pathlib import Path

    import torch

    from ..conditions import InpaintContext
    from ..images import grid, load_image, load_mask, save_png
    from ..inpaint import run_inpaint
    from ..presets import DEFAULT_INPAINT_PRESET, get_preset, inpaint_steps

    bundle, device = _load(args)
    preset = get_preset(args.preset or DEFAULT_INPAINT_PRESET)
    steps = args.steps if args.steps is not None else inpaint_steps(preset)
    x = load_image(args.image, bundle.image_size).to(device)
    mask = load_mask(args.mask, bundle.image_size).to(device)
    InpaintContext(x, mask, args.eps4)  # validates
    result = run_inpaint(bundle, x, mask, classes=args.classes,
                         preset=preset.name, steps=steps,
                         seed=args.seed, eps4=args.eps4, chains=args.chains,
                         eps=tuple(args.eps) if args.eps else None, lr=args.lr, lr_end=args.lr_end,
                         eps1_end=args.eps1_end, **_condition_overrides(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    masked = InpaintContext(x, mask, start_fill="grey").hidden
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
    from ..nets.registry import make_classifier, tiny_bundle

    clf = tiny_bundle().classifier if args.bundle == "tiny" else make_classifier(args.classifier)
    print(f"{clf.name}: layer  units   (name a unit as layer:unit, e.g. blocks.10:37)")
    for name, units in clf.layers():
        print(f"  {name:<12} {units}")
    return 0


def _run_presets(args) -> int:
    from ..presets import PRESETS

    for p in PRESETS.values():
        print(f"{p.name:<24} space={p.space:<8} prior={p.prior:<14} {p.describe().replace('**', '')}")
    return 0
