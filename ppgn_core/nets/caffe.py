"""The original release's Caffe models: a protobuf reader/writer of our own for ``.caffemodel``
weights, a converter to safetensors, CaffeNet (E and C of the paper) and the paper bundle.

Only the wire format and the public field numbers of caffe.proto are used:
NetParameter {name = 1; layers = 2 (V1LayerParameter); layer = 100 (LayerParameter)},
LayerParameter {name = 1; type = 2; blobs = 7}, V1LayerParameter {name = 4; type = 5; blobs = 6},
BlobProto {num = 1; channels = 2; height = 3; width = 4; data = 5; shape = 7; double_data = 8},
BlobShape {dim = 1}.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .classifiers import ImageClassifier
from .generators import PaperFc6Generator

# ----------------------------------------------------------------------------- protobuf wire format


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated protobuf (varint)")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError("malformed protobuf varint")


def iter_fields(buf: bytes):
    """Yield (field number, wire type, value) of one message; length-delimited values are bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated protobuf (length-delimited field)")
            val, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, val


def _parse_blob(buf: bytes) -> np.ndarray:
    dims4 = {1: 0, 2: 0, 3: 0, 4: 0}
    shape: list[int] = []
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    for field, wire, val in iter_fields(buf):
        if field in dims4 and wire == 0:
            dims4[field] = val
        elif field == 5:
            floats.append(np.frombuffer(val, "<f4") if wire in (2, 5) else np.array([]))
        elif field == 8:
            doubles.append(np.frombuffer(val, "<f8") if wire in (1, 2) else np.array([]))
        elif field == 7 and wire == 2:
            for f2, w2, v2 in iter_fields(val):
                if f2 == 1 and w2 == 2:  # packed dims
                    p = 0
                    while p < len(v2):
                        d, p = _varint(v2, p)
                        shape.append(d)
                elif f2 == 1 and w2 == 0:
                    shape.append(v2)
    data = np.concatenate(floats).astype(np.float32) if floats else \
        (np.concatenate(doubles).astype(np.float32) if doubles else np.zeros(0, np.float32))
    if not shape:
        shape = [d for d in (dims4[1], dims4[2], dims4[3], dims4[4])]
        while len(shape) > 1 and shape[0] in (0, 1) and int(np.prod([max(s, 1) for s in shape[1:]])) == data.size:
            shape = shape[1:]
    shape = [int(s) for s in shape]
    if int(np.prod(shape)) != data.size:
        raise ValueError(f"blob shape {shape} does not match its {data.size} values")
    return data.reshape(shape)


def read_caffemodel(path_or_bytes: str | Path | bytes) -> dict[str, dict]:
    """{layer name: {"type": str, "blobs": [np.ndarray, …]}} for every layer with weights."""
    buf = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    layers: dict[str, dict] = {}
    for field, wire, val in iter_fields(bytes(buf)):
        if wire != 2 or field not in (2, 100):
            continue
        name_f, type_f, blobs_f = (1, 2, 7) if field == 100 else (4, 5, 6)
        name, ltype, blobs = "", "", []
        for f2, w2, v2 in iter_fields(val):
            if f2 == name_f and w2 == 2:
                name = v2.decode("utf-8")
            elif f2 == type_f:
                ltype = v2.decode("utf-8") if w2 == 2 else f"V1:{v2}"
            elif f2 == blobs_f and w2 == 2:
                blobs.append(_parse_blob(v2))
        if blobs:
            layers[name] = {"type": ltype, "blobs": blobs}
    return layers


def _key(field: int, wire: int) -> bytes:
    return _enc_varint(field << 3 | wire)


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _enc_bytes(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _enc_varint(len(data)) + data


def write_caffemodel(layers: list[tuple[str, str, list[np.ndarray]]], net_name: str = "net") -> bytes:
    """Encode (name, type, blobs) layers as a NetParameter (new-style ``layer`` field, BlobShape)."""
    out = _enc_bytes(1, net_name.encode())
    for name, ltype, blobs in layers:
        msg = _enc_bytes(1, name.encode()) + _enc_bytes(2, ltype.encode())
        for b in blobs:
            b = np.asarray(b, np.float32)
            dims = b"".join(_enc_varint(int(d)) for d in b.shape)
            blob = _enc_bytes(7, _enc_bytes(1, dims)) + _enc_bytes(5, b.astype("<f4").tobytes())
            msg += _enc_bytes(7, blob)
        out += _enc_bytes(100, msg)
    return out


def read_prototxt_layers(path: str | Path) -> list[tuple[str, str]]:
    """(name, type) of the layers declared in a deploy prototxt (text format, only what we need)."""
    text = Path(path).read_text()
    found = []
    for block in re.finditer(r"layers?\s*\{", text):
        depth, i = 1, block.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[block.end(): i - 1]
        top = re.sub(r"\{[^{}]*\}", "", body)  # drop nested params
        n = re.search(r'name\s*:\s*"([^"]+)"', top)
        t = re.search(r'type\s*:\s*"?([A-Za-z_0-9]+)"?', top)
        if n:
            found.append((n.group(1), t.group(1) if t else ""))
    return found


def caffe_to_state_dict(layers: dict[str, dict]) -> dict[str, torch.Tensor]:
    """Weights and biases by layer name (Caffe's layouts equal PyTorch's for conv, deconv, fc)."""
    state = {}
    for name, layer in layers.items():
        blobs = layer["blobs"]
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(blobs[0]))
        if len(blobs) > 1:
            state[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(blobs[1]).reshape(-1))
    return state


def convert(caffemodel: str | Path, out: str | Path, prototxt: str | Path | None = None) -> dict:
    """caffemodel → safetensors (fp32). With a prototxt, every weight layer must be declared there."""
    from safetensors.torch import save_file

    layers = read_caffemodel(caffemodel)
    if not layers:
        raise ValueError(f"{caffemodel} holds no layers with weights")
    if prototxt is not None:
        declared = {n for n, _ in read_prototxt_layers(prototxt)}
        missing = sorted(set(layers) - declared)
        if missing:
            raise ValueError(f"layers in the caffemodel but not in the prototxt: {missing}")
    state = caffe_to_state_dict(layers)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out))
    return {k: list(v.shape) for k, v in state.items()}


# ----------------------------------------------------------------------------- CaffeNet


class CaffeNet(nn.Module):
    """BVLC CaffeNet (the paper's E and C): conv1–5, fc6–8; pool5 is h1 and fc6 (post-ReLU) is h."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
        self.fc6 = nn.Linear(256 * 6 * 6, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, 1000)
        self.lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)

    @staticmethod
    def _pool(x):
        return F.max_pool2d(x, 3, 2, ceil_mode=True)

    def pool5(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lrn(self._pool(F.relu(self.conv1(x))))
        x = self.lrn(self._pool(F.relu(self.conv2(x))))
        x = F.relu(self.conv4(F.relu(self.conv3(x))))
        return self._pool(F.relu(self.conv5(x)))

    def fc6_from_pool5(self, p5: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc6(p5.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc6_from_pool5(self.pool5(x))
        return self.fc8(F.relu(self.fc7(h)))


#: per-channel BGR mean of ILSVRC 2012 (the release subtracts the mean image; its channel means)
BGR_MEAN = (104.0, 117.0, 123.0)


class CaffeNetClassifier(ImageClassifier):
    """CaffeNet over RGB images in [0, 1]: the release's preprocessing (BGR, 0–255, minus mean, 227 px)."""

    def __init__(self, net: CaffeNet):
        super().__init__(net, "caffenet", 227, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.register_buffer("bgr_mean", torch.tensor(BGR_MEAN).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x):
        x = super().preprocess(x)
        return x.flip(1) * 255.0 - self.bgr_mean


class CaffeNetEncoder(nn.Module):
    """E for the paper bundle: h1 = pool5, h = fc6 (post-ReLU), from RGB images in [0, 1]."""

    def __init__(self, classifier: CaffeNetClassifier):
        super().__init__()
        self.classifier = classifier
        self.input_size = 227

    def encode_h1(self, x):
        return self.classifier.net.pool5(self.classifier.preprocess(x))

    def h1_to_h(self, h1):
        return self.classifier.net.fc6_from_pool5(h1)

    def forward(self, x):
        return self.h1_to_h(self.encode_h1(x))


class PaperGeneratorRGB(nn.Module):
    """The release's G with its output mapped to RGB in [0, 1] and cropped to the centre 227×227."""

    def __init__(self, g: PaperFc6Generator):
        super().__init__()
        self.g = g
        self.register_buffer("bgr_mean", torch.tensor(BGR_MEAN).view(1, 3, 1, 1), persistent=False)

    def forward(self, h):
        out = PaperFc6Generator.crop(self.g(h))
        return ((out + self.bgr_mean) / 255.0).flip(1).clamp(0, 1)


def load_paper_bundle(weights_dir: str | Path, device: str = "cpu"):
    """The paper's exact networks from converted files: ``generator.safetensors`` (fc6 G) and
    ``caffenet.safetensors`` (CaffeNet) in ``weights_dir``."""
    from safetensors.torch import load_file

    from .registry import ModelBundle

    d = Path(weights_dir)
    for name in ("generator.safetensors", "caffenet.safetensors"):
        if not (d / name).exists():
            raise FileNotFoundError(f"missing {d / name}: convert the release's caffemodels with "
                                    "python -m ppgn_core convert-caffe")
    g = PaperFc6Generator()
    g.load_state_dict(load_file(str(d / "generator.safetensors")))
    net = CaffeNet()
    net.load_state_dict({k: v for k, v in load_file(str(d / "caffenet.safetensors")).items()
                         if k.split(".")[0] in dict(net.named_children())})
    clf = CaffeNetClassifier(net.eval())
    gen = PaperGeneratorRGB(g.eval())
    for p in gen.parameters():
        p.requires_grad_(False)
    return ModelBundle(name="paper", classifier=clf, encoder=CaffeNetEncoder(clf), generator=gen,
                       code_shape=(4096,), code_mean=0.0, code_std=1.0, code_range=(0.0, 30.0),
                       image_size=227).to(device)
