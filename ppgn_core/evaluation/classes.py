"""The evaluation's class sets: the 10 Imagenette classes, the paper's extra classes, and 100 drawn once."""

from __future__ import annotations

import numpy as np

#: the paper's extra classes of interest, beside the 10 Imagenette (training) classes
EXTRA_CLASSES = ["volcano", "pool table", "cardoon", "planetarium", "junco", "bell pepper", "lemon",
                 "monarch", "castle", "daisy"]


IMAGENETTE_CLASSES = [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]


#: seed of the one-time draw of the evaluation's 100 further classes
CLASS_DRAW_SEED = 2017


def default_classes(n_random: int = 100, seed: int = CLASS_DRAW_SEED) -> list[int]:
    """The evaluation's default classes: the 10 Imagenette classes, then ``n_random`` classes drawn
    once (fixed seed) from the other 990 ImageNet classes, in drawn order."""
    rest = np.array([c for c in range(1000) if c not in IMAGENETTE_CLASSES])
    drawn = np.random.default_rng(seed).choice(rest, n_random, replace=False)
    return IMAGENETTE_CLASSES + [int(c) for c in drawn]


def class_ids(names: list[str | int]) -> list[int]:
    from ..conditions import class_index

    return [class_index(n) for n in names]
