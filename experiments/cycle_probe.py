"""Does re-encoding a sample make it more photo-like? The default's final codes h on held-out classes,
then G's image of h, of E(G(h)) and of E(G(E(G(h)))): G's reconstructions of unseen photos reach a
precision of about 44% (docs/results.md), so if a sample's smears are what E cannot read back, one
pass of E∘G should move it toward the codes G draws well. Judged by the robust judge's top-1 and
precision on the same classes (reports/prior/cycle_probe.json).

python experiments/cycle_probe.py --classes 64 --out reports/prior/cycle_probe.json
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.evaluate import run_preset_on_classes  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.presets import get_preset, make_space  # noqa: E402
from ppgn_core.prior_report import _judge_and_reference, _judged, tuning_classes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, default=64)
    ap.add_argument("--cycles", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reports/prior/cycle_probe.json")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    bundle = load_bundle("default")
    judge, reference = _judge_and_reference("cpu")
    classes = tuning_classes(args.classes)
    preset = get_preset("ldm-ppgn-h")
    with torch.enable_grad():  # the run's images are G(h) of its final codes h
        run = run_preset_on_classes(bundle, preset, classes, 1, preset.steps, args.seed, preset.steps)
    space = make_space(preset, bundle)
    images, rows = run.images, {}
    for k in range(args.cycles + 1):
        if k:  # one more pass through E and G, 16 images at a time
            images = torch.cat([space.to_image(space.clamp(space.encode(images[i:i + 16])))
                                for i in range(0, len(images), 16)])
        rows[f"G((E∘G)^{k}(h))"] = _judged(judge, reference, images, run.targets)
        print(k, json.dumps(rows[f"G((E∘G)^{k}(h))"]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"preset": preset.name, "levels": preset.steps, "classes": classes, "chains": 1,
                               "seed": args.seed, "sampling_seconds": round(run.seconds, 1),
                               "held_out": "tuning_classes (seed 7): in neither evaluation set", "rows": rows},
                              indent=2))


if __name__ == "__main__":
    main()
