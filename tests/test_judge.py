"""The robust judge (the ruler): transforms, precision/recall, and the robust (EOT) condition."""

import pytest
import torch

from ppgn_core.conditions import ClassCondition, evaluate, evaluate_robust, random_views
from ppgn_core.judge import (TRANSFORMS, accuracy_table, down_up, knn_radii, precision_recall, random_crops,
                             RobustJudge)
from ppgn_core.presets import build_sampler
from ppgn_core.sampler import StepSettings

from conftest import ROOT

VAL_1K = ROOT.parent / "shared" / "data" / "imagenet-1k-128" / "val"


def _images(n=3, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_each_transform_is_seeded_deterministic_and_keeps_shape_and_range(name):
    x = _images()
    a, b = TRANSFORMS[name](x, 5), TRANSFORMS[name](x, 5)
    assert torch.equal(a, b)
    n = 4 * len(x) if name == "crops" else len(x)
    assert a.shape == (n, *x.shape[1:]) and a.dtype == torch.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    if name != "plain":
        assert not torch.allclose(a[:len(x)], x)  # it really changes the image


def test_crops_follow_the_seed_and_down_up_removes_fine_detail():
    x = _images(2)
    assert not torch.equal(random_crops(x, 1), random_crops(x, 2))
    checker = (torch.arange(32).view(1, -1) + torch.arange(32).view(-1, 1)) % 2  # 1-px checkerboard
    img = checker.float().expand(1, 3, 32, 32)
    flat = down_up(img, 2)
    assert torch.allclose(flat, torch.full_like(flat, 0.5), atol=1e-6)  # detail finer than 2 px is gone
    smooth = torch.linspace(0, 1, 32).view(1, 1, 1, -1).expand(1, 3, 32, 32)
    assert (down_up(smooth, 2) - smooth).abs().max() < 0.05  # the layout stays


def test_precision_recall_on_known_features():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 8, generator=g)
    same = torch.randn(100, 8, generator=g)
    far = torch.randn(100, 8, generator=g) + 10
    collapsed = torch.randn(100, 8, generator=g) * 0.05  # all samples at one spot of the real manifold
    assert precision_recall(same, real)["precision"] > 0.8
    assert precision_recall(same, real)["recall"] > 0.5
    assert precision_recall(far, real)["precision"] == 0.0
    pr = precision_recall(collapsed, real)
    assert pr["precision"] == 1.0 and pr["recall"] < 0.1  # realistic but no coverage
    radii = knn_radii(real)
    assert torch.allclose(radii, torch.cdist(real, real).sort(1).values[:, 3])
    with pytest.raises(ValueError, match="more than k"):
        knn_radii(real[:3])


@pytest.fixture(scope="module")
def judge():
    return RobustJudge()


@pytest.fixture(scope="module")
def val_photos_and_noise():
    from ppgn_core.data import to_float, val_photos

    ref, ref_labels = val_photos(range(0, 3), max_classes=60)
    held, held_labels = val_photos(range(3, 4), max_classes=60)
    noise = torch.rand(len(held), 3, 128, 128, generator=torch.Generator().manual_seed(0))
    return to_float(ref), to_float(held), held_labels, noise


@pytest.mark.skipif(not VAL_1K.exists(), reason="../shared/data not present")
def test_real_photos_keep_their_class_under_down2_more_often_than_noise(judge, val_photos_and_noise):
    _, held, labels, noise = val_photos_and_noise
    real = accuracy_table(judge.transformed_logits(held, 0, ("plain", "down2")), labels)
    fake = accuracy_table(judge.transformed_logits(noise, 0, ("plain", "down2")), labels)
    assert real["down2"]["top5"] > 0.5 > fake["down2"]["top5"] + 0.3
    assert real["down2"]["top1"] > fake["down2"]["top1"]
    assert real["down2"]["top1"] <= real["plain"]["top1"] + 0.05  # the transform does not help real photos


@pytest.mark.skipif(not VAL_1K.exists(), reason="../shared/data not present")
def test_held_out_real_photos_score_high_precision_and_noise_low(judge, val_photos_and_noise):
    ref, held, _, noise = val_photos_and_noise
    _, ref_feats = judge.predict(ref)
    _, held_feats = judge.predict(held)
    _, noise_feats = judge.predict(noise)
    real_p = precision_recall(held_feats, ref_feats)["precision"]
    noise_p = precision_recall(noise_feats, ref_feats)["precision"]
    assert real_p >= 0.6 and noise_p <= 0.1, (real_p, noise_p)


@pytest.mark.skipif(not VAL_1K.exists(), reason="../shared/data not present")
def test_real_reference_is_cached_and_a_new_seed_rejudges_only_the_held_out_photos(judge, tmp_path, monkeypatch):
    from ppgn_core import data, judge as judge_module

    loaded = []
    val_photos = data.val_photos

    def recording_val_photos(ranks, max_classes=None):
        loaded.append(tuple(ranks))
        return val_photos(ranks, max_classes)

    monkeypatch.setattr(data, "val_photos", recording_val_photos)
    first = judge_module.real_reference(judge, max_classes=12, cache_dir=tmp_path, seed=0)
    assert loaded == [(0, 1, 2), (3,)]  # reference photos, then the held-out ones
    assert len(first.features) == 36 and first.description.endswith("(12)")
    again = judge_module.real_reference(judge, max_classes=12, cache_dir=tmp_path, seed=0)
    assert len(loaded) == 2  # both parts from the cache
    assert torch.equal(again.features, first.features) and again.ceiling == first.ceiling
    other = judge_module.real_reference(judge, max_classes=12, cache_dir=tmp_path, seed=1)
    assert loaded[2:] == [(3,)]  # the reference is seed-free; only the held-out photos are judged again
    assert torch.equal(other.features, first.features) and torch.equal(other.radii, first.radii)
    assert other.ceiling["plain"] == first.ceiling["plain"]  # only the seeded crops may differ


# ----------------------------------------------------------------------------- robust condition (EOT)

def test_random_views_are_seeded_differentiable_and_vary():
    x = _images(2).requires_grad_(True)
    a = random_views(x, 3, torch.Generator().manual_seed(1), blur_sigma=0.5)
    b = random_views(x, 3, torch.Generator().manual_seed(1), blur_sigma=0.5)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.allclose(a[0], a[1])  # each view is its own draw
    assert all(v.shape == x.shape for v in a)
    a[0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_robust_condition_averages_the_views(tiny):
    cond = ClassCondition(tiny.classifier, [3, 5])
    x = torch.rand(2, 3, tiny.image_size, tiny.image_size, generator=torch.Generator().manual_seed(0))
    out = evaluate_robust(cond, x, 4, torch.Generator().manual_seed(2))
    views = random_views(x, 4, torch.Generator().manual_seed(2))
    expected = torch.stack([evaluate(cond, v).objective for v in views]).mean(0)
    assert torch.allclose(out.objective, expected, atol=1e-6)
    assert out.p_class.shape == (2,)


def test_robust_views_in_one_pass_match_view_by_view(tiny, monkeypatch):
    """k·B ≤ ROBUST_ONE_PASS_MAX_IMAGES stacks the views into one classifier pass: per-chain
    classes follow their chains, and objective, p(class), logits and gradient match one pass per view."""
    import ppgn_core.conditions as conditions

    cond = ClassCondition(tiny.classifier, [3, 5])
    x0 = torch.rand(2, 3, tiny.image_size, tiny.image_size, generator=torch.Generator().manual_seed(0))

    def robust(limit):
        monkeypatch.setattr(conditions, "ROBUST_ONE_PASS_MAX_IMAGES", limit)
        x = x0.clone().requires_grad_(True)
        out = evaluate_robust(cond, x, 3, torch.Generator().manual_seed(4))
        return out, torch.autograd.grad(out.objective.sum(), x)[0]

    (one, g_one), (each, g_each) = robust(8), robust(0)
    for a, b in ((one.objective, each.objective), (one.p_class, each.p_class), (one.logits, each.logits)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(g_one, g_each, atol=1e-6) and g_one.abs().sum() > 0
    with pytest.raises(ValueError, match="per-chain classes"):
        evaluate(ClassCondition(tiny.classifier, [3, 5]), torch.cat([x0, x0[:1]]))


def test_sampler_with_robust_condition_raises_the_condition_and_is_seeded(tiny):
    cond = ClassCondition(tiny.classifier, [3, 17])

    def chain(seed, k):
        s = build_sampler("dgn-am", tiny, cond, seed=seed, step_form="eq5", eps1=0.0, eps2=20.0, eps3=0.0,
                          robust_k=k)
        return list(s.run(s.init(2), steps=30, snapshot_every=30))

    a, b, plain = chain(3, 2), chain(3, 2), chain(3, 0)
    assert torch.equal(a[-1].z, b[-1].z)
    assert not torch.allclose(a[-1].z, plain[-1].z)  # the views change the gradient
    with torch.no_grad():  # the condition on the plain images went up, and in every random view too
        assert torch.all(evaluate(cond, a[-1].image).objective > evaluate(cond, a[0].image).objective)
        for seed in (7, 8):
            before = evaluate_robust(cond, a[0].image, 4, torch.Generator().manual_seed(seed)).objective
            after = evaluate_robust(cond, a[-1].image, 4, torch.Generator().manual_seed(seed)).objective
            assert torch.all(after > before)


def test_robust_settings_are_validated():
    with pytest.raises(ValueError, match="robust_k"):
        StepSettings(robust_k=-1).validate()
    with pytest.raises(ValueError, match="robust_k"):
        StepSettings(robust_k=100).validate()
    with pytest.raises(ValueError, match="robust_blur"):
        StepSettings(robust_blur=float("nan")).validate()
