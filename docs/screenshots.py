"""Regenerate the page screenshots in docs/images/ (headless Chromium through Playwright).

Usage: ``python docs/screenshots.py [--sample-runs sample_runs]``. Uses the gallery when it
holds runs, else a planted demo gallery in a temporary folder (tests/planted.py). Each PNG
is quantised to keep it under 300 KB.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from modalscope.store import list_runs  # noqa: E402
from tests.browser import browser_page, dashboard_server, wait_idle  # noqa: E402
from tests.planted import plant_gallery, plant_run  # noqa: E402

OUT = ROOT / "docs" / "images"
MAX_BYTES = 300_000


def save(page, name: str, full: bool = False) -> Path:
    png = page.screenshot(full_page=full)
    img = Image.open(io.BytesIO(png)).convert("RGB")
    for colors in (256, 128, 64):
        buf = io.BytesIO()
        img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
        if buf.tell() < MAX_BYTES:
            break
    path = OUT / f"{name}.png"
    path.write_bytes(buf.getvalue())
    print(f"{path.relative_to(ROOT)}: {buf.tell() / 1000:.0f} KB")
    return path


def learn_steps(page) -> None:
    """The probe step (suppression inside the encoder) and the complementary contrast step."""
    for label, name in (("4 · Inside the encoder", "learn_probe"), ("8 · Not every low head is suppression", "learn_contrast")):
        page.get_by_text(label).click()
        wait_idle(page)
        page.locator(".js-plotly-plot").first.wait_for()
        page.wait_for_timeout(1500)
        save(page, name, full=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample-runs", default=str(ROOT / "sample_runs"))
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="modalscope-shots-"))
    gallery = Path(args.sample_runs)
    if list_runs(gallery).empty:
        gallery = tmp / "gallery"
        plant_gallery(gallery, seeds=(0, 1, 2))
    runs = tmp / "runs"
    plant_run(runs, "my-sweep_lr0.01_s0", tags={"sweep": "my-sweep", "swept": "optim.lr"}, set_=["optim.lr=0.01"], final_acc=0.74)
    plant_run(runs, "my-sweep_lr0.1_s0", tags={"sweep": "my-sweep", "swept": "optim.lr"}, set_=["optim.lr=0.1"], final_acc=0.83)
    with dashboard_server(runs, gallery, tmp / "server.log") as url, browser_page(1400, 1250) as page:
        page.goto(url)
        page.get_by_role("button", name="Open in Live").wait_for()
        wait_idle(page)
        save(page, "runs")
        joint = next(k for k in ("gallery/joint_noisy_s0", "gallery/joint_imbalanced_s0") if (gallery / k.split("/")[1]).exists())
        ogm = "gallery/ogm_ge_imbalanced_s0" if (gallery / "ogm_ge_imbalanced_s0").exists() else joint
        page.goto(f"{url}/live?run={ogm}")
        page.locator(".js-plotly-plot").first.wait_for()
        wait_idle(page)
        page.wait_for_timeout(1500)
        save(page, "live")
        # every other Live view: (button, a chart title it draws, image name)
        for view, marker, name in (("Modality gap", "Gap distribution", "live_gap"), ("Gradients", "dominance", "live_gradients"),
                                   ("Contributions", "Modality contribution", "live_contributions"),
                                   ("Method signals", "Learning rate", "live_method"), ("Robustness", "Accuracy under", "live_robustness")):
            page.get_by_text(view, exact=True).click()
            page.locator(".js-plotly-plot").filter(has_text=marker).first.wait_for()
            wait_idle(page)
            page.wait_for_timeout(1500)
            save(page, name)
        page.goto(f"{url}/compare")
        page.get_by_text("groups", exact=True).click()
        wait_idle(page)
        page.locator(".js-plotly-plot").first.wait_for()
        page.wait_for_timeout(1500)
        save(page, "compare")
        page.goto(f"{url}/launch")
        page.get_by_role("button", name="Launch").wait_for()
        wait_idle(page)
        save(page, "launch")
        page.goto(f"{url}/learn")
        page.get_by_text("3 · Together, one wins").click()
        wait_idle(page)
        page.locator(".js-plotly-plot").first.wait_for()
        page.wait_for_timeout(1500)
        save(page, "learn")
        learn_steps(page)
        # a real run, training now: progress, ETA and the Stop button
        from modalscope.launcher import launch
        from modalscope.store import open_run

        started = launch({"method": {"name": "joint"}, "epochs": 400, "log": {"progress": False}}, [0], runs)
        run_dir = started[0].run_dir
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if len(open_run(run_dir).scalars(names=["acc/test/fused"])) >= 8:
                    break
            except Exception:  # noqa: BLE001 - the store is being created
                pass
            time.sleep(1)
        page.goto(f"{url}/live?run=runs/{started[0].name}")
        page.locator(".js-plotly-plot").filter(has_text="Training losses").first.wait_for()
        want = {"Accuracy per epoch", "Training losses", "Share of the gradient each encoder receives"}
        drawn = "() => Array.from(document.querySelectorAll('.js-plotly-plot')).filter(gd => gd.querySelector('path.js-line')).length"
        for _ in range(100):  # charts redraw when new rows arrive: catch a moment when all are drawn
            if want <= set(page.locator(".js-plotly-plot .gtitle").all_text_contents()) and page.evaluate(drawn) >= 4:
                break
            page.wait_for_timeout(100)
        save(page, "live_running")
        os.kill(started[0].pid, signal.SIGTERM)


if __name__ == "__main__":
    main()
