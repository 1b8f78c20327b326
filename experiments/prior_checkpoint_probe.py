"""The shipped latent diffusion prior against the EMA weights of its training checkpoint, on held-out
classes (in neither evaluation set): the prior's own samples (no C; unconditional and with classifier-free
guidance) and the default preset `ldm-ppgn-h` steered by C, judged by the robust judge (top-1 after a 2×
down-and-up, precision and recall in its features). It asks whether more training made a better prior
before that prior is shipped and evaluated on the 110-class set.

python experiments/prior_checkpoint_probe.py --checkpoint checkpoints/code_diffusion.safetensors \
    --classes 64 --guided-classes 32 --out reports/prior/checkpoint_probe.json
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.evaluate import run_preset_on_classes  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.presets import DEFAULT_PRESET, get_preset  # noqa: E402
from ppgn_core.prior_report import _judge_and_reference, _judged, own_samples, tuning_classes  # noqa: E402
from ppgn_core.training.diffusion import ema_network  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="checkpoints/code_diffusion.safetensors")
    ap.add_argument("--classes", type=int, default=64, help="held-out classes for the prior's own samples")
    ap.add_argument("--guided-classes", type=int, default=32, help="held-out classes for the default preset")
    ap.add_argument("--levels", type=int, default=20, help="noise levels of the prior's own samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reports/prior/checkpoint_probe.json")
    args = ap.parse_args()
    shipped = load_bundle("default")
    net, run = ema_network(Path(args.checkpoint), shipped.code_diffusion)
    candidate = replace(shipped, code_diffusion=net)
    judge, reference = _judge_and_reference("cpu")
    preset = get_preset(DEFAULT_PRESET)
    report = {"checkpoint": args.checkpoint, "checkpoint_step": run["step"], "checkpoint_minutes": run["minutes"],
              "held_out": "tuning_classes (seed 7): in neither evaluation set", "own_levels": args.levels,
              "guided": f"{DEFAULT_PRESET}, {preset.steps} levels, 1 chain a class", "rows": {}}
    for name, bundle in (("shipped", shipped), ("checkpoint", candidate)):
        own = own_samples(bundle, tuning_classes(args.classes), steps=args.levels, seed=args.seed,
                          cfg_scales=(0.0, preset.cfg_scale), judge=judge, reference=reference)["samples"]
        t0 = time.time()
        guided = run_preset_on_classes(bundle, preset, tuning_classes(args.guided_classes), 1, preset.steps,
                                       args.seed, preset.steps)
        report["rows"][name] = {"own": own, "guided": _judged(judge, reference, guided.images, guided.targets)
                                | {"seconds_per_sample": round((time.time() - t0) / len(guided.targets), 3)}}
        print(name, json.dumps(report["rows"][name]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
