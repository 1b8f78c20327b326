"""Which guidance the latent diffusion prior's preset should use: classifier guidance by C (ε2), the
prior's own classifier-free guidance toward the class (scale w), or both, judged on held-out classes
by the robust judge's top-1 and precision (reports/prior/guidance_choices.json). ``--set late``: C's
guidance weaker, or off below a noise level (the finest levels the prior's alone), for precision.
``--set speed``: cheaper levels for time: C's gradient at every 2nd or 3rd level only, the levels between
reusing its direction (``guide_every``), the robust condition over one view instead of two, or fewer
levels (``--levels``) with a stronger ε2 to keep C's total push, or C's gradient on the denoised code
(``guide_on``). ``--set realism``: the discriminator D trained beside G as a second expert, log D(real|x)
at weight 1 or 3 beside C's ε2 = 1, for precision. ``--set views``: C's gradient over 4 views instead of 2,
or over 2 blurred views, so that fewer pixel-level patterns please it, for precision. ``--set churn``: the
stochastic sampler (Karras et al. 2022, Alg. 2: fresh noise raising σ by 20% or 50% before each level but the
last), which lets later levels correct the denoiser's errors, for precision. ``--set interval``: the prior's
classifier-free guidance only at middle noise levels (Kynkäänniemi et al. 2024; σ in (0.28, 5.42], their
interval for EDM2 in the same standardised units), the conditional prior alone elsewhere: one pass of the
prior instead of two at the levels outside it. ``--set start``: the first noise level σ_max 20 or 80 instead of
10 (the codes' largest principal components spread by √121 = 11, more than σ 10 covers), the same number of levels.

python experiments/ldm_guidance.py --levels 20 --classes 32 --chains 1 --out reports/prior/guidance_choices.json
python experiments/ldm_guidance.py --set late --levels 30 --classes 32 --out reports/prior/guidance_late.json
python experiments/ldm_guidance.py --set speed --levels 30 --classes 96 --out reports/prior/guide_every.json

``--evaluate-seed S --only LABEL``: ``python -m ppgn_core evaluate`` on the 110-class set (2 chains, ``--levels``
levels, seed S) of the default with that one setting's changes, into ``--out`` (a folder), for
scripts/paired_test.py against the default's own reports.
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core import presets  # noqa: E402
from ppgn_core.cli import main as cli_main  # noqa: E402
from ppgn_core.evaluate import run_preset_on_classes  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402
from ppgn_core.presets import get_preset  # noqa: E402
from ppgn_core.prior_report import _judge_and_reference, _judged, tuning_classes  # noqa: E402

#: (label, ε2 = C's guidance, w = classifier-free guidance scale, σ below which C no longer guides[,
#: other preset fields])
SETTINGS = {
    "guidance": [("C only (w 0)", 1.0, 0.0, 0.0), ("C + prior's class (w 1)", 1.0, 1.0, 0.0),
                 ("C + prior's class (w 2)", 1.0, 2.0, 0.0), ("prior's class only (w 1)", 0.0, 1.0, None),
                 ("prior's class only (w 3)", 0.0, 3.0, None)],
    "late": [("default (ε2 1, w 2)", 1.0, 2.0, 0.0), ("C off below σ 0.5", 1.0, 2.0, 0.5),
             ("C off below σ 2", 1.0, 2.0, 2.0), ("ε2 0.5", 0.5, 2.0, 0.0)],
    "speed": [("the default's guidance", 1.0, 2.0, 0.0),
              ("C's gradient every 2nd level", 1.0, 2.0, 0.0, {"guide_every": 2}),
              ("robust condition over 1 view", 1.0, 2.0, 0.0, {"robust_k": 1}),
              ("every 3rd level", 1.0, 2.0, 0.0, {"guide_every": 3}),
              ("ε2 1.5 (for fewer levels)", 1.5, 2.0, 0.0),
              ("C's gradient on the denoised code", 1.0, 2.0, 0.0, {"guide_on": "denoised"})],
    "views": [("robust condition over 4 views", 1.0, 2.0, 0.0, {"robust_k": 4}),
              ("2 views, each blurred (σ 1 px)", 1.0, 2.0, 0.0, {"robust_blur": 1.0})],
    "churn": [("the default's guidance", 1.0, 2.0, 0.0), ("churn 0.2", 1.0, 2.0, 0.0, {"churn": 0.2}),
              ("churn 0.5", 1.0, 2.0, 0.0, {"churn": 0.5})],
    "realism": [("realism (D) 1", 1.0, 2.0, 0.0, {"realism": 1.0}),
                ("realism (D) 3", 1.0, 2.0, 0.0, {"realism": 3.0})],
    "start": [("σ_max 20", 1.0, 2.0, 0.0, {"sigma_start": 20.0}),
              ("σ_max 80", 1.0, 2.0, 0.0, {"sigma_start": 80.0})],
    "interval": [("the default's guidance", 1.0, 2.0, 0.0),
                 ("w 2 for σ in (0.28, 5.42]", 1.0, 2.0, 0.0, {"cfg_interval": (0.28, 5.42)}),
                 ("w 3 for σ in (0.28, 5.42]", 1.0, 3.0, 0.0, {"cfg_interval": (0.28, 5.42)})],
}


def changed_preset(base, eps2: float, w: float, until: float | None, fields: dict):
    return replace(base, cfg_scale=w, paper_eps=(base.paper_eps[0], eps2, base.paper_eps[2]), guidance_until=1e9 if until is None else until,
                   **fields)


def evaluate_setting(args) -> int:
    """The 110-class evaluation of the default with one setting's changes, under the default's name (so that
    its reports pair with the default's own)."""
    chosen = [row for row in SETTINGS[args.set] if args.only and row[0] in args.only]
    if len(chosen) != 1:
        raise SystemExit(f"--evaluate-seed needs exactly one --only label of --set {args.set}")
    if args.out.endswith(".json"):
        raise SystemExit("--evaluate-seed writes a report folder: give --out reports/eval_…")
    label, eps2, w, until, *fields = chosen[0]
    presets.PRESETS["ldm-ppgn-h"] = changed_preset(get_preset("ldm-ppgn-h"), eps2, w, until,
                                                   fields[0] if fields else {})
    print(f"{label}: {presets.PRESETS['ldm-ppgn-h'].describe()}", flush=True)
    return evaluate_default(args.evaluate_seed, args.levels, args.out)


def evaluate_default(seed: int, levels: int, out: str) -> int:
    """``python -m ppgn_core evaluate`` of ldm-ppgn-h (as the running process has it) on the 110-class set, 2 chains
    a class, the protocol of the default's own reports."""
    return cli_main(["evaluate", "--presets", "ldm-ppgn-h", "--steps", str(levels), "--chains", "2", "--seed",
                     str(seed), "--mixing-chains", "0", "--recon-per-class", "0", "--out", out])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=sorted(SETTINGS), default="guidance")
    ap.add_argument("--levels", type=int, default=20)
    ap.add_argument("--classes", type=int, default=32)
    ap.add_argument("--skip-classes", type=int, default=0, help="leave out the first N held-out classes")
    ap.add_argument("--only", nargs="*", help="run only the settings of these labels")
    ap.add_argument("--chains", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reports/prior/guidance_choices.json")
    ap.add_argument("--evaluate-seed", type=int, default=None,
                    help="evaluate the one --only setting on the 110-class set at this seed, into --out")
    args = ap.parse_args()
    if args.evaluate_seed is not None:
        sys.exit(evaluate_setting(args))
    bundle = load_bundle("default")
    judge, reference = _judge_and_reference("cpu")
    classes = tuning_classes(args.classes, args.skip_classes)
    base = get_preset("ldm-ppgn-h")
    rows = {}
    for label, eps2, w, until, *fields in SETTINGS[args.set]:
        fields = fields[0] if fields else {}
        if args.only and label not in args.only:
            continue
        preset = replace(changed_preset(base, eps2, w, until, fields), name=f"ldm eps2={eps2:g} w={w:g}")
        run = run_preset_on_classes(bundle, preset, classes, args.chains, args.levels, args.seed, args.levels)
        rows[label] = {"eps2": eps2, "cfg_scale": w, "guidance_until": until, **fields,
                       **_judged(judge, reference, run.images, run.targets),
                       "seconds_per_sample": round(run.seconds / len(run.targets), 3)}
        print(label, json.dumps(rows[label]), flush=True)
        out = Path(args.out)  # written after every setting, so a long run keeps what it measured
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"levels": args.levels, "classes": classes, "chains": args.chains,
                                   "seed": args.seed, "held_out": "tuning_classes (seed 7): in neither evaluation set",
                                   "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
