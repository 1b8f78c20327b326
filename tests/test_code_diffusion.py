"""The latent diffusion prior over h: its network, training loop, checkpoints and the guided sampler on it."""

import math
from dataclasses import replace

import pytest
import torch

from ppgn_core.conditions import ClassCondition, UnitCondition
from ppgn_core.nets.code_diffusion import CodeDiffusionUNet
from ppgn_core.nets.registry import tiny_bundle
from ppgn_core.presets import build_sampler, get_preset
from ppgn_core.sampler import Control, StepSettings, denoising_sampler
from ppgn_core.storage import CheckpointError
from ppgn_core.training.diffusion import (
    EMA,
    DiffusionConfig,
    edm_loss,
    edm_sigmas,
    export_ema,
    load_compact,
    train_code_diffusion,
)

SHAPE = (8, 4, 4)


def tiny_codes(n=256, classes=4, seed=0):
    """Codes of ``classes`` clusters, one per class: a prior that learns them beats the identity."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, *SHAPE, generator=g) * 2
    labels = torch.arange(n) % classes
    return centres[labels] + 0.3 * torch.randn(n, *SHAPE, generator=g) + 5.0, labels


def tiny_config(tmp_path, **kw):
    base = dict(out=str(tmp_path / "run"), steps=60, batch=32, lr=2e-3, warmup_steps=5, channels=8, blocks=1,
                heads=2, dropout=0.0, log_every=10, ckpt_every=20, ema_decay=0.9)
    base.update(kw)
    return DiffusionConfig(**base)


def held_out_loss(model, codes, labels, seed=5):
    g = torch.Generator().manual_seed(seed)
    u = model.standardise(codes)
    sigma = edm_sigmas(len(codes), -0.4, 1.2, g)
    with torch.no_grad():
        return edm_loss(model.eval(), u, labels, sigma, torch.randn(u.shape, generator=g)).item()


def test_network_shapes_and_preconditioning_limits():
    m = CodeDiffusionUNet(SHAPE, 8, 1, num_classes=10, heads=2).eval()
    u = torch.randn(3, *SHAPE)
    out = m.denoise_standardised(u, torch.tensor([0.1, 1.0, 10.0]), torch.tensor([0, 3, 10]))
    assert out.shape == u.shape and torch.isfinite(out).all()
    # the output layer starts at zero: D = c_skip·u, which tends to u as σ → 0
    assert torch.allclose(m.denoise_standardised(u, 1e-4, None), u, atol=1e-6)
    with pytest.raises(ValueError, match="class labels"):
        m.denoise_standardised(u, 1.0, torch.tensor([0, 1, 11]))
    with pytest.raises(ValueError, match="even"):
        CodeDiffusionUNet((8, 5, 5))


def test_cfg_scale_zero_is_the_unconditional_prior_and_one_the_conditional():
    torch.manual_seed(0)
    m = CodeDiffusionUNet(SHAPE, 8, 1, num_classes=10, heads=2).eval()
    with torch.no_grad():  # the zero-initialised output layers made random: the class embedding matters
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    u, y = torch.randn(2, *SHAPE), torch.tensor([1, 7])
    with torch.no_grad():
        uncond, cond = m.denoise_standardised(u, 0.7, None), m.denoise_standardised(u, 0.7, y)
        assert not torch.allclose(uncond, cond)
        assert torch.allclose(m.guided_denoise(u, 0.7, y, 0.0), uncond)
        assert torch.allclose(m.guided_denoise(u, 0.7, y, 1.0), cond)
        two = m.guided_denoise(u, 0.7, y, 2.0)
        assert torch.allclose(two, uncond + 2 * (cond - uncond), atol=1e-5)


def test_training_on_tiny_codes_lowers_the_loss(tmp_path):
    codes, labels = tiny_codes()
    cfg = tiny_config(tmp_path, steps=150)
    torch.manual_seed(0)
    from ppgn_core.train import elementwise_statistics
    from ppgn_core.training.diffusion import build_model

    before = held_out_loss(build_model(cfg, SHAPE, *elementwise_statistics(codes)), codes, labels)
    train_code_diffusion(cfg, codes, labels)
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    model = build_model(cfg, SHAPE)
    model.load_state_dict(ck["model"])
    after = held_out_loss(model, codes, labels)
    assert after < 0.8 * before, (before, after)
    rows = (tmp_path / "run" / "losses.csv").read_text().splitlines()
    assert rows[0] == "step,minutes,loss,lr" and len(rows) == 1 + 15


def test_resume_is_exact_and_ema_follows_the_weights(tmp_path):
    codes, labels = tiny_codes(64)
    whole = tiny_config(tmp_path / "a", steps=40)
    train_code_diffusion(whole, codes, labels)
    halves = tiny_config(tmp_path / "b", steps=20)
    train_code_diffusion(halves, codes, labels)
    halves.steps = 40
    train_code_diffusion(halves, codes, labels)  # resumes from checkpoint.pt at step 20
    a = torch.load(tmp_path / "a" / "run" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "run" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 40
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    # the EMA is an average of the weights: between the start and the end, not equal to the end
    k = "conv_out.weight"
    assert not torch.equal(a["ema"][k], a["model"][k])
    assert a["ema"][k].abs().sum() > 0  # it moved away from the zero start


DDP_SCRIPT = """
import json, sys
import torch
import ppgn_core.training.diffusion as diffusion
from ppgn_core.training.common import distributed

out, steps, max_minutes = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
seen = {}
update = diffusion.EMA.update
def keep(self, model, step):  # keeps the rank's training weights in view, to compare across ranks
    seen["model"] = model
    update(self, model, step)
diffusion.EMA.update = keep
g = torch.Generator().manual_seed(0)
codes = torch.randn(64, 8, 4, 4, generator=g) + 5.0
labels = torch.arange(64) % 4
cfg = diffusion.DiffusionConfig(out=out, steps=steps, batch=16, lr=2e-3, warmup_steps=2, channels=8, blocks=1, heads=2,
                                dropout=0.0, log_every=1, ckpt_every=1000, ema_decay=0.9, threads=1,
                                max_minutes=max_minutes)
with distributed("cpu"):
    result = diffusion.train_code_diffusion(cfg, codes, labels)
    rank = torch.distributed.get_rank()
weights = torch.cat([p.detach().flatten() for p in seen["model"].parameters()])
print(json.dumps({"rank": rank, "weights": weights[::7].tolist(), **result}))
"""


def _torchrun(tmp_path, out, steps, max_minutes=None):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp_prior.py"
    script.write_text(DDP_SCRIPT)
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(out), str(steps), json.dumps(max_minutes)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return sorted((json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")),
                  key=lambda r: r["rank"])


def test_ddp_trains_the_prior_on_two_gloo_processes(tmp_path):
    import json

    ranks = _torchrun(tmp_path, tmp_path / "ddp", 5)
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["step"] == 5 and r["world_size"] == 2 for r in ranks)
    # each rank drew its own codes, and the averaged gradients kept the two copies of the weights equal
    assert ranks[0]["loss"] != ranks[1]["loss"] and ranks[0]["weights"] == ranks[1]["weights"]
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["world_size"] == 2
    ck = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 5 and all(torch.isfinite(v).all() for v in ck["model"].values())
    # a time limit read on rank 0's clock stops every rank at the same step (no rank left waiting)
    ranks = _torchrun(tmp_path, tmp_path / "limited", 100_000, max_minutes=0.005)
    assert ranks[0]["step"] == ranks[1]["step"] < 100_000


def test_ema_update_rule():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        before = ema.model.weight.clone()
        net.weight.add_(1.0)
    ema.update(net, step=1000)  # decay 0.5 after the ramp
    assert torch.allclose(ema.model.weight, before + 0.5)


def test_compact_checkpoint_continues_and_refuses_damage(tmp_path):
    codes, labels = tiny_codes(64)
    compact = tmp_path / "ck.safetensors"
    cfg = tiny_config(tmp_path, steps=20, resume=str(compact))
    train_code_diffusion(cfg, codes, labels)
    ck = load_compact(compact)
    assert ck["step"] == 20 and ck["network"]["channels"] == 8
    # a new machine: runs/ is gone, the compact file continues the count
    cfg2 = tiny_config(tmp_path / "fresh", steps=30, resume=str(compact))
    out = train_code_diffusion(cfg2, codes, labels)
    assert out["step"] == 30 and load_compact(compact)["step"] == 30
    data = compact.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_compact(tmp_path / "cut.safetensors")
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF  # a weight's byte changed: the recorded hash no longer matches
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupt or altered"):
        load_compact(tmp_path / "flip.safetensors")
    exported = export_ema(compact, tmp_path / "ema.safetensors")
    assert exported["steps"] == 30 and exported["config"]["arch"] == "code_diffusion_unet"


def _guided(bundle, cond, solver, steps, cfg_scale=1.0, labels=None, eps2=1.0):
    sampler = denoising_sampler(bundle_space(bundle), bundle.code_diffusion, cond,
                                Control(StepSettings(eps1=1.0, eps2=eps2, eps3=0.0)), 10.0, 0.05, seed=3,
                                solver=solver, labels=labels, cfg_scale=cfg_scale)
    snaps = list(sampler.run(sampler.init(2), steps))
    return sampler, snaps


def bundle_space(bundle):
    from ppgn_core.presets import make_space

    return make_space(get_preset("ldm-ppgn-h"), bundle)


@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp2m"])
@pytest.mark.parametrize("steps", [1, 12])
def test_sampler_returns_finite_codes_in_range(solver, steps):
    bundle = tiny_bundle()
    cond = ClassCondition(bundle.classifier, 5)
    sampler, snaps = _guided(bundle, cond, solver, steps, labels=torch.tensor([5]))
    final = snaps[-1]
    lo, hi = bundle.code_range
    assert final.step == steps and torch.isfinite(final.z).all()
    assert final.z.min() >= lo and final.z.max() <= hi
    assert torch.isfinite(final.image).all() and final.image.min() >= 0 and final.image.max() <= 1
    assert sampler.evaluations == (2 * steps - 1 if solver == "heun" else steps)


def test_sampler_cfg_zero_draws_what_the_unconditional_prior_draws():
    bundle = tiny_bundle()
    cond = ClassCondition(bundle.classifier, 5)
    _, a = _guided(bundle, cond, "dpmpp2m", 6, cfg_scale=0.0, labels=torch.tensor([5]))
    _, b = _guided(bundle, cond, "dpmpp2m", 6, cfg_scale=0.0, labels=None)
    _, c = _guided(bundle, cond, "dpmpp2m", 6, cfg_scale=1.0, labels=torch.tensor([5]))
    assert torch.equal(a[-1].z, b[-1].z)
    assert not torch.equal(a[-1].z, c[-1].z)  # the class does reach the prior when the scale is not 0


def test_the_code_denoiser_repeats_labels_over_chains_and_refuses_bad_settings():
    """CodeDenoiser: w = 0 is the unconditional prior whatever the labels; k labels repeat over a multiple
    of k codes as one label per code would; a scale outside 0..20, labels that do not divide the codes, and
    classifier-free guidance of a prior without classes are refused."""
    from ppgn_core.priors import CodeDenoiser

    bundle = tiny_bundle()
    net = bundle.code_diffusion
    u = torch.randn(4, *net.code_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(CodeDenoiser(net, torch.tensor([1, 2]), 0.0)(u, 2.0), CodeDenoiser(net)(u, 2.0))
        repeated = CodeDenoiser(net, torch.tensor([1, 2]), 2.0)(u, 2.0)
        assert torch.allclose(repeated, CodeDenoiser(net, torch.tensor([1, 2, 1, 2]), 2.0)(u, 2.0))
        assert not torch.allclose(repeated, CodeDenoiser(net, torch.tensor([2, 1]), 2.0)(u, 2.0))
    for bad in (-1.0, float("nan"), 21.0):
        with pytest.raises(ValueError, match="0..20"):
            CodeDenoiser(net, torch.tensor([1]), bad)
    with pytest.raises(ValueError, match="3 class labels for 4 codes"):
        CodeDenoiser(net, torch.tensor([1, 2, 3]), 2.0)(u, 2.0)
    with pytest.raises(ValueError, match="class-conditional"):
        CodeDenoiser(bundle.score_dae, torch.tensor([1]), 2.0)


def test_guidance_in_an_interval_is_the_conditional_prior_outside_it():
    """cfg_interval (lo, hi): inside, D_∅ + w·(D_y − D_∅) as without an interval; outside (σ ≤ lo or σ > hi),
    D_y in one pass; a preset with an interval hands it to its sampler; bad intervals are refused."""
    from dataclasses import replace

    from ppgn_core.priors import CodeDenoiser

    bundle = tiny_bundle()
    net = bundle.code_diffusion
    y = torch.tensor([1, 2])
    u = torch.randn(2, *net.code_shape, generator=torch.Generator().manual_seed(0))
    inside = CodeDenoiser(net, y, 3.0, (0.5, 4.0))
    with torch.no_grad():
        for sigma in (0.6, 2.0, 4.0):
            assert torch.equal(inside(u, sigma), CodeDenoiser(net, y, 3.0)(u, sigma))
        for sigma in (0.5, 0.1, 4.5, 10.0):
            assert torch.equal(inside(u, sigma), net.denoise_standardised(u, sigma, y))
            assert not torch.allclose(inside(u, sigma), CodeDenoiser(net, y, 3.0)(u, sigma))
    assert [inside.scale_at(s) for s in (0.5, 0.51, 4.0, 4.01)] == [1.0, 3.0, 3.0, 1.0]
    for bad in ((2.0, 1.0), (-1.0, 1.0), (0.0, float("inf")), (1.0, 1.0)):
        with pytest.raises(ValueError, match="guidance interval"):
            CodeDenoiser(net, y, 2.0, bad)
    preset = replace(get_preset("ldm-ppgn-h"), cfg_interval=(0.5, 4.0))
    s = build_sampler(preset, bundle, ClassCondition(bundle.classifier, [1, 2]), seed=1)
    assert s.rule.denoise.cfg_interval == (0.5, 4.0)
    assert "for σ in (0.5, 4]" in preset.describe()


def test_presets_on_the_diffusion_prior_take_the_class_and_steer_units():
    bundle = tiny_bundle()
    s = build_sampler("ldm-ppgn-h", bundle, ClassCondition(bundle.classifier, [4, 9]), seed=1)
    assert s.rule.denoise.labels.tolist() == [4, 9] and s.rule.solver == "dpmpp2m"
    unit = build_sampler("ldm-ppgn-h", bundle, UnitCondition(bundle.classifier, "blocks.1:3"), seed=1)
    assert unit.rule.denoise.labels is None  # a hidden unit: the unconditional prior, steered by C
    snaps = list(unit.run(unit.init(2), 4))
    assert torch.isfinite(snaps[-1].z).all()
    assert s.rule.denoise.cfg_scale == get_preset("ldm-ppgn-h").cfg_scale > 0


def test_a_run_can_make_guided_denoising_stochastic_and_only_guided_denoising():
    """evaluate --churn: the override reaches the sampler and changes what it draws; a MALA preset refuses it."""
    bundle = tiny_bundle()
    cond = ClassCondition(bundle.classifier, [4, 9])
    plain, churned = (build_sampler("ldm-ppgn-h", bundle, cond, seed=1, **extra) for extra in ({}, {"churn": 0.5}))
    assert (plain.rule.churn, churned.rule.churn) == (get_preset("ldm-ppgn-h").churn, 0.5)
    a, b = (list(s.run(s.init(2), 4))[-1].z for s in (plain, churned))
    assert torch.isfinite(b).all() and not torch.equal(a, b)
    with pytest.raises(ValueError, match="guided denoising"):
        build_sampler("ppgn-h", bundle, cond, churn=0.5)


def test_the_diffusion_prior_inpaints_keeping_the_observed_pixels_and_following_them():
    from ppgn_core.conditions import InpaintContext
    from ppgn_core.inpaint import run_inpaint

    bundle = tiny_bundle()
    x_real = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    runs = {e4: run_inpaint(bundle, x_real, mask, classes=[2], preset="ldm-ppgn-h", steps=8, seed=0, eps4=e4,
                            chains=2, eps=(0.0, 0.2, 0.0)) for e4 in (0.0, 50.0)}
    for out in runs.values():
        assert torch.isfinite(out["images"]).all() and out["unmasked_max_abs_diff"] == 0.0
    # the context term pulls G's own image toward the surroundings: compare G(h) before clamping
    sampler = build_sampler("ldm-ppgn-h", bundle, ClassCondition(bundle.classifier, 2), seed=0,
                            context=InpaintContext(x_real, mask, 1.0))
    assert sampler.starts_from_image  # from the photo's code, noised to its photo_sigma (guided-ppgn-h: from noise)
    assert not build_sampler("guided-ppgn-h", bundle, ClassCondition(bundle.classifier, 2)).starts_from_image
    ctx = InpaintContext(x_real, mask)
    with torch.no_grad():
        loss = {e4: float(ctx.context_loss(sampler.space.to_image(runs[e4]["snapshots"][-1].z)).mean()) for e4 in runs}
    assert loss[50.0] < loss[0.0], loss


def test_a_photo_start_noises_the_photos_code_and_runs_down_from_that_level():
    """photo_sigma (SDEdit): the start is the standardised E(x) plus noise of that level, the levels run down
    from it, a low level keeps the photo's code nearer than a high one, and nothing under an inpainting mask
    is read."""
    from ppgn_core.conditions import InpaintContext
    from ppgn_core.inpaint import run_inpaint

    bundle = tiny_bundle()
    cond = ClassCondition(bundle.classifier, 3)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    from_noise = replace(get_preset("ldm-ppgn-h"), photo_sigma=None)
    with pytest.raises(ValueError, match="photo_sigma"):
        build_sampler(from_noise, bundle, cond, seed=2).init(1, start=x)
    u_photo = bundle.code_diffusion.standardise(bundle.encoder(x))
    ends = {}
    for level in (0.2, 4.0):
        s = build_sampler("ldm-ppgn-h", bundle, cond, seed=2, photo_sigma=level, eps2=0.0)
        assert s.starts_from_image
        u0 = s.init(2, start=x)
        noise = build_sampler(from_noise, bundle, cond, seed=2).init(2) / s.rule.sigma_max  # the same draw
        assert torch.allclose(u0, u_photo + level * noise, atol=1e-5)
        final = list(s.run(u0, 6, snapshot_every=6))[-1]
        assert s.levels[0] == pytest.approx(level) and torch.isfinite(final.z).all()
        ends[level] = float((bundle.code_diffusion.standardise(final.z) - u_photo).pow(2).mean())
    assert ends[0.2] < ends[4.0], ends
    for bad in (0.0, s.rule.sigma_min, math.inf, math.nan):
        with pytest.raises(ValueError, match="photo_sigma"):
            build_sampler("ldm-ppgn-h", bundle, cond, photo_sigma=bad)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    x_b = torch.where(mask > 0, 1 - x, x)
    fills = [run_inpaint(bundle, p, mask, classes=[2], preset="ldm-ppgn-h", steps=4, seed=0, eps4=1.0, photo_sigma=1.0)
             for p in (x, x_b)]
    assert torch.equal(fills[0]["images"], fills[1]["images"])
    assert not torch.equal(fills[0]["images"], run_inpaint(bundle, x, mask, classes=[2], preset=from_noise, steps=4,
                                                           seed=0, eps4=1.0)["images"])  # from noise: another start
    assert InpaintContext(x, mask, start_fill="grey").hide(x)[..., 10, 10].eq(0.5).all()


def test_bad_solver_settings_are_refused():
    bundle = tiny_bundle()
    cond = ClassCondition(bundle.classifier, 5)
    with pytest.raises(ValueError, match="solver"):
        _guided(bundle, cond, "rk45", 3)
    with pytest.raises(ValueError, match="guidance scale"):
        _guided(bundle, cond, "euler", 3, cfg_scale=math.nan)


def test_the_default_takes_the_fewest_levels_within_noise_of_the_best():
    from ppgn_core.prior_report import fewest_levels_within_noise

    rows = lambda *hits: {"levels": {str(k): {"n": 16, "robust_top1": v}  # noqa: E731
                                     for k, v in zip((10, 15, 20, 30, 60), hits)}}
    assert fewest_levels_within_noise(rows(0.5, 0.625, 0.6875, 1.0, 0.9375)) == 30  # 60 is within, 20 is not
    assert fewest_levels_within_noise(rows(0.6, 0.8, 0.82, 0.81, 0.8)) == 15  # 15 is within one error (9.6%) of 82%


def test_the_levels_sweep_runs_the_solver_it_is_given(monkeypatch):
    from ppgn_core import prior_report, solvers

    calls = []
    heun = solvers.heun
    monkeypatch.setattr(solvers, "heun", lambda *a, **k: calls.append(1) or heun(*a, **k))
    monkeypatch.setattr(prior_report, "_judged", lambda judge, reference, images, targets: {
        "n": len(targets), "finite": bool(torch.isfinite(images).all())})
    bundle = tiny_bundle()
    default = prior_report.levels_sweep(bundle, "ldm-ppgn-h", [1, 2], chains=1, levels=(2,), judge=object())
    assert default["solver"] == "dpmpp2m" and not calls
    sweep = prior_report.levels_sweep(bundle, "ldm-ppgn-h", [1, 2], chains=1, levels=(2, 3), judge=object(),
                                      solver="heun")
    assert sweep["solver"] == "heun" and len(calls) == 2 + 3  # one Heun step per level of each row
    assert all(row["n"] == 2 and row["finite"] for row in sweep["levels"].values())


def test_more_minutes_counts_from_the_resumed_runs_minutes(tmp_path):
    from ppgn_core.training.diffusion import _minutes_limit

    cfg = tiny_config(tmp_path, max_minutes=100.0, more_minutes=10.0)
    assert _minutes_limit(cfg, 50.0) == 60.0 and _minutes_limit(cfg, 95.0) == 100.0  # whichever comes first
    assert _minutes_limit(tiny_config(tmp_path), 50.0) is None
    codes, labels = tiny_codes(64)
    first = tiny_config(tmp_path, steps=20)
    train_code_diffusion(first, codes, labels)
    first.steps, first.more_minutes = 40, 0.0  # resumed with no minutes more: not one step
    assert train_code_diffusion(first, codes, labels)["step"] == 20


def test_the_cool_down_falls_linearly_to_lr_end_at_the_last_step(tmp_path):
    from ppgn_core.training.diffusion import _learning_rate

    cfg = tiny_config(tmp_path, steps=1000, lr=3e-4, warmup_steps=10, decay_steps=400, lr_end=1e-5)
    assert _learning_rate(cfg, 599, None) == pytest.approx(3e-4)  # before the cool-down
    assert _learning_rate(cfg, 799, None) == pytest.approx((3e-4 + 1e-5) / 2)
    assert _learning_rate(cfg, 999, None) == pytest.approx(1e-5)  # the last step
    lrs = [_learning_rate(cfg, s, None) for s in range(600, 1000)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert _learning_rate(cfg, 899, 890) == pytest.approx(_learning_rate(cfg, 899, None) * 10 / cfg.resume_ramp)
    constant = tiny_config(tmp_path, steps=1000, lr=3e-4, warmup_steps=10)  # no cool-down
    assert _learning_rate(constant, 999, None) == 3e-4
    codes, labels = tiny_codes(64)
    for bad in (dict(decay_steps=-1), dict(decay_steps=61), dict(decay_steps=10, lr_end=1.0)):
        with pytest.raises(ValueError, match="decay_steps"):
            train_code_diffusion(tiny_config(tmp_path, **bad), codes, labels)
