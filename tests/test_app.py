"""End-to-end tests of the app through gradio_client against a launched server (tiny models)."""

import json
import time

import numpy as np
import pytest
from PIL import Image

from ppgn_core.bench import launch_app


@pytest.fixture(scope="module")
def app_url():
    proc, url, _ = launch_app("tiny")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def _size(path: str) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def _sample_args(steps=12, chains=2, seed=0, preset="noiseless-joint-ppgn-h", robust=0):
    from ppgn_core.presets import get_preset

    e1, e3 = (-5, -17) if get_preset(preset).is_chain else (1.0, 4.0)  # log10 ε for MALA-approx, ε for denoising
    return ("574: golf ball", preset, e1, 1.0, e3, 0.1, steps, chains, seed, None, robust)


def test_sample_tab_streams_images_of_model_size(app_url):
    c = client(app_url)
    job = c.submit(*_sample_args(), api_name="/sample")
    outs = list(job)
    final = job.outputs()[-1]
    assert len(job.outputs()) >= 2  # streamed
    gallery, _plot, film, status, files = final
    assert len(gallery) == 2 and all(_size(g["image"]) == (32, 32) for g in gallery)
    assert "step 12 / 12" in status
    rec = json.load(open([f for f in files if f.endswith(".json")][0]))
    assert rec["steps_run"] == 12 and len(rec["chains"]) == 2
    assert any(f.endswith("grid.png") for f in files) and any(f.endswith("chain.gif") for f in files)
    grid_png = [f for f in files if f.endswith("grid.png") and "progress" not in f][0]
    assert _size(grid_png) == (2 * 32 + 3 * 2, 32 + 2 * 2)  # the final image of each chain, native size
    assert any(f.endswith("progress.png") for f in files)
    assert rec["robust_k"] == 0 and len(rec["eps_schedule"]) == 1  # no slider moved: one schedule row
    del outs


def test_sample_tab_robust_condition_is_recorded(app_url):
    c = client(app_url)
    final = c.predict(*_sample_args(steps=3, chains=1, robust=2), api_name="/sample")
    rec = json.load(open([f for f in final[4] if f.endswith(".json")][0]))
    assert rec["robust_k"] == 2 and rec["request"]["robust_k"] == 2


def test_stop_ends_run_early(app_url):
    c = client(app_url)
    job = c.submit(*_sample_args(steps=2000, chains=1), api_name="/sample")
    for _ in job:
        c.predict(api_name="/stop")
        break
    t0 = time.time()
    while not job.done() and time.time() - t0 < 60:
        time.sleep(0.2)
    final = job.outputs()[-1]
    rec = json.load(open([f for f in final[4] if f.endswith(".json")][0]))
    assert rec["stopped_early"] and rec["steps_run"] < 2000


def _record(job) -> dict:
    return json.load(open([f for f in job.outputs()[-1][4] if f.endswith(".json")][0]))


def test_a_stop_reaches_every_run_clicked_before_it():
    from ppgn_core.presets import get_preset
    from ppgn_core.sampler import Control
    from studio_ui.widgets import stop, take_control

    state = {"control": None}
    stop(state, 2000.0)  # Stop clicked at t = 2 s, nothing running
    before, after, unstamped = (Control(get_preset("ppgn-h").settings()) for _ in range(3))
    take_control(state, before, 1000.0)  # a run clicked at 1 s that waited in the queue
    assert before.stopped
    take_control(state, after, 3000.0)  # clicked after the Stop
    assert not after.stopped
    take_control(state, unstamped)  # an API run without a time: only the one before it is stopped
    assert after.stopped and not unstamped.stopped
    stop(state)  # a Stop without a time stops the running one and keeps the latest Stop's time
    assert unstamped.stopped and state["stopped_at"] == 2000.0


def test_stop_reaches_a_run_still_in_the_queue(app_url):
    # the app's two run slots are busy with long runs of other users, so D's run waits in the queue
    blockers = [client(app_url) for _ in range(2)]
    busy = [b.submit(*_sample_args(steps=2000, chains=1, seed=3), api_name="/sample") for b in blockers]
    for job in busy:
        next(iter(job))  # running
    d = client(app_url)
    clicked = time.time() * 1000
    queued = d.submit(*_sample_args(steps=2000, chains=1), clicked, api_name="/sample")
    time.sleep(1.0)
    assert not queued.done() and not queued.outputs()  # still waiting for a slot
    d.predict(clicked + 1, api_name="/stop")  # D's Stop, clicked after its Run
    for b in blockers:
        b.predict(api_name="/stop")
    t0 = time.time()
    while not (queued.done() and all(j.done() for j in busy)) and time.time() - t0 < 120:
        time.sleep(0.2)
    rec = _record(queued)
    assert rec["stopped_early"] and rec["steps_run"] == 0  # it ended as soon as it started
    # a Run clicked after that Stop runs in full
    final = d.predict(*_sample_args(steps=3, chains=1), time.time() * 1000 + 1, api_name="/sample")
    rec = json.load(open([f for f in final[4] if f.endswith(".json")][0]))
    assert not rec["stopped_early"] and rec["steps_run"] == 3


def test_slider_change_mid_run_shows_in_eps_schedule(app_url):
    c = client(app_url)
    # long run, stopped once the change has had time to act: 40 tiny steps could all finish
    # before the slider's request is served (this race failed CI once)
    job = c.submit(*_sample_args(steps=2000, chains=1), api_name="/sample")
    for _ in job:
        msg = c.predict(-5, 0.25, -17, 0.1, api_name="/set_eps")
        assert "0.25" in msg
        break
    seen = len(job.outputs())
    t0 = time.time()
    while not job.done() and len(job.outputs()) < seen + 3 and time.time() - t0 < 60:
        time.sleep(0.05)
    c.predict(api_name="/stop")
    while not job.done() and time.time() - t0 < 120:
        time.sleep(0.2)
    rec = json.load(open([f for f in job.outputs()[-1][4] if f.endswith(".json")][0]))
    eps2 = [row["eps2"] for row in rec["eps_schedule"]]
    assert eps2[0] == 1.0 and eps2[-1] == 0.25


def _live_message(app_url, preset, *eps_and_step):
    """The live message of a slider change in the middle of a long run of ``preset``; the run is
    stopped and waited for."""
    c = client(app_url)
    job = c.submit(*_sample_args(steps=2000, chains=1, preset=preset), api_name="/sample")
    for _ in job:
        msg = c.predict(*eps_and_step, api_name="/set_eps")
        break
    c.predict(api_name="/stop")
    t0 = time.time()
    while not job.done() and time.time() - t0 < 120:
        time.sleep(0.2)
    return msg


def test_live_message_shows_the_annealed_eps1_schedule(app_url):
    msg = _live_message(app_url, "annealed-joint-ppgn-h", -4, 1.0, -17, 0.05)
    assert "ε = (0.0001 → 0 over the run, 1, 1e-17), step 0.05" in msg


def test_the_step_slider_keeps_a_presets_step_decay(app_url):
    """The hand-designed preset's step decays from 0.05 to 0.02 over a run; a step picked on the
    slider keeps that decay in proportion (0.1 → 0.04) instead of silently making it constant."""
    msg = _live_message(app_url, "hand-designed", -5, 1.0, -17, 0.1)
    assert "step 0.1 → 0.04 over the run" in msg, msg


def test_denoising_live_message_names_the_three_knobs(app_url):
    """On a denoising chain the ε1 and ε3 sliders show ε itself; a change mid-run says what each does."""
    msg = _live_message(app_url, "guided-ppgn-h", 0.8, 0.5, 2.0, 0.1)
    assert msg == ("live: next steps use ε1 = 0.8 (prior's pull), ε2 = 0.5 (C's pull); the next sample is redrawn "
                   "from noise level ε3 = 2"), msg


def test_the_sliders_follow_the_preset_scale_and_help():
    """The default's three sliders are live in ε's own units with help saying what each does; a MALA-approx
    preset's ε1 and ε3 are log10 sliders; the step size is greyed out where a preset has none; the steps
    slider gives the default's chain its first sample and five more."""
    from ppgn_core.presets import get_preset
    from studio_ui.sample_tab import APP_SAMPLES, _on_preset

    ldm, chain = _on_preset("ldm-ppgn-h"), _on_preset("ppgn-h")
    assert (ldm[0]["value"], ldm[1]["value"], ldm[2]["value"]) == (1.0, 1.0, 4.0)
    assert ldm[0]["minimum"] == 0 and "prior's pull" in ldm[0]["label"] and "between samples" in ldm[2]["label"]
    assert "interactive" not in ldm[0] and "interactive" not in ldm[2]  # never greyed out
    assert chain[0]["value"] == -4.0 and chain[0]["label"].startswith("log10 ε1") and chain[2]["minimum"] == -18
    assert ldm[3]["interactive"] is False and chain[3]["interactive"] is True  # the step size
    assert ldm[4] == 1 and "noised to σ = ε3" in ldm[5] and "Eq. 11" in chain[5]
    p = get_preset("ldm-ppgn-h")
    assert ldm[6] == p.levels + (APP_SAMPLES - 1) * p.round_levels and chain[6] == get_preset("ppgn-h").steps


def test_a_start_image_switches_a_noise_preset_to_the_default_chain():
    from studio_ui.sample_tab import _on_start_image

    assert _on_start_image("photo.png", "guided-ppgn-h") == "ppgn-h"
    assert _on_start_image("photo.png", "dgn-am") == "dgn-am"  # a chain preset is kept
    assert _on_start_image(None, "guided-ppgn-h") == "guided-ppgn-h"  # clearing the image changes nothing
    assert _on_start_image("photo.png", "ldm-ppgn-h") == "ldm-ppgn-h"  # it starts from the photo's noised code


def test_the_app_bench_sends_what_the_sliders_show():
    from ppgn_core.bench import sample_tab_args
    from studio_ui.sample_tab import _on_preset

    for name in ("guided-ppgn-h", "ppgn-h", "hand-designed"):
        e1, e2, e3, lr, robust_k, _, _steps = _on_preset(name)
        args = sample_tab_args(name, 30, 4)
        assert args[1] == name and args[2:6] == (e1["value"], e2["value"], e3["value"], lr["value"])
        assert args[10] == robust_k


def test_two_users_have_independent_chains_and_a_third_is_served(app_url):
    a, b, c = client(app_url), client(app_url), client(app_url)
    # A is long so that its stop always arrives before it could end by itself (30 tiny steps can
    # finish before the stop request is served on a loaded CPU)
    ja = a.submit(*_sample_args(steps=2000, chains=1, seed=1), api_name="/sample")
    jb = b.submit(*_sample_args(steps=30, chains=1, seed=1), api_name="/sample")
    jc = c.submit(*_sample_args(steps=10, chains=1, seed=2), api_name="/sample")  # queued behind A and B
    for _ in ja:
        a.predict(api_name="/stop")  # stopping A must not stop B
        break
    t0 = time.time()
    while not (ja.done() and jb.done() and jc.done()) and time.time() - t0 < 120:
        time.sleep(0.2)
    ra, rb, rc = (json.load(open([f for f in j.outputs()[-1][4] if f.endswith(".json")][0])) for j in (ja, jb, jc))
    assert ra["stopped_early"] and not rb["stopped_early"] and rb["steps_run"] == 30
    assert not rc["stopped_early"] and rc["steps_run"] == 10


def test_neurons_tab_groups_facets(app_url):
    c = client(app_url)
    out = c.predict("blocks.1", 3, 2, 2, 4, 2, 0, api_name="/neurons")
    live, sheet, table, top, status, files = out
    assert "facets" in status
    assert len(table["data"]) == 2
    assert len(top) >= 1
    rec = json.load(open([f for f in files if f.endswith(".json")][0]))
    assert sum(len(r["indices"]) for r in rec["facets"]) == 4  # 2 chains × 2 rounds
    assert rec["preset"] == "ldm-ppgn-h"  # the tab's default sampler
    *_, status, files = c.predict("blocks.1", 3, 2, 2, 4, 2, 0, "mfv", api_name="/neurons")
    rec = json.load(open([f for f in files if f.endswith(".json")][0]))
    assert rec["preset"] == "mfv" and sum(len(r["indices"]) for r in rec["facets"]) == 4


def test_tsne_tab_makes_grid(app_url):
    import re

    c = client(app_url)
    live, grid_img, plot, status, files = c.predict("980: volcano", 3, 10, 2, 0.0, 0, api_name="/tsne")
    m = re.search(r"(\d+) samples on a (\d+)×(\d+) grid", status)
    assert m, status
    n, rows, cols = map(int, m.groups())
    assert 3 <= n <= 15 and rows * cols >= n and rows * cols - n < cols  # less than one row left empty
    assert _size(grid_img) == (cols * 33 + 1, rows * 33 + 1)  # 32-px cells, 1-px gaps
    assert len(live) == 3  # the chains' gallery is kept after the run
    arr = np.asarray(Image.open(grid_img).convert("RGB"))
    cells = [arr[1 + r * 33: 33 + r * 33, 1 + k * 33: 33 + k * 33] for r in range(rows) for k in range(cols)]
    empty = [cell for cell in cells if (cell == (228, 228, 228)).all(-1).mean() > 0.8]
    assert len(empty) == rows * cols - n  # an empty cell is drawn grey (crossed), never left white
    assert not any((cell == 255).all() for cell in cells)
    assert files and files[0].endswith("tsne_grid.png")


def test_inpaint_keeps_unmasked_pixels(app_url, tmp_path):
    from gradio_client import handle_file

    rng = np.random.default_rng(0)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "img.png")
    layer = np.zeros((32, 32, 4), np.uint8)
    layer[8:20, 8:24] = 255
    Image.fromarray(layer).save(tmp_path / "mask.png")
    value = {"background": handle_file(str(tmp_path / "img.png")), "layers": [handle_file(str(tmp_path / "mask.png"))],
             "composite": handle_file(str(tmp_path / "img.png"))}
    c = client(app_url)
    inp, plain, ctx, status, files = c.predict(value, "top class", 6, 1.0, 0, api_name="/inpaint")
    assert "unmasked pixels changed: 0" in status
    keep = layer[..., 3] == 0
    x = np.asarray(Image.open(inp).convert("RGB"))
    assert x.shape == (256, 256, 3)  # shown at 256 px: 32-px images upscaled 8× (nearest)
    x = x[::8, ::8]
    assert np.array_equal(x[keep], img[keep]) and (x[~keep] == 128).all()  # the region to fill is visible
    edge = np.zeros_like(keep)
    edge[8:20, 8:24] = True
    edge[9:19, 9:23] = False  # the region's own border pixels
    for p in (plain, ctx):
        y = np.asarray(Image.open(p).convert("RGB"))
        assert y.shape == (256, 256, 3)
        y = y[::8, ::8]
        assert np.array_equal(y[keep], img[keep])
        assert (y[edge] == (255, 214, 0)).all()  # the filled region is outlined, inside the region
    native = np.asarray(Image.open(files[0]).convert("RGB"))
    assert native.shape == (32, 96, 3)  # the download: input, PPGN, PPGN-context at native size
    *_, status, _ = c.predict(value, "top class", 4, 1.0, 0, "ldm-ppgn-h", api_name="/inpaint")
    assert "step 4/4" in status and "unmasked pixels changed: 0" in status  # the diffusion prior, named
    *_, status, _ = c.predict(value, "top class", 3, 1.0, 0, "ppgn-h", api_name="/inpaint")
    assert "step 3/3" in status and "unmasked pixels changed: 0" in status  # the MALA-approx chain


def test_bad_input_gives_clear_error(app_url):
    from gradio_client.exceptions import AppError

    c = client(app_url)
    with pytest.raises(AppError, match="unknown class"):
        c.predict("golf bal", "dgn-am", -5, 1.0, -17, 0.1, 5, 1, 0, None, 0, api_name="/sample")
    # the server still works afterwards
    out = c.predict(*_sample_args(steps=2, chains=1), api_name="/sample")
    assert "step 2 / 2" in out[3]


def test_uploaded_start_images_rgba_ok_and_bomb_refused(app_url, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    rgba = np.zeros((60, 60, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    c = client(app_url)
    out = c.predict("980: volcano", "dgn-am", -5, 1.0, -17, 0.1, 2, 1, 0, handle_file(str(tmp_path / "rgba.png")), 0,
                    api_name="/sample")
    assert "step 2 / 2" in out[3]
    out = c.predict("980: volcano", "ldm-ppgn-h", 1.0, 1.0, 4.0, 0.1, 3, 2, 0, handle_file(str(tmp_path / "rgba.png")),
                    0, api_name="/sample")  # the diffusion prior from the photo's code noised to its photo_sigma
    assert "step 3 / 3" in out[3] and len(out[0]) == 2
    Image.new("L", (9000, 9000)).save(tmp_path / "bomb.png")  # 81 MP, a few kB on disk
    with pytest.raises(AppError):
        c.predict("980: volcano", "dgn-am", -5, 1.0, -17, 0.1, 2, 1, 0, handle_file(str(tmp_path / "bomb.png")), 0,
                  api_name="/sample")
    out = c.predict(*_sample_args(steps=2, chains=1), api_name="/sample")  # still serving
    assert "step 2 / 2" in out[3]


def test_more_chains_stream_fewer_updates_a_second():
    from studio_ui.sample_tab import UPDATE_INTERVAL_S, update_interval

    assert update_interval(1) == update_interval(2) == UPDATE_INTERVAL_S
    assert update_interval(4) < update_interval(8) and update_interval(8) == pytest.approx(1.2)
