"""A real browser (Debian's Chromium, driven by Playwright) against a launched app.

With PPGN_TEST_BUNDLE=default (the shipped models) it refreshes the screenshots in
docs/screenshots/; with the tiny test models (the default) they go to a temporary folder.
Skipped when Chromium or Playwright is missing (scripts/setup.sh installs both)."""

import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ppgn_core.bench import launch_app
from ppgn_core.presets import DEFAULT_PRESET, PRESETS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed")
BUNDLE = os.environ.get("PPGN_TEST_BUNDLE", "tiny")
SHOTS = (Path(__file__).resolve().parent.parent / "docs" / "screenshots" if BUNDLE != "tiny"
         else Path(tempfile.gettempdir()) / "ppgn_screenshots")


@pytest.fixture(scope="module")
def page():
    pw_api = pytest.importorskip("playwright.sync_api")
    proc, url, _ = launch_app(BUNDLE)
    pw = pw_api.sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.goto(url)
    pg.wait_for_selector("#sample-run", timeout=60_000)
    pg.app_url = url
    yield pg
    browser.close()
    pw.stop()
    proc.terminate()
    proc.wait(timeout=20)


def _fetch(pg, src: str) -> np.ndarray:
    if src.startswith("/"):
        src = pg.app_url.rstrip("/") + src
    data = pg.request.get(src).body()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_sample_tab_in_browser(page):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.get_by_role("tab", name="Sample").click()
    about = page.locator("#preset-about")
    default = PRESETS[DEFAULT_PRESET]
    assert default.title in about.inner_text()
    preset = page.locator("#sample-preset input")
    eps1 = page.locator("#eps1 input[type=range]")
    # the default's chain: ε1 (the prior's pull) is live, in its own units (1 = the prior's own flow)
    assert not default.is_chain and not eps1.is_disabled()
    eps1_default = eps1.input_value()
    assert float(eps1_default) == 1.0
    for typed, option, shown in (("annealed", "ε1 annealed to 0", "→ 0"), ("DAE on h", "PPGN-h (DAE on h)", "Eq. 11"),
                                 ("Guided", default.title, "noise level")):
        preset.click()
        preset.press("Control+a")
        preset.press("Backspace")
        preset.press_sequentially(typed, delay=30)
        page.get_by_role("option", name=option).click()
        page.wait_for_function(f"document.querySelector('#preset-about').innerText.includes({shown!r})",
                               timeout=20_000)
        if typed == "annealed":  # the sliders follow the preset: log10 ε1 = −3.5 (ε1 = 3e-4)
            page.wait_for_function("document.querySelector('#eps1 input[type=range]').value === '-3.5'",
                                   timeout=20_000)
    page.wait_for_function(f"document.querySelector('#eps1 input[type=range]').value === {eps1_default!r}",
                           timeout=20_000)
    assert not eps1.is_disabled()
    box = page.locator("#sample-class input")
    box.click()
    box.press("Control+a")
    box.press("Backspace")
    box.press_sequentially("golf ball", delay=30)
    page.get_by_role("option", name="574: golf ball").click()
    assert box.input_value() == "574: golf ball"
    slider = page.locator("#eps2 input[type=range]")  # the guidance ε2 is the default's live setting
    before = slider.input_value()
    slider.focus()
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    assert slider.input_value() != before
    page.locator("#sample-run").click()
    page.wait_for_selector("#sample-gallery img", timeout=60_000)
    page.wait_for_function("document.querySelector('#sample-status').innerText.includes('step')", timeout=60_000)
    # the screenshot shows the finished run: the status reaches the last step and every image has loaded
    page.wait_for_function("/step (\\d+) \\/ \\1\\b/.test(document.querySelector('#sample-status').innerText)",
                           timeout=300_000)
    page.wait_for_function("[...document.querySelectorAll('#sample-gallery img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / "sample.png"), full_page=True)
    assert page.locator("#sample-gallery img").count() >= 1
    # a start image needs a preset that can start from it: uploading one while guided-ppgn-h (noise only) is
    # picked switches the picker to PPGN-h, sliders live (the default ldm-ppgn-h would be kept: test_app)
    preset.click()
    preset.press("Control+a")
    preset.press("Backspace")
    preset.press_sequentially("noise-conditional", delay=30)
    page.get_by_role("option", name=PRESETS["guided-ppgn-h"].title).click()
    page.wait_for_function("document.querySelector('#preset-about').innerText.includes('R_h')", timeout=20_000)
    example = sorted((Path(__file__).resolve().parent.parent / "assets" / "examples").glob("*.png"))[0]
    page.locator("#sample-start input[type=file]").set_input_files(str(example))
    page.wait_for_function("document.querySelector('#preset-about').innerText.includes('Eq. 11')", timeout=20_000)
    page.wait_for_function("!document.querySelector('#eps1 input[type=range]').disabled", timeout=20_000)


def test_inpaint_tab_in_browser(page):
    page.get_by_role("tab", name="Inpaint").click()
    page.locator("#inpaint-editor").scroll_into_view_if_needed()
    page.locator(".gallery-item:visible").first.click()  # the first example image
    time.sleep(2)
    page.get_by_role("button", name="Brush").first.click()
    cv = page.locator("#inpaint-editor canvas").first.bounding_box()
    y = cv["y"] + cv["height"] / 2
    page.mouse.move(cv["x"] + cv["width"] * 0.35, y)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(cv["x"] + cv["width"] * (0.35 + 0.03 * k), y)
    page.mouse.up()
    page.locator("#inpaint-run").click()
    page.wait_for_function("document.querySelector('#inpaint-status').innerText.includes('unmasked pixels changed')",
                           timeout=120_000)
    page.screenshot(path=str(SHOTS / "inpaint.png"), full_page=True)
    status = page.locator("#inpaint-status").inner_text()
    assert "unmasked pixels changed: 0" in status
    x = _fetch(page, page.locator("#inpaint-input img").get_attribute("src"))
    grey = (x == 128).all(-1)  # the region to fill is visible in the input panel
    assert grey.mean() > 0.005, "the painted mask does not show in the input panel"
    for sel in ("#inpaint-ppgn img", "#inpaint-context img"):
        y_img = _fetch(page, page.locator(sel).get_attribute("src"))
        assert y_img.shape == x.shape and x.shape[0] >= 256
        changed = np.abs(y_img.astype(int) - x.astype(int)).sum(-1) > 0
        rows = np.nonzero(changed.any(1))[0]
        h = x.shape[0]
        assert changed.any(), "the painted region was not filled"
        # the stroke was horizontal through the middle: nothing above or below its band changed
        assert rows.min() > h * 0.2 and rows.max() < h * 0.8, (rows.min(), rows.max())
        assert ((y_img == (255, 214, 0)).all(-1) & grey).any()  # the filled region's outline
        box = page.locator(sel).bounding_box()
        assert box["width"] >= 256 and box["height"] >= 256, box  # a size a person can judge


def _all_items_visible(pg, gallery: str) -> None:
    """Every image of the gallery lies inside the gallery's box (no row cut off)."""
    g = pg.locator(gallery).bounding_box()
    items = pg.locator(f"{gallery} img")
    assert items.count() >= 1
    for k in range(items.count()):
        b = items.nth(k).bounding_box()
        assert b["y"] >= g["y"] - 1 and b["y"] + b["height"] <= g["y"] + g["height"] + 1, (k, b, g)


def test_galleries_show_all_items(page):
    page.get_by_role("tab", name="Neurons").click()
    page.locator("#neurons-run").click()
    page.wait_for_function("document.querySelector('#neurons-status').innerText.includes('facets')",
                           timeout=300_000)
    assert page.locator("#neurons-gallery img").count() == 6  # 3 chains × 2 segments, two rows of 4
    _all_items_visible(page, "#neurons-gallery")
    page.screenshot(path=str(SHOTS / "neurons.png"), full_page=True)
    page.get_by_role("tab", name="Sample").click()
    _all_items_visible(page, "#sample-gallery")


def test_tsne_tab_keeps_chains_and_marks_empty_cells(page):
    import re

    page.get_by_role("tab", name="t-SNE grid").click()
    page.locator("#tsne-run").click()
    page.wait_for_function("/samples on a \\d+×\\d+ grid|only \\d+ sample/.test("
                           "document.querySelector('#tsne-status').innerText)", timeout=300_000)
    assert page.locator("#tsne-gallery img").count() == 6  # the chains stay after the run
    status = page.locator("#tsne-status").inner_text()
    m = re.search(r"(\d+) samples on a (\d+)×(\d+) grid", status)
    if m:
        n, rows, cols = map(int, m.groups())
        assert rows * cols - n < cols
        grid_img = _fetch(page, page.locator("#tsne-grid img").get_attribute("src"))
        side = (grid_img.shape[1] - 1) // cols  # cell + 1-px gap
        cells = [grid_img[1 + r * side: r * side + side, 1 + c * side: c * side + side]
                 for r in range(rows) for c in range(cols)]
        assert not any((cell == 255).all() for cell in cells)  # no blank white cell
        assert sum((cell == (228, 228, 228)).all(-1).mean() > 0.8 for cell in cells) == rows * cols - n
    page.screenshot(path=str(SHOTS / "tsne.png"), full_page=True)


def test_stop_reaches_a_run_still_in_the_queue_in_browser(page):
    from gradio_client import Client

    from ppgn_core.bench import sample_tab_args

    # two other users' long runs hold the app's two run slots, so the page's Run waits in the queue
    blockers = [Client(page.app_url, verbose=False) for _ in range(2)]
    busy = [b.submit(*sample_tab_args("noiseless-joint-ppgn-h", 2000, 1), api_name="/sample") for b in blockers]
    for job in busy:
        next(iter(job))
    page.get_by_role("tab", name="Sample").click()
    page.locator("#sample-run").click()
    page.wait_for_timeout(1500)
    assert "queue" in page.locator("#sample-status").inner_text()  # waiting for a slot
    page.locator("#sample-stop").click()  # the browser stamps both clicks with its own clock
    for b in blockers:
        b.predict(api_name="/stop")
    page.wait_for_function("/step 0 \\/ \\d+ \\(stopped\\)/.test(document.querySelector('#sample-status').innerText)",
                           timeout=120_000)
