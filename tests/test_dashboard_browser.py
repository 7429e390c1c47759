"""Real browser end to end: headless Chromium (Debian package) through Playwright.

Outside CI the test skips, with the reason, when no Chromium is installed; with
``CI=true`` it must run (a missing browser is then a failure, never a skip).

Two sessions, one dashboard server: (1) every page, and every Live view of a real finished
run from the shipped gallery (a trainer's output, not a planted store), with no console
error; the robustness chart has drawn marks. (2) a running run that grows while the page is
open: new accuracy points and a newer gap histogram appear without a reload.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.browser import browser_page, chromium_path, dashboard_server, wait_idle
from tests.planted import append_epoch, plant_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
REAL_RUN = "ogm_ge_imbalanced_s0"
PAGES = ["Runs", "Launch", "Live", "Compare", "Learn"]
VIEWS = ["Overview", "Gradients", "Modality gap", "Contributions", "Method signals", "Robustness"]
CHARTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
    title: ((gd.layout && gd.layout.title && gd.layout.title.text) || '').replace(/<[^>]+>/g, ''),
    traces: (gd._fullData || []).map(t => ({name: t.name || '', n: t._length}))}))"""


def _require_browser() -> None:
    missing = []
    if chromium_path() is None:
        missing.append("Chromium (/usr/bin/chromium; `make browser-deps` installs Debian's package)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package")
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but the browser test cannot run: missing " + " and ".join(missing))
        pytest.skip("browser test skipped: missing " + " and ".join(missing))


def _console_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"{m.text} ({m.location.get('url', '')})") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def _charts(page) -> list[dict]:
    return page.evaluate(CHARTS_JS)


def _wait_chart(page, title_start: str, timeout: float = 60.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for c in _charts(page):
            if c["title"].startswith(title_start):
                return c
        page.wait_for_timeout(300)
    raise AssertionError(f"no chart titled {title_start!r}; have {[c['title'] for c in _charts(page)]}")


def _no_exception_box(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator('[data-testid="stException"]').first.inner_text()


def test_every_page_and_live_view_of_a_real_run_and_a_live_refresh(tmp_path):
    _require_browser()
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for name in (REAL_RUN, "joint_imbalanced_s0", "unimodal-visual_imbalanced_s0"):
        shutil.copytree(ROOT / "sample_runs" / name, gallery / name)
    runs = tmp_path / "runs"
    with dashboard_server(runs, gallery, tmp_path / "server.log") as url, browser_page() as page:
        errors = _console_errors(page)
        page.goto(url)
        page.get_by_role("heading", name="Runs").wait_for()
        for name in PAGES[1:]:
            page.get_by_role("link", name=name).first.click()
            page.get_by_role("heading").first.wait_for()
            wait_idle(page)
            _no_exception_box(page)
        # As a user gets there (a deep link to /live would make Streamlit probe /live/_stcore/... first: 404s in the console).
        page.get_by_role("link", name="Runs").first.click()
        page.get_by_label("Filter by name").fill(REAL_RUN)
        page.keyboard.press("Enter")
        wait_idle(page)
        page.get_by_role("button", name="Open in Live").click()
        page.get_by_role("heading", name=REAL_RUN).wait_for()
        for view in VIEWS:
            page.get_by_role("radio", name=view, exact=True).first.click()
            wait_idle(page)
            _no_exception_box(page)
            if view == "Robustness":
                blank = page.locator(".js-plotly-plot").filter(has_text="Accuracy under blank corruption").first
                blank.wait_for()
                assert blank.locator("g.barlayer g.point path").count() == 2, "the blank-corruption bars are not drawn"
                noise = page.locator(".js-plotly-plot").filter(has_text="Accuracy under noise corruption").first
                assert noise.locator("g.scatterlayer path.point").count() == 8, "the noise-corruption markers are not drawn"
            elif view == "Method signals":
                assert _wait_chart(page, "Modulation coefficient")["traces"]
            elif view == "Modality gap":
                _wait_chart(page, "Modality gap")
        page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
        assert not errors, errors

        d = plant_run(runs, "growing", epochs=2, steps_per_epoch=5, status="running", set_=["epochs=50"])
        page.goto(url)  # a new session: nothing remembered
        page.get_by_role("heading", name="Runs").wait_for()
        page.get_by_role("link", name="Live").first.click()  # Live opens on the user's newest run
        page.get_by_role("heading", name="growing").wait_for()
        acc = _wait_chart(page, "Accuracy per epoch")
        n0 = next(t["n"] for t in acc["traces"] if t["name"] == "fused (test)")
        assert n0 == 2
        page.get_by_role("radio", name="Modality gap", exact=True).first.click()
        assert "epoch 2 ·" in _wait_chart(page, "Modality gap audio-visual")["title"]
        append_epoch(d, 2)
        append_epoch(d, 3)
        _wait_chart(page, "Modality gap audio-visual · epoch 4", timeout=30)  # followed the run, no reload
        page.get_by_role("radio", name="Overview", exact=True).first.click()
        deadline = time.time() + 30
        n = n0
        while time.time() < deadline and n == n0:
            acc = _wait_chart(page, "Accuracy per epoch")
            n = next(t["n"] for t in acc["traces"] if t["name"] == "fused (test)")
            page.wait_for_timeout(300)
        assert n == 4, "the running run's new epochs did not appear without a reload"
        assert not errors, errors
