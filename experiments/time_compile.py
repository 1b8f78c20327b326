"""Does ``torch.compile`` (inductor) make a level of the default cheaper on this CPU? One chain's pass of G and C
(G's 128-px image scaled to C's 224 px) and the pass back to the code, eager against compiled, median of
``--repeats`` after 3 warm-ups, and the seconds the first compiled call takes.

python experiments/time_compile.py --out reports/prior/time_compile.json
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.bench import run_times_ms  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402


def pass_and_back(generator, classifier, h: torch.Tensor) -> torch.Tensor:
    h = h.detach().requires_grad_(True)
    x = torch.nn.functional.interpolate(generator(h).clamp(0, 1), size=224, mode="bilinear", align_corners=False)
    (g,) = torch.autograd.grad(classifier(x)[:, 1].sum(), h)
    return g


def median_ms(fn, h: torch.Tensor, repeats: int) -> float:
    return round(statistics.median(run_times_ms(lambda: fn(h), repeats, warmup=3)), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="reports/prior/time_compile.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_bundle("default")
    h = torch.randn(1, *bundle.code_shape, generator=torch.Generator().manual_seed(0)).abs()
    eager = lambda z: pass_and_back(bundle.generator, bundle.classifier, z)  # noqa: E731
    report = {"threads": args.threads, "torch": torch.__version__, "eager_ms": median_ms(eager, h, args.repeats)}
    g_c, c_c = torch.compile(bundle.generator), torch.compile(bundle.classifier)
    compiled = lambda z: pass_and_back(g_c, c_c, z)  # noqa: E731
    t = time.time()
    compiled(h)
    report["first_compiled_call_s"] = round(time.time() - t, 1)
    report["compiled_ms"] = median_ms(compiled, h, args.repeats)
    report["eager_ms_again"] = median_ms(eager, h, args.repeats)
    print(json.dumps(report))
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
