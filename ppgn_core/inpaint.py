"""Inpainting with a PPGN (paper Sec. 4.2, S10): the class condition plus the observed pixels."""

from __future__ import annotations

import torch

from .conditions import DEFAULT_START_FILL, ClassCondition, InpaintContext, class_index, imagenet_categories
from .nets.registry import ModelBundle
from .presets import DEFAULT_INPAINT_PRESET, Preset, build_sampler, inpaint_steps


def top_class(bundle: ModelBundle, x: torch.Tensor) -> int:
    """The condition network's top class for an image."""
    with torch.no_grad():
        return int(bundle.classifier(x).argmax(1)[0])


def run_inpaint(bundle: ModelBundle, x_real: torch.Tensor, mask: torch.Tensor,
                classes: list[str | int] | None = None, preset: str | Preset = DEFAULT_INPAINT_PRESET,
                steps: int | None = None,
                seed: int = 0, eps4: float = 1.0, chains: int = 1, snapshot_every: int | None = None,
                control=None, start_fill: str = DEFAULT_START_FILL, **overrides) -> dict:
    """Fill the region where ``mask`` is 1. The run starts from the code of the photo with that region
    filled from its surroundings (``start_fill`` "telea") or greyed out ("grey"), E(hide(x_real)): a
    MALA-approx chain at that code, guided denoising at that code noised to its preset's ``photo_sigma``
    (from noise where it has none); without ``classes``, the class is C's top class of that same photo.
    Nothing reads the pixels under the mask. C and the prior see ``M⊙x + (1−M)⊙x_real``; ε4 > 0 adds the
    pixel context term (PPGN-context). ``steps``: default ``inpaint_steps(preset)``. Returns the filled
    images (observed pixels equal to the input's, bit for bit) and figures."""
    steps = inpaint_steps(preset) if steps is None else steps
    context = InpaintContext(x_real, mask, eps4, start_fill)
    cls = class_index(classes[0]) if classes else top_class(bundle, context.hidden)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "eps" in overrides:
        e1, e2, e3 = overrides.pop("eps")
        overrides.update(eps1=e1, eps2=e2, eps3=e3)
    sampler = build_sampler(preset, bundle, ClassCondition(bundle.classifier, cls), seed=seed, context=context,
                            control=control, eps4=eps4, **overrides)
    z0 = sampler.init_for_photo(chains, x_real.device, x_real)
    snaps = list(sampler.run(z0, steps, snapshot_every or max(1, steps)))
    first, last = snaps[0], snaps[-1]
    images = last.image
    diff = ((images - x_real.cpu()).abs() * (1 - mask.cpu())).amax().item()
    names = imagenet_categories()
    return {"images": images, "snapshots": snaps, "class": cls, "class_name": names[cls], "eps4": eps4,
            "preset": preset, "steps_run": last.step, "seed": seed,
            "p_class_start": [round(float(p), 6) for p in first.p_class],
            "p_class": [round(float(p), 6) for p in last.p_class],
            "unmasked_max_abs_diff": diff}
