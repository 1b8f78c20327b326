"""Time to a picture for one chain: presets, or a preset with some of its fields changed, from noise to
the final image (the step-0 snapshot and the final evaluation included), class 945, one run each of
seeds 0..R-1 after which the median of all runs but the first (the warm-up) is reported.

python experiments/time_one_chain.py --threads 2 --rows ldm-ppgn-h 'ldm-ppgn-h:{"guide_on": "denoised"}' \
    guided-ppgn-h --out reports/prior/time_one_chain.json
"""

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.conditions import ClassCondition  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.presets import build_sampler, get_preset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", nargs="+", required=True, help="PRESET or PRESET:{JSON of preset fields}")
    ap.add_argument("--repeats", type=int, default=4, help="runs per row; the first is a warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="reports/prior/time_one_chain.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_bundle("default")
    rows = {}
    for row in args.rows:
        name, _, fields = row.partition(":")
        preset = replace(get_preset(name), **(json.loads(fields) if fields else {}))
        seconds = []
        for seed in range(args.repeats):
            sampler = build_sampler(preset, bundle, ClassCondition(bundle.classifier, 945), seed=seed)
            z = sampler.init(1)
            t0 = time.perf_counter()
            for _ in sampler.run(z, preset.steps, snapshot_every=preset.steps):
                pass
            seconds.append(time.perf_counter() - t0)
        rows[row] = {"levels": preset.steps, "median_s": round(statistics.median(seconds[1:]), 2),
                     "runs_s": [round(s, 2) for s in seconds]}
        print(row, rows[row], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"note": f"1 chain, {args.threads} threads; median of runs 2..{args.repeats}",
                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
