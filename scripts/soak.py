"""Soak test: many clients use the running app for a long time, hostilely, and the server is watched.

    python scripts/soak.py --clients 4 --minutes 60 --out reports/soak.json           # shipped models
    python scripts/soak.py --bundle tiny --clients 4 --minutes 5 --browser 1          # a quick check

The app is launched on a free loopback port. Each client (``gradio_client``) repeats, until the time
is up, one of: a plain run of a random preset, class, step count and chain count; a *slider storm*
(a long run while ε sliders move many times a second, then Stop); a *Stop/Run race* (Run, Stop at
once, Run again, Stop); a *disconnect* (a run abandoned mid-stream: the client cancels and goes
away). ``--browser N`` adds N Chromium tabs (Playwright) that press Run and close the tab
mid-stream. Every preset runs once before the clients start (all networks loaded). The report: requests and errors by kind, tracebacks in the server's output (must be
0), p50/p95 seconds from Run to the first streamed image, and the server's memory (RSS), open
files and threads after warm-up and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ppgn_core.bench import launch_app  # noqa: E402

PRESETS = ["ldm-ppgn-h", "guided-ppgn-h", "ppgn-h", "noiseless-joint-ppgn-h", "dgn-am", "ppgn-x", "hand-designed",
           "no-prior"]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.errors: list[str] = []
        self.first_image: list[float] = []

    def count(self, kind: str) -> None:
        with self.lock:
            self.requests[kind] = self.requests.get(kind, 0) + 1

    def error(self, kind: str, err: BaseException | str) -> None:
        with self.lock:
            self.errors.append(f"{kind}: {err!r}"[:500])


def errors_by_kind(errors: list[str]) -> dict[str, int]:
    """How many errors of each action and exception ("race: TimeoutError", …)."""
    return dict(Counter(e.split("(", 1)[0] for e in errors))


def _clicked() -> float:
    """The click's time (ms), as the browser stamps Run and Stop: a Stop then reaches a run still queued."""
    return time.time() * 1000


def _args(rng: random.Random, steps: int | None = None) -> tuple:
    preset = rng.choice(PRESETS)
    return (f"{rng.randrange(1000)}", preset, rng.choice([-5, -4, -3]), rng.choice([0.5, 1.0, 2.0]), -17,
            rng.choice([0.02, 0.05, 0.1]), steps or rng.randint(4, 30), rng.randint(1, 4), rng.randrange(100), None,
            rng.choice([0, 0, 2]), _clicked())


def _wait(job, timeout: float = 600) -> None:
    t0 = time.time()
    while not job.done() and time.time() - t0 < timeout:
        time.sleep(0.1)
    if not job.done():
        raise TimeoutError("a run did not end within 10 minutes")


def plain_run(c, rng, stats: Stats) -> None:
    t0 = time.time()
    job = c.submit(*_args(rng), api_name="/sample")
    first = None
    for _ in job:
        if first is None:
            first = time.time() - t0
    _wait(job)
    if first is not None:
        with stats.lock:
            stats.first_image.append(first)
    status = job.outputs()[-1][3] if job.outputs() else ""
    if "error" in str(status).lower():
        stats.error("run", status)


def slider_storm(c, rng, stats: Stats) -> None:
    job = c.submit(*_args(rng, steps=2000), api_name="/sample")
    for _ in job:
        break
    for _ in range(rng.randint(10, 40)):
        c.predict(rng.choice([-6, -5, -4, -3]), rng.uniform(0, 3), rng.choice([-17, -8, -5]), rng.uniform(0.01, 0.2),
                  api_name="/set_eps")
        stats.count("set_eps")
    c.predict(_clicked(), api_name="/stop")
    _wait(job)


def stop_run_race(c, rng, stats: Stats) -> None:
    for _ in range(2):
        job = c.submit(*_args(rng, steps=500), api_name="/sample")
        c.predict(_clicked(), api_name="/stop")
        stats.count("stop")
        _wait(job)


def disconnect(c, rng, stats: Stats) -> None:
    job = c.submit(*_args(rng, steps=400), api_name="/sample")
    for _ in job:
        break
    job.cancel()


ACTIONS = {"run": (plain_run, 4), "storm": (slider_storm, 1), "race": (stop_run_race, 1), "disconnect": (disconnect, 2)}


def client_loop(url: str, seed: int, deadline: float, stats: Stats) -> None:
    from gradio_client import Client

    rng = random.Random(seed)
    c = Client(url, verbose=False)
    names, weights = zip(*[(k, w) for k, (_, w) in ACTIONS.items()])
    while time.time() < deadline:
        kind = rng.choices(names, weights)[0]
        stats.count(kind)
        try:
            ACTIONS[kind][0](c, rng, stats)
        except Exception as err:  # noqa: BLE001 (every failure is counted and reported)
            stats.error(kind, err)
        if kind == "disconnect":  # the client goes away; a new one connects
            c = Client(url, verbose=False)


def browser_loop(url: str, seed: int, deadline: float, stats: Stats) -> None:
    from playwright.sync_api import sync_playwright

    rng = random.Random(seed)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        while time.time() < deadline:
            stats.count("browser_close_mid_stream")
            try:
                page = browser.new_page()
                page.goto(url, timeout=60_000)
                page.get_by_role("button", name="Run").first.click(timeout=60_000)
                page.wait_for_timeout(rng.randint(300, 3000))
                page.close()  # the tab goes away mid-stream
            except Exception as err:  # noqa: BLE001
                stats.error("browser", err)
        browser.close()


def server_numbers(pid: int) -> dict:
    import psutil

    proc = psutil.Process(pid)
    return {"rss_mb": round(proc.memory_info().rss / 2 ** 20, 1), "open_files": proc.num_fds(),
            "threads": proc.num_threads()}


def warm_up(url: str) -> None:
    """One short run of every preset, so that every network the soak can touch is loaded before the start
    figures are read (memory that grows after this is growth, not loading)."""
    from gradio_client import Client

    c = Client(url, verbose=False)
    for preset in PRESETS:
        job = c.submit("980", preset, -5, 1.0, -17, 0.05, 2, 4, 0, None, 0, api_name="/sample")
        _wait(job)


def watch(pid: int, t0: float, deadline: float, timeline: list, every: float = 30) -> None:
    """The server's numbers every ``every`` seconds until the deadline."""
    while time.time() < deadline:
        timeline.append({"t_min": round((time.time() - t0) / 60, 2), **server_numbers(pid)})
        time.sleep(every)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))], 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--browser", type=int, default=0, help="Chromium tabs that close mid-stream")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--warmup-minutes", type=float, default=2, help="the start figures are read after this")
    ap.add_argument("--out", default="reports/soak.json")
    args = ap.parse_args()

    proc, url, ready = launch_app(args.bundle)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    warm_up(url)
    stats = Stats()
    t0 = time.time()
    deadline = t0 + 60 * args.minutes
    threads = [threading.Thread(target=client_loop, args=(url, i, deadline, stats)) for i in range(args.clients)]
    threads += [threading.Thread(target=browser_loop, args=(url, 100 + i, deadline, stats)) for i in range(args.browser)]
    timeline: list[dict] = []
    watcher = threading.Thread(target=watch, args=(proc.pid, t0, deadline, timeline), daemon=True)
    for t in threads + [watcher]:
        t.start()
    time.sleep(min(60 * args.warmup_minutes, 60 * args.minutes / 4))
    start = server_numbers(proc.pid)
    for t in threads:
        t.join()
    time.sleep(5)  # runs that were abandoned end; their threads should go
    end = server_numbers(proc.pid)
    proc.terminate()
    proc.wait(30)
    text = "".join(log)
    report = {
        "bundle": args.bundle, "clients": args.clients, "browser_tabs": args.browser, "minutes": args.minutes,
        "app_ready_s": round(ready, 2), "requests": stats.requests, "requests_total": sum(stats.requests.values()),
        "errors": len(stats.errors), "errors_by_kind": errors_by_kind(stats.errors),
        "error_samples": stats.errors[:20], "tracebacks": text.count("Traceback"),
        "first_image_s": {"n": len(stats.first_image), "p50": percentile(stats.first_image, 0.5),
                          "p95": percentile(stats.first_image, 0.95)},
        "server_after_warmup": start, "server_at_end": end,
        "rss_growth": round(end["rss_mb"] / start["rss_mb"] - 1, 4),
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"), "timeline": timeline,
        "server_log_tail": text[-3000:] if text.count("Traceback") else "",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("server_log_tail", "timeline")}, indent=2))
    ok = report["tracebacks"] == 0 and report["errors"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    main()
