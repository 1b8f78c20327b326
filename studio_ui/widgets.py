"""Widgets and helpers every tab shares: log-scale ε sliders, the Run/Stop pair, progress text,
per-session run control, and errors shown in the browser."""

from __future__ import annotations

import gradio as gr

from ppgn_core.jobs import EPS_OFF_LOG as OFF  # noqa: F401 (the ε sliders' scale, shared with the app bench)
from ppgn_core.jobs import eps_from_log as from_log  # noqa: F401
from ppgn_core.jobs import eps_to_log as to_log  # noqa: F401
from ppgn_core.sampler import Control

GALLERY_HEIGHT = "auto"  # galleries grow with their items: no row cut in half


def progress(k: int, n: int, text: str) -> str:
    return f"<progress value='{k}' max='{max(n, 1)}' style='width:100%'></progress>\n\n{text}"


def run_stop_buttons(prefix: str) -> tuple[gr.Button, gr.Button]:
    """The Run / Stop pair every tab shows under its settings (ids ``{prefix}-run``/``-stop``)."""
    with gr.Row():
        run = gr.Button("Run", variant="primary", elem_id=f"{prefix}-run")
        stop = gr.Button("Stop", elem_id=f"{prefix}-stop")
    return run, stop


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


def take_control(state: dict, control: Control) -> None:
    """Make ``control`` the session's running one, stopping the one before (one run per session)."""
    old = state.get("control")
    if old is not None:
        old.stop()
    state["control"] = control


def stop(state: dict) -> str:
    if state.get("control") is not None:
        state["control"].stop()
    return "stopping…"


def wire_stop(button: gr.Button, session: gr.State, status, api_name: str) -> None:
    button.click(stop, session, status, queue=False, api_name=api_name)
