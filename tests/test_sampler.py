"""The MALA-approx engine on tiny random networks (paper Eq. 5, 7, 11)."""

import dataclasses

import pytest
import torch

from ppgn_core.conditions import ClassCondition, InpaintContext, MultiCondition, UnitCondition, evaluate
from ppgn_core.presets import PRESETS, build_sampler
from ppgn_core.priors import DAEPrior, JointPrior
from ppgn_core.sampler import Control, Sampler, StepSettings, gated_objective
from ppgn_core.spaces import CodeSpace


def _code_space(b, clamp=True):
    return CodeSpace(b.generator, b.encoder, b.code_shape, 0.0, 1.0, b.code_range if clamp else None)


def test_condition_term_raises_log_probability_in_every_chain(tiny):
    cond = ClassCondition(tiny.classifier, [3, 17, 500, 999])
    s = build_sampler("dgn-am", tiny, cond, seed=0, step_form="eq5", eps1=0.0, eps2=1.0, eps3=0.0)
    snaps = list(s.run(s.init(4), steps=30, snapshot_every=30))
    start, end = snaps[0].condition, snaps[-1].condition
    assert snaps[-1].step == 30
    assert torch.all(end > start), (start, end)
    assert torch.all(snaps[-1].p_class > snaps[0].p_class)


@pytest.mark.parametrize("prior_kind", ["joint", "hdae"])
def test_prior_term_moves_code_toward_reconstruction_and_lowers_energy(tiny, prior_kind):
    prior = JointPrior(tiny.generator, tiny.encoder) if prior_kind == "joint" else DAEPrior(tiny.code_dae)
    space = _code_space(tiny, clamp=False)
    cond = ClassCondition(tiny.classifier, 1)
    ctl = Control(StepSettings(eps1=0.2, eps2=0.0, eps3=0.0, step_form="eq5"))
    s = Sampler(space, prior, cond, ctl, seed=0)
    z0 = s.init(3)
    r0 = prior.direction(z0, space.to_image, s.gen) + z0  # R(h0)
    snaps = list(s.run(z0, steps=1))
    z1 = snaps[-1].z
    assert torch.all((z1 - r0).flatten(1).norm(dim=1) < (z0 - r0).flatten(1).norm(dim=1))
    snaps = list(Sampler(space, prior, cond, ctl, seed=0).run(z0, steps=20, snapshot_every=20))
    e0, e1 = prior.energy(z0, space.to_image), prior.energy(snaps[-1].z, space.to_image)
    assert torch.all(e1 < e0), (e0, e1)


def test_noise_term_has_requested_standard_deviation(tiny):
    eps3 = 0.37
    space = _code_space(tiny, clamp=False)
    ctl = Control(StepSettings(eps1=0.0, eps2=0.0, eps3=eps3, step_form="eq5"))
    s = Sampler(space, DAEPrior(tiny.code_dae), ClassCondition(tiny.classifier, 1), ctl, seed=3)
    z0 = s.init(8)
    z1 = list(s.run(z0, steps=1))[-1].z
    step = (z1 - z0).flatten()
    assert step.numel() > 1000
    assert abs(step.std().item() - eps3) < 0.03 * eps3
    assert abs(step.mean().item()) < 0.05 * eps3


def test_clamping_holds_under_large_steps(tiny):
    s = build_sampler("joint-ppgn-h", tiny, ClassCondition(tiny.classifier, 5), seed=0,
                      eps1=1.0, eps2=50.0, eps3=3.0, step_form="eq5")
    lo, hi = tiny.code_range
    for snap in s.run(s.init(4), steps=10):
        assert snap.z.min() >= lo and snap.z.max() <= hi
        assert torch.isfinite(snap.image).all()


def test_release_step_is_normalised_and_lr_decays_linearly(tiny):
    space = _code_space(tiny, clamp=False)
    ctl = Control(StepSettings(eps1=0.0, eps2=1.0, eps3=0.0, step_form="release", lr=0.5, lr_end=0.1))
    s = Sampler(space, DAEPrior(tiny.code_dae), ClassCondition(tiny.classifier, 1), ctl, seed=0)
    snaps = list(s.run(s.init(2), steps=5))
    moves = [(b.z - a.z).abs().flatten(1).mean(1) for a, b in zip(snaps[:-1], snaps[1:])]
    expected = [0.5 + (0.1 - 0.5) * t / 4 for t in range(5)]
    for m, e in zip(moves, expected):
        assert torch.allclose(m, torch.full_like(m, e * space.step_scale), rtol=1e-4)


def test_eps1_schedule_goes_linearly_to_eps1_end(tiny):
    # eq5 with only the prior acting: each step is ε1_t·(R(z) − z), ε1_t linear from ε1 to ε1_end
    space = _code_space(tiny, clamp=False)
    prior = DAEPrior(tiny.code_dae)
    ctl = Control(StepSettings(eps1=0.3, eps1_end=0.0, eps2=0.0, eps3=0.0, step_form="eq5"))
    s = Sampler(space, prior, ClassCondition(tiny.classifier, 1), ctl, seed=0)
    snaps = list(s.run(s.init(2), steps=4))
    for t, (a, b) in enumerate(zip(snaps[:-1], snaps[1:])):
        expected = (0.3 - 0.3 * t / 3) * prior.direction(a.z, space.to_image, None)
        assert torch.allclose(b.z - a.z, expected, atol=1e-6)
    assert torch.equal(snaps[-1].z, snaps[-2].z)  # ε1 reached 0 at the last step
    with pytest.raises(ValueError, match="eps1_end"):
        StepSettings(eps1_end=-1.0).validate()


def test_inpainting_keeps_observed_pixels_bit_exact(tiny):
    torch.manual_seed(0)
    x_real = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:20, 10:24] = 1
    ctx = InpaintContext(x_real, mask, eps4=1.0)
    s = build_sampler("noiseless-joint-ppgn-h", tiny, ClassCondition(tiny.classifier, 7), seed=0, context=ctx,
                      eps4=1.0)
    keep = (mask == 0).expand(2, 3, 32, 32)
    for snap in s.run(s.init(2, start=x_real), steps=6):
        assert torch.equal(snap.image[keep], x_real.expand(2, 3, 32, 32)[keep])
    assert not torch.equal(snap.image[~keep], x_real.expand(2, 3, 32, 32)[~keep])


def test_inpainting_never_reads_the_pixels_it_fills(tiny):
    """Two photos that differ only under the mask give the same start, class and fill: the start code and
    the top class are read from the photo with that region greyed out, and C sees it clamped."""
    from ppgn_core.inpaint import run_inpaint

    g = torch.Generator().manual_seed(4)
    x_a = torch.rand(1, 3, 32, 32, generator=g)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 6:22, 10:26] = 1
    x_b = torch.where(mask > 0, torch.rand(1, 3, 32, 32, generator=g), x_a)
    runs = [run_inpaint(tiny, x, mask, preset="noiseless-joint-ppgn-h", steps=4, seed=0, eps4=1.0) for x in (x_a, x_b)]
    assert runs[0]["class"] == runs[1]["class"]
    assert torch.equal(runs[0]["snapshots"][0].z, runs[1]["snapshots"][0].z)
    assert torch.equal(runs[0]["images"], runs[1]["images"])
    inside = mask.expand_as(x_a) > 0
    for fill in ("grey", "telea"):  # either fill reads only the pixels around the region
        a, b = (InpaintContext(x_a, mask, start_fill=fill).hide(x) for x in (x_a, x_b))
        assert torch.equal(a, b) and torch.equal(a[~inside], x_a[~inside])
        assert (a[inside] == 0.5).all() if fill == "grey" else a[inside].std() > 0.01
    with pytest.raises(ValueError, match="start_fill"):
        InpaintContext(x_a, mask, start_fill="blur")


def test_context_term_lowers_context_error(tiny):
    torch.manual_seed(1)
    x_real = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 4:16, 4:16] = 1
    ctx = InpaintContext(x_real, mask, eps4=1.0)
    s = build_sampler("dgn-am", tiny, ClassCondition(tiny.classifier, 7), seed=0, context=ctx,
                      eps1=0.0, eps2=0.0, eps3=0.0, eps4=1.0)
    z0 = s.init(2)
    snaps = list(s.run(z0, steps=15, snapshot_every=15))
    before = ctx.context_loss(tiny.generator(z0))
    after = ctx.context_loss(tiny.generator(snaps[-1].z))
    assert torch.all(after < before)


def test_same_seed_same_chain_and_different_seed_different_chain(tiny):
    cond = ClassCondition(tiny.classifier, 9)

    def chain(seed):
        s = build_sampler("joint-ppgn-h", tiny, cond, seed=seed, eps3=0.1)
        return torch.stack([sn.z for sn in s.run(s.init(2), steps=8)])

    a, b, c = chain(11), chain(11), chain(12)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_changed_eps_takes_effect_at_next_step(tiny):
    cond = ClassCondition(tiny.classifier, 9)
    s = build_sampler("dgn-am", tiny, cond, seed=0, step_form="eq5", eps1=0.0, eps2=1.0, eps3=0.0)
    zs = []
    for snap in s.run(s.init(2), steps=6):
        zs.append(snap.z)
        if snap.step == 2:
            s.control.update(eps2=0.0)  # freeze from step 3 on
    eps2_by_step = [row["eps2"] for row in s.schedule]
    assert eps2_by_step == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert not torch.equal(zs[2], zs[3])  # step 2 still used ε2 = 1
    assert torch.equal(zs[3], zs[4]) and torch.equal(zs[4], zs[6])


def test_stop_ends_chain_early_with_final_snapshot(tiny):
    s = build_sampler("dgn-am", tiny, ClassCondition(tiny.classifier, 2), seed=0)
    snaps = []
    for snap in s.run(s.init(1), steps=50):
        snaps.append(snap)
        if snap.step == 4:
            s.control.stop()
    assert snaps[-1].final and snaps[-1].step == 5


def test_nonfinite_chain_is_reverted_and_reported(tiny):
    class Exploding(DAEPrior):
        def direction(self, z, to_image, gen):
            d = torch.zeros_like(z)
            d[0] = float("nan")
            return d

    space = _code_space(tiny, clamp=False)
    ctl = Control(StepSettings(eps1=1.0, eps2=1.0, eps3=0.0, step_form="eq5"))
    s = Sampler(space, Exploding(tiny.code_dae), ClassCondition(tiny.classifier, 1), ctl, seed=0)
    z0 = s.init(2)
    snaps = list(s.run(z0, steps=2))
    assert torch.isfinite(snaps[-1].z).all() and torch.isfinite(snaps[-1].image).all()
    assert torch.equal(snaps[-1].z[0], z0[0])
    assert snaps[1].recovered == [0] and s.recoveries == 2


def test_unit_and_multi_conditions(tiny):
    unit = UnitCondition(tiny.classifier, "blocks.1:5")
    s = build_sampler("dgn-am", tiny, unit, seed=0, step_form="eq5", eps2=1.0, eps3=0.0)
    snaps = list(s.run(s.init(3), steps=20, snapshot_every=20))
    assert torch.all(snaps[-1].condition > snaps[0].condition)
    multi = MultiCondition([(ClassCondition(tiny.classifier, 1), 1.0), (ClassCondition(tiny.classifier, 2), 0.5)])
    x = torch.rand(2, 3, 32, 32)
    out = evaluate(multi, x)
    assert torch.allclose(out.objective, out.values[0] + 0.5 * out.values[1])
    pos = UnitCondition(tiny.classifier, "blocks.0:3@1,2")
    with tiny.classifier.capture(["blocks.0"]) as acts:
        logits = tiny.classifier(x)
    assert torch.allclose(pos.value(logits, acts), acts["blocks.0"][:, 3, 1, 2])


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_runs_and_stays_finite(tiny, name):
    s = build_sampler(name, tiny, ClassCondition(tiny.classifier, 4), seed=0)
    snaps = list(s.run(s.init(2), steps=3))
    assert snaps[-1].image.shape == (2, 3, 32, 32)
    assert torch.isfinite(snaps[-1].image).all()
    assert 0 <= snaps[-1].image.min() and snaps[-1].image.max() <= 1


def test_annealed_preset_equals_the_evaluated_overrides():
    # README's paper20 row for annealed-joint-ppgn-h was run as noiseless-joint-ppgn-h with these overrides
    a, n = PRESETS["annealed-joint-ppgn-h"], PRESETS["noiseless-joint-ppgn-h"]
    assert a.space == n.space and a.prior == n.prior
    # (that run predates the robust condition, which the noiseless preset now turns on by default)
    assert a.settings() == n.settings(lr=0.05, lr_end=0.05, eps1=3e-4, eps1_end=0.0, robust_k=0, p_target=1.0,
                                      at_target="prior")


def test_ppgn_x_preset_converts_pixel_units():
    st = PRESETS["ppgn-x"].settings()
    assert st.eps1 == 1.0
    assert st.eps2 == pytest.approx(1e-5 / 255 ** 2)
    assert st.eps3 == pytest.approx(25.6 / 255)


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="eps3"):
        StepSettings(eps3=float("nan")).validate()
    with pytest.raises(ValueError, match="step_form"):
        dataclasses.replace(StepSettings(), step_form="adam").validate()
    with pytest.raises(ValueError, match="eps1"):
        Control(StepSettings()).update(eps1=-1.0)


def test_prior_conflict_projection_never_pulls_against_the_condition(tiny):
    # eq5 step minus the condition term is the prior term; "project" drops its part along −∂log p/∂z
    space = _code_space(tiny, clamp=False)
    keep = StepSettings(eps1=0.5, eps2=1.0, eps3=0.0, step_form="eq5")
    proj = dataclasses.replace(keep, prior_conflict="project").validate()
    s = Sampler(space, DAEPrior(tiny.code_dae), ClassCondition(tiny.classifier, list(range(8))), Control(keep), seed=0)
    z = s.rule.begin(s.init(8), 10)
    plan = s.rule.plan(0, keep)
    terms = s.rule.terms(z, keep, plan)
    grad = terms.condition
    p_keep = s.rule.update(z, terms, keep, plan) - z - grad
    p_proj = s.rule.update(z, terms, proj, plan) - z - grad
    dot_keep = (p_keep * grad).flatten(1).sum(1)
    dot_proj = (p_proj * grad).flatten(1).sum(1)
    agree = dot_keep >= 0
    assert agree.any() and (~agree).any()  # both cases occur in this batch
    assert torch.allclose(p_proj[agree], p_keep[agree])
    assert torch.allclose(dot_proj[~agree], torch.zeros(int((~agree).sum())), atol=1e-5 * float(dot_keep.abs().max()))
    assert torch.all(p_proj[~agree].flatten(1).norm(dim=1) < p_keep[~agree].flatten(1).norm(dim=1))
    with pytest.raises(ValueError, match="prior_conflict"):
        dataclasses.replace(keep, prior_conflict="clip").validate()


def test_a_picked_step_size_keeps_the_schedule_in_proportion():
    from ppgn_core.jobs import SampleRequest
    from ppgn_core.presets import get_preset

    decaying = get_preset("hand-designed").settings()
    assert (decaying.lr, decaying.lr_end) == (0.05, 0.02)
    assert decaying.step_sizes(0.1) == pytest.approx({"lr": 0.1, "lr_end": 0.04})
    constant = get_preset("dgn-am").settings()
    assert constant.step_sizes(0.3) == {"lr": 0.3, "lr_end": 0.3}
    assert StepSettings(lr=0.0, lr_end=0.0).step_sizes(0.2) == {"lr": 0.2, "lr_end": 0.2}
    picked = SampleRequest(classes=[1], preset="hand-designed", lr=0.1).validate().overrides()
    assert picked["lr"] == 0.1 and picked["lr_end"] == pytest.approx(0.04)
    assert SampleRequest(classes=[1], preset="hand-designed", lr=0.1, lr_end=0.1).validate().overrides()["lr_end"] == 0.1
    assert SampleRequest(classes=[1], lr=0.1).validate().overrides()["lr_end"] == 0.1  # the default: constant


def test_realism_term_raises_the_discriminators_score_and_leaves_the_condition_alone(tiny):
    cond = ClassCondition(tiny.classifier, [3, 17, 500])
    base = dict(step_form="eq5", eps1=0.0, eps2=0.0, eps3=0.0)
    plain = build_sampler("dgn-am", tiny, cond, seed=0, **base)
    z0 = plain.rule.begin(plain.init(3), 1)
    settings = plain.control.settings
    plan = plain.rule.plan(0, settings)
    assert torch.equal(plain.rule.update(z0, plain.rule.terms(z0, settings, plan), settings, plan),
                       z0)  # realism 0 and ε2 0: nothing moves
    s = build_sampler("dgn-am", tiny, cond, seed=0, realism=5.0, **base)
    x0 = s.image(z0)
    last = list(s.run(z0, steps=20, snapshot_every=20))[-1]
    with torch.no_grad():
        d0, d1 = tiny.discriminator(x0), tiny.discriminator(last.image)
    assert torch.all(d1 > d0), (d0, d1)
    assert s.realism.label == "realism (D)"


def test_realism_without_a_discriminator_is_a_clear_error_before_any_step(tiny):
    import dataclasses as dc

    no_d = dc.replace(tiny, discriminator=None)
    s = build_sampler("dgn-am", no_d, ClassCondition(tiny.classifier, 1), seed=0, realism=1.0)
    with pytest.raises(ValueError, match="discriminator"):
        next(s.run(s.init(1), steps=3))
    with pytest.raises(ValueError, match="realism"):
        StepSettings(realism=-1.0).validate()
    with pytest.raises(ValueError, match="realism"):
        StepSettings(realism=float("nan")).validate()


def test_a_chain_that_reached_p_target_follows_the_prior_alone(tiny):
    cond = ClassCondition(tiny.classifier, [3, 17])
    kw = dict(seed=0, step_form="eq5", eps1=0.1, eps3=0.0)
    satisfied = build_sampler("noiseless-joint-ppgn-h", tiny, cond, p_target=1e-9, at_target="prior",
                              **kw)  # every chain satisfied at once
    prior_only = build_sampler("noiseless-joint-ppgn-h", tiny, cond, eps2=0.0, **kw)
    pushed = build_sampler("noiseless-joint-ppgn-h", tiny, cond, p_target=1.0, **kw)  # the condition always acts
    z0 = satisfied.init(2)
    ends = [list(s.run(z0, steps=5, snapshot_every=5))[-1].z for s in (satisfied, prior_only, pushed)]
    assert torch.allclose(ends[0], ends[1])
    assert not torch.allclose(ends[0], ends[2])
    with pytest.raises(ValueError, match="p_target"):
        StepSettings(p_target=0.0).validate()
    with pytest.raises(ValueError, match="p_target"):
        StepSettings(p_target=1.5).validate()


def test_p_target_gates_each_chain_on_its_own(tiny):
    """Only chains at or above the target lose the condition term; the others keep it."""
    from ppgn_core.conditions import ConditionOutput

    out = ConditionOutput(torch.tensor([-0.1, -3.0], requires_grad=True), [], torch.tensor([0.95, 0.05]), None)
    gated = gated_objective(out, 0.9)
    (g,) = torch.autograd.grad(gated.sum(), out.objective)
    assert g.tolist() == [0.0, 1.0]
    assert gated_objective(out, 1.0) is out.objective


def test_a_chain_that_reached_p_target_can_stop_where_it_is(tiny):
    cond = ClassCondition(tiny.classifier, [3, 17])
    kw = dict(seed=0, step_form="eq5", eps1=0.1, eps3=0.01)
    s = build_sampler("noiseless-joint-ppgn-h", tiny, cond, p_target=1e-9, at_target="stop", **kw)
    z0 = s.init(2)
    snaps = list(s.run(z0, steps=4))
    assert all(torch.equal(sn.z, z0) for sn in snaps)  # satisfied from the start: no step, no noise
    moving = build_sampler("noiseless-joint-ppgn-h", tiny, cond, p_target=1.0, at_target="stop", **kw)
    assert not torch.equal(list(moving.run(z0, steps=4))[-1].z, z0)  # p_target 1: never satisfied
    with pytest.raises(ValueError, match="at_target"):
        StepSettings(at_target="halt").validate()


class _RecordingScoreDAE(torch.nn.Module):
    """A noise-conditional R_h stand-in: the exact denoiser of standardised codes u ~ N(0, 1),
    E[u | u + σn] = ũ/(1 + σ²), around a per-element mean and spread; it records every σ it sees."""

    def __init__(self, code_shape, mean=2.0, std=3.0):
        super().__init__()
        self.code_shape, self.mean, self.std, self.sigmas = tuple(code_shape), mean, std, []

    def standardise(self, h):
        return (h - self.mean) / self.std

    def unstandardise(self, u):
        return self.mean + self.std * u

    def denoise_standardised(self, u, sigma):
        self.sigmas.append(float(sigma))
        return u / (1 + float(sigma) ** 2)

    def forward(self, h, sigma):
        return self.unstandardise(self.denoise_standardised(self.standardise(h), sigma))


def test_annealed_prior_lowers_its_noise_level_geometrically_over_the_chain(tiny):
    from ppgn_core.priors import AnnealedDAEPrior

    dae = _RecordingScoreDAE(tiny.code_shape)
    prior = AnnealedDAEPrior(dae, 2.0, 0.02)
    space = _code_space(tiny, clamp=False)
    ctl = Control(StepSettings(eps1=0.1, eps2=1.0, eps3=0.0))
    s = Sampler(space, prior, ClassCondition(tiny.classifier, 1), ctl, seed=0)
    snaps = list(s.run(s.init(2), steps=5))
    assert dae.sigmas == pytest.approx([2.0 * 0.01 ** (t / 4) for t in range(5)])  # σ_start … σ_end
    z0 = snaps[0].z
    assert torch.allclose(prior.direction(z0, space.to_image, None), dae(z0, 0.02) - z0)  # at the last σ
    with pytest.raises(ValueError, match="noise levels"):
        AnnealedDAEPrior(dae, 1.0, 0.0)


def test_codes_sampled_from_a_score_dae_follow_the_code_distribution():
    """With the exact denoiser of N(mean, std²), the probability-flow ODE must turn N(0, σ_max²)
    noise into codes with that mean and spread; the draw is seeded."""
    from ppgn_core.priors import noise_levels, sample_codes

    dae = _RecordingScoreDAE((4, 2, 2), mean=2.0, std=3.0)
    h = sample_codes(dae, 4000, torch.Generator().manual_seed(0), steps=16, sigma_max=10.0, sigma_min=0.02)
    assert h.shape == (4000, 4, 2, 2)
    assert h.mean().item() == pytest.approx(2.0, abs=0.05) and h.std().item() == pytest.approx(3.0, rel=0.03)
    again = sample_codes(dae, 4000, torch.Generator().manual_seed(0), steps=16, sigma_max=10.0, sigma_min=0.02)
    assert torch.equal(h, again)
    levels = noise_levels(16, 10.0, 0.02)
    assert levels[0] == pytest.approx(10.0) and levels[-1] == pytest.approx(0.02)
    assert all(a > b for a, b in zip(levels, levels[1:]))


def test_guided_denoising_churn_is_seeded_and_guidance_can_stop_at_a_noise_level(tiny):
    """churn re-noises each level from the chain's own generator: the same seed gives the same
    images, and they differ from the deterministic ODE's. With guidance_until above σ_max the
    condition never steers: the run is exactly the unguided one (ε2 = 0)."""
    from dataclasses import replace

    from ppgn_core.presets import get_preset

    targets = [3, 17, 500, 999]
    base = get_preset("guided-ppgn-h")

    def final(preset, **overrides):
        s = build_sampler(preset, tiny, ClassCondition(tiny.classifier, targets), seed=5, **overrides)
        return list(s.run(s.init(4), steps=6))[-1]

    churned, again, ode = final(replace(base, churn=0.4)), final(replace(base, churn=0.4)), final(base)
    assert torch.equal(churned.image, again.image) and not torch.equal(churned.image, ode.image)
    assert torch.isfinite(churned.z).all() and churned.z.min() >= tiny.code_range[0]
    unguided = final(base, eps2=0.0)
    never = final(replace(base, guidance_until=base.sigma_start * 2))
    assert torch.equal(never.image, unguided.image) and not torch.equal(ode.image, unguided.image)
    coarse = final(replace(base, guidance_until=1.0))
    assert not torch.equal(coarse.image, unguided.image) and not torch.equal(coarse.image, ode.image)
    with pytest.raises(ValueError, match="churn"):
        build_sampler(replace(base, churn=-0.1), tiny, ClassCondition(tiny.classifier, 1))


def test_guided_denoising_can_take_the_conditions_gradient_at_every_nth_level_only(tiny):
    """guide_every n: C's gradient is taken at levels 0, n, 2n, … only (counted at the autograd call), the
    levels between reuse its direction and still steer toward the class; a snapshot of such a level still
    carries its image and p(class); n = 1 is the every-level run; Heun and n < 1 are refused."""
    from dataclasses import replace

    from ppgn_core.presets import get_preset
    from ppgn_core.sampler import ConditionGradient

    targets = [3, 17, 500, 999]
    base = get_preset("guided-ppgn-h")
    grads = []
    original = ConditionGradient.__call__

    def counting(self, z, raw_image, s, need_grad):
        grads.append(need_grad)
        return original(self, z, raw_image, s, need_grad)

    def run(preset, **overrides):
        grads.clear()
        s = build_sampler(preset, tiny, ClassCondition(tiny.classifier, targets), seed=4, **overrides)
        snaps = list(s.run(s.init(4), steps=9, snapshot_every=3))
        return snaps, sum(grads), s.evaluations

    ConditionGradient.__call__ = counting
    try:
        every, every_grads, _ = run(base)
        third, third_grads, third_evals = run(replace(base, guide_every=3))
        unguided, _, _ = run(base, eps2=0.0)
        again, _, _ = run(replace(base, guide_every=1))
    finally:
        ConditionGradient.__call__ = original
    assert every_grads == 9 and third_grads == third_evals == 3  # levels 0, 3, 6
    assert torch.equal(again[-1].image, every[-1].image)
    assert [sn.step for sn in third] == [0, 3, 6, 9]
    assert all(sn.p_class is not None and torch.isfinite(sn.image).all() for sn in third)
    assert not torch.equal(third[-1].image, every[-1].image)
    assert torch.all(third[-1].p_class > unguided[-1].p_class), (third[-1].p_class, unguided[-1].p_class)
    lo, hi = tiny.code_range
    assert third[-1].z.min() >= lo and third[-1].z.max() <= hi
    with pytest.raises(ValueError, match="guide_every"):
        build_sampler(replace(base, guide_every=0), tiny, ClassCondition(tiny.classifier, 1))
    with pytest.raises(ValueError, match="Heun"):
        build_sampler(replace(base, guide_every=2, solver="heun"), tiny, ClassCondition(tiny.classifier, 1))


def test_guided_denoising_steers_toward_the_class_and_reports_codes_in_range(tiny):
    """Same noise, same R_h: with guidance (ε2 > 0) the final images are more the class than without;
    the chain's steps are its noise levels; the reported z are denoised codes within the code range."""
    from ppgn_core.jobs import schedule_changes
    from ppgn_core.steps import DenoisingStep

    targets = [3, 17, 500, 999]
    finals = {}
    for w in (0.0, 1.0):
        s = build_sampler("guided-ppgn-h", tiny, ClassCondition(tiny.classifier, targets), seed=4, eps2=w)
        assert isinstance(s.rule, DenoisingStep)
        snaps = list(s.run(s.init(4), steps=8, snapshot_every=4))
        assert [sn.step for sn in snaps] == [0, 4, 8] and snaps[-1].final
        lo, hi = tiny.code_range
        assert snaps[-1].z.shape == (4, *tiny.code_shape) and snaps[-1].z.min() >= lo and snaps[-1].z.max() <= hi
        assert s.levels[0] == pytest.approx(s.rule.sigma_max) and s.levels[-1] == pytest.approx(s.rule.sigma_min)
        assert len(s.levels) == 8 and len(schedule_changes(s.schedule)) == 1  # σ is the step's, not a setting
        finals[w] = snaps[-1].p_class
    assert torch.all(finals[1.0] > finals[0.0]), finals
    s = build_sampler("guided-ppgn-h", tiny, ClassCondition(tiny.classifier, 1))
    with pytest.raises(ValueError, match="cannot start from an image"):
        s.init(1, start=torch.rand(1, 3, 32, 32))
    mask = torch.zeros(32, 32)
    mask[8:24, 8:24] = 1
    x_real = torch.rand(3, 32, 32)
    s = build_sampler("guided-ppgn-h", tiny, ClassCondition(tiny.classifier, 1), context=InpaintContext(x_real, mask, 1.0))
    final = list(s.run(s.init(2), 4))[-1]
    assert torch.equal(final.image[:, :, mask == 0], x_real.unsqueeze(0).expand(2, -1, -1, -1)[:, :, mask == 0])

def test_guided_denoising_can_read_the_conditions_gradient_on_the_denoised_code(tiny):
    """guide_on="denoised": C's gradient is taken wrt the prior's denoised code, so the prior never runs
    under autograd (with "noisy" it does at every guided level); the chains still move toward the class,
    differ from the "noisy" run, stay finite and in range; an unknown guide_on is refused."""
    from dataclasses import replace

    from ppgn_core.presets import get_preset

    targets = [3, 17, 500, 999]
    base = get_preset("guided-ppgn-h")

    def run(preset, **overrides):
        s = build_sampler(preset, tiny, ClassCondition(tiny.classifier, targets), seed=4, **overrides)
        graded = []
        denoise = s.rule.prior.denoise

        def watching(u, sigma):
            graded.append(torch.is_grad_enabled() and u.requires_grad)
            return denoise(u, sigma)

        s.rule.prior.denoise = watching
        return list(s.run(s.init(4), steps=8, snapshot_every=4)), graded

    noisy, noisy_graded = run(base)
    denoised, denoised_graded = run(replace(base, guide_on="denoised"))
    unguided, _ = run(replace(base, guide_on="denoised"), eps2=0.0)
    assert sum(noisy_graded) == 8 and not any(denoised_graded)
    assert not torch.equal(denoised[-1].image, noisy[-1].image)
    assert torch.isfinite(denoised[-1].image).all()
    assert torch.all(denoised[-1].p_class > unguided[-1].p_class), (denoised[-1].p_class, unguided[-1].p_class)
    lo, hi = tiny.code_range
    assert denoised[-1].z.min() >= lo and denoised[-1].z.max() <= hi
    with pytest.raises(ValueError, match="guide_on"):
        build_sampler(replace(base, guide_on="pixels"), tiny, ClassCondition(tiny.classifier, 1))
