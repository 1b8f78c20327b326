"""Speed: ms per sampling step per preset (1 and 8 chains, 128 px), the floor set by the networks'
own forward/backward passes, and peak memory. ``python -m ppgn_core bench [--quick]``."""

from __future__ import annotations

import json
import platform
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from . import conditions
from .conditions import ClassCondition
from .nets.registry import ModelBundle
from .presets import DEFAULT_PRESET, PRESETS, build_sampler


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_steps(bundle: ModelBundle, preset: str, chains: int, steps: int, repeats: int, device: str,
               reuse_image: bool = True, **overrides) -> dict:
    """Median and spread (min, max) of ms/step over ``repeats`` runs of ``steps`` steps (after a warm-up)."""
    cond = ClassCondition(bundle.classifier, 980)
    s = build_sampler(preset, bundle, cond, seed=0, **overrides)
    s.reuse_image = reuse_image
    z = s.init(chains, device)
    list(s.run(z, 2, snapshot_every=1000))  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        list(s.run(z, steps, snapshot_every=10 ** 9))
        runs.append((time.perf_counter() - t0) * 1000 / (steps + 1))  # +1: the final evaluation
    return {"median_ms": round(statistics.median(runs), 1), "min_ms": round(min(runs), 1),
            "max_ms": round(max(runs), 1), "runs": len(runs), "steps_per_run": steps}


def run_times_ms(fn, repeats: int, warmup: int = 3) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn``, after ``warmup`` calls (oneDNN picks and caches
    its kernels per shape)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000)
    return ts


def time_floor(bundle: ModelBundle, chains: int, repeats: int, device: str) -> dict:
    """The passes a joint-prior step cannot avoid: G forward/backward with C forward/backward
    (the condition gradient), and E forward on that image (the prior E(G(h)))."""
    h = torch.randn(chains, *bundle.code_shape, device=device)
    out = {}

    def cond_pass():
        z = h.clone().requires_grad_(True)
        logp = torch.log_softmax(bundle.classifier(bundle.generator(z)), 1)[:, 980].sum()
        torch.autograd.grad(logp, z)

    with torch.no_grad():
        x_h = bundle.generator(h)

    def prior_pass():  # the prior reuses the condition pass's image: E only
        with torch.no_grad():
            bundle.encoder(x_h)

    def c_only():
        x = torch.rand(chains, 3, bundle.image_size, bundle.image_size, device=device, requires_grad=True)
        torch.autograd.grad(bundle.classifier(x)[:, 980].sum(), x)

    for name, fn in (("condition_G_C_fwd_bwd", cond_pass), ("prior_E_fwd", prior_pass),
                     ("C_fwd_bwd_only", c_only)):
        ts = run_times_ms(fn, repeats)
        out[name] = {"median_ms": round(statistics.median(ts), 1), "min_ms": round(min(ts), 1),
                     "max_ms": round(max(ts), 1)}
    out["floor_joint_step_ms"] = round(out["condition_G_C_fwd_bwd"]["median_ms"]
                                       + out["prior_E_fwd"]["median_ms"], 1)
    return out


def _unfolded_lite_nets(bundle: ModelBundle) -> dict:
    """C's and E's EfficientNet-Lite with their batch norms (as loaded before folding), channels-last."""
    from .nets.classifiers import EfficientNetLite, load_efficientnet_lite

    nets = {}
    for role in ("classifier", "encoder"):
        net = getattr(bundle, role).net
        if isinstance(net, EfficientNetLite) and net.variant is not None:
            nets[role] = load_efficientnet_lite(net.variant, fold=False).to(memory_format=torch.channels_last)
    return nets


@contextmanager
def _swapped_nets(bundle: ModelBundle, nets: dict):
    old = {role: getattr(bundle, role).net for role in nets}
    try:
        for role, net in nets.items():
            getattr(bundle, role).net = net
        yield
    finally:
        for role, net in old.items():
            getattr(bundle, role).net = net


def speedups(bundle: ModelBundle, preset: str = "noiseless-joint-ppgn-h", chains_list: tuple[int, ...] = (1, 8),
             steps: int = 5, repeats: int = 5, device: str = "cpu") -> dict:
    """Before/after of the sampler's speed work, measured in one run on the same models:

    * ``recompute_image``: the prior runs G(h) again, weights in the default (contiguous) layout
      (the naive step);
    * ``reuse_image``: the prior reuses the image of the condition pass;
    * ``reuse_image+channels_last``: and the networks' weights in channels-last layout (the
      engine's default since this measurement: ``load_bundle`` sets it);
    * ``threads_1``: the default step on one thread (how much the second core gives);
    * ``batch_norm_unfolded``: C and E as loaded before their batch norms were folded into the
      convolutions (``EfficientNetLite.fold_for_inference``, the engine's default since);
    * ``robust_views_one_by_one``: the robust condition's views through C one pass each instead of
      stacked into one pass (``conditions.ROBUST_ONE_PASS_MAX_IMAGES``, the default since).
    """
    out: dict = {"preset": preset}
    threads = torch.get_num_threads()
    unfolded = _unfolded_lite_nets(bundle)
    for chains in chains_list:
        bundle.set_memory_format(torch.contiguous_format)
        try:
            row = {"recompute_image": time_steps(bundle, preset, chains, steps, repeats, device, reuse_image=False),
                   "reuse_image": time_steps(bundle, preset, chains, steps, repeats, device)}
        finally:
            bundle.set_memory_format(torch.channels_last)
        row["reuse_image+channels_last"] = time_steps(bundle, preset, chains, steps, repeats, device)
        if device == "cpu" and threads > 1:
            torch.set_num_threads(1)
            try:
                row["threads_1"] = time_steps(bundle, preset, chains, steps, repeats, device)
            finally:
                torch.set_num_threads(threads)
        with _swapped_nets(bundle, unfolded):
            row["batch_norm_unfolded"] = time_steps(bundle, preset, chains, steps, repeats, device)
        one_pass = conditions.ROBUST_ONE_PASS_MAX_IMAGES
        conditions.ROBUST_ONE_PASS_MAX_IMAGES = 0
        try:
            row["robust_views_one_by_one"] = time_steps(bundle, preset, chains, steps, repeats, device)
        finally:
            conditions.ROBUST_ONE_PASS_MAX_IMAGES = one_pass
        base = row["recompute_image"]["median_ms"]
        row["speedup_vs_recompute"] = {k: round(base / v["median_ms"], 2) for k, v in row.items()
                                       if isinstance(v, dict) and "median_ms" in v}
        out[str(chains)] = row
    return out


#: the presets whose time to a picture is reported: the default, and the default before the latent diffusion prior
PICTURE_PRESETS = (DEFAULT_PRESET, "guided-ppgn-h")


def time_to_picture(bundle: ModelBundle, preset: str, chains: int, repeats: int = 3, device: str = "cpu") -> dict:
    """Seconds for a whole run of ``preset`` at its own number of steps (noise levels), from noise to the
    final images, for ``chains`` chains: :func:`time_steps` over the preset's own step count."""
    steps = PRESETS[preset].steps
    t = time_steps(bundle, preset, chains, steps, repeats, device)
    per_run = lambda ms: round(ms * (steps + 1) / 1000, 2)  # noqa: E731 (time_steps divides by steps + 1)
    return {"steps": steps, "median_s": per_run(t["median_ms"]), "min_s": per_run(t["min_ms"]),
            "max_s": per_run(t["max_ms"]), "runs": t["runs"]}


def robust_cost(bundle: ModelBundle, preset: str = DEFAULT_PRESET, ks: tuple[int, ...] = (0, 1, 2, 4),
                chains_list: tuple[int, ...] = (1, 8), steps: int = 5, repeats: int = 3, device: str = "cpu") -> dict:
    """ms/step of ``preset`` with the robust condition over K views (K = 0: off), per chain count:
    each view is one more forward/backward pass of C (and the resampling of the image)."""
    out: dict = {"preset": preset}
    for chains in chains_list:
        out[str(chains)] = {f"k{k}": time_steps(bundle, preset, chains, steps, repeats, device, robust_k=k)
                            for k in ks}
    return out


def run_bench(bundle: ModelBundle, device: str = "cpu", presets: list[str] | None = None,
              chains_list: tuple[int, ...] = (1, 8), steps: int = 5, repeats: int = 3,
              out: Path | None = Path("reports/bench.json")) -> dict:
    presets = presets or list(PRESETS)
    result: dict = {"device": device, "cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "condition_network": bundle.classifier.name, "condition_input_size": bundle.classifier.input_size,
                    "image_size": bundle.image_size,
                    "ms_per_step": {}, "floor": {}}
    for chains in chains_list:
        result["floor"][str(chains)] = time_floor(bundle, chains, repeats, device)
        for p in presets:
            result["ms_per_step"].setdefault(p, {})[str(chains)] = time_steps(bundle, p, chains, steps, repeats,
                                                                             device)
    result["time_to_picture"] = {p: {str(n): time_to_picture(bundle, p, n, repeats, device) for n in (1, 4)}
                                 for p in PICTURE_PRESETS if p in presets}
    result["speedups"] = speedups(bundle, chains_list=chains_list, steps=steps, repeats=repeats, device=device)
    result["robust_condition"] = robust_cost(bundle, chains_list=chains_list, steps=steps, repeats=repeats,
                                             device=device)
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(out.read_text()) if out.exists() else {}
        old.update({"sampling": result})
        out.write_text(json.dumps(old, indent=2))
    return result


def launch_app(bundle: str = "default", extra: list[str] | None = None, timeout: float = 180):
    """Start ``app.py`` on a free loopback port; returns (process, url, seconds until ready)."""
    import os
    import socket
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, str(root / "app.py"), "--bundle", bundle, "--port", str(port),
                             *(extra or [])], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    while time.time() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        if "PPGN Studio ready" in line:
            return proc, f"http://127.0.0.1:{port}/", time.time() - t0
    proc.kill()
    raise RuntimeError("app did not start:\n" + "".join(lines))


def sample_tab_args(preset: str, steps: int, chains: int) -> tuple:
    """The Sample tab's inputs for a run of ``preset`` as its sliders show it after picking it (its own ε,
    step size and robust condition; volcano, seed 0, no start image)."""
    from .jobs import eps_to_slider

    s = PRESETS[preset].settings()
    return ("980: volcano", preset, eps_to_slider(preset, s.eps1), s.eps2, eps_to_slider(preset, s.eps3), s.lr, steps,
            chains, 0, None, s.robust_k)


def app_ms_per_step(client, chains: int, steps: int = 30, preset: str = DEFAULT_PRESET) -> float:
    """ms per step of a Sample-tab run seen from the browser's side: from its first streamed update
    (step 0) to its last (the end of the run), over ``steps`` steps."""
    job = client.submit(*sample_tab_args(preset, steps, chains), api_name="/sample")
    t_first = None
    for _ in job:
        if t_first is None:
            t_first = time.time()
    while not job.done():
        time.sleep(0.01)
    return (time.time() - t_first) * 1000 / steps


def app_time_to_picture(client, preset: str, chains: int = 4) -> float:
    """Seconds from pressing Run (Sample tab, the preset as its sliders show it, its own step count) to
    the run's last update: the whole picture as a user waits for it, streaming and files included."""
    t0 = time.time()
    job = client.submit(*sample_tab_args(preset, PRESETS[preset].steps, chains), api_name="/sample")
    for _ in job:
        pass
    while not job.done():
        time.sleep(0.01)
    return time.time() - t0


def bench_app(bundle: str = "default", repeats: int = 3, out: Path | None = Path("reports/bench.json"),
              chains_list: tuple[int, ...] = (1, 4, 8), steps: int = 30) -> dict:
    """Seconds from ``python app.py`` to serving, and from pressing Run (Sample tab, 4 chains) to the
    first streamed image, measured through gradio_client; medians of ``repeats``. Then the app's
    ms/step for 1, 4 and 8 chains (``app_ms_per_step``) beside the engine's for the same preset."""
    from gradio_client import Client

    from .nets.registry import load_bundle

    ready, first, app_ms, picture = [], [], {}, {}
    for rep in range(repeats):
        proc, url, t_ready = launch_app(bundle)
        try:
            ready.append(t_ready)
            c = Client(url, verbose=False)
            if rep == 0:
                app_ms = {str(n): round(app_ms_per_step(c, n, steps), 1) for n in chains_list}
                picture = {p: round(app_time_to_picture(c, p, 4), 2) for p in PICTURE_PRESETS}
            for _ in range(2):
                t0 = time.time()
                job = c.submit(*sample_tab_args(DEFAULT_PRESET, 30, 4), api_name="/sample")
                for outp in job:
                    if outp[0]:
                        first.append(time.time() - t0)
                        break
                c.predict(api_name="/stop")
                while not job.done():
                    time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    engine = load_bundle(bundle) if bundle == "default" else load_bundle("tiny")
    # the engine with the app runs' own settings: the default preset as its sliders show it
    engine_ms = {str(n): time_steps(engine, DEFAULT_PRESET, n, 5, 3, "cpu")["median_ms"] for n in chains_list}
    res = {"bundle": bundle,
           "time_to_picture_4_chains_s": {**picture, "note": "from Run to the run's last update through "
                                                             "gradio_client, each preset at its own step count"},
           "sample_ms_per_step": {"app": app_ms, "engine": engine_ms,
                                                    "note": f"{steps} steps of {DEFAULT_PRESET} with its own settings "
                                                            "(robust condition included); app: from the "
                                                            "first to the last streamed update through gradio_client "
                                                            "(sampling, streaming and PNG encoding together); "
                                                            "engine: sampler alone (bench.time_steps), same settings"},
           "ready_s": {"median": round(statistics.median(ready), 2), "min": round(min(ready), 2),
                                         "max": round(max(ready), 2), "n": len(ready)},
           "first_image_s": {"median": round(statistics.median(first), 2), "min": round(min(first), 2),
                             "max": round(max(first), 2), "n": len(first)},
           "note": "first_image_s: from submitting Run (4 chains) to the first streamed gallery update, "
                   "through gradio_client on loopback"}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(out.read_text()) if out.exists() else {}
        old["app"] = res
        out.write_text(json.dumps(old, indent=2))
    return res
