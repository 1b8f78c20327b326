"""The real condition network (EfficientNet-Lite0 from its PyPI wheel), class names, layers."""

import random

import pytest
import torch

from ppgn_core.conditions import UnitCondition, class_index, imagenet_categories, parse_unit
from ppgn_core.data import label_of, list_images, load_rgb
from tests.conftest import DATA


@pytest.mark.skipif(not DATA.exists(), reason="../shared/data not present")
def test_lite0_top1_on_real_val_photos(lite0):
    files = list_images(DATA / "val")
    files = random.Random(0).sample(files, 200)
    x = torch.stack([torch.from_numpy(load_rgb(f, 128)).permute(2, 0, 1) for f in files]).float() / 255
    y = torch.tensor([label_of(f) for f in files])
    assert lite0.input_size == 224  # 128-px photos are upsampled to 224 inside the classifier
    with torch.no_grad():
        pred = torch.cat([lite0(x[i:i + 50]).argmax(1) for i in range(0, 200, 50)])
    top1 = (pred == y).float().mean().item()
    assert top1 >= 0.50, top1


def test_class_names_and_forgiving_lookup():
    cats = imagenet_categories()
    assert len(cats) == 1000 and cats[980] == "volcano"
    assert class_index("Volcano") == 980
    assert class_index("  golf   BALL ") == 574
    assert class_index("golf_ball") == 574
    assert class_index("980") == 980 and class_index(0) == 0
    with pytest.raises(ValueError, match="closest: 'golf ball'"):
        class_index("golf bal")
    with pytest.raises(ValueError, match="out of range"):
        class_index(1000)


def test_class_search_knows_every_wordnet_name_of_a_class():
    """ImageNet's class 437 is "beacon" in torchvision's list; WordNet also calls it lighthouse, beacon light
    and pharos, and a user typing any of them gets it."""
    for name in ("lighthouse", "Pharos", "beacon light", "beacon_light", "beacon"):
        assert class_index(name) == 437, name
    assert class_index("Tinca tinca") == 0 and class_index("Carassius auratus") == 1
    assert class_index("crane") == 517  # torchvision's name first (WordNet also calls class 134 a crane)
    with pytest.raises(ValueError, match="names 2 classes: 123 .*124"):
        class_index("crawfish")  # a WordNet name of two classes: both are named, none is guessed
    with pytest.raises(ValueError, match="closest: .*'beacon'"):
        class_index("lighthous")


def test_lite0_layers_and_units(lite0):
    layers = dict(lite0.layers())
    assert layers["blocks.10"] == 112 and layers["blocks.15"] == 320
    assert layers["head"] == 1280 and layers["fc"] == 1000
    assert parse_unit("blocks.10:37") == ("blocks.10", 37, None)
    assert parse_unit("blocks.10:37@2,3") == ("blocks.10", 37, (2, 3))
    with pytest.raises(ValueError, match="unit 112 out of range"):
        UnitCondition(lite0, "blocks.10:112")
    with pytest.raises(ValueError, match="unknown layer 'block.10'.*blocks.10"):
        UnitCondition(lite0, "block.10:3")
    with pytest.raises(ValueError, match="layer:unit"):
        parse_unit("blocks.10")


def test_torchvision_classifier_needs_local_weights(tmp_path, monkeypatch):
    from ppgn_core.nets.classifiers import torchvision_classifier

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not in the local torch cache"):
        torchvision_classifier("resnet18")
    with pytest.raises(ValueError, match="unknown torchvision model"):
        torchvision_classifier("no_such_net")


def test_torchvision_classifier_loads_from_cache(tmp_path, monkeypatch):
    import os

    import torchvision.models as tvm

    from ppgn_core.nets.classifiers import torchvision_classifier

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    w = tvm.get_model_weights("resnet18").DEFAULT
    os.makedirs(tmp_path / "checkpoints")
    torch.manual_seed(0)
    ref = tvm.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "checkpoints" / os.path.basename(w.url))
    clf = torchvision_classifier("resnet18")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert clf(x).shape == (1, 1000)
    assert ("layer4.1", 512) in clf.layers()


def test_default_and_imagenette_bundles_load_with_their_own_code_layer():
    from ppgn_core.nets.registry import load_bundle

    new, old = load_bundle("default"), load_bundle("imagenette")
    assert new.code_shape == (112, 8, 8) and new.encoder.h_block == 10  # the 1,000-class G's code
    assert old.code_shape == (320, 4, 4) and old.encoder.h_block == 15
    for b in (new, old):
        with torch.no_grad():
            h = b.encoder(torch.rand(1, 3, 128, 128))
            assert tuple(h.shape[1:]) == b.code_shape
            assert b.generator(h).shape == (1, 3, 128, 128)
            assert b.code_dae(h).shape == h.shape
    with pytest.raises(ValueError, match="unknown bundle"):
        load_bundle("nope")
    assert old.discriminator is None  # the Imagenette bundle ships no D
    with torch.no_grad():
        d = new.discriminator(torch.rand(2, 3, 128, 128))
    assert d.shape == (2,) and torch.isfinite(d).all()  # D, shipped beside the 1,000-class G


def test_residual_code_dae_starts_as_the_identity():
    from ppgn_core.nets.daes import MLPCodeDAE

    h = torch.randn(3, 4, 2, 2)
    assert torch.equal(MLPCodeDAE((4, 2, 2), (8, 4, 2), residual=True)(h), h)
    assert not torch.allclose(MLPCodeDAE((4, 2, 2), (8, 4, 2))(h), h)


def test_conv_code_dae_starts_as_the_identity_and_rebuilds_from_its_config():
    from ppgn_core.nets.daes import ConvCodeDAE, MLPCodeDAE, build_code_dae

    h = torch.randn(3, 6, 4, 4)
    dae = ConvCodeDAE((6, 4, 4), width=8, depth=2)
    assert torch.equal(dae(h), h)
    with torch.no_grad():
        dae.body[-1].bias.fill_(0.5)  # once trained, it changes h
    twin = build_code_dae(dae.config(), (6, 4, 4))
    assert isinstance(twin, ConvCodeDAE) and twin.config() == dae.config()
    twin.load_state_dict(dae.state_dict())
    assert torch.equal(twin(h), dae(h)) and not torch.equal(twin(h), h)
    assert isinstance(build_code_dae({"hidden": [8, 4, 2]}, (6, 4, 4)), MLPCodeDAE)  # older cards name no arch
    with pytest.raises(ValueError, match="spatial code"):
        ConvCodeDAE((1280,))
    with pytest.raises(ValueError, match="unknown code DAE"):
        build_code_dae({"arch": "transformer"}, (6, 4, 4))


def test_conv_code_dae_learns_to_denoise_a_code_with_spatial_structure():
    """Codes whose channels are constant over the positions: a 3×3 convolution sees the neighbours
    that share a position's value, so it can average the noise away (the identity cannot)."""
    import torch.nn.functional as F

    from ppgn_core.nets.daes import ConvCodeDAE

    torch.manual_seed(0)
    dae = ConvCodeDAE((8, 4, 4), width=32, depth=2)
    opt = torch.optim.Adam(dae.parameters(), lr=3e-3)
    for _ in range(300):
        clean = torch.randn(32, 8, 1, 1).expand(32, 8, 4, 4)
        noisy = clean + 0.5 * torch.randn(clean.shape)
        loss = F.mse_loss(dae(noisy), clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
    clean = torch.randn(256, 8, 1, 1).expand(256, 8, 4, 4)
    noisy = clean + 0.5 * torch.randn(clean.shape)
    with torch.no_grad():
        assert F.mse_loss(dae(noisy), clean) < 0.5 * F.mse_loss(noisy, clean)


def test_noise_conditional_code_dae_denoises_at_every_level_and_rebuilds_from_its_config():
    """Codes from four clusters: one network, told the noise level, must pull a noisy code back
    toward its cluster at a small and at a large σ better than its starting point (û = c_skip·ũ)
    does; its standardisation is saved with the weights."""
    from ppgn_core.nets.daes import NoiseConditionalCodeDAE, build_code_dae
    from ppgn_core.train import elementwise_statistics, score_dae_losses

    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(4, 6, 4, 4, generator=g) + 2
    data = centres[torch.randint(0, 4, (512,), generator=g)]
    mean, std = elementwise_statistics(data, chunk=100)
    assert torch.allclose(mean, data.mean(0), atol=1e-4) and torch.allclose(std, data.std(0, unbiased=False), atol=1e-4)
    dae = NoiseConditionalCodeDAE((6, 4, 4), width=32, depth=2, mean=mean, std=std)
    opt = torch.optim.Adam(dae.parameters(), lr=3e-3)
    for _ in range(400):
        loss, _ = score_dae_losses(dae, data[torch.randint(0, 512, (32,), generator=g)], 0.05, 10.0, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for sigma in (0.3, 3.0):
            u = dae.standardise(data[:128])
            noisy = u + sigma * torch.randn(u.shape, generator=g)
            start = dae.preconditioning(torch.tensor(sigma))[0] * noisy
            assert (dae.denoise_standardised(noisy, sigma) - u).pow(2).mean() < 0.5 * (start - u).pow(2).mean(), sigma
    twin = build_code_dae(dae.config(), (6, 4, 4))
    twin.load_state_dict(dae.state_dict())
    h = data[:3] + torch.randn(3, 6, 4, 4, generator=g)
    assert torch.equal(twin(h, 0.5), dae(h, 0.5)) and torch.equal(twin.mean, mean)
    with pytest.raises(ValueError, match="spatial code"):
        NoiseConditionalCodeDAE((1280,))


def test_pooled_head_code_is_what_the_classifier_reads():
    """h_block = number of blocks: h is the pooled 1,280-d head, and the logits from it are Lite0's."""
    from ppgn_core.nets.classifiers import LiteEncoder, load_efficientnet_lite

    net = load_efficientnet_lite(0)
    E = LiteEncoder(net, len(net.blocks), 4)
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        h = E(x)
        assert h.shape == (2, 1280) and E.pooled_head and E.code_shape() == (1280,)
        assert torch.allclose(E.h_to_logits(h), net((x - 0.5) / 0.5), atol=1e-4)
        assert torch.allclose(E.h1_to_h(E.encode_h1(x)), h)
    assert not LiteEncoder(net, 10, 4).pooled_head
    with pytest.raises(ValueError, match="pooled head"):
        LiteEncoder(net, len(net.blocks) + 1, 4)


def test_folded_lite_is_the_same_function_with_no_batch_norm_left():
    """fold_for_inference folds each batch norm into its convolution and moves symmetric padding
    into the convolution: block outputs, logits and the input gradient (what a chain follows) match
    the reference network to float rounding; the stride-2 layers keep their uneven 'same' pad."""
    from ppgn_core.nets.classifiers import load_efficientnet_lite

    ref, folded = load_efficientnet_lite(0, fold=False), load_efficientnet_lite(0)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in ref.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert isinstance(folded.stem[0].static_padding, torch.nn.ZeroPad2d)  # stride 2: pads (0, 1, 0, 1)
    assert isinstance(folded.blocks[0]._depthwise_conv.static_padding, torch.nn.Identity)  # stride 1: in the conv
    x = (torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
    for block in (4, 10, len(ref.blocks) - 1):
        a, b = ref.forward_to(x, block), folded.forward_to(x, block)
        assert (a - b).norm() / a.norm() < 1e-4, block
    grads = [torch.autograd.grad(net(x)[:, 980].sum(), x)[0] for net in (ref, folded)]
    # rounding can move a pre-activation across ReLU6's kink (here 1 of 165,888 in blocks.3: 0.25%)
    assert (grads[0] - grads[1]).norm() / grads[0].norm() < 1e-2
    with torch.no_grad():
        assert torch.equal(ref(x).argmax(1), folded(x).argmax(1))
    with pytest.raises(RuntimeError, match="eval mode"):
        load_efficientnet_lite(0, fold=False).train().fold_for_inference()


def test_every_generator_architecture_rebuilds_from_its_config():
    """A model card keeps G's config(); build_generator makes the same network from it."""
    from ppgn_core.nets.generators import (LaplacianGenerator, UpconvGenerator, VectorCodeGenerator,
                                           build_generator)

    torch.manual_seed(0)
    for G, h in ((UpconvGenerator(8, 4, (16, 8, 8), 32), torch.randn(2, 8, 4, 4)),
                 (VectorCodeGenerator(20, (16, 8, 8), 32), torch.randn(2, 20)),
                 (LaplacianGenerator(8, 4, (16, 8), 32, refiner_width=8), torch.randn(2, 8, 4, 4))):
        twin = build_generator(G.config())
        twin.load_state_dict(G.state_dict())  # strict: the same layers
        with torch.no_grad():
            x = G(h)
            assert x.shape == (2, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
            assert torch.equal(twin(h), x)
    with pytest.raises(ValueError, match="unknown generator architecture"):
        build_generator({"arch": "nope", "widths": [8]})


def test_laplacian_generator_is_its_coarse_image_upsampled_plus_a_residual():
    """With the refiner's residual at zero, the 32-px image is the 16-px one upsampled (in logits);
    ``with_coarse`` gives that coarse image too."""
    import torch.nn.functional as F

    from ppgn_core.nets.generators import LaplacianGenerator

    torch.manual_seed(0)
    G = LaplacianGenerator(8, 4, (16, 8), 32, refiner_width=8)
    h = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        x, coarse = G(h, with_coarse=True)
        assert x.shape == (2, 3, 32, 32) and coarse.shape == (2, 3, 16, 16)
        last = G.refiner.body[-2]
        last.weight.zero_(), last.bias.zero_()
        up = torch.sigmoid(F.interpolate(torch.logit(coarse), scale_factor=2, mode="bilinear", align_corners=False))
        assert not torch.allclose(x, up, atol=1e-3)  # the refiner adds detail
        assert torch.allclose(G(h), up, atol=1e-5)
