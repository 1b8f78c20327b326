"""A sheet of inpainting on val photos, one row per photo: the photo, the input (the square to fill in grey),
OpenCV's Telea fill, ppgn-h (100 steps) and ldm-ppgn-h (30 levels from the photo's code noised to σ 4), both
PPGN-context (ε4 = 1) from the photo with the square filled by Telea's method; the same photos and squares as
``inpainting_eval`` with the same seed.

    OMP_NUM_THREADS=1 python experiments/inpaint_sheet.py --photos 8 --seed 0 --out reports/prior/inpaint_sheet.png
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.conditions import InpaintContext, telea_fill  # noqa: E402
from ppgn_core.evaluation.inpainting import masked_val_photos  # noqa: E402
from ppgn_core.images import grid, save_png  # noqa: E402
from ppgn_core.inpaint import run_inpaint  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--out", default="reports/prior/inpaint_sheet.png")
    args = ap.parse_args()
    torch.set_num_threads(1)
    bundle = load_bundle("default")
    rows = []
    for i, (x, mask, _, label) in enumerate(masked_val_photos(args.photos, args.patch, args.seed)):
        fills = [run_inpaint(bundle, x, mask, classes=[label], preset=p, seed=args.seed, eps4=1.0)["images"]
                 for p in ("ppgn-h", "ldm-ppgn-h")]
        rows += [x, InpaintContext(x, mask, start_fill="grey").hidden, telea_fill(x, mask), *fills]
        print(f"photo {i + 1}/{args.photos}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_png(grid(torch.cat(rows), nrow=5), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
