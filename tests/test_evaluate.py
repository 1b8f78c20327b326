"""Evaluation metrics: MS-SSIM, the independent judge, and the evaluate command end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from ppgn_core.evaluate import (IMAGENETTE_CLASSES, Judge, count_modes, default_classes, feature_spread,
                                mean_pairwise_ms_ssim, ms_ssim, real_feature_scale, real_image_accuracy,
                                saturation)
from tests.conftest import DATA

ROOT = Path(__file__).resolve().parent.parent


def _pair():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 128, 128, generator=g)
    a = torch.nn.functional.avg_pool2d(a, 5, 1, 2)  # some structure
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    return a, b


def test_ms_ssim_identity_and_noise():
    a, _ = _pair()
    assert torch.allclose(ms_ssim(a, a), torch.ones(2), atol=1e-5)
    g = torch.Generator().manual_seed(1)
    vals = [ms_ssim(a, (a + s * torch.randn(a.shape, generator=g)).clamp(0, 1)).mean().item() for s in (0.02, 0.1, 0.3)]
    assert vals[0] > vals[1] > vals[2]


def test_ms_ssim_matches_reference_implementation():
    from pytorch_msssim import ms_ssim as reference

    a, b = _pair()
    ours = ms_ssim(a, b)
    ref = reference(a, b, data_range=1.0, win_size=7, size_average=False)
    assert torch.allclose(ours, ref, atol=1e-4), (ours, ref)


def test_pairwise_diversity_lower_for_different_images():
    a, b = _pair()
    same = torch.stack([a[0], a[0].clone(), a[0].clone()])
    different = torch.stack([a[0], a[1], torch.rand(3, 128, 128)])
    assert mean_pairwise_ms_ssim(same) > 0.99 > mean_pairwise_ms_ssim(different)


def test_default_classes_are_imagenette_plus_a_fixed_draw_of_100():
    a, b = default_classes(), default_classes()
    assert a == b and len(a) == 110 and len(set(a)) == 110
    assert a[:10] == IMAGENETTE_CLASSES and all(0 <= c < 1000 for c in a)
    assert default_classes(seed=1)[10:] != a[10:]


def test_count_modes_counts_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    chain = torch.cat([c + 0.1 * torch.randn(4, 2, generator=g) for c in centers])  # visits 3 places in turn
    assert count_modes(chain, radius=1.0) == 3
    assert count_modes(chain[:4], radius=1.0) == 1  # a chain stuck in one place
    assert count_modes(chain, radius=100.0) == 1


def test_feature_spread_and_scale():
    feats = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0], [6.0, 8.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert real_feature_scale(feats, labels) == pytest.approx(5.0)  # torch median of (5, 10): the lower
    assert feature_spread(feats, [torch.tensor([0, 1]), torch.tensor([2, 3])]) == pytest.approx(7.5)


def test_saturation_counts_blown_out_pixels_only():
    x = torch.full((1, 3, 10, 10), 0.5)
    assert saturation(x) == 0.0
    x[..., :5, :] = 1.0  # top half white
    x[..., 5:6, :] = 0.01  # one row black
    assert saturation(x) == pytest.approx(0.6)
    assert saturation(torch.full((1, 3, 4, 4), 0.96)) == 0.0  # bright but not blown out


def test_mixing_with_no_chains_measures_nothing_instead_of_failing():
    from ppgn_core.evaluate import PresetRun, mixing

    traj = torch.rand(5, 3, 3, 8, 8)  # 5 snapshots of 3 chains
    run = PresetRun("p", traj[-1], torch.zeros(3, dtype=torch.long), torch.zeros(3), traj, 0.0)
    assert mixing(None, run, snapshot_every=2, scale=1.0, max_chains=0) == {}  # the judge is never needed


@pytest.mark.skipif(not DATA.exists(), reason="../shared/data not present")
def test_judge_accuracy_on_real_photos_comes_from_lite2_predictions(monkeypatch):
    judge = Judge()
    assert judge.classifier.name == "efficientnet-lite2"
    acc = real_image_accuracy(judge, DATA / "val", limit=40)
    assert acc["n"] == 40 and acc["top1"] > 0.5 and acc["top5"] >= acc["top1"]
    # the figure really comes from the judge's outputs: a judge that always says class 1 scores 0
    monkeypatch.setattr(judge, "logits", lambda images, batch=32: torch.nn.functional.one_hot(
        torch.ones(len(images), dtype=torch.long), 1000).float())
    assert real_image_accuracy(judge, DATA / "val", limit=40)["top1"] == 0.0


@pytest.mark.skipif(not DATA.exists(), reason="../shared/data not present")
def test_evaluate_quick_end_to_end(tmp_path):
    res = subprocess.run([sys.executable, "-m", "ppgn_core", "evaluate", "--quick", "--out", str(tmp_path),
                          "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    rep = json.loads((tmp_path / "evaluation.json").read_text())
    assert set(rep["presets"]) == {"noiseless-joint-ppgn-h", "dgn-am"}
    for r in rep["presets"].values():
        assert r["n"] == 4 and 0 <= r["judge_top1"] <= r["judge_top5"] <= 1
        assert r["mixing"]["modes_per_chain"] >= 1 and r["mixing"]["dist_1_steps"] > 0
        assert r["feature_spread"] > 0
        inside = r["per_sample_in_manifold"]  # what precision counts, per sample, for paired tests
        assert len(inside) == r["n"] and set(inside) <= {0, 1} and abs(sum(inside) / r["n"] - r["precision"]) < 1e-6
    assert 0 < rep["real_val"]["judge_top1"] <= 1
    assert set(rep["inpainting"]) >= {"ppgn", "ppgn_context", "telea"}
    assert all(r["psnr_db"] > 0 for k, r in rep["inpainting"].items() if isinstance(r, dict))
    assert (tmp_path / "sheet_dgn-am.png").exists()
    md = (tmp_path / "evaluation.md").read_text()
    assert md.count("## Inpainting") == 1 and "| ppgn_context |" in md and "†" not in md


def test_large_sample_sheets_are_halved_and_paletted(tmp_path):
    from PIL import Image

    from ppgn_core.evaluate import PresetRun, save_sheet

    g = torch.Generator().manual_seed(0)
    for n, size in ((8, 32), (72, 32)):
        imgs = torch.rand(n, 3, size, size, generator=g)
        run = PresetRun("p", imgs, torch.zeros(n, dtype=torch.long), torch.zeros(n), imgs[None], 0.0)
        save_sheet(run, tmp_path / f"s{n}.png", chains=2)
        im = Image.open(tmp_path / f"s{n}.png")
        assert im.mode == ("P" if n > 64 else "RGB")
        assert im.width < 8 * size if n > 64 else im.width >= 8 * size


def test_reconstruction_metrics_judges_the_reconstructions_not_the_photos():
    from ppgn_core.evaluate import reconstruction_metrics
    from ppgn_core.nets.registry import tiny_bundle

    b = tiny_bundle()
    x = torch.rand(6, 3, b.image_size, b.image_size, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([3, 3, 3, 5, 5, 5])
    seen = []

    class Recorder:  # ranks class 3 first and 5 second for every image; records what it was shown
        def hits(self, images, targets, logits=None):
            seen.append(images)
            logits = torch.zeros(len(images), 1000)
            logits[:, 3], logits[:, 5] = 2.0, 1.0
            return Judge.hits(None, images, targets, logits)

    m = reconstruction_metrics(b, x, batch=4, judge=Recorder(), labels=labels)
    with torch.no_grad():
        expected = b.generator(b.encoder(x)).clamp(0, 1)
    assert torch.allclose(seen[0], expected, atol=1e-6) and not torch.allclose(seen[0], x)
    assert m["judge_top1"] == 0.5 and m["judge_top5"] == 1.0
    assert "judge_top1" not in reconstruction_metrics(b, x)
    with pytest.raises(ValueError, match="one label per image"):
        reconstruction_metrics(b, x, judge=Recorder(), labels=labels[:2])


def _fake_run(folder: Path, presets: dict[str, float], steps: int = 60) -> Path:
    """An evaluation.json as `evaluate` writes it, with only the fields the table reads."""
    folder.mkdir()
    rows = {p: {"preset": p, "n": 4, "judge_top1": t1, "judge_top5": 1.0, "c_pass_097": 0.5, "seconds": 60.0,
                "ms_ssim_within_class": 0.1, "feature_spread": 0.9, "mixing": {}, "saturation": 0.01}
            for p, t1 in presets.items()}
    rep = {"condition": "c", "judge": "j", "classes": ["a", "b"], "chains_per_class": 2, "steps": steps, "seed": 0,
           "batch": 8, "presets": rows, "real_val": {"n": 4, "judge_top1": 0.75, "judge_top5": 1.0,
                                                      "ms_ssim_within_class": 0.05}}
    (folder / "evaluation.json").write_text(json.dumps(rep))
    for p in presets:
        Image.new("RGB", (8, 8)).save(folder / f"sheet_{p}.png")
    return folder


def test_merging_runs_keeps_the_base_rows_and_marks_the_added_ones(tmp_path):
    base = _fake_run(tmp_path / "new", {"dgn-am": 0.25})
    old = _fake_run(tmp_path / "old", {"dgn-am": 0.75, "no-prior": 0.5})
    res = subprocess.run([sys.executable, "scripts/merge_evaluations.py", str(base), f"{old}=earlier run, no G",
                          "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rep = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert rep["presets"]["dgn-am"]["judge_top1"] == 0.25 and "source" not in rep["presets"]["dgn-am"]
    assert rep["presets"]["no-prior"]["source"] == "earlier run, no G"
    md = (tmp_path / "out" / "evaluation.md").read_text()
    assert "| no-prior † | 50.0%" in md and "| dgn-am | 25.0%" in md and "no-prior: earlier run, no G" in md
    assert (tmp_path / "out" / "sheet_dgn-am.png").exists() and (tmp_path / "out" / "sheet_no-prior.png").exists()


def test_merging_runs_of_another_protocol_is_refused(tmp_path):
    base = _fake_run(tmp_path / "a", {"dgn-am": 0.25})
    other = _fake_run(tmp_path / "b", {"no-prior": 0.5}, steps=200)
    res = subprocess.run([sys.executable, "scripts/merge_evaluations.py", str(base), str(other),
                          "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "differ in steps" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_runs_where_c_saw_another_side_are_not_comparable():
    """The side C saw the images at is part of the protocol where both runs record it; a run from
    before it was recorded (no key) stays comparable with one at C's own side."""
    from ppgn_core.evaluate import protocol_differences

    run = {"condition": "efficientnet-lite0", "judge": "efficientnet-lite2", "classes": ["volcano"],
           "chains_per_class": 2, "steps": 60, "seed": 0, "batch": 8}
    assert protocol_differences(dict(run, condition_input_size=224), dict(run, condition_input_size=160)) == [
        "condition_input_size"]
    assert protocol_differences(dict(run, condition_input_size=224), run) == []
    assert protocol_differences(dict(run, condition_input_size=224, steps=200), dict(run, condition_input_size=224)) == [
        "steps"]


def test_paired_sign_test_over_seeds(tmp_path):
    """scripts/paired_test.py pairs samples by seed and index, counts discordant pairs and gives
    the exact two-sided sign test; runs that differ in seed or classes are refused."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("paired_test", Path("scripts/paired_test.py").resolve())
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.sign_test(5, 5) == 1.0
    assert abs(mod.sign_test(0, 10) - 2 / 1024) < 1e-12  # all ten discordant pairs one way
    assert abs(mod.sign_test(10, 0) - mod.sign_test(0, 10)) < 1e-12

    def report(name, seed, hits, classes=("a", "b")):
        d = tmp_path / f"{name}_{seed}_{''.join(classes)}_{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        (d / "evaluation.json").write_text(json.dumps(
            {"classes": list(classes), "chains_per_class": 2, "steps": 60, "seed": seed,
             "presets": {name: {"per_sample_robust_top1": hits}}}))
        return d

    a = [report("joint", 0, [1, 0, 1, 0]), report("joint", 1, [1, 1, 1, 0])]
    b = [report("dgn", 0, [0, 0, 1, 1]), report("dgn", 1, [0, 0, 1, 0])]
    result = mod.compare(a, b)
    assert result["total"] == {"a": 5, "b": 3, "only_a": 3, "only_b": 1, "n": 8, "p": mod.sign_test(3, 1)}
    assert [r["only_a"] for r in result["per_seed"]] == [1, 2]
    with pytest.raises(ValueError, match="seed"):
        mod.compare([a[0]], [b[1]])
    with pytest.raises(ValueError, match="classes"):
        mod.compare([a[0]], [report("dgn", 0, [0, 0, 1, 1], classes=("a", "c"))])
    tuned = report("joint", 0, [1, 1, 0, 0], classes=("a", "b", "x"))  # the same preset, run with overrides
    data = json.loads((tuned / "evaluation.json").read_text())
    data["classes"] = ["a", "b"]
    data["presets"]["joint"]["settings"] = {"p_target": 0.999, "at_target": "stop"}
    (tuned / "evaluation.json").write_text(json.dumps(data))
    assert mod.compare([tuned], [a[0]])["a"] == "joint (at_target=stop, p_target=0.999)"
    named = mod.compare([a[0]], [report("joint", 0, [0, 0, 1, 1], classes=("a", "b"))], given_names=("new", "old"))
    assert (named["a"], named["b"]) == ("new (joint)", "old (joint)")  # one preset, two sets of weights
    assert "precision" not in result  # the reports hold no per-sample manifold membership


def test_paired_test_also_pairs_precision_where_the_reports_hold_membership(tmp_path):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("paired_test", Path("scripts/paired_test.py").resolve())
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def report(name, seed, hits, inside):
        d = tmp_path / f"{name}_{seed}"
        d.mkdir()
        (d / "evaluation.json").write_text(json.dumps(
            {"classes": ["a", "b"], "chains_per_class": 2, "steps": 30, "seed": seed,
             "presets": {name: {"per_sample_robust_top1": hits, "per_sample_in_manifold": inside}}}))
        return d

    a = [report("one", 0, [1, 0, 1, 0], [1, 1, 1, 0]), report("one", 1, [1, 1, 0, 0], [1, 1, 1, 1])]
    b = [report("two", 0, [1, 1, 1, 0], [0, 0, 1, 0]), report("two", 1, [1, 1, 0, 0], [1, 0, 0, 0])]
    result = mod.compare(a, b)
    assert result["total"]["only_b"] == 1 and result["total"]["only_a"] == 0
    assert result["precision"]["total"] == {"a": 7, "b": 2, "only_a": 5, "only_b": 0, "n": 8, "p": mod.sign_test(5, 0)}
    md = mod.markdown(result)
    assert "Precision, paired by sample" in md and "| all | 8 | 7 (87.5%) | 2 (25.0%) | 5 | 0 |" in md


def test_tuning_picks_the_best_robust_setting_that_does_not_game_the_transform():
    """experiments/tune_heldout.py: a setting whose robust top-1 is above its plain one is not eligible."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tune_heldout", Path("experiments/tune_heldout.py").resolve())
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)

    def row(plain, robust, precision):
        return {"by_step": {"60": {"judge_top1": plain, "robust_top1": robust, "precision": precision}}}

    results = {"default": row(0.88, 0.48, 0.16), "decay": row(0.84, 0.52, 0.23), "blur": row(0.45, 0.75, 0.22),
               "tie": row(0.90, 0.52, 0.10)}
    assert tune.pick_setting(results, "60") == "decay"  # blur games down2; the tie goes to precision
    assert tune.pick_setting({"blur": row(0.45, 0.75, 0.22)}, "60") is None
    assert tune.pick_setting(results, "40") is None
