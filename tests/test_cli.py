"""The command line on the shipped models (assets/) and on tiny ones."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "ppgn_core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_sample_golf_ball_dgn_am_raises_p_class(tmp_path):
    res = cli("sample", "--class", "golf ball", "--preset", "dgn-am", "--steps", "40", "--chains", "2",
              "--out", str(tmp_path), "--device", "cpu")
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((tmp_path / "result.json").read_text())
    assert rec["preset"] == "dgn-am" and rec["steps"] == 40 and rec["seed"] == 0
    assert rec["eps"] == [0.0, 1.0, 1e-17]
    assert len(rec["chains"]) == 2
    for c in rec["chains"]:
        assert c["p_class"] > c["p_class_start"]
    with Image.open(tmp_path / "grid.png") as g:
        assert g.size[0] > g.size[1] > 128  # 2 rows of 128-px images, several snapshots wide
    with Image.open(tmp_path / "chain.gif") as gif:
        assert gif.n_frames >= 2


def test_default_preset_is_guided_and_a_start_image_gets_a_chain(tmp_path):
    """Sampling from noise uses the default (guided denoising); a start from a photo's code needs a MALA
    chain, so without --preset it gets the default chain preset, and asking guided for it is refused."""
    from ppgn_core.presets import PHOTO_CHAIN_PRESET, DEFAULT_PRESET, get_preset

    Image.new("RGB", (40, 40), (120, 80, 40)).save(tmp_path / "start.png")
    base = ("sample", "--class", "volcano", "--bundle", "tiny", "--steps", "2", "--chains", "1")
    res = cli(*base, "--out", str(tmp_path / "noise"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "noise" / "result.json").read_text())["preset"] == DEFAULT_PRESET
    assert not get_preset(DEFAULT_PRESET).is_chain  # the default draws from noise
    res = cli(*base, "--start-image", str(tmp_path / "start.png"), "--out", str(tmp_path / "photo"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "photo" / "result.json").read_text())["preset"] == PHOTO_CHAIN_PRESET == "ppgn-h"
    res = cli(*base, "--start-image", str(tmp_path / "start.png"), "--preset", "guided-ppgn-h",
              "--out", str(tmp_path / "refused"))
    assert res.returncode == 2 and "cannot start from an image" in res.stderr and "ppgn-h" in res.stderr
    assert not (tmp_path / "refused" / "result.json").exists()


def test_sample_finds_a_class_by_any_wordnet_name(tmp_path):
    res = cli("sample", "--class", "lighthouse", "--bundle", "tiny", "--steps", "2", "--chains", "1",
              "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((tmp_path / "result.json").read_text())
    assert rec["classes"] == ["lighthouse"] and rec["class_indices"] == [437]


def test_sample_neuron_reports_activation(tmp_path):
    res = cli("sample", "--neuron", "blocks.1:3", "--bundle", "tiny", "--steps", "5", "--chains", "2",
              "--preset", "dgn-am", "--step-form", "eq5", "--eps", "0", "1", "0", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((tmp_path / "result.json").read_text())
    assert all("activation" in c and "activation_start" in c for c in rec["chains"])
    assert all(c["activation"] > c["activation_start"] for c in rec["chains"])


def test_sample_records_the_annealed_eps1_schedule(tmp_path):
    res = cli("sample", "--class", "volcano", "--bundle", "tiny", "--steps", "5", "--chains", "1",
              "--preset", "annealed-joint-ppgn-h", "--eps1-end", "1e-4", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((tmp_path / "result.json").read_text())
    assert rec["eps"][0] == 3e-4 and rec["eps1_end"] == 1e-4 and rec["lr"] == 0.05
    assert all(row["eps1_end"] == 1e-4 for row in rec["eps_schedule"])


def test_sample_records_the_realism_weight_and_p_target(tmp_path):
    res = cli("sample", "--class", "volcano", "--bundle", "tiny", "--steps", "3", "--chains", "1",
              "--realism", "0.5", "--p-target", "0.99", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((tmp_path / "result.json").read_text())
    assert rec["realism"] == 0.5 and rec["request"]["realism"] == 0.5
    assert rec["p_target"] == 0.99 and rec["eps_schedule"][0]["p_target"] == 0.99


def test_condition_size_reaches_c_and_the_record(tmp_path):
    """--condition-size makes C see the images at that side: the chains' p(class) differs from a run at
    C's own side (same seed), and result.json says which side C saw."""
    records = {}
    for size in (None, 64):
        out = tmp_path / str(size)
        res = cli("sample", "--class", "volcano", "--bundle", "tiny", "--steps", "3", "--chains", "1",
                  "--preset", "dgn-am", *(["--condition-size", str(size)] if size else []), "--out", str(out))
        assert res.returncode == 0, res.stderr[-3000:]
        records[size] = json.loads((out / "result.json").read_text())
    assert records[None]["condition_input_size"] is None and records[64]["condition_input_size"] == 64
    assert records[None]["chains"][0]["p_class"] != records[64]["chains"][0]["p_class"]


def _photo_and_mask(tmp_path: Path) -> list[str]:
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    m = np.zeros((32, 32), np.uint8)
    m[10:20, 5:25] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    return ["--image", str(tmp_path / "x.png"), "--mask", str(tmp_path / "m.png")]


def test_inpaint_cli_keeps_observed_pixels(tmp_path):
    res = cli("inpaint", *_photo_and_mask(tmp_path), "--bundle", "tiny",
              "--class", "volcano", "--steps", "5", "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((tmp_path / "o" / "result.json").read_text())
    assert rec["unmasked_max_abs_diff"] == 0.0 and rec["class"] == 980
    assert (tmp_path / "o" / "result.png").exists()


@pytest.mark.parametrize("args,message", [
    (["sample", "--class", "golf bal", "--bundle", "tiny"], "closest: 'golf ball'"),
    (["sample", "--class", "1000", "--bundle", "tiny"], "out of range"),
    (["sample", "--class", "volcano", "--steps", "999999", "--bundle", "tiny"], "steps must be in"),
    (["sample", "--class", "volcano", "--chains", "0", "--bundle", "tiny"], "chains must be in"),
    (["sample", "--class", "volcano", "--eps", "nan", "1", "0", "--bundle", "tiny"], "eps1 must be finite"),
    (["sample", "--class", "volcano", "--preset", "nope", "--bundle", "tiny"], "unknown preset"),
    (["sample", "--neuron", "blocks.1:999", "--bundle", "tiny"], "out of range"),
    (["sample", "--class", "volcano", "--eps1-end", "-1", "--bundle", "tiny"], "eps1_end must be in"),
    (["sample", "--class", "volcano", "--realism", "-1", "--bundle", "tiny"], "realism must be in"),
    (["sample", "--class", "volcano", "--p-target", "0", "--bundle", "tiny"], "p_target must be in"),
    (["sample", "--class", "volcano", "--condition-size", "8", "--bundle", "tiny"], "between 32 and 1024"),
])
def test_bad_cli_input_gives_clear_error(tmp_path, args, message):
    res = cli(*args, "--out", str(tmp_path))
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_inpaint_cli_passes_the_eps1_schedule_on(tmp_path):
    """--eps1-end reaches the sampler: a negative end is refused with the sampler's own message."""
    res = cli("inpaint", *_photo_and_mask(tmp_path), "--bundle", "tiny", "--class", "volcano", "--steps", "3",
              "--preset", "annealed-joint-ppgn-h", "--eps1-end", "-1", "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "eps1_end must be ≥ 0" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "o" / "result.json").exists()


def test_layers_command():
    res = cli("layers")
    assert res.returncode == 0
    assert "blocks.10" in res.stdout and "112" in res.stdout


def test_presets_command_shows_each_schedule():
    res = cli("presets")
    assert res.returncode == 0, res.stderr[-3000:]
    lines = {line.split()[0]: line for line in res.stdout.splitlines()}
    assert "ε = (0.0003 → 0, 1, 1e-17), step 0.05 × the code's spread" in lines["annealed-joint-ppgn-h"]
    assert "step 0.2 → 0.05" in lines["mfv"]
    assert "in 0–255 pixel units, Eq. 5 as written (no step size)" in lines["ppgn-x"]
    assert "**" not in res.stdout
