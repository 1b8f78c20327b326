"""t-SNE grids (paper Figs. S11–S12) of a few classes from the default's chains beside ``ppgn-h``'s MALA-approx
chains, the same chains, steps and seed: one PNG a class and preset, a side-by-side sheet, and a JSON with
each grid's sample count, near-copies left out and mean p(class).

    python -m experiments.tsne_sheets --classes volcano lighthouse "pool table" --out reports/chains/tsne
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ppgn_core.nets.registry import load_bundle
from ppgn_core.presets import DEFAULT_CHAIN_PRESET
from ppgn_core.studio import Studio
from ppgn_core.studio.tsne import TSNE_STEPS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", nargs="+", default=["volcano", "lighthouse", "pool table"])
    ap.add_argument("--presets", nargs="+", default=[DEFAULT_CHAIN_PRESET, "ppgn-h"])
    ap.add_argument("--chains", type=int, default=6)
    ap.add_argument("--steps", type=int, default=TSNE_STEPS)
    ap.add_argument("--every", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-grids", action="store_true", help="keep each full-size grid beside the sheet")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    studio = Studio(load_bundle("default"), "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"chains": args.chains, "steps": args.steps, "every": args.every, "seed": args.seed, "grids": []}
    rows = []
    for cls in args.classes:
        row = []
        for preset in args.presets:
            for last in studio.tsne.grid(cls, args.chains, args.steps, args.every, preset=preset, seed=args.seed,
                                         out_dir=args.out):
                pass
            name = f"{studio.parse_class(cls)}_{preset}.png"
            (args.out / "tsne_grid.png").rename(args.out / name)
            samples = last.extra["samples"]
            kept = [r for r in samples if r["kept"]]
            report["grids"].append({"class": cls, "preset": preset, "file": name, "status": last.status,
                                    "kept_samples": len(kept), "on_grid": sum(bool(r.get("on_grid")) for r in kept),
                                    "mean_p_class": float(np.mean([r["p_class"] for r in samples]))})
            row.append(np.asarray(Image.open(args.out / name).convert("RGB")))
            print(report["grids"][-1], flush=True)
        rows.append(row)
    side = max(g.shape[0] for r in rows for g in r)
    width = max(g.shape[1] for r in rows for g in r)
    sheet = np.full((side * len(rows), (width + 8) * len(args.presets), 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, g in enumerate(r):
            sheet[i * side:i * side + g.shape[0], j * (width + 8):j * (width + 8) + g.shape[1]] = g
    Image.fromarray(sheet).resize((sheet.shape[1] // 2, sheet.shape[0] // 2)).quantize(256).save(
        args.out / "sheet.png", optimize=True)
    for r in report["grids"]:  # the full-size grids stay out of a committed report (1-2 MB each)
        if not args.keep_grids:
            (args.out / r["file"]).unlink()
    (args.out / "tsne_sheets.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
