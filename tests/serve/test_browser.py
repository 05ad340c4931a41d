"""The page in a real browser: headless Chromium (Debian's) driven by Playwright's Python API.

Choose inpaint, upload the bundled photo, paint a mask stroke, run on the tiny model, watch the
node states change, see the result; drop the result back on the page to load its workflow.
Screenshots are saved (under the test's tmp folder, or $EDITGRAPH_SCREENSHOTS) and checked not blank.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from editgraph import workflows

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():  # a missing browser fails the page's tests; it never skips them
    raise RuntimeError("the browser tests need Debian's chromium: apt-get install chromium (.ci/run installs it)")
from playwright import sync_api  # noqa: E402  (in the test extra)

PHOTO = workflows.HERE / "assets" / "coffee.png"

# Installed before the page's own scripts: records every state each graph node goes through.
RECORD_STATES = """
window.__transitions = [];
new MutationObserver((records) => {
  for (const r of records) {
    const g = r.target;
    if (r.attributeName === 'data-state' && g.dataset.state) window.__transitions.push([g.dataset.node, g.dataset.state]);
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-state']});
"""


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("EDITGRAPH_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def assert_not_blank(path: Path) -> None:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600
    assert pixels.std() > 20, f"{path} looks blank (std {pixels.std():.1f})"
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 500, f"{path} has too few colours to be the page"


@pytest.mark.slow
def test_inpaint_with_a_painted_mask_on_the_tiny_model(server, browser, shots):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.add_init_script(RECORD_STATES)
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    page.select_option("#workflow", "inpaint")
    page.wait_for_selector("#painter:not([hidden])")
    # upload the bundled photo through the painter's file input
    with page.expect_response(lambda r: r.url.endswith("/api/uploads") and r.status == 201):
        page.set_input_files("#photo-file", str(PHOTO))
    page.wait_for_function("document.getElementById('photo').src.includes('upload%3A')")
    # fewer, smaller steps: this is about the page, not the model
    page.eval_on_selector("#param-steps", "e => { e.value = 3; e.dispatchEvent(new Event('input')); }")
    page.eval_on_selector("#param-working_size", "e => { e.value = 128; e.dispatchEvent(new Event('input')); }")
    page.fill("#param-prompt", "a blue ceramic plate")
    # paint one stroke across the left of the photo
    box = page.locator("#mask-view").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5, steps=12)
    page.mouse.up()
    page.screenshot(path=shots / "1-painted.png", full_page=True)

    page.click("#run")
    page.wait_for_function("document.body.dataset.lastState !== undefined", timeout=120_000)
    page.wait_for_function("document.getElementById('result-after').naturalWidth > 0")
    page.screenshot(path=shots / "2-result.png", full_page=True)

    assert page.evaluate("document.body.dataset.lastState") == "done", page.inner_text("#errors")
    transitions = page.evaluate("window.__transitions")
    seen = {}
    for node, state in transitions:
        seen.setdefault(node, []).append(state)
    assert seen["denoise"][:2] == ["queued", "running"] and seen["denoise"][-1] == "ran"
    assert seen["save"][-1] == "ran"
    final = page.evaluate("Object.fromEntries([...document.querySelectorAll('#graph g.node')].map(g => [g.dataset.node, g.dataset.state]))")
    assert set(final.values()) <= {"ran", "cached"} and len(final) == 11
    assert page.evaluate("document.getElementById('result-after').naturalWidth") == 600
    assert problems == []

    # the job got the uploaded photo and the painted mask: white along the stroke, black elsewhere
    job_id = page.evaluate("document.body.dataset.lastJob")
    with server.client() as c:
        job = c.get(f"/api/jobs/{job_id}").json()
        result = c.get(job["outputs"][0]["url"]).content
    assert Path(job["params"]["image"]).read_bytes() == PHOTO.read_bytes()
    mask = np.asarray(Image.open(job["params"]["mask"]).convert("L"))
    assert mask.shape == (400, 600)
    assert mask[200, 120] == 255 and mask[200, 60] > 128 and mask[50, 500] == 0 and mask[380, 300] == 0
    assert job["params"]["prompt"] == "a blue ceramic plate" and job["params"]["steps"] == 3
    out = np.asarray(Image.open(io.BytesIO(result)).convert("RGB"), dtype=np.int16)
    src = np.asarray(Image.open(PHOTO).convert("RGB"), dtype=np.int16)
    assert np.abs(out - src)[190:210, 100:140].max() > 0  # painted: changed
    assert (out[0:60, 500:600] == src[0:60, 500:600]).all()  # far from the stroke: untouched

    for shot in ("1-painted.png", "2-result.png"):
        assert_not_blank(shots / shot)

    # drop the result on a fresh page: the workflow and its params come back into the form
    fresh = browser.new_page(viewport={"width": 1400, "height": 1000})
    fresh.goto(server.url + "/#workflow=look")
    fresh.wait_for_selector("body[data-ready='1']")
    assert fresh.input_value("#workflow") == "look"
    fresh.evaluate(
        """async (url) => {
            const blob = await (await fetch(url)).blob();
            const dt = new DataTransfer();
            dt.items.add(new File([blob], 'result.png', {type: 'image/png'}));
            window.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        job["outputs"][0]["url"],
    )
    fresh.wait_for_function("document.getElementById('job-state').textContent.startsWith('loaded the workflow')")
    assert fresh.input_value("#workflow") == "inpaint"
    assert fresh.input_value("#param-prompt") == "a blue ceramic plate"
    assert fresh.input_value("#param-steps") == "3"
    fresh.screenshot(path=shots / "3-dropped.png", full_page=True)
    assert_not_blank(shots / "3-dropped.png")
