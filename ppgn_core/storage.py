"""Writing and reading weights and checkpoints so that a fault never costs the file that was there.

* Every write goes to a temporary file in the same folder, is flushed to disk (fsync) and only then
  moved over the old file with ``os.replace`` (atomic on POSIX): a process killed mid-write, or a
  disk that fills up, leaves the old file whole and loadable, and the temporary file is removed
  where the writer survives to do it.
* A compact safetensors checkpoint carries the SHA-256 of its tensors in its metadata
  (``content_sha256``); :func:`load_checked_safetensors` refuses a file whose tensors no longer match
  it, and a truncated file, with a clear :class:`CheckpointError`.
* :func:`load_torch_checkpoint` reads a full ``checkpoint.pt`` with ``weights_only=True`` and turns a
  truncated or foreign file into a :class:`CheckpointError` that names it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Callable

import torch


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used: truncated, altered, or of another kind."""


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _finish(tmp: Path) -> None:
    """Flush ``tmp`` to disk and give it the usual permissions (some writers create owner-only files)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)


def _written_temporary(path: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` to a temporary beside ``path``, flushed; on any error it is removed and the error raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        write(tmp)
        _finish(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` then move ``tmp`` over ``path`` in one step; on any error (a full disk
    included) the temporary file is removed and ``path`` keeps its old content."""
    path = Path(path)
    tmp = _written_temporary(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # the rename itself reaches the disk with the folder's entry
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def atomic_save_torch(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes (sorted by name)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file written atomically, with ``content_sha256`` of its tensors in the metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {**(metadata or {}), "content_sha256": tensors_sha256(tensors)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_checked_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a file written by :func:`atomic_save_safetensors`; a truncated file, or one
    whose tensors do not match their recorded SHA-256, raises :class:`CheckpointError`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint missing: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated or not a safetensors file): {err}") from err
    want = meta.get("content_sha256")
    if want is not None and tensors_sha256(tensors) != want:
        raise CheckpointError(f"checkpoint {path} is corrupt or altered: its tensors do not match the SHA-256 "
                              f"recorded when it was written ({want[:16]}…)")
    return tensors, meta


def load_torch_checkpoint(path: str | os.PathLike, keys: tuple[str, ...] = ()) -> dict:
    """A ``torch.save``d checkpoint (weights only); a truncated file or one without ``keys`` raises
    :class:`CheckpointError`."""
    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # truncated zip, pickle of a forbidden type, …
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated or not a checkpoint): {err}") from err
    missing = [k for k in keys if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}: not a checkpoint of this run")
    return ck


class StagedFiles:
    """Several files replaced together: each is first written whole as a temporary beside its target
    (:meth:`write`), and only when every one is written does :meth:`commit` move them in (renames need
    no disk space). Used as a context manager, an error on the way (a full disk, a failed check)
    removes the temporaries and leaves every old file as it was."""

    def __init__(self):
        self.pending: list[tuple[Path, Path]] = []

    def write(self, path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
        """Write ``path``'s new content to a temporary (returned: hash or size it there)."""
        path = Path(path)
        tmp = _written_temporary(path, write)
        self.pending = [(t, p) for t, p in self.pending if p != path] + [(tmp, path)]
        return tmp

    def write_text(self, path: str | os.PathLike, text: str) -> Path:
        return self.write(path, lambda tmp: tmp.write_text(text))

    def commit(self) -> None:
        for tmp, path in self.pending:
            os.replace(tmp, path)
        self.pending = []

    def abort(self) -> None:
        for tmp, _ in self.pending:
            tmp.unlink(missing_ok=True)
        self.pending = []

    def __enter__(self) -> "StagedFiles":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()
