"""How much of the code h the class carries, and how much of that the prior's class embedding has learnt.

Two measures on unseen val photos' codes (standardised as the prior standardises them):

* **class means**: the mean squared error of predicting a val code by the mean of its class's training
  codes (photos and mirrors), against predicting it by the mean of all codes (0 = the global mean, by
  construction about 1). This is the most a class label can tell about a code element by element.
* **the prior's class embedding**: the prior's denoising error at noise levels σ given the true class,
  no class (label dropout's "null" entry) and a wrong class (the labels shuffled). At large σ the ideal
  conditional denoiser predicts the class mean, so the gap between "true" and "no class" there is what
  the embedding has learnt of the class means.

python experiments/class_signal.py --checkpoint checkpoints/code_diffusion.safetensors \
    --out reports/prior/class_signal.json
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.data import IMAGENET_1K_ROOT, cached_images, to_float  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.training.diffusion import DiffusionConfig, codes_and_labels, ema_network  # noqa: E402


@torch.no_grad()
def val_codes(bundle, every: int, cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """E's codes of every ``every``-th val photo, and their classes."""
    images, labels = cached_images(str(IMAGENET_1K_ROOT / "val"), 128, None, 0, cache_dir=cache)
    idx = torch.arange(0, len(images), every)
    codes = [bundle.encoder.encode_both(to_float(images[idx[i:i + 100]]))[1] for i in range(0, len(idx), 100)]
    return torch.cat(codes), labels[idx].long()


@torch.no_grad()
def class_means(net, cache: Path, num_classes: int) -> torch.Tensor:
    """The mean standardised training code of each class (photos and their mirrors)."""
    h, labels = codes_and_labels(DiffusionConfig(cache=str(cache)), torch.device("cpu"))
    sums = torch.zeros(num_classes, *h.shape[1:], dtype=torch.float64)
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for i in range(0, len(h), 4096):
        u = net.standardise(h[i:i + 4096].float()).double()
        sums.index_add_(0, labels[i:i + 4096], u)
        counts.index_add_(0, labels[i:i + 4096], torch.ones(len(u), dtype=torch.float64))
    return (sums / counts.clamp_min(1).view(-1, 1, 1, 1)).float()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="checkpoints/code_diffusion.safetensors")
    ap.add_argument("--every", type=int, default=5, help="every N-th val photo (10 a class: 2 a class at 5)")
    ap.add_argument("--cache", default="cache")
    ap.add_argument("--out", default="reports/prior/class_signal.json")
    args = ap.parse_args()
    bundle, cache = load_bundle("default"), Path(args.cache)
    shipped = bundle.code_diffusion
    trained, run = ema_network(Path(args.checkpoint), shipped)
    h, y = val_codes(bundle, args.every, cache)
    u = shipped.standardise(h)
    means = class_means(shipped, cache, shipped.num_classes)
    report = {"val_codes": len(u), "class_means": {
        "mse_global_mean": round(u.pow(2).mean().item(), 4),
        "mse_class_mean": round((u - means[y]).pow(2).mean().item(), 4),
        "pooled_variance_explained": round(1 - ((u - means[y]).mean((2, 3)).pow(2).mean()
                                                / u.mean((2, 3)).pow(2).mean()).item(), 4)}, "denoising_mse": {}}
    wrong = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]  # a wrong class each
    for name, net in ((f"shipped step {bundle.card['code_diffusion']['steps']}", shipped),
                      (f"checkpoint step {run['step']}", trained)):
        rows = {}
        for sigma in (0.3, 1.0, 2.0, 5.0, 10.0):
            noise = torch.randn(u.shape, generator=torch.Generator().manual_seed(1)) * sigma
            with torch.no_grad():
                rows[str(sigma)] = {label: round((net.denoise_standardised(u + noise, sigma, labels) - u)
                                                 .pow(2).mean().item(), 4)
                                    for label, labels in (("true", y), ("none", None), ("wrong", wrong))}
        report["denoising_mse"][name] = rows
        print(name, json.dumps(rows), flush=True)
    print(json.dumps(report["class_means"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
