"""The page of `loom serve` in a real browser (Playwright driving Debian's chromium, headless), against a server this
test starts on 127.0.0.1 and stops: type a prompt, watch progress and previews, cancel that job, run another and
download its first PNG, whose pixels must be `loom generate`'s, then start an edit from that file.

Skipped, saying why, where chromium or Playwright is missing (.ci/run installs both). With LOOM_SCREENSHOT=PATH the
page, with the finished job's images, is also saved there (docs/images/serve-page.png was made so).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("httpx")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

from loom.testing.server import LoomServer  # noqa: E402

PROMPT = "a big yellow triangle on the left and a small red circle on the right, blue background"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install -y chromium)"),
]


@pytest.fixture
def page(tmp_path):
    with LoomServer(tmp_path / "data") as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 680}, accept_downloads=True)
            page.set_default_timeout(120_000)
            page.goto(server.url)
            yield page
        finally:
            browser.close()


def fill(page, generator: str, seed: int, count: int) -> None:
    page.wait_for_selector(f"#generator option[value='{generator}']", state="attached")
    page.select_option("#generator", generator)
    page.fill("#prompt", PROMPT)
    page.fill("#seed", str(seed))
    page.fill("#count", str(count))
    page.fill("#size", "64")


def test_page_runs_previews_cancels_and_downloads_loom_generates_png(page, tmp_path):
    from PIL import Image

    import loom

    # a long diffusion job: progress and previews show, then Cancel stops it
    fill(page, "diffusion", seed=3, count=40)
    page.click("#submit")
    page.wait_for_function("document.querySelector('#bar').value > 0")
    page.wait_for_selector("#preview[src^='data:image/png;base64,']")
    page.click("#cancel")
    page.wait_for_selector("#status:has-text('Cancelled')")
    assert page.is_disabled("#cancel") and not page.is_disabled("#submit")

    # a second job runs to its end; its first image is downloaded
    fill(page, "diffusion", seed=5, count=4)
    page.click("#submit")
    page.wait_for_selector("#status:has-text('Finished: 4 output(s).')")
    page.wait_for_function("[...document.querySelectorAll('#images img')].every((i) => i.complete && i.naturalWidth)")
    with page.expect_download() as download:
        page.click("text=download 1")
    path = tmp_path / "downloaded.png"
    download.value.save_as(path)
    expected = loom.generate(PROMPT, 5, generator="diffusion", size=64, progress=False).output.to_numpy()[0]
    with Image.open(path) as made:
        assert np.array_equal(np.asarray(made), expected), "the downloaded PNG is not loom generate's"
    if os.environ.get("LOOM_SCREENSHOT"):
        page.screenshot(path=Path(os.environ["LOOM_SCREENSHOT"]))

    # the downloaded image as the start of an edit: the page sends the file and the strength
    fill(page, "diffusion", seed=6, count=1)
    page.set_input_files("#image", str(path))
    page.fill("#strength", "0.5")
    page.click("#submit")
    page.wait_for_selector("#status:has-text('Finished: 1 output(s).')")
    assert page.text_content("#error") == ""
