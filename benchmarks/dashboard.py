"""Dashboard speed: Live-page render time on a 100 000-step store, and write→page latency.

1. Render: a planted run with 100 000 training steps (every step logs losses, gradient
   norms/shares, dominance ratio and the conflict flag: ~1.5 M scalar rows) plus 100 epochs
   of accuracies, gap histograms and GMM fits. The Live page is rendered through
   ``streamlit.testing.v1.AppTest`` (server time: the whole script run, queries + figures +
   serialisation, no browser). "cold" = a run folder never opened before (nothing cached), "warm" =
   the next refresh (the (run, last row id) caches hit). Imports are warmed up first on a
   tiny run so they are not counted.
2. Latency: a separate writer process logs training steps through ``RunWriter`` with the
   trainer's default flush period (``log.flush_seconds`` = 0.5 s) and records when it logs a
   marked step; the page is re-run every ``--refresh`` seconds (what ``st.fragment(run_every=LIVE_REFRESH_SECONDS)``
   does in the browser) and we record when the marked step first shows in the page's loss
   chart. Latency = shown − logged.

Usage: ``python benchmarks/dashboard.py [--steps 100000] [--markers 10] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import doctables  # noqa: E402

APP = str(ROOT / "dashboard" / "app.py")


def _app(runs_dir: Path, gallery: Path):
    from streamlit.testing.v1 import AppTest

    os.environ["MODALSCOPE_RUNS_DIR"] = str(runs_dir)
    os.environ["MODALSCOPE_SAMPLE_RUNS"] = str(gallery)
    at = AppTest.from_file(APP, default_timeout=120)
    sys.argv = [APP]  # every run of app.py reads --runs-dir from argv: never this script's options
    at.run()
    return at


def _render(at, key: str, view: str = "Overview") -> float:
    at.session_state["live.run"] = key
    at.query_params["run"] = key
    at.session_state["live.view"] = view
    at.switch_page("views/live.py")
    t = time.perf_counter()
    at.run()
    dt = time.perf_counter() - t
    assert not at.exception, [e.message for e in at.exception]
    return dt


def bench_render(tmp: Path, steps: int) -> dict:
    from tests.planted import plant_run

    gallery = tmp / "gallery"
    t = time.perf_counter()
    spe = 1000
    plant_run(gallery, "big", epochs=steps // spe, steps_per_epoch=spe)
    plant_run(gallery, "tiny", epochs=2, steps_per_epoch=5)
    plant_s = time.perf_counter() - t
    from modalscope.store import open_run

    rows = open_run(gallery / "big").counts()["scalars"]
    at = _app(tmp / "runs", gallery)
    for view in ("Overview", "Gradients", "Modality gap", "Contributions", "Method signals", "Robustness"):
        _render(at, "gallery/tiny", view)  # warm imports
    out = {"steps": steps, "scalar_rows": rows, "plant_seconds": round(plant_s, 1)}
    import shutil

    for i, view in enumerate(("Overview", "Gradients", "Modality gap")):
        colds = []
        for j in range(3):
            name = f"big{i}{j}"
            shutil.copytree(gallery / "big", gallery / name)  # a run never opened before: nothing cached
            colds.append(_render(at, f"gallery/{name}", view))
            assert at.title[0].value == name, at.title[0].value
            warm = [_render(at, f"gallery/{name}", view) for _ in range(3)]
            shutil.rmtree(gallery / name)
        cold = statistics.median(colds)
        out[view] = {"cold_s": round(cold, 3), "cold_all_s": [round(c, 3) for c in colds], "warm_s": round(statistics.median(warm), 3)}
        print(f"render Live/{view:<13} cold {cold:.3f} s   warm {statistics.median(warm):.3f} s", flush=True)
    shutil.copytree(gallery / "big", gallery / "bigfull")
    at.session_state["full_resolution"] = True
    full = _render(at, "gallery/bigfull", "Overview")
    at.session_state["full_resolution"] = False
    out["Overview full resolution"] = {"cold_s": round(full, 3)}
    print(f"render Live/Overview, full resolution, cold {full:.3f} s", flush=True)
    return out


def bench_many(tmp: Path, n_runs: int, n_compare: int) -> dict:
    """Runs page over a root of ``n_runs`` runs (cold: never listed; warm: the next refresh),
    and Compare with ``n_compare`` runs selected. Runs are copies of planted 20-epoch runs
    (5 seeds x 4 methods, 24 steps per epoch, every default series)."""
    import shutil

    from tests.planted import plant_run

    seeds_root = tmp / "many_src"
    src = []
    for i, method in enumerate(("joint", "ogm_ge", "unimodal", "cal")):
        for seed in range(5):
            name = f"{method}_s{seed}"
            plant_run(seeds_root, name, method=method, seed=seed, epochs=20, steps_per_epoch=24,
                      modality="audio" if method == "unimodal" else None)
            src.append(seeds_root / name)
    root = tmp / "many"
    root.mkdir()
    for i in range(n_runs):
        shutil.copytree(src[i % len(src)], root / f"run{i:04d}_{src[i % len(src)].name}")
    empty = tmp / "many_gallery"
    empty.mkdir()
    at = _app(root, empty)  # the first run of the app lists the root once (imports + cold listing)
    import streamlit as st

    from modalscope import reference, store
    from modalscope.dashboard import queries

    def forget() -> None:  # everything a fresh server process would not have
        st.cache_data.clear()
        queries.clear_memos()
        for memo in (store._SUMMARIES, store._FINALS, reference._FOUND, reference._SCANS, reference._CONFIGS, queries._READERS):
            memo.clear()

    at.switch_page("views/runs.py")
    colds = []
    for _ in range(3):  # median of 3 cold listings (the machine is shared: one sample is noise)
        forget()
        t = time.perf_counter()
        at.run()
        colds.append(time.perf_counter() - t)
        assert not at.exception, [e.message for e in at.exception]
    cold = statistics.median(colds)
    shown = " ".join(c.value for c in at.caption)
    if os.environ.get("BENCH_DEBUG"):
        print(len(at.dataframe), [len(df.value) for df in at.dataframe], shown, [e.value for e in at.error], [w.value for w in at.warning],
              [t.value for t in at.title], [i.value for i in at.info], [type(c).__name__ for c in at.main.children.values()])
    assert f"{n_runs} of {n_runs} runs" in shown, shown
    warm = []
    for _ in range(3):
        st.cache_data.clear()  # as after the 2 s TTL: the listing is redone, the per-run memo hits
        t = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - t)
    keys = [f"runs/{d.name}" for d in sorted(root.iterdir())][:n_compare]
    at.session_state["compare.selected"] = keys
    at.session_state["compare.mode"] = "runs"
    at.session_state["compare.runs"] = keys
    cmp_colds = []
    for _ in range(3):  # Compare opened right after the Runs page: the runs table is what that page read; the rest is cold
        forget()
        at.switch_page("views/runs.py")
        at.run()
        queries.clear_memos(keep=("_configs",))  # the configs the Runs page just read (5 s memo)
        for memo in (store._FINALS, reference._FOUND, reference._SCANS, reference._CONFIGS, queries._READERS):
            memo.clear()
        at.switch_page("views/compare.py")
        t = time.perf_counter()
        at.run()
        cmp_colds.append(time.perf_counter() - t)
        assert not at.exception, [e.message for e in at.exception]
    cmp_cold = statistics.median(cmp_colds)
    assert len(at.get("plotly_chart")) > 0, "Compare drew no chart"
    t = time.perf_counter()
    at.run()
    cmp_warm = time.perf_counter() - t
    out = {"runs": n_runs, "runs_page_cold_s": round(cold, 3), "runs_page_cold_all_s": [round(c, 3) for c in colds],
           "runs_page_refresh_s": round(statistics.median(warm), 3), "compare_runs": n_compare, "compare_cold_s": round(cmp_cold, 3),
           "compare_cold_all_s": [round(c, 3) for c in cmp_colds], "compare_refresh_s": round(cmp_warm, 3)}
    print(f"Runs page, {n_runs} runs: cold {cold:.3f} s, refresh {statistics.median(warm):.3f} s; "
          f"Compare, {n_compare} runs: cold {cmp_cold:.3f} s, refresh {cmp_warm:.3f} s", flush=True)
    return out


def _writer(run_dir: str, markers: int, gap_s: float, log_path: str) -> None:
    import numpy as np

    from modalscope.store import RunWriter
    from tests.planted import plant_run

    plant_run(Path(run_dir).parent, Path(run_dir).name, epochs=1, steps_per_epoch=10, status="running")
    w = RunWriter(run_dir, resume=True)  # trainer defaults: flush every 0.5 s or 2000 rows
    Path(log_path + ".ready").write_text("1")
    rng = np.random.default_rng(0)
    step = 10
    marks = []
    t_next = float("inf")
    stop_at = float("inf")
    armed = False
    while time.time() < stop_at:  # keep training for 3 s after the last mark, as a trainer would
        now = time.time()
        vals = {"loss/total": float(rng.random()), "loss/fused": float(rng.random()), "grad_share/audio": 0.8, "grad_share/visual": 0.2}
        if not armed and Path(log_path + ".go").exists():
            armed, t_next = True, now + 1.0 + rng.random()
        if now >= t_next:
            marks.append({"step": step, "logged": time.time()})
            t_next = now + gap_s + rng.random() if len(marks) < markers else float("inf")
            if len(marks) == markers:
                stop_at = now + 3.0
        w.log_scalars(step, 0, vals)
        step += 1
        time.sleep(0.005)  # ~200 steps/s, a small model on CPU
    w.close("finished")
    Path(log_path).write_text(json.dumps(marks))


def bench_latency(tmp: Path, markers: int, refresh: float) -> dict:
    gallery = tmp / "lat_gallery"
    gallery.mkdir(parents=True, exist_ok=True)
    run_dir = tmp / "lat_runs" / "live"
    marks_file = tmp / "marks.json"
    import subprocess

    p = subprocess.Popen([sys.executable, __file__, "--writer", str(run_dir), str(marks_file), str(markers)])
    deadline = time.time() + 120
    while not Path(str(marks_file) + ".ready").exists() and time.time() < deadline:
        time.sleep(0.1)
    at = _app(tmp / "lat_runs", gallery)
    seen: list[tuple[float, int]] = []
    renders = []
    _render(at, "runs/live", "Overview")
    Path(str(marks_file) + ".go").write_text("1")
    while p.poll() is None:
        t0 = time.time()
        dt = _render(at, "runs/live", "Overview")
        renders.append(dt)
        if os.environ.get("BENCH_DEBUG"):
            print(at.title[0].value if at.title else None, len(at.get("plotly_chart")), round(dt, 3))
        shown = max(0, _loss_steps(at))
        seen.append((time.time(), shown))
        time.sleep(max(0.0, refresh - (time.time() - t0)))
    p.wait()
    marks = json.loads(marks_file.read_text())
    lat = []
    for m in marks:
        first = next((t for t, s in seen if s >= m["step"]), None)
        if first is not None:
            lat.append(first - m["logged"])
    res = {"markers": len(lat), "all_s": [round(x, 2) for x in lat], "refresh_s": refresh, "median_s": round(statistics.median(lat), 3), "max_s": round(max(lat), 3),
           "mean_s": round(statistics.mean(lat), 3), "render_refresh_median_s": round(statistics.median(renders), 3)}
    print(f"write→page latency over {len(lat)} marks: median {res['median_s']} s, max {res['max_s']} s "
          f"(page refresh every {refresh} s; refresh render {res['render_refresh_median_s']} s)", flush=True)
    return res


def _loss_steps(at) -> int:
    """The largest step the page's "Training losses" chart shows (-1: no such chart or no point)."""
    import base64

    import numpy as np

    shown = -1
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        if spec["layout"]["title"]["text"] == "Training losses":
            for tr in spec["data"]:
                xs = tr["x"]
                if isinstance(xs, dict):
                    xs = np.frombuffer(base64.b64decode(xs["bdata"]), dtype=xs["dtype"]).tolist()
                if len(xs):
                    shown = max(shown, int(max(xs)))
    return shown


def bench_launch(tmp: Path, refresh: float, rounds: int = 3) -> dict:
    """Launch page click → first loss chart on Live: the real launcher (a detached
    ``modalscope train`` at the page's defaults), the page re-run every ``refresh`` seconds as
    the Live page's fragments do in a browser; time from the click to the end of the first
    render whose loss chart has a point. The trainer's start-up (imports, data, first step,
    first flush) is most of it."""
    from modalscope import launcher
    from modalscope.dashboard.queries import FIRST_ROWS_REFRESH_SECONDS

    times, parts = [], []
    for i in range(rounds):
        runs = tmp / f"launch_runs{i}"
        runs.mkdir(parents=True, exist_ok=True)
        gallery = tmp / "launch_gallery"
        gallery.mkdir(parents=True, exist_ok=True)
        at = _app(runs, gallery)
        at.switch_page("views/launch.py")
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        at.text_input(key="launch.name").set_value(f"launched{i}")
        btn = at.button(key="launch.go")
        t0 = time.perf_counter()
        btn.click().run()
        assert not at.exception, [e.message for e in at.exception]
        first_render = time.perf_counter() - t0
        key = f"runs/launched{i}"
        assert at.session_state["live.run"] == key, "the click did not open the launched run on Live"
        at.query_params["run"] = key  # AppTest re-runs the page it started on: stay on Live, as the browser does
        at.switch_page("views/live.py")
        seen = -1
        store_at = row_at = None
        db = runs / f"launched{i}" / "metrics.sqlite"
        while time.perf_counter() - t0 < 120:
            t1 = time.perf_counter()
            at.run()
            seen = _loss_steps(at)
            if seen >= 0:
                break
            # the page's own pace: FIRST_ROWS_REFRESH_SECONDS while the run has no step rows, then ``refresh``
            pace = FIRST_ROWS_REFRESH_SECONDS if not _has_loss_row(db) else refresh
            while time.perf_counter() - t1 < pace:  # meanwhile, when did the store and its first loss row appear?
                if store_at is None and db.is_file():
                    store_at = time.perf_counter() - t0
                if store_at is not None and row_at is None and _has_loss_row(db):
                    row_at = time.perf_counter() - t0
                time.sleep(0.05)
        dt = time.perf_counter() - t0
        assert seen >= 0, "no loss chart within 120 s"
        times.append(dt)
        parts.append({"click_render_s": round(first_render, 3), "store_s": store_at and round(store_at, 2), "first_row_s": row_at and round(row_at, 2)})
        print(f"launch → first loss chart: {dt:.2f} s (click render {first_render:.2f} s, store at {store_at}, first loss row at {row_at})", flush=True)
        for child in list(launcher._children):  # let the trainer finish: the next round starts on a quiet machine
            child.wait(timeout=300)
        launcher.reap()
    return {"rounds": rounds, "all_s": [round(t, 3) for t in times], "median_s": round(statistics.median(times), 3),
            "parts": parts, "refresh_s": refresh}


def _has_loss_row(db: Path) -> bool:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)
        try:
            return con.execute("SELECT 1 FROM scalars s JOIN names n ON n.id = s.name_id WHERE n.name LIKE 'loss/%' LIMIT 1").fetchone() is not None
        finally:
            con.close()
    except sqlite3.Error:
        return False


def _latency_only(markers: int, refresh: float) -> None:
    with tempfile.TemporaryDirectory(prefix="modalscope-bench-") as d:
        print(json.dumps(bench_latency(Path(d), markers, refresh), indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--markers", type=int, default=10)
    ap.add_argument("--refresh", type=float, default=None, help="page refresh period (default: the Live page's own, queries.LIVE_REFRESH_SECONDS)")
    ap.add_argument("--out", help="write the results as JSON here (docs/dashboard_bench.json feeds docs/benchmarks.md)")
    ap.add_argument("--runs", type=int, default=500, help="runs in the root for the Runs page timing")
    ap.add_argument("--compare", type=int, default=50, help="runs selected on the Compare page")
    ap.add_argument("--skip", nargs="*", default=[], choices=["render", "latency", "many", "launch"], help="parts to leave out")
    ap.add_argument("--writer", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--latency-only", action="store_true")
    args = ap.parse_args()
    if args.refresh is None and not args.writer:
        from modalscope.dashboard.queries import LIVE_REFRESH_SECONDS

        args.refresh = LIVE_REFRESH_SECONDS
    if args.writer:
        _writer(args.writer[0], int(args.writer[2]), 2.0, args.writer[1])
        return
    import logging

    if args.latency_only:
        logging.getLogger("streamlit").setLevel(logging.ERROR)
        return _latency_only(args.markers, args.refresh)

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    import resource

    with tempfile.TemporaryDirectory(prefix="modalscope-bench-") as d:
        tmp = Path(d)
        res = {"load_average_1min_before": os.getloadavg()[0], "cpus": os.cpu_count()}
        if args.skip and args.out and Path(args.out).is_file():  # a partial re-run keeps the other parts' figures
            res = {**res, **json.loads(Path(args.out).read_text())}
        for part, fn in (("many", lambda: bench_many(tmp, args.runs, args.compare)), ("render", lambda: bench_render(tmp, args.steps)),
                         ("latency", lambda: bench_latency(tmp, args.markers, args.refresh)),
                         ("launch", lambda: bench_launch(tmp, args.refresh))):
            if part not in args.skip:
                load = os.getloadavg()[0]
                res[part] = {**fn(), "load_1min": [load, os.getloadavg()[0]]}
                if part == "render":  # peak RSS once the 100 000-step run has been rendered (the 500-run root was listed before)
                    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        res["load_average_1min_after"] = os.getloadavg()[0]
    print(json.dumps(res, indent=2))
    if args.out:
        doctables.record(args.out, res, DOC_JSON, "docs/benchmarks.md", "dashboard")


DOC_JSON = ROOT / "docs" / "dashboard_bench.json"


@doctables.renderer("dashboard")
def render() -> str:
    r = json.loads(DOC_JSON.read_text())
    def la(part: dict) -> str:
        lo = part.get("load_1min")
        return f" (load {lo[0]:.0f}–{lo[1]:.0f})" if lo else ""

    load = f"1-minute load average on {r['cpus']} cores in brackets (start–end of each part)"
    rows = []
    if "render" in r:
        rd = r["render"]
        for view in ("Overview", "Gradients", "Modality gap"):
            if view in rd:
                rows.append([f"Live · {view}, {rd['steps']:,}-step run ({rd['scalar_rows']:,} scalar rows), cold{la(rd)}", f"{rd[view]['cold_s']:.2f} s", "≤ 0.5 s"])
                rows.append([f"Live · {view}, next refresh", f"{rd[view]['warm_s']:.2f} s", ""])
        if "Overview full resolution" in rd:
            rows.append(["Live · Overview with *Full resolution* (every row), cold", f"{rd['Overview full resolution']['cold_s']:.2f} s", "—"])
    if "latency" in r:
        lt = r["latency"]
        rows.append([f"row written → visible on Live, median of {lt['markers']} marks{la(lt)}", f"{lt['median_s']:.2f} s", "≤ 1 s"])
        rows.append(["row written → visible on Live, max", f"{lt['max_s']:.2f} s", "≤ 1.5 s"])
    if "many" in r:
        m = r["many"]
        rows.append([f"Runs page, {m['runs']} runs in the root, first listing{la(m)}", f"{m['runs_page_cold_s']:.2f} s", "≤ 1 s"])
        rows.append([f"Runs page, {m['runs']} runs, refresh", f"{m['runs_page_refresh_s']:.2f} s", "≤ 1 s"])
        rows.append([f"Compare, {m['compare_runs']} runs selected, first render", f"{m['compare_cold_s']:.2f} s", "≤ 1 s"])
        rows.append([f"Compare, {m['compare_runs']} runs, refresh", f"{m['compare_refresh_s']:.2f} s", ""])
    if "launch" in r:
        lc = r["launch"]
        store = [p["store_s"] for p in lc.get("parts", []) if isinstance(p, dict) and p.get("store_s")]
        note = f"; the trainer opened its run store {statistics.median(store):.2f} s after the click (median)" if store else ""
        rows.append([f"Launch click → first loss chart on Live, median of {lc['rounds']}{la(lc)}{note}", f"{lc['median_s']:.2f} s", "≤ 3 s"])
    rows.append(["peak RSS of the benchmark process after the render part (dashboard + AppTest, 500-run root listed before)", f"{r['peak_rss_mb']:.0f} MB", ""])
    return doctables.table(["measurement (server time, AppTest)", "measured", "target"], rows) + f"\n{load}.\n"


if __name__ == "__main__":
    main()
