"""What every workflow of the app shares: the loaded models, class names, layers, example images
and a folder of recent runs' downloads."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..conditions import class_index, imagenet_categories
from ..images import load_image
from ..nets.registry import ModelBundle

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "assets" / "examples"
RUNS_KEPT = 40


@dataclass
class Update:
    """One streamed update of a long action."""

    step: int
    total: int
    images: list[np.ndarray]  # current image of each chain (H×W×3 uint8)
    status: str
    curves: list[list[float]] = field(default_factory=list)  # per chain, p(class) per snapshot
    curve_steps: list[int] = field(default_factory=list)
    filmstrip: np.ndarray | None = None
    files: list[str] = field(default_factory=list)
    record: dict | None = None
    final: bool = False
    extra: dict = field(default_factory=dict)


class StudioCore:
    """Holds the loaded models; safe to share between users (each run has its own sampler,
    generator and Control)."""

    def __init__(self, bundle: ModelBundle, device: str = "cpu", workdir: str | None = None):
        self.bundle, self.device = bundle, device
        self.categories = imagenet_categories()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="ppgn-studio-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._layers: list[tuple[str, int]] | None = None
        self._example_cache: dict[str, torch.Tensor] = {}

    def class_choices(self) -> list[str]:
        return [f"{i}: {name}" for i, name in enumerate(self.categories)]

    def parse_class(self, value: str | int | None) -> int:
        """'980: volcano', 'volcano' or 980 → 980 (ValueError with suggestions otherwise)."""
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("pick a class")
        if isinstance(value, str) and ":" in value:
            value = value.split(":", 1)[0]
        return class_index(value, self.categories)

    def layers(self) -> list[tuple[str, int]]:
        if self._layers is None:
            self._layers = self.bundle.classifier.layers()
        return self._layers

    def run_dir(self) -> Path:
        """A fresh folder for one run's downloads (only the newest RUNS_KEPT are kept)."""
        runs = sorted(self.workdir.glob("run-*"), key=lambda p: p.stat().st_mtime)
        for old in runs[:-RUNS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix="run-", dir=self.workdir))

    def examples(self) -> list[Path]:
        return sorted(EXAMPLES.glob("*.png"))

    def example(self, path: Path) -> torch.Tensor:
        key = str(path)
        if key not in self._example_cache:
            self._example_cache[key] = load_image(path, self.bundle.image_size)
        return self._example_cache[key]

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features of C's layer before its output (facets, t-SNE)."""
        clf = self.bundle.classifier
        layer = self.layers()[-2][0]
        with clf.capture([layer]) as acts:
            clf(images.to(self.device))
        f = acts[layer]
        return (f.flatten(2).mean(2) if f.dim() == 4 else f.flatten(1)).cpu()

