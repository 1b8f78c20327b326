"""Denoising error of the shipped R_h(h, σ) and a continued one on E's codes of 1,000 val photos (the 4th of
each class), with one fixed noise draw shared by all: the MSE of R(u, σ) to the clean standardised code
at σ 0.05 … 10 (``reports/tuning/rh_continuation.json``).

    python experiments/score_dae_val_error.py assets runs/score_h2 [OUT.json]   # R_h's: shipped, a run folder
"""
import sys, json, torch
sys.path.insert(0, "scripts"); sys.path.insert(0, ".")
from precision_probes import load_score_dae
from ppgn_core.nets.registry import load_bundle
from ppgn_core.data import IMAGENET_1K_ROOT, cached_images, to_float, rank_within_class
torch.set_num_threads(2)
b = load_bundle()
images, labels = cached_images(IMAGENET_1K_ROOT / "val", 128)
pick = (rank_within_class(labels) == 3).nonzero().flatten()
with torch.no_grad():
    h = torch.cat([b.encoder(to_float(images[pick[i:i + 50]])) for i in range(0, len(pick), 50)])
out = {}
g = torch.Generator().manual_seed(0)
noise = torch.randn(h.shape, generator=g)
names = [a for a in sys.argv[1:] if not a.endswith(".json")]
out_path = next((a for a in sys.argv[1:] if a.endswith(".json")), "runs/rh_val.json")
for name in names:
    dae = load_score_dae(b, name)
    u0 = dae.standardise(h)
    row = {}
    with torch.no_grad():
        for s in (0.05, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0):
            d = dae.denoise_standardised(u0 + s * noise, s)
            row[str(s)] = round(float(((d - u0) ** 2).mean()), 4)  # MSE in standardised units
    out[name] = row
    print(name, row, flush=True)
json.dump(out, open(out_path, "w"), indent=1)
