"""Evaluation: an independent judge's accuracy, diversity (MS-SSIM), mixing, reconstructions.

The judge is EfficientNet-Lite2, which never takes part in sampling (C = Lite0): a condition
network's own p(class) is easy to push to 0.9+ with images no other network recognises. Every
judge figure is also given under the robust judge's transforms (``down2`` the headline), as a
fraction of real photos' figure, with precision/recall against real val photos (``judge.py``).

The pieces live in :mod:`ppgn_core.evaluation` (``classes``, ``judging``, ``runs``, ``diversity``, ``report``,
``inpainting``); this module keeps their names importable from one place.
"""

from __future__ import annotations

from .evaluation.classes import (  # noqa: F401
    CLASS_DRAW_SEED,
    EXTRA_CLASSES,
    IMAGENETTE_CLASSES,
    class_ids,
    default_classes,
)
from .evaluation.diversity import (  # noqa: F401
    MS_SSIM_WEIGHTS,
    _filter,
    _gauss_window,
    _ssim_parts,
    count_modes,
    diversity,
    feature_spread,
    mean_pairwise_ms_ssim,
    mixing,
    ms_ssim,
    real_feature_scale,
)
from .evaluation.inpainting import _psnr_np, _ssim_region, inpainting_eval  # noqa: F401
from .evaluation.judging import (  # noqa: F401
    RECON_RANKS,
    Judge,
    real_image_accuracy,
    real_val_summary,
    reconstruction_metrics,
)
from .evaluation.report import (  # noqa: F401
    PAPER_ROWS,
    SAME_PROTOCOL,
    _robust_cells,
    _transform_rows,
    evaluate,
    fmt_pct,
    merge_reports,
    protocol_differences,
    write_markdown,
)
from .evaluation.runs import (  # noqa: F401
    PresetRun,
    compare_priors,
    judge_summary,
    run_preset_on_classes,
    save_sheet,
)
from .judge import saturation  # noqa: F401 (the report's figure, importable from here as before)
