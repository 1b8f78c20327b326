"""Sample tab: a class, a preset, live ε sliders; streams each chain's image and p(class)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import gradio as gr

from ppgn_core.jobs import MAX_CHAINS, MAX_STEPS, SampleRequest
from ppgn_core.plots import curve_figure
from ppgn_core.presets import DEFAULT_PRESET, PRESETS, default_preset, get_preset
from ppgn_core.sampler import MAX_ROBUST_K, Control
from ppgn_core.studio import Studio

from .widgets import (OFF, chains_gallery, downloads, fail, from_log, progress, run_stop_buttons, seed_box,
                      take_control, to_log, wire_run, wire_stop)


#: minimum time between two streamed updates: encoding the gallery, plot and filmstrip of each
#: snapshot for the browser cost more than the sampling steps between snapshots (reports/bench.json)
UPDATE_INTERVAL_S = 0.3


def update_interval(chains: int) -> float:
    """Seconds between two streamed updates of a run of ``chains`` chains: 0.3 s, and 0.15 s a chain
    above two. The browser's work on an update grows with the images in it and runs beside the chains
    on the same cores; for 8 chains an update every 1.2 s instead of every step (0.6-0.7 s) took the
    app from 1,095-1,506 to 834-1,057 ms/step (two launches each; reports/bench.json, "app")."""
    return max(UPDATE_INTERVAL_S, 0.15 * chains)


def _layout(studio: Studio) -> SimpleNamespace:
    preset0 = get_preset(DEFAULT_PRESET)
    p0, chain = preset0.settings(), preset0.is_chain
    w = SimpleNamespace()
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            w.cls = gr.Dropdown(studio.class_choices(), value="980: volcano", label="Class (type to search)",
                                filterable=True, allow_custom_value=True, elem_id="sample-class")
            w.preset = gr.Dropdown([(p.title, p.name) for p in PRESETS.values()], value=DEFAULT_PRESET,
                                   label="Preset (paper variant)", elem_id="sample-preset")
            w.about = gr.Markdown(preset0.describe(), elem_id="preset-about")
            w.e1 = gr.Slider(OFF, 1, value=to_log(p0.eps1), step=0.5, label="log10 ε1 — prior (−18 = off)",
                             elem_id="eps1", interactive=chain)
            w.e2 = gr.Slider(0, 10, value=p0.eps2, step=0.05, label="ε2 — condition", elem_id="eps2")
            w.e3 = gr.Slider(OFF, 0, value=to_log(p0.eps3), step=0.5, label="log10 ε3 — noise (−18 = off)",
                             interactive=chain)
            w.lr = gr.Slider(0.001, 1.0, value=p0.lr, step=0.001, label="step size (× the code's spread)",
                             interactive=chain)
            w.steps = gr.Slider(1, MAX_STEPS, value=preset0.steps, step=1, label="steps (noise levels, for guided "
                                "denoising)")
            w.chains = gr.Slider(1, MAX_CHAINS, value=4, step=1, label="chains")
            w.seed = seed_box()
            w.robust = gr.Slider(0, MAX_ROBUST_K, value=p0.robust_k, step=1, elem_id="sample-robust",
                                 label="robust condition: random views of the image per step (0 = off)")
            w.start = gr.Image(type="filepath", label="Start from a real image (optional: its code E(x) for a chain "
                               "preset such as PPGN-h; noised, for the latent diffusion prior)",
                               sources=["upload"], height=160, elem_id="sample-start")
            w.run, w.stop = run_stop_buttons("sample")
        with gr.Column(scale=2):
            w.status = gr.Markdown(elem_id="sample-status")
            w.live = gr.Markdown(elem_id="sample-live")
            w.gallery = chains_gallery("Current image of each chain", 4, "sample-gallery")
            w.plot = gr.Plot(label="p(class) per chain")
            w.film = gr.Image(label="Filmstrip of chain 0 (latest snapshots)", height=140)
            w.files = downloads("Downloads: final images (grid.png), snapshots (progress.png), chain GIF, settings")
    return w


def _on_preset(name):
    """The sliders follow the preset (the steps slider its own step count); ε1, ε3 and the step size are
    greyed out for a preset that does not use them (guided denoising: its steps are the noise levels, ε2
    its guidance)."""
    p = get_preset(name)
    s = p.settings()
    used = lambda value: gr.update(value=value, interactive=p.is_chain)  # noqa: E731
    return used(to_log(s.eps1)), s.eps2, used(to_log(s.eps3)), used(s.lr), s.robust_k, p.describe(), p.steps


def _on_start_image(path, name):
    """A start from a photo's code needs a preset that can start there (a MALA-approx chain, or guided
    denoising with a ``photo_sigma``): uploading one while a preset that only draws from noise is picked
    switches the picker to the default chain (its sliders follow), and says so."""
    picked = get_preset(name)
    if not path or picked.starts_from_photo:
        return name
    chain = default_preset(needs_chain=True)
    gr.Info(f"{picked.title} draws from noise; starting from the image with {get_preset(chain).title} instead.")
    return chain


def _live(state, e1, e2, e3, lr):
    ctl = state.get("control")
    if ctl is None or ctl.stopped:
        return "settings apply to the next run"
    try:
        s = ctl.update(eps1=from_log(e1), eps2=float(e2), eps3=from_log(e3), **ctl.settings.step_sizes(float(lr)))
    except ValueError as err:
        fail(err)
    if not state.get("chain", True):  # guided denoising: ε2 is the guidance; ε1, ε3 and the step are unused
        return f"live: next noise levels use guidance ε2 = {s.eps2:.3g}"
    e1 = f"{s.eps1:.3g}" if s.eps1_end is None else f"{s.eps1:.3g} → {s.eps1_end:.3g} over the run"
    step = f"{s.lr:.3g}" if s.lr_end == s.lr else f"{s.lr:.3g} → {s.lr_end:.3g} over the run"
    return f"live: next steps use ε = ({e1}, {s.eps2:.3g}, {s.eps3:.3g}), step {step}"


def build_sample_tab(studio: Studio, session: gr.State) -> None:
    w = _layout(studio)
    w.preset.change(_on_preset, w.preset, [w.e1, w.e2, w.e3, w.lr, w.robust, w.about, w.steps], queue=False)
    w.start.change(_on_start_image, [w.start, w.preset], w.preset, queue=False)
    for i, slider in enumerate((w.e1, w.e2, w.e3, w.lr)):
        slider.change(_live, [session, w.e1, w.e2, w.e3, w.lr], w.live, queue=False,
                      api_name="set_eps" if i == 0 else None, api_visibility="public" if i == 0 else "private")

    def run(state, cls, preset, e1, e2, e3, lr, steps, chains, seed, start, robust=0, clicked_at=None):
        try:
            req = SampleRequest(classes=[studio.parse_class(cls)], preset=preset, steps=int(steps),
                                chains=int(chains), seed=int(seed or 0), eps=(from_log(e1), float(e2), from_log(e3)),
                                lr=float(lr), snapshot_every=max(1, int(steps) // 30),
                                robust_k=int(robust or 0)).validate()
            control = Control(get_preset(preset).settings(**req.overrides()))
            take_control(state, control, clicked_at)
            state["chain"] = get_preset(preset).is_chain
            t0, shown = time.time(), 0.0
            for u in studio.sampling.stream(req, control, start):
                if not u.final and u.step > 0 and time.time() - shown < update_interval(req.chains):
                    continue  # the chains run on; the browser gets at most ~3 updates a second, fewer for many chains
                shown = time.time()
                yield (u.images, curve_figure(u.curve_steps, u.curves), u.filmstrip,
                       progress(u.step, u.total, f"{u.status} — {time.time() - t0:.1f} s"), u.files or None)
        except ValueError as err:
            fail(err)

    wire_run(w.run, run, [session, w.cls, w.preset, w.e1, w.e2, w.e3, w.lr, w.steps, w.chains, w.seed, w.start,
                          w.robust], [w.gallery, w.plot, w.film, w.status, w.files], "sample")
    wire_stop(w.stop, session, w.status, "stop")
