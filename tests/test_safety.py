"""Safety: model files never run code, tampering is caught, validators refuse bad input clearly,
and no input in the declared ranges makes a non-finite image (property-based, hypothesis)."""

import io
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ppgn_core.conditions import ClassCondition
from ppgn_core.images import load_image, load_mask
from ppgn_core.jobs import EPS_LIMITS, MAX_CHAINS, MAX_STEPS, SampleRequest, check_range
from ppgn_core.nets.registry import ASSETS, load_bundle, load_safetensors_checked, read_card
from ppgn_core.presets import build_sampler

MARKER = Path("/tmp/ppgn_pickle_was_executed")


class _Evil:
    def __reduce__(self):
        return (MARKER.write_text, ("pwned",))


def test_tampered_weights_are_refused(tmp_path):
    card = read_card()
    for name in ("model_card.json", "generator.safetensors", "code_stats.safetensors"):
        shutil.copy(ASSETS / name, tmp_path / name)
    for entry in card["files"].values():
        if not (tmp_path / entry["file"]).exists():
            shutil.copy(ASSETS / entry["file"], tmp_path / entry["file"])
    data = bytearray((tmp_path / "generator.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "generator.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt or altered"):
        load_bundle("default", assets=tmp_path)
    (tmp_path / "generator.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model file missing"):
        load_bundle("default", assets=tmp_path)


def test_pickles_with_code_are_never_executed(tmp_path):
    MARKER.unlink(missing_ok=True)
    evil = tmp_path / "checkpoint.pt"
    torch.save({"G": _Evil()}, evil)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil, weights_only=True)  # how every checkpoint in the project is read
    bad = tmp_path / "generator.pt"
    bad.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ValueError, match="only .safetensors"):
        load_safetensors_checked(bad, None)
    assert not MARKER.exists()


def test_training_resume_refuses_pickled_code(tmp_path):
    from ppgn_core.train import TrainConfig, run

    MARKER.unlink(missing_ok=True)
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": _Evil()}, out / "checkpoint.pt")
    root = tmp_path / "imgs" / "n01440764"
    root.mkdir(parents=True)
    for k in range(4):
        Image.fromarray(np.full((32, 32, 3), 40 * k, np.uint8)).save(root / f"{k}.png")
    from ppgn_core.storage import CheckpointError

    with pytest.raises(CheckpointError, match="checkpoint.pt cannot be read") as err:
        run(TrainConfig(kind="xdae", data=str(tmp_path / "imgs"), out=str(out), steps=2, batch=2, size=32))
    assert isinstance(err.value.__cause__, pickle.UnpicklingError)  # refused by the weights-only unpickler
    assert not MARKER.exists()


# ----------------------------------------------------------------------------- images

def _png(arr, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("make", [
    lambda: _png(np.zeros((40, 50, 4), np.uint8)),                     # RGBA
    lambda: _png(np.zeros((40, 50), np.uint8)),                        # grayscale
    lambda: _png((np.arange(2000).reshape(40, 50) * 30).astype(np.uint16)),  # 16-bit
    lambda: Image.fromarray(np.zeros((40, 50, 3), np.uint8)).convert("P"),    # palette
])
def test_unusual_image_modes_load_as_rgb(make):
    src = make()
    x = load_image(src, 32)
    assert x.shape == (1, 3, 32, 32) and torch.isfinite(x).all() and 0 <= x.min() and x.max() <= 1


def test_animated_image_uses_first_frame():
    frames = [Image.fromarray(np.full((40, 40, 3), v, np.uint8)) for v in (10, 200)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    x = load_image(buf.getvalue(), 32)
    assert abs(x.mean().item() * 255 - 10) < 3


@pytest.mark.parametrize("data,message", [
    (b"", "empty"),
    (b"not an image at all", "not a readable image"),
    (_png(np.zeros((40, 40, 3), np.uint8))[:60], "corrupt|not a readable"),
])
def test_bad_images_are_refused(data, message):
    with pytest.raises(ValueError, match=message):
        load_image(data, 32)


def test_decompression_bomb_refused_before_decoding():
    big = Image.new("L", (9000, 9000))  # 81 MP, compresses to a few kB
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    with pytest.raises(ValueError, match="limit"):
        load_image(buf.getvalue(), 32)


@pytest.mark.parametrize("mask,message", [
    (np.zeros((32, 32), np.uint8), "empty"),
    (np.full((32, 32), 255, np.uint8), "whole image"),
    (np.zeros((16, 16), np.uint8), "sizes must match"),
    ((np.arange(1024).reshape(32, 32) % 3 * 100).astype(np.uint8), "binary"),
])
def test_bad_masks_are_refused(mask, message):
    with pytest.raises(ValueError, match=message):
        load_mask(mask, 32)


# ----------------------------------------------------------------------------- property-based

@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5), st.none()),
       st.sampled_from(sorted(EPS_LIMITS)))
def test_check_range_only_raises_valueerror(value, name):
    lo, hi = EPS_LIMITS[name]
    try:
        v = check_range(name, value)
    except ValueError as err:
        assert name in str(err)
    else:
        assert math.isfinite(v) and lo <= v <= hi


@given(steps=st.integers(-10, MAX_STEPS * 2), chains=st.integers(-2, MAX_CHAINS * 2),
       eps=st.tuples(*[st.floats(allow_nan=True, allow_infinity=True)] * 3),
       seed=st.integers(-5, 2 ** 64))
def test_request_validation_only_raises_valueerror(steps, chains, eps, seed):
    req = SampleRequest(classes=["volcano"], steps=steps, chains=chains, eps=eps, seed=seed)
    try:
        req.validate()
    except ValueError as err:
        assert str(err)
    else:
        assert 0 <= steps <= MAX_STEPS and 1 <= chains <= MAX_CHAINS
        assert all(math.isfinite(e) for e in eps)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(preset=st.sampled_from(["noiseless-joint-ppgn-h", "joint-ppgn-h", "ppgn-h", "dgn-am", "ppgn-x",
                               "hand-designed", "no-prior"]),
       e1=st.floats(0, EPS_LIMITS["eps1"][1]), e2=st.floats(0, EPS_LIMITS["eps2"][1]),
       e3=st.floats(0, EPS_LIMITS["eps3"][1]), lr=st.floats(0, EPS_LIMITS["lr"][1]),
       form=st.sampled_from(["eq5", "release"]), seed=st.integers(0, 2 ** 31))
def test_no_in_range_setting_gives_a_nonfinite_image(tiny, preset, e1, e2, e3, lr, form, seed):
    s = build_sampler(preset, tiny, ClassCondition(tiny.classifier, 3), seed=seed, eps1=e1, eps2=e2, eps3=e3,
                      lr=lr, lr_end=lr, step_form=form)
    for snap in s.run(s.init(2), steps=3):
        assert torch.isfinite(snap.image).all()
        assert torch.isfinite(snap.z).all()
