"""Regenerate assets/examples/*.png from images bundled with scikit-image (see LICENSE.md there)."""

from pathlib import Path

import numpy as np
import skimage.data as data
from PIL import Image

NAMES = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "horse", "camera",
         "clock", "coins", "grass", "gravel", "brick"]
OUT = Path(__file__).resolve().parent.parent / "assets" / "examples"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        a = getattr(data, name)()
        if a.ndim == 2:
            a = np.stack([a] * 3, -1)
        im = Image.fromarray(a[..., :3].astype(np.uint8))
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        im.resize((128, 128), Image.LANCZOS).save(OUT / f"{name}.png")


if __name__ == "__main__":
    main()
