"""The latent diffusion prior's denoising loss on val codes (photos it never trained on), for the shipped
EMA weights and for training checkpoints (compact files or run folders): the EDM training objective
(λ(σ)-weighted, ln σ ~ N(−0.4, 1.2²)) with each photo's class and without a class, and the plain squared error
at a few noise levels. Every network sees the same codes, levels and noise, so differences are the networks'.
It asks whether a training stage (more steps, a learning-rate cool-down) made a better denoiser of unseen
codes before its samples are judged.

python experiments/prior_val_loss.py checkpoints/code_diffusion.safetensors --out reports/prior/val_loss.json
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from class_signal import val_codes  # noqa: E402

from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.training.diffusion import edm_loss, edm_sigmas, ema_network  # noqa: E402

LEVELS = (0.1, 0.3, 1.0, 3.0)


@torch.no_grad()
def losses(net, u: torch.Tensor, labels: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> dict:
    """The EDM objective with and without the class, and the squared error at each of LEVELS."""
    null = torch.full_like(labels, net.null_class)
    row = {"edm_loss_class": edm_loss(net, u, labels, sigma, noise).item(),
           "edm_loss_no_class": edm_loss(net, u, null, sigma, noise).item()}
    for s in LEVELS:
        level = torch.full((len(u),), s)
        row[f"mse_sigma_{s:g}"] = (net.denoise_standardised(u + s * noise, level, labels) - u).pow(2).mean().item()
    return {k: round(v, 5) for k, v in row.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="*", help="training runs (folders or compact .safetensors files)")
    ap.add_argument("--every", type=int, default=5, help="every N-th val photo (2 a class at 5)")
    ap.add_argument("--cache", default="cache")
    ap.add_argument("--out", default="reports/prior/val_loss.json")
    args = ap.parse_args()
    bundle = load_bundle("default")
    net = bundle.code_diffusion.eval()
    h, labels = val_codes(bundle, args.every, Path(args.cache))
    u = net.standardise(h)
    g = torch.Generator().manual_seed(0)
    sigma, noise = edm_sigmas(len(u), -0.4, 1.2, g), torch.randn(u.shape, generator=g)
    rows = {f"shipped (step {bundle.card['code_diffusion']['steps']})": losses(net, u, labels, sigma, noise)}
    for path in args.checkpoints:
        trained, run = ema_network(Path(path), net)
        rows[f"{path} (step {run['step']}, {run['minutes']:.0f} min)"] = losses(trained, u, labels, sigma, noise)
        print(path, json.dumps(rows[f"{path} (step {run['step']}, {run['minutes']:.0f} min)"]), flush=True)
    report = {"val_codes": len(u), "every": args.every, "levels": list(LEVELS), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
