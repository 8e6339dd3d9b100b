"""Open a report in headless Chromium (Debian's `chromium`, driven by Playwright): every image loads, every
section is there, the console stays clean. Saves a screenshot to artifacts/report.png.

The report is built from the bundled model on a slice of the shared test faces when both exist (a
screenshot worth looking at), else from a tiny random model on generated data.
Set-up: `apt-get install -y chromium` and `pip install playwright` (never `playwright install`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_report import CLASSES, SECTION_IDS, make_tiny_run

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _browser_or_skip():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright python package is not installed (pip install playwright)")
    return chromium, sync_playwright


def _build_report(tmp_path: Path) -> Path:
    from maskwatch.bundled import default_model_path
    from maskwatch.paths import shared_data_dir
    from maskwatch.report.build import build_report, report_for_run

    faces = shared_data_dir() / "faces"
    try:
        model = default_model_path()
    except FileNotFoundError:
        model = None
    if model is not None and (faces / "test").is_dir():
        from maskwatch.data.datasets import open_dataset
        from maskwatch.evaluate import evaluate_samples

        test = open_dataset(faces, classes=CLASSES).split("test")
        samples = [s for s in test if s.label == 0][:16] + [s for s in test if s.label == 1][:16]
        evaluation = evaluate_samples(model, samples, CLASSES)
        evaluation.info = {"model": str(model), "data": str(faces), "split": "test (first 16 per class)"}
        return build_report(evaluation, tmp_path / "report.html", cam_samples=16, per_gallery=4).path
    run = make_tiny_run(tmp_path)
    return report_for_run(run, cam_samples=6, per_gallery=4).path


def test_report_renders_in_chromium(tmp_path):
    chromium, sync_playwright = _browser_or_skip()
    report = _build_report(tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    console_errors: list[str] = []
    failed_requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: console_errors.append(str(exc)))
            page.on("requestfailed", lambda r: failed_requests.append(r.url))
            page.goto(report.resolve().as_uri(), wait_until="load")
            page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=20_000)
            images = page.evaluate(
                "Array.from(document.images).map(i => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight,"
                " src: i.currentSrc.slice(0, 15)}))")
            sections = page.evaluate("Array.from(document.querySelectorAll('section[id]')).map(s => s.id)")
            galleries = page.evaluate(
                "Array.from(document.querySelectorAll('[data-gallery]')).map(g => g.dataset.gallery)")
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert len(images) > 10
    broken = [i for i in images if i["w"] <= 0 or i["h"] <= 0]
    assert not broken, f"images that did not load: {broken}"
    assert all(i["src"].startswith("data:image/") for i in images)
    assert sections == SECTION_IDS
    assert galleries == ["misclassified", "low_confidence", "confident_correct"]
    assert not console_errors, console_errors
    assert not failed_requests, failed_requests
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
