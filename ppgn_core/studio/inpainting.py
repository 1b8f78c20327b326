"""Inpaint tab (paper Sec. 4.2, S10): PPGN (ε4 = 0) and PPGN-context (ε4 > 0) side by side."""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from ..allocator import releasing_memory
from ..conditions import ClassCondition, InpaintContext
from ..images import load_image, load_mask, save_png, to_uint8
from ..inpaint import top_class
from ..presets import DEFAULT_INPAINT_PRESET, build_sampler
from ..sampler import Control
from .core import StudioCore, Update

OUTLINE = (255, 214, 0)  # the filled region's outline on the results (drawn inside the region)
DISPLAY_MIN = 256  # results are shown at least this large (nearest-neighbour upscaling)


class InpaintWorkflow:
    def __init__(self, core: StudioCore):
        self.core = core

    @releasing_memory
    def stream(self, image, mask, class_value: str | int | None = None, steps: int = 60, eps4: float = 1.0,
               seed: int = 0, preset: str = DEFAULT_INPAINT_PRESET, snapshot_every: int = 5,
               control: Control | None = None) -> Iterator[Update]:
        """Both fills, streaming; their unmasked pixels stay exactly the input's, and nothing reads the pixels
        under the mask (the start code and the top class come from the photo with the region filled by
        Telea's method; ``InpaintContext``). ``images`` hold the results at native size; ``extra`` holds what
        the app shows (the input with the region greyed out, the results with the region outlined, all
        upscaled to ≥ 256 px)."""
        core = self.core
        size = core.bundle.image_size
        x = load_image(image, size).to(core.device)
        m = mask_to_tensor(mask, size).to(core.device)
        context = InpaintContext(x, m, eps4)  # validates mask and ε4; both runs share it (ε4 is each run's setting)
        shown = to_uint8(InpaintContext(x, m, start_fill="grey").hidden.cpu())[0]  # the region to fill, in grey
        cls = (top_class(core.bundle, context.hidden) if class_value in (None, "", "top class")
               else core.parse_class(class_value))
        runs = []
        for e4 in (0.0, eps4):
            s = build_sampler(preset, core.bundle, ClassCondition(core.bundle.classifier, cls), seed=seed,
                              context=context, eps4=e4)
            if control is not None:
                s.control = control  # one Stop ends both
            runs.append(s.run(s.init_for_photo(1, core.device, x), steps, snapshot_every))
        x_u8 = to_uint8(x.cpu())[0]
        m_np = m.cpu()[0, 0].numpy() > 0.5
        shown_input = upscale(shown)
        for a, b in zip(*runs):
            imgs = [to_uint8(a.image)[0], to_uint8(b.image)[0]]
            status = (f"class {cls}: {core.categories[cls]} — step {a.step}/{steps}; "
                      f"p(class): PPGN {float(a.p_class[0]):.3f}, PPGN-context {float(b.p_class[0]):.3f}")
            upd = Update(a.step, steps, imgs, status, extra={
                "input": shown_input, "shown": [upscale(mask_outline(im, m_np)) for im in imgs], "class": cls})
            if a.final:
                diff = max(int(np.abs(im.astype(int) - x_u8.astype(int))[~m_np].max()) for im in imgs)
                upd.final = True
                upd.record = {"class": cls, "class_name": core.categories[cls], "steps_run": a.step, "eps4": eps4,
                              "unmasked_max_abs_diff_uint8": diff, "p_class": [float(a.p_class[0]), float(b.p_class[0])]}
                d = core.run_dir()
                save_png(np.concatenate([shown] + imgs, axis=1), d / "inpaint.png")
                upd.files = [str(d / "inpaint.png")]
            yield upd


def mask_outline(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with the border of the filled region drawn on the region's own edge pixels, so every
    pixel outside the region stays exactly as it is."""
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    out = image.copy()
    out[m & ~inner] = OUTLINE
    return out


def upscale(image: np.ndarray, at_least: int = DISPLAY_MIN) -> np.ndarray:
    """Nearest-neighbour upscaling by the smallest whole factor that makes the side ≥ ``at_least``."""
    f = max(1, math.ceil(at_least / max(1, min(image.shape[:2]))))
    return image.repeat(f, axis=0).repeat(f, axis=1) if f > 1 else image


def mask_to_tensor(mask, size: int) -> torch.Tensor:
    """A mask given as an array/image/path, or as an ImageEditor value (its painted layers), →
    1×1×size×size binary tensor (1 = fill). Painted strokes are resized with nearest neighbours."""
    from PIL import Image

    if isinstance(mask, dict):
        layers = [lay for lay in (mask.get("layers") or []) if lay is not None]
        if not layers:
            raise ValueError("paint the region to fill on the image")
        alpha = None
        for lay in layers:
            a = np.asarray(lay)
            a = a[..., 3] if a.ndim == 3 and a.shape[2] == 4 else (a.max(axis=2) if a.ndim == 3 else a)
            alpha = a if alpha is None else np.maximum(alpha, a)
        mask = alpha
    if isinstance(mask, np.ndarray):
        m = (mask > 0).astype(np.uint8) * 255
        if m.shape != (size, size):
            h, w = m.shape[:2]
            s = size / min(w, h)
            im = Image.fromarray(m).resize((max(size, round(w * s)), max(size, round(h * s))), Image.NEAREST)
            w2, h2 = im.size
            im = im.crop(((w2 - size) // 2, (h2 - size) // 2, (w2 - size) // 2 + size, (h2 - size) // 2 + size))
            m = np.asarray(im)
        return load_mask(m, size)
    return load_mask(mask, size)


def editor_background(value) -> np.ndarray:
    """The uploaded image of an ImageEditor value (its background, else its composite)."""
    if isinstance(value, dict):
        bg = value.get("background")
        if bg is None:
            bg = value.get("composite")
        if bg is None:
            raise ValueError("upload an image first")
        return np.asarray(bg)
    if value is None:
        raise ValueError("upload an image first")
    return np.asarray(value)
