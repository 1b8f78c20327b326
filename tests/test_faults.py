"""Faults in the middle of work: a training process killed mid-run, a kill during a checkpoint write,
truncated or altered checkpoints, a full disk during an export."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from ppgn_core.storage import (
    CheckpointError,
    StagedFiles,
    atomic_save_safetensors,
    atomic_save_torch,
    load_checked_safetensors,
    load_torch_checkpoint,
)

ROOT = Path(__file__).resolve().parent.parent

TRAIN_SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    torch.set_num_threads(1)
    from ppgn_core.training.diffusion import DiffusionConfig, train_code_diffusion
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(128, 8, 4, 4, generator=g) * 2 + 1
    labels = torch.arange(128) % 4
    cfg = DiffusionConfig(out={out!r}, steps={steps}, batch=16, lr=1e-3, warmup_steps=2, channels=8, blocks=1,
                          heads=2, dropout=0.0, log_every=5, ckpt_every=5, ema_decay=0.9)
    print(train_code_diffusion(cfg, codes, labels), flush=True)
""")


def _train(out: Path, steps: int) -> subprocess.Popen:
    script = TRAIN_SCRIPT.format(root=str(ROOT), out=str(out), steps=steps)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_training_killed_mid_run_resumes_from_its_last_checkpoint(tmp_path):
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    proc = _train(tmp_path / "killed", 100_000)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait for a few checkpoints, then kill without warning
            if ckpt.exists() and load_torch_checkpoint(ckpt, ("step",))["step"] >= 15:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within 2 minutes: " + proc.stderr.read().decode()[-2000:])
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    saved = load_torch_checkpoint(ckpt, ("model", "ema", "opt", "step"))  # whole, though the kill came mid-run
    rows = (tmp_path / "killed" / "losses.csv").read_text().splitlines()[1:]
    last_logged = int(rows[-1].split(",")[0])  # the run had reached at least this step
    assert saved["step"] >= last_logged - 5  # lost at most one checkpoint interval
    # resume to a fixed step, and compare with an uninterrupted run to that step: bit for bit
    target = saved["step"] + 10
    for out in ("killed", "whole"):
        p = _train(tmp_path / out, target)
        assert p.wait(300) == 0, p.stderr.read().decode()[-2000:]
    a = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == target
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])


KILL_DURING_WRITE = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, {root!r})
    from ppgn_core import storage
    real_save = torch.save
    def dying_save(obj, path):  # writes part of the new file, then the process is killed
        real_save(obj, path)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 3)
        os.kill(os.getpid(), signal.SIGKILL)
    torch.save = dying_save
    storage.atomic_save_torch({{"step": 2, "w": torch.ones(1000)}}, {path!r})
""")


def test_a_kill_during_a_checkpoint_write_leaves_the_old_file_valid(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_save_torch({"step": 1, "w": torch.zeros(1000)}, path)
    p = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE.format(root=str(ROOT), path=str(path))])
    assert p.returncode == -signal.SIGKILL
    ck = load_torch_checkpoint(path, ("step",))
    assert ck["step"] == 1 and torch.equal(ck["w"], torch.zeros(1000))
    leftovers = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert len(leftovers) == 1  # the dead writer's half file: beside, never in place of, the checkpoint
    with pytest.raises(CheckpointError, match="truncated"):
        load_torch_checkpoint(tmp_path / leftovers[0])


def test_truncated_or_altered_checkpoints_are_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "c.safetensors"
    atomic_save_safetensors({"w": torch.arange(64, dtype=torch.float16)}, path, {"step": "3"})
    tensors, meta = load_checked_safetensors(path)
    assert meta["step"] == "3" and tensors["w"][5] == 5
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-40])
    with pytest.raises(CheckpointError, match="cut.safetensors.*cannot be read"):
        load_checked_safetensors(tmp_path / "cut.safetensors")
    changed = bytearray(data)
    changed[-2] ^= 0x10
    (tmp_path / "changed.safetensors").write_bytes(bytes(changed))
    with pytest.raises(CheckpointError, match="corrupt or altered"):
        load_checked_safetensors(tmp_path / "changed.safetensors")
    # the generator's compact checkpoint goes through the same check
    from ppgn_core.train import load_compact_checkpoint

    with pytest.raises(CheckpointError):
        load_compact_checkpoint(tmp_path / "changed.safetensors")
    # a full checkpoint.pt cut short
    atomic_save_torch({"step": 1, "model": {"w": torch.ones(4000)}}, tmp_path / "checkpoint.pt")
    blob = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="checkpoint.pt cannot be read"):
        load_torch_checkpoint(tmp_path / "checkpoint.pt")


def test_a_failed_staged_write_leaves_every_old_file(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    b.write_text("old b")
    with pytest.raises(OSError):
        with StagedFiles() as stage:
            stage.write_text(a, "new a")
            stage.write(b, lambda tmp: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    assert a.read_text() == "old a" and b.read_text() == "old b"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]  # no temporary left behind
    with StagedFiles() as stage:
        stage.write_text(a, "new a")
        stage.write_text(b, "new b")
    assert a.read_text() == "new a" and b.read_text() == "new b"


def test_disk_full_during_an_export_leaves_the_old_assets_usable(tmp_path, monkeypatch):
    """Ship a new latent diffusion prior into a copy of the assets while the disk fills up just as the
    model card is written (after the weights were): the old bundle still loads, unchanged."""
    from ppgn_core.export import add_code_diffusion
    from ppgn_core.nets.registry import load_bundle, sha256_of
    from ppgn_core.training.diffusion import (
        EMA,
        DiffusionConfig,
        build_model,
        save_compact,
    )

    assets = tmp_path / "assets"
    shutil.copytree(ROOT / "assets", assets, ignore=shutil.ignore_patterns("imagenette", "examples"))
    before = {f: sha256_of(assets / f) for f in os.listdir(assets)}
    cfg = DiffusionConfig(channels=8, blocks=1, heads=2)
    model = build_model(cfg, tuple(json.loads((assets / "model_card.json").read_text())["code"]["shape"]))
    source = tmp_path / "prior.safetensors"
    save_compact(source, model, EMA(model, 0.9), 7, 0.5, cfg)

    real_write_text = Path.write_text

    def full_disk(self, text, *a, **k):
        if self.name.startswith(".model_card.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="No space left"):
        add_code_diffusion(source, assets)
    monkeypatch.undo()
    assert {f: sha256_of(assets / f) for f in os.listdir(assets)} == before  # nothing replaced, nothing left
    load_bundle("default", assets=assets)  # the old assets load
    card = add_code_diffusion(source, assets)  # and with space, the same export goes through
    assert card["code_diffusion"]["steps"] == 7
    assert load_bundle("default", assets=assets).code_diffusion is not None
