"""Inpaint tab: paint a region; PPGN and PPGN-context fill it side by side (paper Sec. 4.2, S10)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ppgn_core.jobs import MAX_STEPS
from ppgn_core.presets import PHOTO_CHAIN_PRESET, DEFAULT_INPAINT_PRESET, get_preset, inpaint_steps
from ppgn_core.sampler import Control
from ppgn_core.studio import Studio, editor_background

from .widgets import downloads, fail, progress, run_stop_buttons, seed_box, take_control, wire_run, wire_stop


def _layout(studio: Studio) -> SimpleNamespace:
    w = SimpleNamespace()
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            w.editor = gr.ImageMask(type="numpy", label="Image: paint the region to fill", sources=["upload"],
                                    height=380, elem_id="inpaint-editor", format="png",
                                    brush=gr.Brush(default_size=18, colors=["#ffffff"], color_mode="fixed"))
            gr.Examples([[str(p)] for p in studio.examples()], inputs=[w.editor], label="Examples")
            w.cls = gr.Dropdown(["top class"] + studio.class_choices(), value="top class",
                                label="Class (default: C's top class for the image)", filterable=True,
                                allow_custom_value=True)
            w.prior = gr.Radio([(f"latent diffusion prior, from the photo's code noised ({DEFAULT_INPAINT_PRESET})",
                                 DEFAULT_INPAINT_PRESET),
                                (f"MALA-approx chain from the photo's code ({PHOTO_CHAIN_PRESET})", PHOTO_CHAIN_PRESET)],
                               value=DEFAULT_INPAINT_PRESET, label="Sampler (both start from the photo with the region "
                               "filled from its surroundings)", elem_id="inpaint-prior")
            w.steps = gr.Slider(1, MAX_STEPS, value=inpaint_steps(DEFAULT_INPAINT_PRESET), step=1,
                                label="steps (noise levels for the diffusion prior)")
            w.eps4 = gr.Slider(0.0, 50.0, value=1.0, step=0.1, label="ε4 — context term (PPGN-context)")
            w.seed = seed_box()
            w.run, w.stop = run_stop_buttons("inpaint")
        with gr.Column(scale=2):
            w.status = gr.Markdown(elem_id="inpaint-status")
            with gr.Row():  # shown ≥ 256 px (nearest-neighbour upscaled); the download is native size
                w.input = gr.Image(label="Input (grey: the region to fill, never read)", elem_id="inpaint-input",
                                   format="png", min_width=260)
                w.plain = gr.Image(label="PPGN (filled region outlined)", elem_id="inpaint-ppgn", format="png",
                                   min_width=260)
                w.ctx = gr.Image(label="PPGN-context (filled region outlined)", elem_id="inpaint-context",
                                 format="png", min_width=260)
            w.files = downloads("Download (native size: input, PPGN, PPGN-context)")
    return w


def build_inpaint_tab(studio: Studio, session: gr.State) -> None:
    w = _layout(studio)

    def run(state, editor, cls, steps, eps4, seed, preset=DEFAULT_INPAINT_PRESET, clicked_at=None):
        try:
            image = editor_background(editor)
            control = Control(get_preset(preset).settings())
            take_control(state, control, clicked_at)
            for u in studio.inpainting.stream(image, editor, cls, int(steps), float(eps4), int(seed or 0),
                                              preset=preset, snapshot_every=max(1, int(steps) // 10),
                                              control=control):
                text = u.status + (f" — unmasked pixels changed: {u.record['unmasked_max_abs_diff_uint8']}"
                                   if u.final else "")
                yield (u.extra["input"], *u.extra["shown"], progress(u.step, u.total, text), u.files or None)
        except ValueError as err:
            fail(err)

    w.prior.change(lambda name: inpaint_steps(name), w.prior, w.steps, queue=False)  # each sampler's own steps
    wire_run(w.run, run, [session, w.editor, w.cls, w.steps, w.eps4, w.seed, w.prior],
             [w.input, w.plain, w.ctx, w.status, w.files], "inpaint")
    wire_stop(w.stop, session, w.status, "stop_inpaint")
