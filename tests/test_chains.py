"""The latent diffusion prior as a PPGN chain (tiny random networks): ε1, ε2 and ε3 each do what they say,
the chain keeps distinct samples without starting over, live changes apply at the next step, Stop keeps
what was made, and the chain commands write what they promise."""

import json
import subprocess
import sys
import threading

import pytest
import torch

from ppgn_core.conditions import ClassCondition
from ppgn_core.presets import build_sampler, get_preset

TARGETS = [3, 17, 500, 999]
LEVELS, ROUND = 6, 4  # a short chain: its first sample over 6 levels, then one every 4


def chain(tiny, seed=0, **settings):
    return build_sampler("ldm-ppgn-h", tiny, ClassCondition(tiny.classifier, TARGETS), seed=seed, levels=LEVELS,
                         round_levels=ROUND, robust_k=0, **settings)


def kept(snaps):
    return [sn for sn in snaps if sn.kept]


def test_the_default_preset_has_three_live_knobs():
    p = get_preset("ldm-ppgn-h")
    assert p.paper_eps == (1.0, 1.0, 4.0) and "—" not in p.describe()
    assert not p.is_chain and p.levels == 30 and p.round_levels == 12


def test_eps1_zero_removes_the_prior_term(tiny):
    """With ε1 = ε2 = 0 no term moves the state: the chain's noise stays as it was drawn; ε1 alone moves it
    by the prior's pull only, toward the prior's own estimate."""
    s = chain(tiny, eps1=0.0, eps2=0.0, eps3=0.0)
    z0 = s.init(4)
    z = s.rule.begin(z0, LEVELS)
    st = s.control.settings
    plan = s.rule.plan(0, st)
    terms = s.rule.terms(z, st, plan)
    assert terms.prior.abs().sum() > 0  # the prior has something to say …
    assert torch.allclose(s.rule.update(z, terms, st, plan), z0, atol=1e-5)  # … and ε1 = 0 takes none of it
    moved = chain(tiny, eps1=1.0, eps2=0.0, eps3=0.0)
    z1 = moved.rule.begin(z0, LEVELS)
    plan = moved.rule.plan(0, moved.control.settings)
    t1 = moved.rule.terms(z1, moved.control.settings, plan)
    step = moved.rule.update(z1, t1, moved.control.settings, plan) - z1
    want = (1 - plan.sigma_next / plan.sigma) * (t1.denoised - z1)  # (σ − σ')·σ·score
    assert torch.allclose(step, want, atol=1e-5)


def test_eps3_zero_makes_a_chain_deterministic_given_its_start(tiny):
    """ε3 = 0: two chains with other seeds from the same start keep the same samples; ε3 > 0: they differ."""
    z0 = chain(tiny).init(4)
    steps = LEVELS + 2 * ROUND
    a = kept(list(chain(tiny, seed=1, eps3=0.0).run(z0, steps, steps)))
    b = kept(list(chain(tiny, seed=2, eps3=0.0).run(z0, steps, steps)))
    assert len(a) == len(b) == 3 and all(torch.equal(x.image, y.image) for x, y in zip(a, b))
    c = kept(list(chain(tiny, seed=1, eps3=2.0).run(z0, steps, steps)))
    d = kept(list(chain(tiny, seed=2, eps3=2.0).run(z0, steps, steps)))
    assert torch.equal(c[0].image, d[0].image) and not torch.equal(c[-1].image, d[-1].image)


def test_raising_eps2_raises_log_p_of_the_class(tiny):
    steps = LEVELS + 2 * ROUND
    objective = {}
    for eps2 in (0.0, 1.0, 3.0):
        snaps = kept(list(chain(tiny, seed=4, eps2=eps2).run(chain(tiny).init(4), steps, steps)))
        objective[eps2] = torch.stack([sn.condition for sn in snaps]).mean()
    assert objective[0.0] < objective[1.0] < objective[3.0], objective


def test_a_chain_keeps_distinct_samples_every_round_without_starting_over(tiny):
    """A sample at the end of the first anneal and after every round; each differs from the one before and
    stays nearer to it than a fresh chain's sample (the chain moves, it does not start over)."""
    steps = LEVELS + 3 * ROUND
    s = chain(tiny, eps3=1.0)
    snaps = list(s.run(s.init(4), steps, 1))
    samples = kept(snaps)
    assert [sn.step for sn in samples] == [LEVELS, LEVELS + ROUND, LEVELS + 2 * ROUND, steps]
    assert samples[-1].final and all(sn.sigma == 0.0 for sn in samples)
    for prev, nxt in zip(samples, samples[1:]):
        assert not torch.allclose(prev.z, nxt.z)
    lo, hi = tiny.code_range
    assert all(sn.z.min() >= lo and sn.z.max() <= hi for sn in samples)
    # the levels: the anneal from σ_max, then each round from ε3 = 1 down to σ_min
    assert s.levels[0] == pytest.approx(10.0) and s.levels[LEVELS] == pytest.approx(1.0)
    assert s.levels[LEVELS + ROUND - 1] == pytest.approx(0.05)
    fresh = kept(list(chain(tiny, seed=9, eps3=1.0).run(chain(tiny, seed=9).init(4), LEVELS, LEVELS)))[0]
    step_dist = (samples[2].z - samples[1].z).flatten(1).norm(dim=1)
    fresh_dist = (fresh.z - samples[1].z).flatten(1).norm(dim=1)
    assert float(step_dist.mean()) < float(fresh_dist.mean())


def test_a_slider_change_takes_effect_at_the_next_step(tiny):
    """ε2 changed after step 3's snapshot: steps 0-3 run as before, step 4 already with the new value (the
    schedule says so, and the state differs from the unchanged run from there on)."""
    steps = LEVELS + ROUND
    z0 = chain(tiny).init(4)
    plain = list(chain(tiny, seed=3).run(z0, steps, 1))
    s = chain(tiny, seed=3)
    changed = []
    for sn in s.run(z0, steps, 1):
        changed.append(sn)
        if sn.step == 3 and not sn.kept:
            s.control.update(eps2=3.0, eps3=0.5)
    assert [row["eps2"] for row in s.schedule[:5]] == [1.0, 1.0, 1.0, 1.0, 3.0]
    regular = lambda snaps: [sn for sn in snaps if not sn.kept and not sn.final]  # noqa: E731
    a, b = regular(plain), regular(changed)
    assert all(torch.equal(x.z, y.z) for x, y in zip(a[:5], b[:5]))  # step 4's snapshot: the state before it
    assert not torch.equal(a[5].z, b[5].z)
    assert s.levels[LEVELS] == pytest.approx(0.5)  # the next round starts from the new ε3


def test_stop_keeps_the_last_finished_sample(tiny):
    """Stopped in the middle of a round, the run's result is the sample it finished last, not a half-denoised
    state; stopped before its first sample, the state it reached, denoised at its level."""
    s = chain(tiny)
    snaps = []
    for sn in s.run(s.init(4), LEVELS + 10 * ROUND, 1):
        snaps.append(sn)
        if sn.kept:
            last_kept = sn
        if sn.step == LEVELS + ROUND + 2:
            s.control.stop()
    final = snaps[-1]
    assert final.final and not final.kept and torch.equal(final.image, last_kept.image)
    assert last_kept.step == LEVELS + ROUND
    early = chain(tiny)
    out = []
    for sn in early.run(early.init(4), LEVELS, 1):
        out.append(sn)
        if sn.step == 2:
            early.control.stop()
    assert out[-1].final and out[-1].step == 3 and not out[-1].kept and torch.isfinite(out[-1].image).all()


def test_the_one_shot_default_is_the_chain_s_first_sample(tiny):
    """A run of the anneal's levels only ends on the chain's first sample: the same picture, bit for bit."""
    z0 = chain(tiny).init(4)
    one = list(chain(tiny, seed=5).run(z0, LEVELS, LEVELS))[-1]
    long = kept(list(chain(tiny, seed=5).run(z0, LEVELS + ROUND, LEVELS)))[0]
    assert one.final and one.kept and torch.equal(one.image, long.image)


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "ppgn_core", *args], capture_output=True, text=True, timeout=timeout)


def test_the_tsne_command_writes_samples_grid_and_json(tmp_path):
    out = tmp_path / "tsne"
    res = _cli("tsne", "--class", "3", "--bundle", "tiny", "--chains", "2", "--steps", "42", "--every", "4",
               "--threshold", "0", "--seed", "1", "--eps", "1", "1", "2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    record = json.loads((out / "tsne.json").read_text())
    assert record["preset"] == "ldm-ppgn-h" and record["eps"] == [1.0, 1.0, 2.0]
    rows = record["samples"]
    assert len(rows) == 2 * (1 + (42 - 30) // 4)  # each chain: its first sample at 30, then every 4 steps
    assert {r["chain"] for r in rows} == {0, 1} and sorted({r["step"] for r in rows}) == [30, 34, 38, 42]
    for r in rows:
        assert 0 <= r["p_class"] <= 1 and (out / r["file"]).exists()
    from PIL import Image

    assert Image.open(out / rows[0]["file"]).size == (32, 32) and (out / "tsne_grid.png").exists()


def test_the_neurons_command_writes_facets_samples_and_activations(tmp_path):
    out = tmp_path / "unit"
    res = _cli("neurons", "--neuron", "blocks.1:3", "--bundle", "tiny", "--chains", "2", "--samples", "2",
               "--every", "3", "--facets", "2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    record = json.loads((out / "facets.json").read_text())
    assert record["unit"] == "blocks.1:3" and len(record["activations"]) == 4
    assert sorted(i for f in record["facets"] for i in f["indices"]) == [0, 1, 2, 3]
    assert (out / "facets.png").exists() and len(list((out / "samples").glob("*.png"))) == 4
    bad = _cli("neurons", "--neuron", "blocks.1", "--bundle", "tiny", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "layer:unit" in bad.stderr


def test_a_run_of_the_chain_stops_from_another_thread(tiny):
    """The app's Stop: a Control stopped from another thread ends the run at its next step."""
    s = chain(tiny)
    seen = []
    timer = threading.Timer(0.0, s.control.stop)
    for sn in s.run(s.init(4), 2000, 1):
        seen.append(sn)
        if sn.step == 1:
            timer.start()
            timer.join()
    assert seen[-1].final and seen[-1].step < 2000
