"""Plotly figures for the app: p(class) curves and the t-SNE scatter with thumbnails."""

from __future__ import annotations

import base64
import io

import numpy as np


def curve_figure(steps: list[int], curves: list[list[float]], ylabel: str = "p(class | x) under C"):
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, c in enumerate(curves):
        fig.add_trace(go.Scatter(x=steps[: len(c)], y=c, mode="lines+markers", name=f"chain {i}"))
    fig.update_layout(height=280, margin=dict(l=40, r=10, t=10, b=40), xaxis_title="step", yaxis_title=ylabel,
                      legend=dict(orientation="h"))
    if ylabel.startswith("p("):
        fig.update_yaxes(range=[0, 1])
    return fig


def _png_uri(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).resize((48, 48)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def tsne_figure(xy: np.ndarray, thumbs: np.ndarray, probs: list[float], max_thumbs: int = 150):
    """Scatter of the t-SNE embedding; each point carries its sample as a thumbnail."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers",
                               marker=dict(size=6, color=probs, colorscale="Viridis", cmin=0, cmax=1,
                                           colorbar=dict(title="p")),
                               text=[f"sample {i}, p={p:.3f}" for i, p in enumerate(probs)], hoverinfo="text"))
    for i in range(min(len(xy), max_thumbs)):
        fig.add_layout_image(dict(source=_png_uri(thumbs[i]), x=float(xy[i, 0]), y=float(xy[i, 1]), xref="x",
                                  yref="y", sizex=0.06, sizey=0.06, xanchor="center", yanchor="middle",
                                  layer="above"))
    fig.update_layout(height=520, margin=dict(l=10, r=10, t=10, b=10), xaxis=dict(range=[-0.05, 1.05]),
                      yaxis=dict(range=[-0.05, 1.05], scaleanchor="x"))
    return fig
