"""Sample tab: a class, a preset, live ε sliders; streams each chain's image and p(class)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import gradio as gr

from ppgn_core.jobs import MAX_CHAINS, MAX_STEPS, SampleRequest, eps_from_slider, eps_slider_linear, eps_to_slider
from ppgn_core.plots import curve_figure
from ppgn_core.presets import DEFAULT_PRESET, PRESETS, default_preset, get_preset
from ppgn_core.sampler import MAX_ROBUST_K, Control
from ppgn_core.studio import Studio

from .widgets import (OFF, chains_gallery, downloads, eps_slider, fail, progress, run_stop_buttons, seed_box,
                      take_control, wire_run, wire_stop)


#: minimum time between two streamed updates: encoding the gallery, plot and filmstrip of each
#: snapshot for the browser cost more than the sampling steps between snapshots (reports/bench.json)
UPDATE_INTERVAL_S = 0.3


def update_interval(chains: int) -> float:
    """Seconds between two streamed updates of a run of ``chains`` chains: 0.3 s, and 0.15 s a chain
    above two. The browser's work on an update grows with the images in it and runs beside the chains
    on the same cores; for 8 chains an update every 1.2 s instead of every step (0.6-0.7 s) took the
    app from 1,095-1,506 to 834-1,057 ms/step (two launches each; reports/bench.json, "app")."""
    return max(UPDATE_INTERVAL_S, 0.15 * chains)


#: samples a denoising chain keeps in a Sample-tab run unless the steps slider says otherwise (its first
#: picture arrives as early as a one-shot run's; the chain then goes on)
APP_SAMPLES = 6

#: what each slider does, by the kind of preset (the knobs measured in reports/chains/knobs.json)
HELP = {
    "denoising": ("ε1 — the prior's pull: 1 follows the diffusion prior's own flow; below 1 leaves noise in the "
                  "picture (less photo-like), above 1 smooths it toward typical codes",
                  "ε2 — the classifier's pull: how far C moves the code over each level, in units of its noise "
                  "level (0 = the prior alone; above 1, measured: a little less of the class, not more)",
                  "ε3 — how far the chain moves between samples: the noise level each new sample is redrawn from "
                  "(more: more varied samples, less of the class; 0 = the chain keeps its sample)"),
    "mala": ("log10 ε1 — prior: the weight of the prior's term (−18 = off)",
             "ε2 — condition: the weight of ∂log p(class|x)",
             "log10 ε3 — noise: the standard deviation of the noise added each step (−18 = off)"),
}


def app_steps(name: str) -> int:
    """The steps slider's value for a preset: its own steps, or for a denoising chain its first sample and
    APP_SAMPLES − 1 more."""
    p = get_preset(name)
    return p.steps if p.is_chain else (p.levels or p.steps) + (APP_SAMPLES - 1) * p.round_levels


def _eps_sliders(name: str) -> tuple[dict, dict, dict]:
    """gr.update()s of the ε1, ε2, ε3 sliders for a preset: ε itself for a denoising chain, log10 ε for MALA."""
    p = get_preset(name)
    s = p.settings()
    e1, e2, e3 = HELP["denoising" if eps_slider_linear(name) else "mala"]
    if eps_slider_linear(name):
        return (dict(minimum=0.0, maximum=3.0, step=0.05, value=s.eps1, label=e1),
                dict(minimum=0.0, maximum=10.0, step=0.05, value=s.eps2, label=e2),
                dict(minimum=0.0, maximum=10.0, step=0.25, value=s.eps3, label=e3))
    return (dict(minimum=OFF, maximum=1.0, step=0.5, value=eps_to_slider(name, s.eps1), label=e1),
            dict(minimum=0.0, maximum=10.0, step=0.05, value=s.eps2, label=e2),
            dict(minimum=OFF, maximum=0.0, step=0.5, value=eps_to_slider(name, s.eps3), label=e3))


def _layout(studio: Studio) -> SimpleNamespace:
    preset0 = get_preset(DEFAULT_PRESET)
    p0 = preset0.settings()
    e1, e2, e3 = _eps_sliders(DEFAULT_PRESET)
    w = SimpleNamespace()
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            w.cls = gr.Dropdown(studio.class_choices(), value="980: volcano", label="Class (type to search)",
                                filterable=True, allow_custom_value=True, elem_id="sample-class")
            w.preset = gr.Dropdown([(p.title, p.name) for p in PRESETS.values()], value=DEFAULT_PRESET,
                                   label="Preset (paper variant)", elem_id="sample-preset")
            w.about = gr.Markdown(preset0.describe(), elem_id="preset-about")
            w.e1 = eps_slider(**e1, elem_id="eps1")
            w.e2 = gr.Slider(**e2, elem_id="eps2")
            w.e3 = eps_slider(**e3, elem_id="eps3")
            w.lr = gr.Slider(0.001, 1.0, value=p0.lr, step=0.001, label="step size (× the code's spread)",
                             interactive=preset0.is_chain)
            w.steps = gr.Slider(1, MAX_STEPS, value=app_steps(DEFAULT_PRESET), step=1,
                                label="steps (a denoising chain: its first sample, then one every "
                                      f"{preset0.round_levels} levels; Stop keeps what was made)")
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
    """The sliders follow the preset: their scale, range and help (ε itself for a denoising chain, log10 ε for
    MALA-approx), its ε and its steps; the step size is greyed out where a preset has none."""
    p = get_preset(name)
    e1, e2, e3 = _eps_sliders(name)
    return (gr.update(**e1), gr.update(**e2), gr.update(**e3), gr.update(value=p.settings().lr, interactive=p.is_chain),
            p.settings().robust_k, p.describe(), app_steps(name))


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
    preset = state.get("preset", DEFAULT_PRESET)
    try:
        s = ctl.update(eps1=eps_from_slider(preset, e1), eps2=float(e2), eps3=eps_from_slider(preset, e3),
                       **ctl.settings.step_sizes(float(lr)))
    except ValueError as err:
        fail(err)
    if eps_slider_linear(preset):
        return (f"live: next steps use ε1 = {s.eps1:.3g} (prior's pull), ε2 = {s.eps2:.3g} (C's pull); the next "
                f"sample is redrawn from noise level ε3 = {s.eps3:.3g}")
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
                                chains=int(chains), seed=int(seed or 0),
                                eps=(eps_from_slider(preset, e1), float(e2), eps_from_slider(preset, e3)),
                                lr=float(lr), snapshot_every=max(1, int(steps) // 30),
                                robust_k=int(robust or 0)).validate()
            control = Control(get_preset(preset).settings(**req.overrides()))
            take_control(state, control, clicked_at)
            state["preset"] = get_preset(preset).name
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
