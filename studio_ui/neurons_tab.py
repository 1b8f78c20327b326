"""Neurons tab: the many facets one hidden unit of C detects (multifaceted visualisation)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import gradio as gr

from ppgn_core.presets import ROUND_LEVELS, get_preset
from ppgn_core.sampler import Control
from ppgn_core.studio import Studio
from ppgn_core.studio.neurons import NEURON_PRESET, NEURON_PRESETS

from .widgets import (GALLERY_HEIGHT, chains_gallery, downloads, fail, progress, run_stop_buttons, seed_box,
                      take_control, wire_run, wire_stop)


def _layout(studio: Studio) -> SimpleNamespace:
    layers = [(f"{n} ({u} units)", n) for n, u in studio.layers()]
    w = SimpleNamespace()
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            w.layer = gr.Dropdown(layers, value=layers[min(12, len(layers) - 1)][1], label="Layer of C (units)")
            with gr.Row():
                w.unit = gr.Number(0, precision=0, label="unit", minimum=0)
                w.random = gr.Button("random unit")
            w.sampler = gr.Radio([(f"latent diffusion prior's chains steered by the unit ({NEURON_PRESET})", NEURON_PRESET),
                                  ("multifaceted visualisation, MALA-approx chains (mfv)", "mfv")],
                                 value=NEURON_PRESET, label="Sampler", elem_id="neurons-sampler")
            w.chains = gr.Slider(1, 8, value=3, step=1, label="chains")
            w.segments = gr.Slider(1, 6, value=2, step=1, label="samples a chain (the diffusion prior's chain goes on "
                                   "from its last sample; mfv restarts from fresh codes)")
            w.steps = gr.Slider(2, 200, value=ROUND_LEVELS, step=1,
                                label="steps between samples (noise levels for the diffusion prior; mfv: steps a restart)")
            w.facets = gr.Slider(1, 6, value=2, step=1, label="facets (k-means clusters)")
            w.seed = seed_box()
            w.run, w.stop = run_stop_buttons("neurons")
        with gr.Column(scale=2):
            w.status = gr.Markdown(elem_id="neurons-status")
            w.live = chains_gallery("Chains", 4, "neurons-gallery")
            w.sheet = gr.Image(label="Facets: one row per facet, strongest first", elem_id="neurons-sheet",
                               format="png")
            w.table = gr.Dataframe(headers=["facet", "samples", "activations (best first)"],
                                   label="Activation of the unit")
            w.top = gr.Gallery(label="Shipped example images that activate the unit most", columns=4,
                               height=GALLERY_HEIGHT, object_fit="contain")
            w.files = downloads("Downloads")
    return w


def build_neurons_tab(studio: Studio, session: gr.State) -> None:
    w = _layout(studio)

    def pick_random(layer, seed):
        try:
            return studio.neurons.random_unit(layer, int(time.time() * 1000) % (2 ** 31))
        except ValueError as err:
            fail(err)

    w.random.click(pick_random, [w.layer, w.seed], w.unit, queue=False)

    def run(state, layer, unit, chains, segments, steps, facets, seed, preset=NEURON_PRESET, clicked_at=None):
        try:
            if preset not in NEURON_PRESETS:
                raise ValueError(f"unknown sampler {preset!r}: one of {', '.join(NEURON_PRESETS)}")
            control = Control(get_preset(preset).settings())
            take_control(state, control, clicked_at)
            for u in studio.neurons.facets(layer, int(unit), int(chains), int(segments), int(steps), int(facets),
                                           int(seed or 0), control=control, preset=preset):
                if not u.final:
                    yield u.images, None, None, None, progress(u.step, u.total, u.status), None
                    continue
                table = [[r["facet"], len(r["indices"]), ", ".join(f"{a:.2f}" for a in r["activations"][:6])]
                         for r in u.record["facets"]]
                top = [(img, f"{name}: {a:.2f}") for name, a, img in u.extra["top"]]
                yield u.images, u.extra["sheet"], table, top, progress(u.total, u.total, u.status), u.files
        except ValueError as err:
            fail(err)

    wire_run(w.run, run, [session, w.layer, w.unit, w.chains, w.segments, w.steps, w.facets, w.seed, w.sampler],
             [w.live, w.sheet, w.table, w.top, w.status, w.files], "neurons")
    wire_stop(w.stop, session, w.status, "stop_neurons")
