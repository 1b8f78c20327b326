"""t-SNE grid tab: the samples chains of one class keep, laid out by similarity (paper Figs. S11–S12)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ppgn_core.jobs import MAX_CHAINS, MAX_STEPS
from ppgn_core.plots import tsne_figure
from ppgn_core.presets import DEFAULT_CHAIN_PRESET, ROUND_LEVELS, get_preset
from ppgn_core.studio.tsne import TSNE_STEPS
from ppgn_core.sampler import Control
from ppgn_core.studio import Studio

from .widgets import (chains_gallery, downloads, fail, progress, run_stop_buttons, seed_box, take_control,
                      wire_run, wire_stop)


def _layout(studio: Studio) -> SimpleNamespace:
    w = SimpleNamespace()
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            w.cls = gr.Dropdown(studio.class_choices(), value="980: volcano", label="Class", filterable=True,
                                allow_custom_value=True)
            w.chains = gr.Slider(1, MAX_CHAINS, value=6, step=1, label="chains")
            w.steps = gr.Slider(5, MAX_STEPS, value=TSNE_STEPS, step=1,
                                label=f"steps per chain (its first sample after {get_preset(DEFAULT_CHAIN_PRESET).levels})")
            w.every = gr.Slider(1, 50, value=ROUND_LEVELS, step=1, label="keep a sample every … steps (noise levels "
                                "from the last sample noised to ε3)")
            w.thr = gr.Slider(0.0, 1.0, value=0.97, step=0.01, label="keep samples with p(class) ≥")
            w.seed = seed_box()
            w.run, w.stop = run_stop_buttons("tsne")
        with gr.Column(scale=2):
            w.status = gr.Markdown(elem_id="tsne-status")
            w.live = chains_gallery("Chains (latest image of each)", 6, "tsne-gallery")
            w.grid = gr.Image(label="t-SNE grid (one sample per cell; grey crossed cells are empty)",
                              elem_id="tsne-grid", format="png")
            w.plot = gr.Plot(label="t-SNE embedding")
            w.files = downloads("Download the grid PNG")
    return w


def build_tsne_tab(studio: Studio, session: gr.State) -> None:
    w = _layout(studio)

    def run(state, cls, chains, steps, every, thr, seed, clicked_at=None):
        try:
            control = Control(get_preset(DEFAULT_CHAIN_PRESET).settings())
            take_control(state, control, clicked_at)
            for u in studio.tsne.grid(cls, int(chains), int(steps), int(every), float(thr), seed=int(seed or 0),
                                      control=control):
                if not u.final:
                    yield u.images, None, None, progress(u.step, u.total, u.status), None
                elif u.extra.get("grid") is None:
                    yield u.images, None, None, u.status, None
                else:
                    fig = tsne_figure(u.extra["points"], u.extra["thumbs"], u.extra["probs"])
                    yield u.images, u.extra["grid"], fig, progress(u.total, u.total, u.status), u.files
        except ValueError as err:
            fail(err)

    wire_run(w.run, run, [session, w.cls, w.chains, w.steps, w.every, w.thr, w.seed],
             [w.live, w.grid, w.plot, w.status, w.files], "tsne")
    wire_stop(w.stop, session, w.status, "stop_tsne")
