"""PPGN Studio — the browser app (Gradio Blocks). Layout, events and streaming only; every
computation lives in ``ppgn_core`` (``ppgn_core.studio``).

    python app.py [--host 127.0.0.1] [--port 7860] [--device cpu|cuda] [--bundle default|tiny]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from ppgn_core.images import MAX_PIXELS  # noqa: E402

# Gradio decodes uploads with PIL: make PIL refuse decompression bombs above our limit (it raises
# above 2× MAX_IMAGE_PIXELS), so an oversized upload fails from its header, before decoding.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2

from ppgn_core.jobs import MAX_CHAINS, MAX_STEPS, SampleRequest  # noqa: E402
from ppgn_core.plots import curve_figure, tsne_figure  # noqa: E402
from ppgn_core.presets import DEFAULT_PRESET, PRESETS, get_preset  # noqa: E402
from ppgn_core.sampler import Control  # noqa: E402
from ppgn_core.studio import Studio, editor_background  # noqa: E402

OFF = -18.0  # log10 slider value meaning "exactly 0"


def _from_log(v: float) -> float:
    return 0.0 if v <= OFF else 10.0 ** float(v)


def _to_log(v: float) -> float:
    import math

    return OFF if v <= 0 else max(OFF + 0.5, round(math.log10(v) * 2) / 2)


def _progress(k: int, n: int, text: str) -> str:
    return f"<progress value='{k}' max='{max(n, 1)}' style='width:100%'></progress>\n\n{text}"


def _run_stop_buttons(prefix: str = "") -> tuple[gr.Button, gr.Button]:
    """The Run / Stop pair every tab shows under its settings."""
    with gr.Row():
        run = gr.Button("Run", variant="primary", elem_id=f"{prefix}-run" if prefix else None)
        stop = gr.Button("Stop", elem_id=f"{prefix}-stop" if prefix else None)
    return run, stop


def _fail(err: Exception):
    raise gr.Error(str(err))


def build_app(studio: Studio) -> gr.Blocks:
    preset_choices = [(p.title, p.name) for p in PRESETS.values()]
    layer_choices = [(f"{n} ({u} units)", n) for n, u in studio.layers()]

    with gr.Blocks(title="PPGN Studio") as demo:
        gr.Markdown("# PPGN Studio\nPlug & Play Generative Networks (Nguyen et al., CVPR 2017): "
                    f"condition network C = {studio.bundle.classifier.name}, prior = {studio.bundle.name} models.")
        session = gr.State(lambda: {"control": None})

        def set_control(state: dict, control: Control) -> None:
            old = state.get("control")
            if old is not None:
                old.stop()
            state["control"] = control

        def stop(state: dict) -> str:
            if state.get("control") is not None:
                state["control"].stop()
            return "stopping…"

        # ------------------------------------------------------------------ Sample
        with gr.Tab("Sample"):
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    s_class = gr.Dropdown(studio.class_choices(), value="980: volcano", label="Class (type to search)",
                                          filterable=True, allow_custom_value=True, elem_id="sample-class")
                    s_preset = gr.Dropdown(preset_choices, value=DEFAULT_PRESET, label="Preset (paper variant)",
                                           elem_id="sample-preset")
                    s_about = gr.Markdown(get_preset(DEFAULT_PRESET).describe(), elem_id="preset-about")
                    p0 = get_preset(DEFAULT_PRESET).settings()
                    s_e1 = gr.Slider(OFF, 1, value=_to_log(p0.eps1), step=0.5, label="log10 ε1 — prior (−18 = off)",
                                     elem_id="eps1")
                    s_e2 = gr.Slider(0, 10, value=p0.eps2, step=0.05, label="ε2 — condition")
                    s_e3 = gr.Slider(OFF, 0, value=_to_log(p0.eps3), step=0.5, label="log10 ε3 — noise (−18 = off)")
                    s_lr = gr.Slider(0.001, 1.0, value=p0.lr, step=0.001, label="step size (× the code's spread)")
                    s_steps = gr.Slider(1, MAX_STEPS, value=60, step=1, label="steps")
                    s_chains = gr.Slider(1, MAX_CHAINS, value=4, step=1, label="chains")
                    s_seed = gr.Number(0, precision=0, label="seed", minimum=0)
                    s_start = gr.Image(type="filepath", label="Start from a real image (optional: its code E(x))",
                                       sources=["upload"], height=160)
                    s_run, s_stop = _run_stop_buttons("sample")
                with gr.Column(scale=2):
                    s_status = gr.Markdown(elem_id="sample-status")
                    s_live = gr.Markdown(elem_id="sample-live")
                    s_gallery = gr.Gallery(label="Current image of each chain", columns=4, height=300,
                                           elem_id="sample-gallery", format="png")
                    s_plot = gr.Plot(label="p(class) per chain")
                    s_film = gr.Image(label="Filmstrip of chain 0 (latest snapshots)", height=140)
                    s_files = gr.File(label="Downloads: grid PNG, chain GIF, settings JSON", file_count="multiple")

            def on_preset(name):
                p = get_preset(name)
                s = p.settings()
                return _to_log(s.eps1), s.eps2, _to_log(s.eps3), s.lr, p.describe()

            s_preset.change(on_preset, s_preset, [s_e1, s_e2, s_e3, s_lr, s_about], queue=False)

            def live(state, e1, e2, e3, lr):
                ctl = state.get("control")
                if ctl is not None and not ctl.stopped:
                    try:
                        s = ctl.update(eps1=_from_log(e1), eps2=float(e2), eps3=_from_log(e3), lr=float(lr),
                                       lr_end=float(lr))
                    except ValueError as err:
                        _fail(err)
                    e1 = f"{s.eps1:.3g}" if s.eps1_end is None else f"{s.eps1:.3g} → {s.eps1_end:.3g} over the run"
                    return f"live: next steps use ε = ({e1}, {s.eps2:.3g}, {s.eps3:.3g}), step {s.lr:.3g}"
                return "settings apply to the next run"

            for i, slider in enumerate((s_e1, s_e2, s_e3, s_lr)):
                slider.change(live, [session, s_e1, s_e2, s_e3, s_lr], s_live, queue=False,
                              api_name="set_eps" if i == 0 else None,
                              api_visibility="public" if i == 0 else "private")

            def run_sample(state, cls, preset, e1, e2, e3, lr, steps, chains, seed, start):
                try:
                    req = SampleRequest(classes=[studio.parse_class(cls)], preset=preset, steps=int(steps),
                                        chains=int(chains), seed=int(seed or 0),
                                        eps=(_from_log(e1), float(e2), _from_log(e3)), lr=float(lr), lr_end=float(lr),
                                        snapshot_every=max(1, int(steps) // 30)).validate()
                    control = Control(get_preset(preset).settings(**req.overrides()))
                    set_control(state, control)
                    t0 = time.time()
                    for u in studio.sample_stream(req, control, start):
                        yield (u.images, curve_figure(u.curve_steps, u.curves), u.filmstrip,
                               _progress(u.step, u.total, f"{u.status} — {time.time() - t0:.1f} s"),
                               u.files or None)
                except ValueError as err:
                    _fail(err)

            s_run.click(run_sample, [session, s_class, s_preset, s_e1, s_e2, s_e3, s_lr, s_steps,
                                                 s_chains, s_seed, s_start],
                                    [s_gallery, s_plot, s_film, s_status, s_files], api_name="sample")
            s_stop.click(stop, session, s_status, queue=False, api_name="stop")

        # ------------------------------------------------------------------ Neurons
        with gr.Tab("Neurons"):
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    n_layer = gr.Dropdown(layer_choices, value=layer_choices[min(12, len(layer_choices) - 1)][1],
                                          label="Layer of C (units)")
                    with gr.Row():
                        n_unit = gr.Number(0, precision=0, label="unit", minimum=0)
                        n_random = gr.Button("random unit")
                    n_chains = gr.Slider(1, 8, value=3, step=1, label="chains")
                    n_segments = gr.Slider(1, 6, value=2, step=1, label="restarts (MFV segments)")
                    n_steps = gr.Slider(2, 200, value=30, step=1, label="steps per segment")
                    n_facets = gr.Slider(1, 6, value=2, step=1, label="facets (k-means clusters)")
                    n_seed = gr.Number(0, precision=0, label="seed", minimum=0)
                    n_run, n_stop = _run_stop_buttons()
                with gr.Column(scale=2):
                    n_status = gr.Markdown()
                    n_live = gr.Gallery(label="Chains", columns=4, height=220)
                    n_sheet = gr.Image(label="Facets: one row per facet, strongest first")
                    n_table = gr.Dataframe(headers=["facet", "samples", "activations (best first)"],
                                           label="Activation of the unit")
                    n_top = gr.Gallery(label="Shipped example images that activate the unit most", columns=4,
                                       height=160)
                    n_files = gr.File(label="Downloads", file_count="multiple")

            def pick_random(layer, seed):
                try:
                    return studio.random_unit(layer, int(time.time() * 1000) % (2 ** 31))
                except ValueError as err:
                    _fail(err)

            n_random.click(pick_random, [n_layer, n_seed], n_unit, queue=False)

            def run_neuron(state, layer, unit, chains, segments, steps, facets, seed):
                try:
                    control = Control(get_preset("mfv").settings())
                    set_control(state, control)
                    for u in studio.neuron_facets(layer, int(unit), int(chains), int(segments), int(steps),
                                                  int(facets), int(seed or 0), control=control):
                        if not u.final:
                            yield u.images, None, None, None, _progress(u.step, u.total, u.status), None
                        else:
                            table = [[r["facet"], len(r["indices"]), ", ".join(f"{a:.2f}" for a in r["activations"][:6])]
                                     for r in u.record["facets"]]
                            top = [(img, f"{name}: {a:.2f}") for name, a, img in u.extra["top"]]
                            yield (u.images, u.extra["sheet"], table, top, _progress(u.total, u.total, u.status),
                                   u.files)
                except ValueError as err:
                    _fail(err)

            n_run.click(run_neuron, [session, n_layer, n_unit, n_chains, n_segments, n_steps, n_facets, n_seed],
                        [n_live, n_sheet, n_table, n_top, n_status, n_files], api_name="neurons")
            n_stop.click(stop, session, n_status, queue=False, api_name="stop_neurons")

        # ------------------------------------------------------------------ t-SNE
        with gr.Tab("t-SNE grid"):
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    t_class = gr.Dropdown(studio.class_choices(), value="980: volcano", label="Class", filterable=True,
                                          allow_custom_value=True)
                    t_chains = gr.Slider(1, MAX_CHAINS, value=6, step=1, label="chains")
                    t_steps = gr.Slider(5, MAX_STEPS, value=60, step=1, label="steps per chain")
                    t_every = gr.Slider(1, 50, value=5, step=1, label="keep a sample every … steps")
                    t_thr = gr.Slider(0.0, 1.0, value=0.97, step=0.01, label="keep samples with p(class) ≥")
                    t_seed = gr.Number(0, precision=0, label="seed", minimum=0)
                    t_run, t_stop = _run_stop_buttons()
                with gr.Column(scale=2):
                    t_status = gr.Markdown()
                    t_live = gr.Gallery(label="Chains", columns=6, height=180)
                    t_grid = gr.Image(label="t-SNE grid (one sample per cell)")
                    t_plot = gr.Plot(label="t-SNE embedding")
                    t_files = gr.File(label="Download the grid PNG", file_count="multiple")

            def run_tsne(state, cls, chains, steps, every, thr, seed):
                try:
                    control = Control(get_preset(DEFAULT_PRESET).settings())
                    set_control(state, control)
                    for u in studio.tsne_grid(cls, int(chains), int(steps), int(every), float(thr),
                                              seed=int(seed or 0), control=control):
                        if not u.final:
                            yield u.images, None, None, _progress(u.step, u.total, u.status), None
                        elif u.extra.get("grid") is None:
                            yield [], None, None, u.status, None
                        else:
                            fig = tsne_figure(u.extra["points"], u.extra["thumbs"], u.extra["probs"])
                            yield [], u.extra["grid"], fig, _progress(u.total, u.total, u.status), u.files
                except ValueError as err:
                    _fail(err)

            t_run.click(run_tsne, [session, t_class, t_chains, t_steps, t_every, t_thr, t_seed],
                        [t_live, t_grid, t_plot, t_status, t_files], api_name="tsne")
            t_stop.click(stop, session, t_status, queue=False, api_name="stop_tsne")

        # ------------------------------------------------------------------ Inpaint
        with gr.Tab("Inpaint"):
            with gr.Row():
                with gr.Column(scale=1, min_width=320):
                    i_editor = gr.ImageMask(type="numpy", label="Image: paint the region to fill",
                                            sources=["upload"], height=380, elem_id="inpaint-editor",
                                            brush=gr.Brush(default_size=18, colors=["#ffffff"], color_mode="fixed"),
                                            format="png")
                    gr.Examples([[str(p)] for p in studio.examples()], inputs=[i_editor], label="Examples")
                    i_class = gr.Dropdown(["top class"] + studio.class_choices(), value="top class",
                                          label="Class (default: C's top class for the image)", filterable=True,
                                          allow_custom_value=True)
                    i_steps = gr.Slider(1, MAX_STEPS, value=40, step=1, label="steps")
                    i_eps4 = gr.Slider(0.0, 50.0, value=1.0, step=0.1, label="ε4 — context term (PPGN-context)")
                    i_seed = gr.Number(0, precision=0, label="seed", minimum=0)
                    i_run, i_stop = _run_stop_buttons("inpaint")
                with gr.Column(scale=2):
                    i_status = gr.Markdown(elem_id="inpaint-status")
                    with gr.Row():
                        i_input = gr.Image(label="Input as the model sees it", elem_id="inpaint-input", format="png", height=260)
                        i_plain = gr.Image(label="PPGN", elem_id="inpaint-ppgn", format="png", height=260)
                        i_ctx = gr.Image(label="PPGN-context", elem_id="inpaint-context", format="png", height=260)
                    i_files = gr.File(label="Download", file_count="multiple")

            def run_inpaint(state, editor, cls, steps, eps4, seed):
                try:
                    image = editor_background(editor)
                    control = Control(get_preset(DEFAULT_PRESET).settings())
                    set_control(state, control)
                    for u in studio.inpaint_stream(image, editor, cls, int(steps), float(eps4), int(seed or 0),
                                                   snapshot_every=max(1, int(steps) // 10), control=control):
                        text = u.status + (f" — unmasked pixels changed: {u.record['unmasked_max_abs_diff_uint8']}"
                                           if u.final else "")
                        yield u.extra["input"], u.images[0], u.images[1], _progress(u.step, u.total, text), \
                            u.files or None
                except ValueError as err:
                    _fail(err)

            i_run.click(run_inpaint, [session, i_editor, i_class, i_steps, i_eps4, i_seed],
                        [i_input, i_plain, i_ctx, i_status, i_files], api_name="inpaint")
            i_stop.click(stop, session, i_status, queue=False, api_name="stop_inpaint")
    return demo


def make_studio(bundle_name: str = "default", device: str | None = None) -> Studio:
    import torch

    from ppgn_core.nets.registry import load_bundle

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Studio(load_bundle(bundle_name, device), device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="PPGN Studio")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--bundle", default=os.environ.get("PPGN_BUNDLE", "default"))
    parser.add_argument("--concurrency", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                        help="runs served at once (default: the cores, at most 2)")
    parser.add_argument("--queue-size", type=int, default=16)
    args = parser.parse_args(argv)
    t0 = time.time()
    studio = make_studio(args.bundle, args.device)
    demo = build_app(studio)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency)
    demo.launch(server_name=args.host, server_port=args.port, share=False, show_error=True,
                prevent_thread_lock=True, footer_links=["api"])
    print(f"PPGN Studio ready on http://{args.host}:{args.port} after {time.time() - t0:.1f} s", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
