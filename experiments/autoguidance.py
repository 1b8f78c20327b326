"""Autoguidance of the latent diffusion prior (Karras et al. 2024, "Guiding a diffusion model with a bad
version of itself"): D_w = D_bad + w·(D_good − D_bad), w > 1, where the bad model is a weaker version of
the good one (here: an earlier EMA of the same run, or the raw training weights). It asks whether the
prior's own samples become more photo-like (precision in the judge's features) before it is wired into
a preset. Judged on held-out classes' count of unconditional samples (no C).

python experiments/autoguidance.py --good checkpoints/code_diffusion.safetensors --bad assets \
    --scales 1 1.5 2 3 --samples 128 --out reports/prior/autoguidance_own.json
"""

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.priors import sample_codes  # noqa: E402
from ppgn_core.prior_report import _judge_and_reference, _judged, tuning_classes  # noqa: E402
from ppgn_core.training.diffusion import load_compact  # noqa: E402


def load_net(shipped, source: str, part: str = "ema"):
    if source == "assets":
        return shipped.code_diffusion
    net = copy.deepcopy(shipped.code_diffusion)
    net.load_state_dict(load_compact(Path(source))[part])
    return net.eval()


class AutoGuided:
    """D_bad + w·(D_good − D_bad) in the good model's code units: what :func:`sample_codes` needs of a prior."""

    def __init__(self, good, bad, w: float):
        self.good, self.bad, self.w = good, bad, w
        self.code_shape, self.unstandardise = good.code_shape, good.unstandardise

    def denoise_standardised(self, u: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        d = self.good.denoise_standardised(u, sigma)
        if self.w == 1:
            return d
        d_bad = self.bad.denoise_standardised(u, sigma)
        return d_bad + self.w * (d - d_bad)


@torch.no_grad()
def own_codes(good, bad, w: float, n: int, steps: int, seed: int) -> torch.Tensor:
    return sample_codes(AutoGuided(good, bad, w), n, torch.Generator().manual_seed(seed), steps, solver="dpmpp2m")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--good", default="checkpoints/code_diffusion.safetensors")
    ap.add_argument("--good-part", default="ema", choices=["ema", "model"])
    ap.add_argument("--bad", default="assets", help="assets (the shipped prior) or a compact checkpoint")
    ap.add_argument("--bad-part", default="ema", choices=["ema", "model"])
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--levels", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reports/prior/autoguidance_own.json")
    args = ap.parse_args()
    shipped = load_bundle("default")
    good = load_net(shipped, args.good, args.good_part)
    bad = load_net(shipped, args.bad, args.bad_part)
    judge, reference = _judge_and_reference("cpu")
    targets = torch.tensor(tuning_classes(args.samples))  # only for the judge's top-1; no class is asked for
    lo, hi = shipped.code_range
    rows = {}
    for w in args.scales:
        t0 = time.time()
        codes = torch.cat([own_codes(good, bad, w, 32, args.levels, args.seed * 1000 + k)
                           for k in range((args.samples + 31) // 32)])[:args.samples].clamp(lo, hi)
        with torch.no_grad():
            images = torch.cat([shipped.generator(codes[i:i + 16]) for i in range(0, len(codes), 16)]).clamp(0, 1)
        rows[f"w {w:g}"] = _judged(judge, reference, images, targets) | {"seconds": round(time.time() - t0, 1)}
        print(w, json.dumps(rows[f"w {w:g}"]), flush=True)
    report = {"good": f"{args.good} ({args.good_part})", "bad": f"{args.bad} ({args.bad_part})",
              "levels": args.levels, "samples": args.samples, "seed": args.seed, "solver": "dpmpp2m", "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
