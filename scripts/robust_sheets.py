"""Sample sheets a person can judge: for classes outside Imagenette, a preset without and with the
robust condition, same seeds, side by side, every image at 128 px, each captioned with the
judge's verdict plain and after 2× down-and-up sampling (HIT = the judge's top-1 is the class).

python scripts/robust_sheets.py --robust-k 2 --out reports/sheets/robust_vs_plain.png
python scripts/robust_sheets.py --classes 20 --variants robust --out reports/sheets/default_20_classes.png
python scripts/robust_sheets.py --classes 20 --columns guided-ppgn-h:2 ldm-ppgn-h:1 --out reports/sheets/ldm_vs_guided.png
"""

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.conditions import imagenet_categories  # noqa: E402
from ppgn_core.evaluate import (EXTRA_CLASSES, IMAGENETTE_CLASSES, Judge, class_ids, default_classes,  # noqa: E402
                                run_preset_on_classes)
from ppgn_core.images import to_uint8  # noqa: E402
from ppgn_core.judge import down_up, topk_hits  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.presets import DEFAULT_PRESET, get_preset  # noqa: E402

CAPTION = 28


def outside_imagenette(n: int) -> list[int]:
    """The paper's 10 extra classes, then the evaluation's drawn classes, none of Imagenette's."""
    extra = class_ids(EXTRA_CLASSES)
    drawn = [c for c in default_classes() if c not in IMAGENETTE_CLASSES and c not in extra]
    return (extra + drawn)[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default=DEFAULT_PRESET)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="default: each preset's own step count")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--robust-k", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=["plain", "robust"], choices=["plain", "robust"])
    ap.add_argument("--columns", nargs="+", default=None, metavar="PRESET:K",
                    help="compare presets instead: one column group per PRESET with robust condition K")
    ap.add_argument("--out", default="reports/sheets/robust_vs_plain.png")
    args = ap.parse_args()
    bundle, judge, names = load_bundle(), Judge(), imagenet_categories()
    classes = outside_imagenette(args.classes)
    if args.columns:
        specs = [(c.rsplit(":", 1)[0], int(c.rsplit(":", 1)[1]), c) for c in args.columns]
    else:
        specs = [(args.preset, args.robust_k if v == "robust" else 0, v) for v in args.variants]
    columns, record = [], {"preset": args.preset if not args.columns else args.columns, "steps": args.steps,
                           "seed": args.seed, "classes": [names[c] for c in classes], "variants": {}}
    for preset, k, name in specs:
        steps = args.steps or get_preset(preset).steps
        run = run_preset_on_classes(bundle, preset, classes, args.chains, steps, args.seed, steps,
                                    overrides={"robust_k": k}, batch=8)
        plain = topk_hits(judge.logits(run.images), run.targets)["top1"]
        robust = topk_hits(judge.logits(down_up(run.images, 2)), run.targets)["top1"]
        if args.columns:
            title = f"{preset} (K = {k}, {steps} steps)"
        else:
            title = f"{name} (K = {k})" if k else "plain condition"
        columns.append((title, run.images, plain, robust))
        record["variants"][name] = {"preset": preset, "robust_k": k, "steps": steps, "seconds": round(run.seconds, 1),
                                    "judge_top1": float(plain.float().mean()),
                                    "robust_top1": float(robust.float().mean())}
        print(name, record["variants"][name], flush=True)
    size = columns[0][1].shape[-1]
    cell_w, cell_h = size + 4, size + CAPTION
    width = 150 + len(columns) * args.chains * cell_w + 12 * (len(columns) - 1)
    sheet = Image.new("RGB", (width, 24 + len(classes) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for j, (title, images, plain, robust) in enumerate(columns):
        x0 = 150 + j * (args.chains * cell_w + 12)
        draw.text((x0, 4), title, fill="black")
        arr = to_uint8(images)
        for i in range(len(images)):
            r, c = divmod(i, args.chains)
            x, y = x0 + c * cell_w, 24 + r * cell_h
            sheet.paste(Image.fromarray(arr[i]), (x, y))
            draw.text((x, y + size + 2), f"plain {'HIT' if plain[i] else '-'} / down2 {'HIT' if robust[i] else '-'}",
                      fill="black")
    for r, c in enumerate(classes):
        draw.text((4, 24 + r * cell_h + size // 2), names[c][:22], fill="black")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
