"""Same seeds, same classes: DGN-AM (Gaussian prior) vs the learned joint prior, judged by Lite2.

python experiments/before_after.py --eps1 1e-5 1e-3 3e-3 --steps 40 --out docs/before_after.png
(--annealed adds a row with the annealed-joint-ppgn-h preset at its own settings)
Prints the judge's hits per setting and writes one picture: a row per setting, 2 chains × 4 classes."""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.evaluate import Judge, class_ids, judge_summary, run_preset_on_classes  # noqa: E402
from ppgn_core.images import grid  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402

CLASSES = ["volcano", "pool table", "church", "golf ball"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eps1", type=float, nargs="+", default=[1e-3])
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--out", default="docs/before_after.png")
    ap.add_argument("--classes", nargs="+", default=CLASSES)
    ap.add_argument("--annealed", action="store_true", help="add a row with the annealed-joint-ppgn-h preset")
    args = ap.parse_args()
    bundle = load_bundle()
    judge = Judge()
    classes = class_ids(args.classes)
    lr = {} if args.lr is None else {"lr": args.lr, "lr_end": args.lr}
    settings = [("DGN-AM (Gaussian prior)", "dgn-am", dict(lr))]
    settings += [(f"Noiseless Joint PPGN-h, eps1={e:g}", "noiseless-joint-ppgn-h", {"eps1": e, **lr})
                 for e in args.eps1]
    if args.annealed:
        settings.append(("Joint, eps1 annealed 3e-4 -> 0 (annealed-joint-ppgn-h)", "annealed-joint-ppgn-h", dict(lr)))
    rows, labels, stats = [], [], {}
    for label, preset, ov in settings:
        run = run_preset_on_classes(bundle, preset, classes, args.chains, args.steps, 0, args.steps, "cpu", ov)
        s = judge_summary(judge, run)
        stats[label] = {k: s[k] for k in ("judge_top1", "judge_top5", "c_p_class_mean", "c_pass_097")}
        print(label, json.dumps(stats[label]), flush=True)
        rows.append(grid(run.images, nrow=len(run.images), pad=2))
        labels.append(f"{label}: judge top-1 {s['judge_top1']:.0%}, top-5 {s['judge_top5']:.0%}")
    h = rows[0].shape[0]
    canvas = Image.new("RGB", (rows[0].shape[1], (h + 18) * len(rows) + 18), "white")
    d = ImageDraw.Draw(canvas)
    d.text((4, 2), "columns: " + ", ".join(f"{c} x{args.chains}" for c in args.classes) + f"; {args.steps} steps, C = Lite0",
           fill="black")
    for i, (r, lab) in enumerate(zip(rows, labels)):
        y = 18 + i * (h + 18)
        d.text((4, y + 2), lab, fill="black")
        canvas.paste(Image.fromarray(r), (0, y + 16))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    Path(args.out).with_suffix(".json").write_text(json.dumps(stats, indent=2))


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    np.set_printoptions(precision=3)
    main()
