"""The judge (EfficientNet-Lite2, never used in sampling) on real photos and on G's reconstructions of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import DEFAULT_DATA_ROOT, load_folder, to_float, val_photos
from ..judge import (
    HEADLINE,
    RealReference,
    RobustJudge,
    robust_report,
    strip_private,
    topk_hits,
)
from ..nets.registry import ModelBundle
from .diversity import feature_spread, mean_pairwise_ms_ssim, real_feature_scale


class Judge(RobustJudge):
    """EfficientNet-Lite2 (never used in sampling) classifying images in [0, 1]; the robust judge's
    transforms come with it (:class:`ppgn_core.judge.RobustJudge`)."""

    def logits(self, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
        return self.predict(images)[0]

    def features(self, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
        return self.predict(images)[1]

    def hits(self, images: torch.Tensor, targets: torch.Tensor,
             logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Top-1/top-5 hits on ``targets``; pass ``logits`` already computed for ``images`` to skip the pass."""
        logits = self.logits(images) if logits is None else logits
        t = targets.view(-1, 1)
        return topk_hits(logits, targets) | {"p_target": F.softmax(logits, 1).gather(1, t).squeeze(1),
                                             "pred": logits.argmax(1)}


def real_image_accuracy(judge: Judge, root: Path = DEFAULT_DATA_ROOT / "val", limit: int | None = 500,
                        seed: int = 0) -> dict:
    """The judge's own accuracy on real photos (the ceiling), from its real predictions."""
    images_u8, labels = load_folder(root, 128, limit, seed)
    h = judge.hits(to_float(images_u8), labels)
    return {"n": int(len(labels)), "top1": float(h["top1"].float().mean()), "top5": float(h["top5"].float().mean())}


@torch.no_grad()
def reconstruction_metrics(bundle: ModelBundle, images: torch.Tensor, batch: int = 32,
                           judge: Judge | None = None, labels: torch.Tensor | None = None,
                           reference: RealReference | None = None) -> dict:
    """PSNR of G(E(x)) against x and cosine similarity of E(G(E(x))) to E(x), on real images; with a
    ``judge`` and the photos' ``labels``, also the judge's top-1/top-5 on the reconstructions G(E(x))
    (how much of the class a reconstruction keeps for a network that took no part in training);
    with a real ``reference`` too, the robust judge's full report on them (``robust``)."""
    if judge is not None and (labels is None or len(labels) != len(images)):
        raise ValueError("judging reconstructions needs one label per image")
    psnrs, coss, recons = [], [], []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        h = bundle.encoder(x)
        xr = bundle.generator(h).clamp(0, 1)
        mse = ((xr - x) ** 2).flatten(1).mean(1)
        psnrs.append(10 * torch.log10(1 / mse.clamp_min(1e-10)))
        coss.append(F.cosine_similarity(bundle.encoder(xr).flatten(1), h.flatten(1), dim=1))
        if judge is not None:
            recons.append(xr.cpu())
    p, c = torch.cat(psnrs), torch.cat(coss)
    out = {"n": int(len(images)), "psnr_db": float(p.mean()), "psnr_std": float(p.std()),
           "cosine_h": float(c.mean()), "cosine_std": float(c.std())}
    if judge is not None and reference is not None:
        rob = strip_private(robust_report(judge, torch.cat(recons), labels.cpu(), reference))
        out["judge_top1"], out["judge_top5"] = rob["accuracy"]["plain"]["top1"], rob["accuracy"]["plain"]["top5"]
        out["robust"] = rob
    elif judge is not None:
        hits = judge.hits(torch.cat(recons), labels.cpu())  # one pass, batched by the judge itself
        out["judge_top1"], out["judge_top5"] = float(hits["top1"].float().mean()), float(hits["top5"].float().mean())
    return out


RECON_RANKS = range(4, 6)  # val photos 5–6 of every class: disjoint from the judge's reference and held-out sets


def real_val_summary(judge: Judge, reference: RealReference, chains: int, max_classes: int | None) -> dict:
    """The real photos' row: the judge's ceiling (held-out photos, plain and robust), their
    precision/recall and saturation, and the same-class feature scale that mixing is measured in."""
    acc = reference.ceiling
    out = {"set": reference.description, "n": len(reference.labels.unique()), "judge_top1": acc["plain"]["top1"],
           "judge_top5": acc["plain"]["top5"], "robust_top1": acc[HEADLINE]["top1"],
           "robust_top5": acc[HEADLINE]["top5"], "saturation": reference.heldout_saturation,
           "robust": reference.to_dict(), "precision": reference.heldout_pr["precision"],
           "recall": reference.heldout_pr["recall"]}
    out["feature_scale"] = scale = real_feature_scale(reference.features, reference.labels)
    groups = [torch.nonzero(reference.labels == c).flatten()[:chains] for c in reference.labels.unique()]
    out["feature_spread"] = feature_spread(reference.features, groups) / scale
    imgs, labels = val_photos(range(0, 3), max_classes)
    per_class = [mean_pairwise_ms_ssim(to_float(imgs[labels == c])) for c in labels.unique()[:10]]
    out["ms_ssim_within_class"] = float(np.mean(per_class))
    return out
