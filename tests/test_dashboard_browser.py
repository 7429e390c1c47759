"""Real browser end to end: headless Chromium (Debian package) through Playwright.

Outside CI the test skips, with the reason, when no Chromium is installed; with
``CI=true`` it must run (a missing browser is then a failure, never a skip).
"""

from __future__ import annotations

import os

import pytest

from tests.browser import browser_page, chromium_path, dashboard_server, wait_idle
from tests.planted import plant_gallery

pytestmark = [pytest.mark.browser, pytest.mark.slow]


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


def test_runs_to_live_draws_the_histogram(tmp_path):
    _require_browser()
    gallery = tmp_path / "gallery"
    plant_gallery(gallery, seeds=(0,))
    with dashboard_server(tmp_path / "runs", gallery, tmp_path / "server.log") as url, browser_page() as page:
        page.goto(url)
        page.get_by_role("heading", name="Runs").wait_for()
        page.get_by_text("joint_imbalanced_s0").first.wait_for(state="attached")  # a grid cell of the runs table
        page.get_by_role("button", name="Open in Live").click()
        page.wait_for_url("**/live?run=*")
        wait_idle(page)
        chart = page.locator(".js-plotly-plot").filter(has_text="Modality gap audio-visual")
        chart.first.wait_for()
        bars = chart.first.locator("g.barlayer g.point path")
        assert bars.count() >= 20, "the gap histogram's bars are not drawn"
        assert chart.first.locator("g.legend").get_by_text("GMM fit").count() == 1
        page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
        assert (tmp_path / "live.png").stat().st_size > 10_000
