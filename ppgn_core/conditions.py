"""Conditions p(y|x): the ε2 term of the MALA-approx step (paper Eq. 5, Sec. 2.1, S10).

Every condition is a small object that reads the condition network's outputs (logits and,
where asked, hidden activations) and returns one value per chain, to be *maximised*:

* :class:`ClassCondition` — log p(y=c|x) by log-softmax (Table S2c, the default), or the raw
  logit, or the softmax probability;
* :class:`UnitCondition` — a hidden unit named ``"layer:unit"`` (channel mean, or one spatial
  position ``"layer:unit@i,j"``);
* :class:`MultiCondition` — several conditions with weights (a product of experts, Eq. 2);
* :class:`RealismCondition` — log p(real|x) under the GAN discriminator D (not in the paper's sampler).

:func:`evaluate` runs each condition network once per step, however many conditions use it.
The inpainting context (Sec. S10) lives in :class:`InpaintContext`.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .nets.classifiers import ImageClassifier

CLASS_MODES = ("log_softmax", "logit", "softmax")


class Condition:
    """Base class: ``classifier``, the ``layers`` it reads, and ``value(logits, acts)`` per chain."""

    classifier: ImageClassifier
    layers: tuple[str, ...] = ()
    label = "condition"

    def value(self, logits: torch.Tensor, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def parts(self) -> list[tuple["Condition", float]]:
        return [(self, 1.0)]


class ClassCondition(Condition):
    """Class condition: ``classes`` is one index, or one index per chain (a B-long list/tensor)."""

    def __init__(self, classifier: ImageClassifier, classes: int | list[int] | torch.Tensor,
                 mode: str = "log_softmax", num_classes: int = 1000):
        if mode not in CLASS_MODES:
            raise ValueError(f"class condition mode must be one of {CLASS_MODES}, got {mode!r}")
        cls = torch.as_tensor(classes, dtype=torch.long).view(-1)
        if cls.numel() == 0 or cls.min() < 0 or cls.max() >= num_classes:
            raise ValueError(f"class index must be in 0..{num_classes - 1}, got {classes}")
        self.classifier, self.classes, self.mode = classifier, cls, mode
        self.label = f"class {cls.tolist() if cls.numel() > 1 else int(cls)}"

    def _targets(self, logits: torch.Tensor) -> torch.Tensor:
        cls, rows = self.classes.to(logits.device), logits.shape[0]
        if cls.numel() == 1:
            return cls.expand(rows)
        if rows % cls.numel():
            raise ValueError(f"{cls.numel()} per-chain classes for {rows} images")
        return cls.repeat(rows // cls.numel())  # stacked views of the same chains (evaluate_robust)

    def value(self, logits, acts):
        idx = self._targets(logits).view(-1, 1)
        if self.mode == "logit":
            return logits.gather(1, idx).squeeze(1)
        logp = F.log_softmax(logits, dim=1).gather(1, idx).squeeze(1)
        return logp.exp() if self.mode == "softmax" else logp

    def probability(self, logits: torch.Tensor) -> torch.Tensor:
        """p(y=c|x) under the condition network."""
        return F.softmax(logits, dim=1).gather(1, self._targets(logits).view(-1, 1)).squeeze(1)


_UNIT_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*:\s*(\d+)\s*(?:@\s*(\d+)\s*,\s*(\d+))?\s*$")


def parse_unit(spec: str) -> tuple[str, int, tuple[int, int] | None]:
    """``"blocks.10:37"`` → ("blocks.10", 37, None); ``"blocks.10:37@3,4"`` adds a position."""
    m = _UNIT_RE.match(spec or "")
    if not m:
        raise ValueError(f"hidden unit must look like 'layer:unit' or 'layer:unit@row,col', got {spec!r}")
    pos = (int(m.group(3)), int(m.group(4))) if m.group(3) is not None else None
    return m.group(1), int(m.group(2)), pos


class UnitCondition(Condition):
    """Activation of one hidden unit (a channel): its spatial mean, or its value at one position."""

    def __init__(self, classifier: ImageClassifier, spec: str):
        layer, unit, pos = parse_unit(spec)
        units = dict(classifier.layers())
        if layer not in units:
            close = difflib.get_close_matches(layer, list(units), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"unknown layer {layer!r} of {classifier.name}{hint}; "
                             f"see `python -m ppgn_core layers`")
        if not 0 <= unit < units[layer]:
            raise ValueError(f"unit {unit} out of range for layer {layer!r}: it has units 0..{units[layer] - 1}")
        self.classifier, self.layer, self.unit, self.position = classifier, layer, unit, pos
        self.layers = (layer,)
        self.label = spec

    def value(self, logits, acts):
        a = acts[self.layer][:, self.unit]
        if a.dim() == 1:  # a fully connected layer
            return a
        if self.position is not None:
            i, j = self.position
            if not (0 <= i < a.shape[-2] and 0 <= j < a.shape[-1]):
                raise ValueError(f"position {i},{j} outside the {a.shape[-2]}×{a.shape[-1]} map of {self.layer}")
            return a[:, i, j]
        return a.flatten(1).mean(1)


class MultiCondition(Condition):
    """Several conditions at once, weighted: Σ w_k·value_k (a product of experts, Eq. 2)."""

    def __init__(self, parts: list[tuple[Condition, float]]):
        if not parts:
            raise ValueError("a multi-condition needs at least one condition")
        self._parts = [(c, float(w)) for c, w in parts]
        self.classifier = self._parts[0][0].classifier
        self.label = " + ".join(f"{w:g}·{c.label}" for c, w in self._parts)

    def parts(self):
        return list(self._parts)


def class_labels(condition: Condition) -> torch.Tensor | None:
    """The class (one, or one per chain) that a class-conditional prior may be told: that of a plain class
    condition; None for hidden units, several weighted targets, or anything else."""
    return condition.classes.clone() if isinstance(condition, ClassCondition) else None


class RealismCondition:
    """log p(real|x) = log σ(D(x)) under the GAN discriminator D that was trained beside G: a second
    expert in the product (Eq. 2), with y = "a real photo" instead of a class. Not in the paper's
    sampler (there D only shapes G in training); the same idea as discriminator-driven latent
    sampling (Che et al. 2020), which adds D's logit to the energy of a GAN's latent code. Its
    weight is ``StepSettings.realism``."""

    label = "realism (D)"

    def __init__(self, discriminator: torch.nn.Module):
        self.discriminator = discriminator  # frozen and in eval mode, as the registry loads it

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """log p(real|x) per image (x in [0, 1], at D's input size)."""
        return F.logsigmoid(self.discriminator(x).float())


@dataclass
class ConditionOutput:
    """What one evaluation of the conditions gives, per chain."""

    objective: torch.Tensor  # Σ w·value (what the ε2 step ascends)
    values: list[torch.Tensor]  # one per part
    p_class: torch.Tensor | None  # p(y=c|x) of the first class condition, if any
    logits: torch.Tensor | None


def evaluate(condition: Condition, x: torch.Tensor) -> ConditionOutput:
    """Evaluate a (multi-)condition on images x in [0, 1]; one forward pass per classifier."""
    parts = condition.parts()
    groups: dict[int, list[int]] = {}
    for k, (c, _) in enumerate(parts):
        groups.setdefault(id(c.classifier), []).append(k)
    values: list[torch.Tensor | None] = [None] * len(parts)
    p_class = None
    first_logits = None
    for ks in groups.values():
        clf = parts[ks[0]][0].classifier
        layers = sorted({layer for k in ks for layer in parts[k][0].layers})
        with clf.capture(layers) as acts:
            logits = clf(x)
        if first_logits is None:
            first_logits = logits
        for k in ks:
            cond = parts[k][0]
            values[k] = cond.value(logits, acts)
            if p_class is None and isinstance(cond, ClassCondition):
                p_class = cond.probability(logits)
    objective = sum(w * v for (c, w), v in zip(parts, values))  # type: ignore[misc]
    return ConditionOutput(objective, values, p_class, first_logits)  # type: ignore[arg-type]


def random_views(x: torch.Tensor, k: int, gen: torch.Generator, blur_sigma: float = 0.0,
                 max_shift: float = 4.0, scale: tuple[float, float] = (0.9, 1.1),
                 max_degrees: float = 5.0) -> list[torch.Tensor]:
    """``k`` random, differentiable views of images x: per image a shift of up to ``max_shift``
    pixels, a scale in ``scale`` and a rotation of up to ``max_degrees`` (one affine resampling,
    reflected borders), then an optional Gaussian blur of ``blur_sigma`` pixels. Every draw comes
    from ``gen`` (seeded chains stay reproducible)."""
    b, _, h, w = x.shape
    views = []
    for _ in range(k):
        r = torch.rand(b, 4, generator=gen)
        angle = (r[:, 0] * 2 - 1) * max_degrees * torch.pi / 180
        s = scale[0] + r[:, 1] * (scale[1] - scale[0])
        tx, ty = (r[:, 2] * 2 - 1) * max_shift * 2 / w, (r[:, 3] * 2 - 1) * max_shift * 2 / h
        cos, sin = torch.cos(angle) / s, torch.sin(angle) / s  # the grid maps output to input: 1/s zooms by s
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        v = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if blur_sigma > 0:
            from .priors import gaussian_blur

            v = gaussian_blur(v, blur_sigma)
        views.append(v)
    return views


# One Lite0 forward/backward pass over stacked views against one pass per view (2 cores, 128-px
# images, median of 7): 2 images 136 vs 153 ms, 4: 229 vs 239, 8: 474 vs 492, 16: 1083 vs 1002.
ROBUST_ONE_PASS_MAX_IMAGES = 8


def evaluate_robust(condition: Condition, x: torch.Tensor, k: int, gen: torch.Generator,
                    blur_sigma: float = 0.0) -> ConditionOutput:
    """The condition averaged over ``k`` random views of x ("expectation over transformation",
    Athalye et al. 2018; Lucid's transformation robustness): its gradient asks for what a
    classifier sees in every view, not for pixel-exact patterns that only one view keeps.
    p(class) and the objective are the views' means. Views of up to ``ROBUST_ONE_PASS_MAX_IMAGES``
    images in all go through the classifier as one batch, larger ones view by view (the faster
    way for each on the 2-core CPU, measured with Lite0)."""
    views = random_views(x, k, gen, blur_sigma)
    if 1 < k and k * x.shape[0] <= ROBUST_ONE_PASS_MAX_IMAGES:
        out, b = evaluate(condition, torch.cat(views)), x.shape[0]

        def view(i: int) -> ConditionOutput:  # the i-th view's rows of the one pass
            rows = slice(i * b, (i + 1) * b)
            return ConditionOutput(out.objective[rows], [v[rows] for v in out.values],
                                   None if out.p_class is None else out.p_class[rows],
                                   None if out.logits is None else out.logits[rows])

        outs = [view(i) for i in range(k)]
    else:
        outs = [evaluate(condition, v) for v in views]
    mean = lambda ts: torch.stack(ts).mean(0)  # noqa: E731
    p = None if outs[0].p_class is None else mean([o.p_class for o in outs])
    return ConditionOutput(mean([o.objective for o in outs]),
                           [mean([o.values[i] for o in outs]) for i in range(len(outs[0].values))], p, outs[0].logits)


#: the value (images in [0, 1]) that stands for the pixels to fill wherever a run reads the photo itself
HIDDEN_GREY = 0.5
#: what stands for them: flat grey, or a classical fill from the surrounding pixels (the default: on 12 val
#: photos it raised ppgn-h's PPGN-context PSNR from 13.1 to 15.5 dB; reports/prior/inpaint_photo_start_*seed1.json)
START_FILLS = ("grey", "telea")
DEFAULT_START_FILL = "telea"


def telea_fill(x: torch.Tensor, mask: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """Images ``x`` (B×3×H×W in [0, 1]) with the region where ``mask`` is 1 filled by OpenCV's Telea method
    from the pixels around it (8-bit, as OpenCV works); pixels outside the region are returned as given."""
    import cv2
    import numpy as np

    m8 = (mask.detach().cpu().reshape(-1, *mask.shape[-2:]) > 0.5).numpy().astype(np.uint8) * 255
    u8 = (x.detach().cpu().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    if len(m8) not in (1, len(u8)):
        raise ValueError(f"{len(m8)} masks for {len(u8)} images: give one mask, or one per image")
    filled = np.stack([cv2.inpaint(np.ascontiguousarray(im), m8[i % len(m8)], radius, cv2.INPAINT_TELEA)
                       for i, im in enumerate(u8)])
    out = torch.from_numpy(filled).permute(0, 3, 1, 2).float().div(255).to(x.device)
    return torch.where(mask.to(x.device) > 0.5, out, x)


class InpaintContext:
    """Inpainting (Sec. 4.2, S10). ``mask`` is 1 where pixels are to be filled, 0 where observed.

    Before C and the prior see an image, observed pixels are clamped to the real ones:
    ``x = M⊙x + (1−M)⊙x_real``; the context term adds ε4·∂‖(1−M)⊙(x_real − G(h))‖²/∂h
    (descending), which pulls the code toward one whose image matches the surroundings. A run never
    reads the pixels under the mask: where it starts from the photo, it encodes :attr:`hidden`.
    """

    def __init__(self, x_real: torch.Tensor, mask: torch.Tensor, eps4: float = 0.0,
                 start_fill: str = DEFAULT_START_FILL):
        if x_real.dim() == 3:
            x_real = x_real.unsqueeze(0)
        if mask.dim() == 2:
            mask = mask.view(1, 1, *mask.shape)
        elif mask.dim() == 3:
            mask = mask.unsqueeze(0)
        if mask.shape[-2:] != x_real.shape[-2:]:
            raise ValueError(f"mask size {tuple(mask.shape[-2:])} differs from the image's {tuple(x_real.shape[-2:])}")
        uniq = torch.unique(mask)
        if not bool(((uniq == 0) | (uniq == 1)).all()):
            raise ValueError("mask must be binary (0 = keep, 1 = fill)")
        if float(mask.sum()) == 0:
            raise ValueError("mask is empty: nothing to fill")
        if bool((mask == 1).all()):
            raise ValueError("mask covers the whole image: nothing is left as context")
        if not torch.isfinite(torch.as_tensor(eps4)) or eps4 < 0:
            raise ValueError(f"ε4 must be a finite number ≥ 0, got {eps4}")
        if start_fill not in START_FILLS:
            raise ValueError(f"start_fill must be one of {', '.join(START_FILLS)}, got {start_fill!r}")
        self.x_real = x_real.float()
        self.mask = mask.float()
        self.eps4 = float(eps4)
        self.start_fill = start_fill

    @functools.cached_property
    def hidden(self) -> torch.Tensor:
        """The photo itself as a run may read it, ``hide(x_real)``, computed once."""
        return self.hide(self.x_real)

    def hide(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the region to fill replaced: what a run may know of the photo before filling it (its
        start code and its class are read from this, never from the pixels under the mask). ``start_fill``
        "grey": flat grey (``HIDDEN_GREY``); "telea": OpenCV's Telea inpainting (Telea 2004), which reads
        only the pixels around the region."""
        if self.start_fill == "telea":
            return telea_fill(x, self.mask)  # pixels outside the region come back as given
        return torch.where(self.mask.to(x.device) > 0.5, torch.full_like(x, HIDDEN_GREY), x)

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """Observed pixels take the real values, bit for bit."""
        m = self.mask.to(x.device)
        return torch.where(m > 0.5, x, self.x_real.to(x.device).expand_as(x))

    def context_loss(self, x: torch.Tensor) -> torch.Tensor:
        """‖(1−M)⊙(x_real − x)‖² per chain (for the ε4 term)."""
        keep = 1 - self.mask.to(x.device)
        return ((self.x_real.to(x.device) - x) * keep).pow(2).flatten(1).sum(1)


# ----------------------------------------------------------------------------- class names

def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in torchvision's order, from torchvision's weight metadata
    (``torchvision/models/_meta.py``, read offline). Only that file is loaded: importing
    ``torchvision.models`` pulls in torch._dynamo and took 1.7 s of the app's launch."""
    return list(_torchvision_categories())


@functools.lru_cache(maxsize=1)
def _torchvision_categories() -> tuple[str, ...]:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("torchvision")  # locates the package without importing it
    meta = Path(spec.submodule_search_locations[0]) / "models" / "_meta.py"
    mod_spec = importlib.util.spec_from_file_location("_torchvision_meta", meta)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return tuple(module._IMAGENET_CATEGORIES)


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-']+", " ", name.strip().lower()).strip()


@functools.lru_cache(maxsize=1)
def imagenet_lemmas() -> tuple[tuple[str, ...], ...]:
    """Every WordNet name of each ImageNet-1k class, in class order ("beacon", "lighthouse", "beacon
    light", "pharos" for class 437), from ``imagenet_lemmas.tsv`` beside this module."""
    from pathlib import Path

    rows: dict[int, tuple[str, ...]] = {}
    for line in (Path(__file__).with_name("imagenet_lemmas.tsv")).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        index, _wnid, lemmas = line.split("\t")
        rows[int(index)] = tuple(x.strip() for x in lemmas.split(",") if x.strip())
    return tuple(rows[i] for i in range(len(rows)))


@functools.lru_cache(maxsize=1)
def _lemma_keys() -> tuple[frozenset[str], ...]:
    """Each class's WordNet names, normalised and without spaces (what a typed name is compared with)."""
    return tuple(frozenset(_norm(x).replace(" ", "") for x in names) for names in imagenet_lemmas())


def class_index(name_or_index: str | int, categories: list[str] | None = None) -> int:
    """Resolve a class given by index ("980", 980), name ("Volcano", "golf_ball") or any WordNet name of
    the class ("lighthouse", "pharos": class 437, "beacon"), forgiving case, spaces and underscores.
    A WordNet name shared by several classes raises ValueError naming them; an unknown name raises
    ValueError with the closest names."""
    cats = categories or imagenet_categories()
    if isinstance(name_or_index, int) or (isinstance(name_or_index, str) and name_or_index.strip().isdigit()):
        i = int(name_or_index)
        if not 0 <= i < len(cats):
            raise ValueError(f"class index {i} out of range 0..{len(cats) - 1}")
        return i
    if not isinstance(name_or_index, str) or not name_or_index.strip():
        raise ValueError("class must be a name or an index")
    key = _norm(name_or_index)
    normed = [_norm(c) for c in cats]
    if key in normed:
        return normed.index(key)
    squashed = key.replace(" ", "")
    for i, n in enumerate(normed):
        if n.replace(" ", "") == squashed:
            return i
    lemmas = imagenet_lemmas() if len(cats) == 1000 else ()
    hits = [i for i, keys in enumerate(_lemma_keys()) if squashed in keys] if lemmas else []
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise ValueError(f"{name_or_index!r} names {len(hits)} classes: "
                         + ", ".join(f"{i} ({cats[i]}: {', '.join(lemmas[i])})" for i in hits))
    by_name = {c: cats[i] for i, c in enumerate(normed)}
    by_name.update({_norm(x): f"{cats[i]}" for i, names in enumerate(lemmas) for x in names
                    if _norm(x) not in by_name})
    close = difflib.get_close_matches(key, list(by_name), n=5, cutoff=0.5)
    shown = list(dict.fromkeys(by_name[c] for c in close))
    hint = f"; closest: {', '.join(repr(c) for c in shown)}" if shown else ""
    raise ValueError(f"unknown class {name_or_index!r}{hint}")
