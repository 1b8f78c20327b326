"""The app as a service: no connection leaves the machine; memory stays flat under load."""

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ARGS = ("574: golf ball", "noiseless-joint-ppgn-h", -5, 1.0, -17, 0.1)


def _start(cmd, timeout=120):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([*cmd, "--bundle", "tiny", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while time.time() - t0 < timeout:
        line = proc.stdout.readline()
        if "PPGN Studio ready" in line:
            return proc, f"http://127.0.0.1:{port}/"
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("app did not start")


def test_app_and_every_tab_make_no_outside_connection(tmp_path):
    from gradio_client import Client, handle_file

    log = tmp_path / "connections.log"
    proc, url = _start([sys.executable, str(ROOT / "tests" / "net_guard.py"), str(log), str(ROOT / "app.py")])
    try:
        c = Client(url, verbose=False)
        c.predict(*ARGS, 4, 1, 0, None, 0, api_name="/sample")
        c.predict("blocks.1", 1, 1, 1, 3, 1, 0, api_name="/neurons")
        c.predict("980: volcano", 2, 5, 1, 0.0, 0, api_name="/tsne")
        img = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / "x.png")
        layer = np.zeros((32, 32, 4), np.uint8)
        layer[5:15, 5:15] = 255
        Image.fromarray(layer).save(tmp_path / "m.png")
        c.predict({"background": handle_file(str(tmp_path / "x.png")), "layers": [handle_file(str(tmp_path / "m.png"))],
                   "composite": handle_file(str(tmp_path / "x.png"))}, "top class", 2, 1.0, 0, api_name="/inpaint")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    attempts = log.read_text() if log.exists() else ""
    assert attempts == "", f"the app tried to reach: {attempts}"


def test_load_four_clients_ten_runs_memory_flat():
    from gradio_client import Client

    proc, url = _start([sys.executable, str(ROOT / "app.py")])
    server = psutil.Process(proc.pid)
    try:
        Client(url, verbose=False).predict(*ARGS, 4, 2, 0, None, 0, api_name="/sample")
        after_first = server.memory_info().rss

        def user(k):
            c = Client(url, verbose=False)
            done = 0
            for r in range(10):
                out = c.predict(*ARGS, 4, 2, 100 * k + r, None, 0, api_name="/sample")
                rec = json.load(open([f for f in out[4] if f.endswith(".json")][0]))
                done += rec["steps_run"] == 4
            return done

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(user, range(4)))
        after = server.memory_info().rss
        c = Client(url, verbose=False)
        for r in range(60):  # with the 41 above: over 100 consecutive runs
            c.predict(*ARGS, 2, 1, 1000 + r, None, 0, api_name="/sample")
        after_100 = server.memory_info().rss
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert results == [10, 10, 10, 10]
    assert after <= 1.10 * after_first, (after_first / 2 ** 20, after / 2 ** 20)
    assert after_100 <= 1.10 * after_first, (after_first / 2 ** 20, after_100 / 2 ** 20)
