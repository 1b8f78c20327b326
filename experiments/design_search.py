"""The generator design search, measured on one fixed val subset of the 1,000-class set: each
variant's reconstructions G(E(x)) of photos it never saw, judged by the robust judge (plain and
under every transform, precision/recall against real photos), with PSNR and the code cosine.

python experiments/design_search.py --variant "h=block 10, 60 min=checkpoints/generator_1k.safetensors" \
    --variant "old G (block 15, Imagenette)=assets" --per-class 1 --out reports/design_search

Each --variant is LABEL=PATH: a run folder (checkpoint.pt + config.json), a compact training
checkpoint (.safetensors with its config), or an assets folder (its model card says E's layers).
``--sample-classes N``: for variants given as an assets folder (``export --assets``: G with its code
statistics and clamp range), also the default preset's samples on N held-out classes (the tuning
draw of ``experiments/tune_heldout.py``) × 2 chains × 60 steps under the robust judge.
``--speed``: the default preset's ms/step with each assets-folder variant of the table (1 and 8
chains), on an otherwise idle machine.
``--from-evaluation LABEL=EVALUATION_JSON=PATH`` takes a variant's reconstruction figures from an
``evaluate`` report instead of measuring them again (same val photos: ``--recon-per-class``), and
its facts from PATH.
"""

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.bench import time_steps  # noqa: E402
from ppgn_core.data import to_float, val_photos  # noqa: E402
from ppgn_core.evaluate import RECON_RANKS, Judge, reconstruction_metrics, run_preset_on_classes  # noqa: E402
from ppgn_core.export import design_search_table, generator_source  # noqa: E402
from ppgn_core.images import grid  # noqa: E402
from ppgn_core.judge import real_reference  # noqa: E402
from ppgn_core.presets import DEFAULT_PRESET  # noqa: E402
from ppgn_core.nets.classifiers import LiteEncoder, load_efficientnet_lite  # noqa: E402
from ppgn_core.nets.generators import build_generator  # noqa: E402
from ppgn_core.nets.registry import load_bundle  # noqa: E402
from tune_heldout import judged_row, tuning_classes  # noqa: E402  (scripts/, beside this file)


def load_variant(path: Path) -> tuple[SimpleNamespace, dict]:
    """(an object with ``encoder`` and ``generator`` (and ``bundle`` for an assets folder), facts
    about the variant)."""
    if path.is_dir() and (path / "model_card.json").exists():
        b = load_bundle("default", assets=path)
        g = b.card["generator"]
        seen = {} if "steps_total" in g else {"images_seen": g["steps"] * g["training"]["batch"]}
        return SimpleNamespace(encoder=b.encoder, generator=b.generator, bundle=b), {**seen,
            "h_block": b.card["encoder"]["h_block"], "h1_block": b.card["encoder"]["h1_block"],
            "code_shape": b.card["code"]["shape"], "steps": g.get("steps_total", g["steps"]),
            "arch": g["config"].get("arch", "upconv"),
            "minutes": g.get("wall_minutes_total", g["wall_minutes"]), "data": b.card["training_data"][:40],
            "parameters": g["parameters"]}
    src = generator_source(path)
    cfg, gcfg = src.meta["config"], src.meta["generator"]
    G = build_generator(gcfg)
    G.load_state_dict(src.G)
    E = LiteEncoder(load_efficientnet_lite(cfg["encoder"]), cfg["h_block"], cfg["h1_block"], cfg["size"])
    for m in (G, E):
        m.eval().to(memory_format=torch.channels_last)
    return SimpleNamespace(encoder=E, generator=G), {
        "h_block": cfg["h_block"], "h1_block": cfg["h1_block"], "code_shape": src.meta["code_shape"], "steps": src.step,
        "arch": gcfg.get("arch", "upconv"),
        "minutes": round(src.minutes, 1), **({} if src.images is None else {"images_seen": src.images}),
        "data": Path(cfg["data"]).parent.name, "parameters": sum(v.numel() for v in src.G.values()), "losses": {k: cfg[k] for k in
                                                                      ("w_img", "w_h1", "w_h", "w_cls", "w_gan")}}


@torch.no_grad()
def recon_row(nets, x: torch.Tensor):
    """One row of the picture: a variant's reconstructions G(E(x)) of the first 8 photos."""
    return grid(nets.generator(nets.encoder(x[:8])).clamp(0, 1), nrow=8)


SAMPLE_CHAINS, SAMPLE_STEPS, SAMPLE_SEED = 2, 60, 7


def sampling_speed(bundle) -> dict:
    """The default preset's median ms/step with 1 and 8 chains (``bench.time_steps``; the issue's
    limits: 100 and 400 ms). Meaningful only on an otherwise idle machine."""
    return {str(n): time_steps(bundle, DEFAULT_PRESET, n, 5, 3, "cpu")["median_ms"] for n in (1, 8)}


def sample_figures(bundle, classes: list[int], judge, reference) -> dict:
    """The default preset's samples for ``classes`` under the robust judge (a tune_heldout.py row)."""
    run = run_preset_on_classes(bundle, DEFAULT_PRESET, classes, SAMPLE_CHAINS, SAMPLE_STEPS, SAMPLE_SEED,
                                SAMPLE_STEPS, batch=16)
    return {"preset": DEFAULT_PRESET, "classes": len(classes), "chains": SAMPLE_CHAINS, "steps": SAMPLE_STEPS,
            "seed": SAMPLE_SEED, **judged_row(judge, run.images, run.targets, reference, run.p_class),
            "seconds": round(run.seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--from-evaluation", action="append", default=[])
    ap.add_argument("--note", default=None, help="a sentence for the model card under the table")
    ap.add_argument("--facts", action="append", default=[],
                    help="LABEL=JSON: facts that the checkpoint cannot tell (e.g. images seen over stages of "
                         "different batch sizes, minutes on different machines)")
    ap.add_argument("--per-class", type=int, default=2, choices=[1, 2])
    ap.add_argument("--sample-classes", type=int, default=0,
                    help="also judge the default preset's samples on this many held-out classes (assets folders)")
    ap.add_argument("--speed", action="store_true",
                    help="time the default preset (1 and 8 chains) with every assets-folder variant of the table; "
                         "run it on an otherwise idle machine")
    ap.add_argument("--out", default="reports/design_search")
    args = ap.parse_args()
    sample_classes = tuning_classes(args.sample_classes) if args.sample_classes else []
    images, labels = val_photos(range(RECON_RANKS.start, RECON_RANKS.start + args.per_class))
    x = to_float(images)
    judge = Judge()
    reference = real_reference(judge)
    out = Path(args.out)
    result = {"val_set": f"imagenet-1k-128/val, photo(s) {RECON_RANKS.start + 1}–{RECON_RANKS.start + args.per_class}"
                         f" of every class: {len(x)} photos of {len(labels.unique())} classes", "variants": {}}
    report = out.with_suffix(".json")
    if report.exists():
        result["variants"] = json.loads(report.read_text()).get("variants", {})
    rows = [grid(x[:8], nrow=8)]
    fresh = {spec.split("=", 1)[0] for spec in args.variant + args.from_evaluation}
    loaded = {}  # label → nets, each variant loaded once
    for label, v in result["variants"].items():  # earlier variants keep their row in the picture
        if label not in fresh and Path(v["path"]).exists():
            loaded[label] = load_variant(Path(v["path"]))[0]
            rows.append(recon_row(loaded[label], x))
    for spec in args.from_evaluation:
        label, ev, path = spec.split("=", 2)
        rec = json.loads(Path(ev).read_text())["reconstruction"]
        if rec["n"] != len(x):
            raise SystemExit(f"{ev} judged {rec['n']} reconstructions, this table {len(x)}: not the same photos")
        nets, facts = load_variant(Path(path))
        loaded[label] = nets
        result["variants"][label] = {"path": path, "from": ev, **facts, **rec}
        rows.append(recon_row(nets, x))
    if args.note:
        result["note"] = args.note
    for spec in args.variant:
        label, path = spec.split("=", 1)
        nets, facts = load_variant(Path(path))
        loaded[label] = nets
        with torch.no_grad():
            m = reconstruction_metrics(nets, x, judge=judge, labels=labels, reference=reference)
        rows.append(recon_row(nets, x))
        result["variants"][label] = {"path": path, **facts, **m}
        print(label, json.dumps({k: v for k, v in m.items() if k != "robust"}), flush=True)
        if sample_classes and hasattr(nets, "bundle"):
            result["variants"][label]["samples"] = sample_figures(nets.bundle, sample_classes, judge, reference)
            print(label, "samples", json.dumps(result["variants"][label]["samples"]), flush=True)
    if args.speed:
        for label, nets in loaded.items():
            if hasattr(nets, "bundle"):  # an assets folder: a G the sampler can run
                result["variants"][label]["ms_per_step"] = sampling_speed(nets.bundle)
                print(label, "ms/step", result["variants"][label]["ms_per_step"], flush=True)
    for spec in args.facts:
        label, facts = spec.split("=", 1)
        result["variants"][label].update(json.loads(facts))
    out.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=1))
    from PIL import Image

    import numpy as np

    Image.fromarray(np.concatenate(rows, axis=0)).save(out.with_name(out.name + "_recon.png"), optimize=True)
    lines = design_search_table(result["variants"])
    out.with_suffix(".md").write_text(result["val_set"] + "\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
