"""Loss ablation of the generator (paper Fig. S8) as numbers and one comparison image.

python experiments/ablation.py --variant "start of the fine-tunes=runs/g_prev.safetensors" \
    --variant "all losses=runs/g128b_ckpt300.pt" --variant "no L_GAN=runs/abl_nogan" \
    --variant "no L_h1=runs/abl_noh1" --out reports/ablation

The shipped G comes first. Each variant is a training run folder (its checkpoint.pt), a checkpoint
file or a safetensors file of G's weights; the generator's architecture comes from the shipped
model card. Measured on imagenette-128/val (never trained on): PSNR of G(E(x)),
cosine(E(G(E(x))), E(x)) and the judge's (Lite2's) top-1/top-5 on G(E(x)); the image shows 8 val
photos (top row) and each variant's reconstruction of them.
"""

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.data import DEFAULT_DATA_ROOT, load_folder, to_float  # noqa: E402
from ppgn_core.evaluate import Judge, reconstruction_metrics  # noqa: E402
from ppgn_core.export import _strip  # noqa: E402
from ppgn_core.images import grid  # noqa: E402
from ppgn_core.nets.generators import build_generator  # noqa: E402
from ppgn_core.nets.registry import _load_module, load_bundle  # noqa: E402


def load_generator(path: Path, config: dict) -> tuple[torch.nn.Module, int | None]:
    """G from a run folder or checkpoint (with its step), or from a safetensors file (step unknown)."""
    g = build_generator(config)
    if path.suffix == ".safetensors":
        return _load_module(g, path.parent, {"file": path.name}), None
    ck_path = path / "checkpoint.pt" if path.is_dir() else path
    ck = torch.load(ck_path, map_location="cpu", weights_only=True)
    g.load_state_dict(_strip(ck["G"]))
    return g.eval(), int(ck["step"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", action="append", required=True, help="LABEL=PATH (run folder or checkpoint)")
    ap.add_argument("--val-images", type=int, default=500)
    ap.add_argument("--out", default="reports/ablation")
    args = ap.parse_args()
    bundle = load_bundle("default")
    images, labels = load_folder(DEFAULT_DATA_ROOT / "val", 128, args.val_images, 0)
    x = to_float(images)
    judge = Judge()
    rows = [grid(x[:8], nrow=8, pad=2)]
    captions = ["real val photos"]
    result = {"val_images": int(len(x)), "variants": {}}
    variants = [("shipped G", None)] + [tuple(v.split("=", 1)) for v in args.variant]
    for label, path in variants:
        if path is None:
            g, step = bundle.generator, int(bundle.card["generator"]["steps"])
        else:
            g, step = load_generator(Path(path), bundle.card["generator"]["config"])
        with torch.no_grad():
            m = reconstruction_metrics(SimpleNamespace(encoder=bundle.encoder, generator=g), x, judge=judge,
                                       labels=labels)
            rec = g(bundle.encoder(x[:8])).clamp(0, 1)
        result["variants"][label] = {"path": path, "step": step, **m}
        print(label, json.dumps(result["variants"][label]), flush=True)
        rows.append(grid(rec, nrow=8, pad=2))
        at = "" if step is None else f" (step {step})"
        captions.append(f"{label}{at}: PSNR {m['psnr_db']:.2f} dB, cosine(h) {m['cosine_h']:.3f}, "
                        f"judge top-1 {100 * m['judge_top1']:.1f}%")
    h = rows[0].shape[0]
    canvas = Image.new("RGB", (rows[0].shape[1], (h + 16) * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (r, lab) in enumerate(zip(rows, captions)):
        y = i * (h + 16)
        draw.text((4, y + 2), lab, fill="black")
        canvas.paste(Image.fromarray(r), (0, y + 16))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out.with_suffix(".png"))
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
