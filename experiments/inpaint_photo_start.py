"""Inpainting with the latent diffusion prior started from the photo's own code (SDEdit: the code of the
photo with the square greyed out, or filled by OpenCV's Telea method, noised to a level σ) against the same
prior from noise and the MALA-approx chain ppgn-h (from the same start code); PSNR/SSIM of the filled 48-px
square on Imagenette val photos, seeded.

    OMP_NUM_THREADS=1 python experiments/inpaint_photo_start.py --photos 12 --seed 1 --sigmas 0.5 1 2 4 \\
        --out reports/prior/inpaint_photo_start_seed1.json
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.conditions import START_FILLS  # noqa: E402
from ppgn_core.evaluation.inpainting import inpainting_eval  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.presets import PHOTO_CHAIN_PRESET, get_preset, inpaint_steps  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1, help="which val photos and squares (and the samplers' seed)")
    ap.add_argument("--sigmas", type=float, nargs="*", default=[0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--preset", default="ldm-ppgn-h")
    ap.add_argument("--no-chain", action="store_true", help="leave out the MALA-approx chain")
    ap.add_argument("--no-noise-start", action="store_true", help="leave out the prior from noise")
    ap.add_argument("--start-fill", choices=START_FILLS, default="grey",
                    help="what stands for the square in the photo a run starts from")
    ap.add_argument("--eps4", type=float, default=1.0, help="the context term's weight (PPGN-context)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bundle = load_bundle("default")
    rows: dict = {}
    runs = [] if args.no_chain else [(PHOTO_CHAIN_PRESET, None)]
    runs += ([] if args.no_noise_start else [(args.preset, None)]) + [(args.preset, s) for s in args.sigmas]
    for preset, sigma in runs:
        p = get_preset(preset)
        if p.is_chain:
            label = f"{preset}, start fill {args.start_fill}"
        else:  # photo_sigma None: the diffusion prior from noise, which reads no start
            p = replace(p, photo_sigma=sigma)
            label = (f"{preset} from noise" if sigma is None
                     else f"{preset} photo_sigma={sigma:g}, start fill {args.start_fill}")
        t0 = time.perf_counter()
        rows[label] = inpainting_eval(bundle, args.photos, inpaint_steps(p), seed=args.seed, preset=p,
                                      eps4=args.eps4, start_fill=args.start_fill)
        rows[label]["seconds"] = round(time.perf_counter() - t0, 1)
        r = rows[label]
        print(f"{label}: PPGN {r['ppgn']['psnr_db']:.2f} dB / {r['ppgn']['ssim']:.3f}, PPGN-context "
              f"{r['ppgn_context']['psnr_db']:.2f} dB / {r['ppgn_context']['ssim']:.3f}, Telea "
              f"{r['telea']['psnr_db']:.2f} dB ({r['seconds']} s)", flush=True)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"photos": args.photos, "seed": args.seed, "threads": 1, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
