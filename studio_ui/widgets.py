"""Widgets and helpers every tab shares: ε sliders, the Run/Stop pair, progress text,
per-session run control, and errors shown in the browser.

A Stop must reach a run that is still waiting in the queue, which has no Control yet. Run and Stop
therefore carry the time of their click as their last input (the browser's clock, stamped by
``STAMP_CLICK``; an API caller passes its own milliseconds to both, or nothing): a run whose click
came before the session's latest Stop ends as soon as it starts."""

from __future__ import annotations

import gradio as gr

from gradio.components.number import Number

from ppgn_core.jobs import EPS_OFF_LOG as OFF  # noqa: F401 (the ε sliders' scale, shared with the app bench)
from ppgn_core.sampler import Control

GALLERY_HEIGHT = "auto"  # galleries grow with their items: no row cut in half
#: what an ε slider accepts from any caller: log10 ε of a MALA-approx preset (from OFF) or ε itself
EPS_SLIDER_BOUNDS = (OFF, 10.0)


def eps_slider(**props) -> gr.Slider:
    """An ε slider whose shown range follows the picked preset (ε itself for a denoising chain, log10 ε for
    MALA-approx). The app's own copy checks an input against both scales' union, so an API caller that sends a
    preset's values without picking it in a browser session is not refused; a run reads the value by its
    preset's scale (``jobs.eps_from_slider``). A browser session's copy, updated with the preset, checks
    against the range it shows."""
    slider = gr.Slider(**props)

    def preprocess(payload: float) -> float:
        Number.raise_if_out_of_bounds(payload, *EPS_SLIDER_BOUNDS)
        return Number.round_to_precision(payload, slider.precision)

    slider.preprocess = preprocess
    return slider


def progress(k: int, n: int, text: str) -> str:
    return f"<progress value='{k}' max='{max(n, 1)}' style='width:100%'></progress>\n\n{text}"


#: the click's time on the browser's clock (ms), written into an event's last input before it is sent
STAMP_CLICK = "(...args) => { args[args.length - 1] = Date.now(); return args; }"


def run_stop_buttons(prefix: str) -> tuple[gr.Button, gr.Button]:
    """The Run / Stop pair every tab shows under its settings (ids ``{prefix}-run``/``-stop``)."""
    with gr.Row():
        run = gr.Button("Run", variant="primary", elem_id=f"{prefix}-run")
        stop = gr.Button("Stop", elem_id=f"{prefix}-stop")
    return run, stop


def click_time() -> gr.Number:
    """The hidden last input of a Run or Stop click: when it was clicked (ms; ``STAMP_CLICK`` fills it)."""
    return gr.Number(None, visible=False, label="clicked at (ms)")


def seed_box() -> gr.Number:
    return gr.Number(0, precision=0, label="seed", minimum=0)


def chains_gallery(label: str, columns: int, elem_id: str) -> gr.Gallery:
    """A gallery of chain images that grows with its items (no row cut in half)."""
    return gr.Gallery(label=label, columns=columns, height=GALLERY_HEIGHT, elem_id=elem_id, object_fit="contain",
                      format="png")


def downloads(label: str) -> gr.File:
    return gr.File(label=label, file_count="multiple")


def fail(err: Exception):
    raise gr.Error(str(err))


def new_session() -> gr.State:
    """Per-browser-session state: the Control of the session's running chain."""
    return gr.State(lambda: {"control": None})


def take_control(state: dict, control: Control, clicked_at: float | None = None) -> None:
    """Make ``control`` the session's running one, stopping the one before (one run per session). A run
    clicked (``clicked_at``, ms) before the session's latest Stop was stopped while it waited: it is
    stopped at once, and ends with what it has."""
    old = state.get("control")
    if old is not None:
        old.stop()
    state["control"] = control
    stopped_at = state.get("stopped_at")
    if clicked_at is not None and stopped_at is not None and float(clicked_at) <= stopped_at:
        control.stop()


def stop(state: dict, clicked_at: float | None = None) -> str:
    """Stop the session's running run and, when the click's time is known, every run clicked before it
    that is still queued."""
    if clicked_at is not None:
        state["stopped_at"] = max(float(clicked_at), state.get("stopped_at", float("-inf")))
    if state.get("control") is not None:
        state["control"].stop()
    return "stopping…"


def wire_run(button: gr.Button, fn, inputs: list, outputs: list, api_name: str) -> gr.Number:
    """Run ``fn`` on a click with the click's time as its last input; returns that hidden input."""
    clicked = click_time()
    button.click(fn, [*inputs, clicked], outputs, api_name=api_name, js=STAMP_CLICK)
    return clicked


def wire_stop(button: gr.Button, session: gr.State, status, api_name: str) -> None:
    button.click(stop, [session, click_time()], status, queue=False, api_name=api_name, js=STAMP_CLICK)
