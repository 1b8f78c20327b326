"""What a level of the latent diffusion prior costs on the CPU, and whether the memory layout or oneDNN
changes it: the shipped U-Net's denoised code for one chain with classifier-free guidance (two rows),
forward alone and forward + backward (as guided denoising takes C's gradient through it), at one thread,
in the contiguous layout, in channels-last, and with oneDNN (mkldnn) off. The same input for every
variant; the largest difference of D and of its gradient from the contiguous layout is reported.

python experiments/time_unet.py --out reports/prior/time_unet.json
"""

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.bench import run_times_ms  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402


def timed(net, u: torch.Tensor, label: torch.Tensor, repeats: int) -> dict:
    def forward_backward():
        uu = u.clone().requires_grad_(True)
        d = net.guided_denoise(uu, 3.0, label, 2.0)
        (g,) = torch.autograd.grad(d.sum(), uu)
        return d.detach(), g

    def forward():
        with torch.no_grad():
            return net.guided_denoise(u, 3.0, label, 2.0)

    out = {name: round(statistics.median(run_times_ms(fn, repeats, warmup=5)), 2)
           for name, fn in (("forward_backward_ms", forward_backward), ("forward_ms", forward))}
    out["_result"] = forward_backward()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="reports/prior/time_unet.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net = load_bundle("default").code_diffusion
    u = torch.randn(1, *net.code_shape, generator=torch.Generator().manual_seed(0))
    label = torch.tensor([5])
    rows = {"contiguous": timed(net, u, label, args.repeats)}
    last = copy.deepcopy(net).to(memory_format=torch.channels_last)
    rows["channels_last"] = timed(last, u.contiguous(memory_format=torch.channels_last), label, args.repeats)
    torch.backends.mkldnn.enabled = False
    rows["mkldnn_off"] = timed(net, u, label, args.repeats)
    torch.backends.mkldnn.enabled = True
    d0, g0 = rows["contiguous"]["_result"]
    for row in rows.values():
        d, g = row.pop("_result")
        row["max_diff_D"], row["max_diff_grad"] = float((d - d0).abs().max()), float((g - g0).abs().max())
    report = {"threads": args.threads, "batch": "1 chain, 2 rows (classifier-free guidance)",
              "median_of": args.repeats, "rows": rows}
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
