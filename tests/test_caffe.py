"""The release's models: our Caffe protobuf reader/writer, converter and the paper-architecture G."""

import numpy as np
import pytest
import torch

from ppgn_core.cli import main
from ppgn_core.nets.caffe import (CaffeNet, convert, read_caffemodel, read_prototxt_layers, write_caffemodel)
from ppgn_core.nets.generators import PaperFc6Generator


def _tiny_layers():
    rng = np.random.default_rng(0)
    return [("conv1", "Convolution", [rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)]),
            ("deconv0", "Deconvolution", [rng.standard_normal((4, 3, 4, 4)), rng.standard_normal(3)]),
            ("fc6", "InnerProduct", [rng.standard_normal((5, 7)), rng.standard_normal(5)])]


def test_caffemodel_round_trip(tmp_path):
    layers = _tiny_layers()
    path = tmp_path / "tiny.caffemodel"
    path.write_bytes(write_caffemodel(layers))
    parsed = read_caffemodel(path)
    assert list(parsed) == ["conv1", "deconv0", "fc6"]
    for name, ltype, blobs in layers:
        assert parsed[name]["type"] == ltype
        for a, b in zip(blobs, parsed[name]["blobs"]):
            assert np.array_equal(a.astype(np.float32), b)


def test_convert_cli_writes_safetensors(tmp_path):
    from safetensors.torch import load_file

    (tmp_path / "m.caffemodel").write_bytes(write_caffemodel(_tiny_layers()))
    (tmp_path / "deploy.prototxt").write_text(
        'name: "tiny"\nlayer { name: "conv1" type: "Convolution" convolution_param { num_output: 4 } }\n'
        'layer { name: "deconv0" type: "Deconvolution" }\nlayer { name: "fc6" type: "InnerProduct" }\n')
    assert read_prototxt_layers(tmp_path / "deploy.prototxt") == [
        ("conv1", "Convolution"), ("deconv0", "Deconvolution"), ("fc6", "InnerProduct")]
    rc = main(["convert-caffe", "--caffemodel", str(tmp_path / "m.caffemodel"), "--prototxt",
               str(tmp_path / "deploy.prototxt"), "--out", str(tmp_path / "m.safetensors")])
    assert rc == 0
    state = load_file(str(tmp_path / "m.safetensors"))
    assert state["conv1.weight"].shape == (4, 3, 3, 3) and state["fc6.bias"].shape == (5,)
    assert torch.equal(state["fc6.weight"], torch.from_numpy(_tiny_layers()[2][2][0].astype(np.float32)))


def test_convert_refuses_undeclared_and_truncated(tmp_path):
    data = write_caffemodel(_tiny_layers())
    (tmp_path / "m.caffemodel").write_bytes(data)
    (tmp_path / "p.prototxt").write_text('layer { name: "conv1" type: "Convolution" }')
    with pytest.raises(ValueError, match="not in the prototxt"):
        convert(tmp_path / "m.caffemodel", tmp_path / "o.safetensors", tmp_path / "p.prototxt")
    with pytest.raises(ValueError, match="truncated"):
        read_caffemodel(data[: len(data) // 2])


def test_paper_generator_layer_shapes_and_output():
    g = PaperFc6Generator()
    shapes = {n: tuple(getattr(g, n).weight.shape) for n in PaperFc6Generator.layer_names}
    assert shapes["defc7"] == (4096, 4096) and shapes["defc6"] == (4096, 4096) and shapes["defc5"] == (4096, 4096)
    # ConvTranspose2d weights are (in, out, k, k); Conv2d (out, in, k, k)
    assert shapes["deconv5"] == (256, 256, 4, 4) and shapes["conv5_1"] == (512, 256, 3, 3)
    assert shapes["deconv4"] == (512, 256, 4, 4) and shapes["conv4_1"] == (256, 256, 3, 3)
    assert shapes["deconv3"] == (256, 128, 4, 4) and shapes["conv3_1"] == (128, 128, 3, 3)
    assert shapes["deconv2"] == (128, 64, 4, 4) and shapes["deconv1"] == (64, 32, 4, 4)
    assert shapes["deconv0"] == (32, 3, 4, 4)
    with torch.no_grad():
        out = g(torch.zeros(1, 4096))
    assert out.shape == (1, 3, 256, 256)
    assert PaperFc6Generator.crop(out).shape == (1, 3, 227, 227)


def test_caffenet_shapes():
    net = CaffeNet().eval()
    with torch.no_grad():
        x = torch.zeros(1, 3, 227, 227)
        assert net.pool5(x).shape == (1, 256, 6, 6)
        assert net(x).shape == (1, 1000)


def test_paper_bundle_samples_with_converted_weights(tmp_path):
    """--bundle paper: the release's G and CaffeNet (random weights here) plug into the sampler."""
    from safetensors.torch import save_file

    from ppgn_core.conditions import ClassCondition
    from ppgn_core.nets.caffe import load_paper_bundle
    from ppgn_core.presets import build_sampler

    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in PaperFc6Generator().state_dict().items()},
              str(tmp_path / "generator.safetensors"))
    save_file({k: v.contiguous() for k, v in CaffeNet().state_dict().items()}, str(tmp_path / "caffenet.safetensors"))
    b = load_paper_bundle(tmp_path)
    s = build_sampler("dgn-am", b, ClassCondition(b.classifier, 980), seed=0)
    snaps = list(s.run(s.init(1), steps=1))
    assert snaps[-1].image.shape == (1, 3, 227, 227)
    assert snaps[-1].z.min() >= 0 and snaps[-1].z.max() <= 30
    with pytest.raises(FileNotFoundError, match="convert-caffe"):
        load_paper_bundle(tmp_path / "nothing")
