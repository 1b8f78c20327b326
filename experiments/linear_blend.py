"""Does the best linear denoiser carry what the latent diffusion prior misses? At each noise level, the
blend a·D_prior + (1 − a)·D_linear of the prior's denoised code and the Gaussian posterior mean under the
training codes' mean and covariance (``prior_spectrum.linear_denoise``), with the weight a fitted on
training codes and the squared error measured on val codes (photos the prior never saw). A blend far below
both would say the network underfits the codes' correlations in a way a linear term could repair.

python experiments/linear_blend.py --out reports/prior/linear_blend.json
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from class_signal import val_codes  # noqa: E402
from prior_spectrum import linear_denoise, principal_components  # noqa: E402

from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.training.diffusion import DiffusionConfig, codes_and_labels  # noqa: E402

LEVELS = (0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0)


@torch.no_grad()
def denoised(net, u: torch.Tensor, labels: torch.Tensor, sigma: float, noise: torch.Tensor, pcs):
    """(D_prior with the class, D_linear) of u + σ·noise, flattened."""
    z = u + sigma * noise
    d = torch.cat([net.denoise_standardised(z[i:i + 250], sigma, labels[i:i + 250]) for i in range(0, len(z), 250)])
    return d.flatten(1), linear_denoise(z.flatten(1), sigma, *pcs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=4, help="every N-th training code for the covariance")
    ap.add_argument("--fit", type=int, default=2000, help="training codes the blend weight is fitted on")
    ap.add_argument("--cache", default="cache")
    ap.add_argument("--out", default="reports/prior/linear_blend.json")
    args = ap.parse_args()
    bundle, cache = load_bundle("default"), Path(args.cache)
    net = bundle.code_diffusion.eval()
    pcs = principal_components(net, cache, args.every)
    h, y = codes_and_labels(DiffusionConfig(cache=str(cache)), torch.device("cpu"))
    pick = torch.randperm(len(h), generator=torch.Generator().manual_seed(3))[: args.fit]
    fit_u, fit_y = net.standardise(h[pick].float()), y[pick]
    hv, yv = val_codes(bundle, 5, cache)
    val_u = net.standardise(hv)
    rows = {}
    for sigma in LEVELS:
        g = torch.Generator().manual_seed(int(sigma * 1000))
        dp, dl = denoised(net, fit_u, fit_y, sigma, torch.randn(fit_u.shape, generator=g), pcs)
        target, diff = fit_u.flatten(1), dp - dl
        a = (((target - dl) * diff).sum() / diff.pow(2).sum()).clamp(0, 1).item()  # least squares on training codes
        dp, dl = denoised(net, val_u, yv, sigma, torch.randn(val_u.shape, generator=g), pcs)
        target = val_u.flatten(1)
        mse = lambda d: round((d - target).pow(2).mean().item(), 5)  # noqa: E731
        rows[str(sigma)] = {"weight_on_prior": round(a, 3), "prior": mse(dp), "linear": mse(dl),
                            "blend": mse(a * dp + (1 - a) * dl)}
        print(sigma, rows[str(sigma)], flush=True)
    report = {"prior": f"shipped code_diffusion, step {bundle.card['code_diffusion']['steps']}, with the class",
              "covariance_codes": f"every {args.every}th training code", "fit_codes": args.fit,
              "val_codes": len(val_u), "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
