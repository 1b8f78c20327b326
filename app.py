"""PPGN Studio — the browser app (Gradio Blocks). Layout, events and streaming only: each tab's
code is in ``studio_ui/<tab>_tab.py``; every computation lives in ``ppgn_core`` (``ppgn_core.studio``).

    python app.py [--host 127.0.0.1] [--port 7860] [--device cpu|cuda] [--bundle default|tiny]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if __name__ == "__main__":
    # Run as a program, the app is never inside a notebook: keep gradio from importing IPython for its
    # notebook support (every such import in gradio is guarded by ImportError). About 0.5 s of the start
    # here (reports/bench.json, "app"); inside a notebook, where IPython is already imported, nothing changes.
    sys.modules.setdefault("IPython", None)

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from ppgn_core.allocator import configure_for_serving  # noqa: E402
from ppgn_core.images import MAX_PIXELS  # noqa: E402

# Gradio decodes uploads with PIL: make PIL refuse decompression bombs above our limit (it raises
# above 2× MAX_IMAGE_PIXELS), so an oversized upload fails from its header, before decoding.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2

from ppgn_core.studio import Studio  # noqa: E402
from studio_ui.inpaint_tab import build_inpaint_tab  # noqa: E402
from studio_ui.neurons_tab import build_neurons_tab  # noqa: E402
from studio_ui.sample_tab import build_sample_tab  # noqa: E402
from studio_ui.tsne_tab import build_tsne_tab  # noqa: E402
from studio_ui.widgets import new_session  # noqa: E402

TABS = (("Sample", build_sample_tab), ("Neurons", build_neurons_tab), ("t-SNE grid", build_tsne_tab),
        ("Inpaint", build_inpaint_tab))


def build_app(studio: Studio) -> gr.Blocks:
    """The four tabs, each built by its own module in ``studio_ui/``."""
    with gr.Blocks(title="PPGN Studio") as demo:
        gr.Markdown("# PPGN Studio\nPlug & Play Generative Networks (Nguyen et al., CVPR 2017): "
                    f"condition network C = {studio.bundle.classifier.name}, prior = {studio.bundle.name} models.")
        session = new_session()
        for title, build in TABS:
            with gr.Tab(title):
                build(studio, session)
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
    configure_for_serving()  # few malloc arenas: memory freed by one worker thread serves the next run
    studio = make_studio(args.bundle, args.device)
    demo = build_app(studio)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency)
    demo.launch(server_name=args.host, server_port=args.port, share=False, show_error=True,
                prevent_thread_lock=True, footer_links=["api"])
    print(f"PPGN Studio ready on http://{args.host}:{args.port} after {time.time() - t0:.1f} s", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
