"""The main job end to end at toy scale, and its report rendered in headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from robolearn.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_quickstart_pipeline_and_report_renders(tmp_path):
    report = tmp_path / "report"
    rc = main(["quickstart", "--episodes", "4", "--train-steps", "6", "--eval-episodes", "2",
               "--out", str(tmp_path / "work"), "--report", str(report), "--threads", "1"])  # fmt: skip
    assert rc == 0
    index = report / "index.html"
    assert index.is_file()
    for png in ("training_curve.png", "success_rate.png", "latency.png"):
        assert (report / png).stat().st_size > 1000
    videos = list((report / "videos").glob("*.mp4"))
    assert len(videos) == 1
    if CHROMIUM is None:
        pytest.skip("chromium not installed (./bootstrap dev installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.goto(Path(index).resolve().as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
            assert len(images) == 3 and all(done and width > 100 for done, width in images), images
            page.wait_for_function("document.querySelector('video').readyState >= 2", timeout=20000)
            width = page.eval_on_selector("video", "v => v.videoWidth")
            assert width > 100
            assert "success" in page.inner_text("body").lower()
        finally:
            browser.close()
