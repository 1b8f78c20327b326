"""Where the code prior falls short, by second-order statistics: is it the covariance of the codes?

Three measures, in the prior's standardised code units, against the training codes' covariance
(every 2nd training code, photos and mirrors; 7168 × 7168, its eigenvectors are the principal
components, PCs):

* **denoising error against the best linear denoiser**: on unseen val photos' codes with Gaussian noise
  of level σ, the prior's error ‖D(u + σn; σ) − u‖² against that of the Gaussian posterior mean under the
  codes' real covariance, μ + Σ(Σ + σ²I)⁻¹(u + σn − μ) (the best denoiser that is linear in its input).
  A network that does worse has not learnt even the codes' correlations at that level. With
  ``--checkpoint``, a training run's EMA prior beside the shipped one.
* **the samples' spectrum**: the variance of the prior's own unconditional samples (DPM-Solver++(2M),
  ``--levels`` levels from σ 10) along bands of PCs, divided by the codes' variance there (1 = matched);
  and the same from σ 80 (4 levels of the prior alone down to σ 10, then the usual ``--levels``).
* **does the spectrum matter to the pictures**: precision and recall (the judge's features, as in every
  report) of G's images of 64 codes: the samples as drawn; the same samples with their variance matched
  to the codes' PC by PC (all PCs, the top 100 only, or PCs past the 1,000th only); and codes drawn from
  the Gaussian with the codes' exact mean and covariance (right second-order statistics, nothing more);
  the samples started from σ 80.

python experiments/prior_spectrum.py --out reports/prior/spectrum.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from class_signal import val_codes  # noqa: E402

from ppgn_core import prior_report  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.priors import noise_levels, sample_codes  # noqa: E402
from ppgn_core.training.diffusion import DiffusionConfig, codes_and_labels, ema_network  # noqa: E402

BANDS = ((0, 10), (10, 100), (100, 1000), (1000, 3000), (3000, 5000), (5000, None))


@torch.no_grad()
def principal_components(net, cache: Path, every: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, eigenvalues in descending order, eigenvectors as columns) of the standardised training codes."""
    h, _ = codes_and_labels(DiffusionConfig(cache=str(cache)), torch.device("cpu"))
    u = net.standardise(h[::every].float()).flatten(1)
    mean = u.mean(0)
    u -= mean
    cov = (u.T @ u) / (len(u) - 1)
    lam, vec = torch.linalg.eigh(cov.double())
    return mean, lam.flip(0).float().clamp_min(0), vec.flip(1).float()


def linear_denoise(z: torch.Tensor, sigma: float, mean, lam, vec) -> torch.Tensor:
    """The Gaussian posterior mean E[u | u + σn = z] under N(mean, Σ), flattened codes."""
    p = (z - mean) @ vec
    return mean + (p * (lam / (lam + sigma ** 2))) @ vec.T


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=2, help="every N-th training code for the covariance")
    ap.add_argument("--levels", type=int, default=20)
    ap.add_argument("--samples", type=int, default=256, help="unconditional samples for the spectrum")
    ap.add_argument("--cache", default="cache")
    ap.add_argument("--checkpoint", default=None, help="a training run (folder or compact file) to add")
    ap.add_argument("--out", default="reports/prior/spectrum.json")
    args = ap.parse_args()
    t0 = time.time()
    bundle, cache = load_bundle("default"), Path(args.cache)
    net = bundle.code_diffusion
    trained, run = ema_network(Path(args.checkpoint), net) if args.checkpoint else (None, None)
    mean, lam, vec = principal_components(net, cache, args.every)
    report = {"prior": f"shipped code_diffusion, step {bundle.card['code_diffusion']['steps']}",
              "covariance_codes": f"every {args.every}th training code", "eigenvalues": {
                  "largest": [round(v, 2) for v in lam[:5].tolist()], "median": round(lam.median().item(), 4),
                  "smallest": round(lam[-1].item(), 5), "share_of_variance_top_100": round(
                      (lam[:100].sum() / lam.sum()).item(), 4)}}

    h, _ = val_codes(bundle, 5, cache)
    u = net.standardise(h)
    rows = {}
    for sigma in (0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0):
        noise = torch.randn(u.shape, generator=torch.Generator().manual_seed(1)) * sigma
        with torch.no_grad():
            prior = (net.denoise_standardised(u + noise, sigma, None) - u).pow(2).mean().item()
        lin = (linear_denoise((u + noise).flatten(1), sigma, mean, lam, vec) - u.flatten(1)).pow(2).mean().item()
        rows[str(sigma)] = {"prior_unconditional": round(prior, 4), "best_linear": round(lin, 4)}
        if trained is not None:
            with torch.no_grad():
                rows[str(sigma)][f"checkpoint_step_{run['step']}"] = round(
                    (trained.denoise_standardised(u + noise, sigma, None) - u).pow(2).mean().item(), 4)
    report["denoising_mse_val_codes"] = {"val_codes": len(u), "rows": rows}

    codes = sample_codes(net, args.samples, torch.Generator().manual_seed(0), args.levels, solver="dpmpp2m")
    p = (net.standardise(codes).flatten(1) - mean) @ vec
    var = p.var(0)
    warm_levels = noise_levels(5, 80.0, 10.0)[:-1] + noise_levels(args.levels, 10.0, 0.05)
    codes80 = sample_codes(net, args.samples, torch.Generator().manual_seed(0), solver="dpmpp2m", levels=warm_levels)
    p80 = (net.standardise(codes80).flatten(1) - mean) @ vec

    def bands(v: torch.Tensor) -> dict:
        return {f"PC {a + 1}-{b or len(lam)}": round((v[a:b] / lam[a:b].clamp_min(1e-8)).mean().item(), 3)
                for a, b in BANDS}

    report["samples_variance_over_codes"] = {"samples": args.samples, "levels": args.levels,
                                             "from sigma 10": bands(var), "from sigma 80": bands(p80.var(0))}

    judge, reference = prior_report._judge_and_reference("cpu")
    classes = torch.tensor(prior_report.tuning_classes(64))  # targets only: the judge's top-1 is not the point

    def judged(flat_u: torch.Tensor) -> dict:
        c = net.unstandardise(flat_u[:64].view(-1, *net.code_shape)).clamp(*bundle.code_range)
        with torch.no_grad():
            images = torch.cat([bundle.generator(c[i:i + 16]) for i in range(0, len(c), 16)]).clamp(0, 1)
        r = prior_report._judged(judge, reference, images, classes)
        return {"n": r["n"], "precision": r["precision"], "recall": r["recall"]}

    scale = (lam / var.clamp_min(1e-8)).sqrt()
    index = torch.arange(len(lam))
    gauss = mean + (torch.randn(64, len(lam), generator=torch.Generator().manual_seed(0)) * lam.sqrt()) @ vec.T
    report["pictures"] = {
        "samples as drawn": judged(mean + p @ vec.T),
        "variance matched, every PC": judged(mean + (p * scale) @ vec.T),
        "variance matched, PCs 1-100 only": judged(mean + (p * torch.where(index < 100, scale, 1.0)) @ vec.T),
        "variance matched, PCs past 1,000 only": judged(mean + (p * torch.where(index >= 1000, scale, 1.0)) @ vec.T),
        "Gaussian with the codes' mean and covariance": judged(gauss),
        "samples started from sigma 80": judged(mean + p80 @ vec.T)}
    report["minutes"] = round((time.time() - t0) / 60, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
