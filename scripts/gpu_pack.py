"""Pack the 1,000-class training photos into zip shards that fit the `device` tool's 64 MiB per call.

The training set (imagenet-1k-128/train, 39,956 WebP photos, 114 MB) is larger than what one call
to a lent GPU may carry, so it travels in two calls (the machine stays warm in between and keeps
what the first call unpacked). Photos are re-encoded as WebP quality 55 (about 35 dB PSNR against
the originals, 2.7 KB each) and stored uncompressed in zip files (a tar header costs 512 bytes a
photo). Shard a holds the first 21 photos of every class (sorted order), shard b the next 17; the
rest (ranks 38+, about 2 per class) does not fit and stays behind. Each shard holds classes.tsv.

    python scripts/gpu_pack.py --out .gpu      # then scripts/gpu_train.sh on the device
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from multiprocessing import Pool
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ppgn_core.data import IMAGENET_1K_ROOT, pick_files  # noqa: E402

#: Shard a: the first 21 photos of every class; shard b: the first 38 less those.
SHARD_A_PER_CLASS, SHARDS_PER_CLASS = 21, 38


def _encode(job: tuple[str, str, int]) -> tuple[str, bytes]:
    path, name, quality = job
    buf = io.BytesIO()
    with Image.open(path) as im:
        im.convert("RGB").save(buf, "WEBP", quality=quality, method=4)
    return name, buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(IMAGENET_1K_ROOT))
    ap.add_argument("--out", default=".gpu")
    ap.add_argument("--quality", type=int, default=55)
    args = ap.parse_args()
    root, out = Path(args.root), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    first_a = pick_files(root / "train", per_class=SHARD_A_PER_CLASS)
    in_a = set(first_a)
    shards = {"a": first_a, "b": [f for f in pick_files(root / "train", per_class=SHARDS_PER_CLASS) if f not in in_a]}
    with Pool() as pool:
        for key, chosen in shards.items():
            target = out / f"shard_{key}.zip"
            jobs = [(str(f), str(f.relative_to(root)), args.quality) for f in chosen]
            with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as z:
                z.write(root / "classes.tsv", "classes.tsv")
                for name, data in pool.imap(_encode, jobs, chunksize=64):
                    z.writestr(name, data)
            print(f"{target}: {len(chosen)} photos, {target.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
