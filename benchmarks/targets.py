"""The performance targets of docs/benchmarks.md, met or not, read from the committed raw output.

Renders one table: each target, the figure the benchmark scripts last measured (from the JSON
files they wrote beside the doc) and whether it is met. Nothing here runs a benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import doctables

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _load(name: str) -> dict | None:
    p = DOCS / name
    return json.loads(p.read_text()) if p.is_file() else None


def _row(what: str, value: float | None, target: float, fmt: str, note: str = "") -> list[str]:
    if value is None:
        return [what, "not measured", fmt.format(target), "—"]
    return [what, fmt.format(value) + (f" {note}" if note else ""), "≤ " + fmt.format(target), "met" if value <= target else "**not met**"]


@doctables.renderer("targets")
def render() -> str:
    rows = []
    ov = _load("overhead_default.json")
    hv = _load("overhead_heavy.json")
    for label, r, t_light, t_full in (("default preset", ov, 1.05, 1.15), ("heavy workload", hv, 1.03, 1.15)):
        c = r["cpu"]["ratio_to_bare"] if r and "cpu" in r else None
        rows.append(_row(f"engine, default logging / bare loop ({label}, CPU time)", c and c["light"], t_light, "{:.2f}×"))
        rows.append(_row(f"engine, full diagnostics / bare loop ({label}, CPU time)", c and c["full"], t_full, "{:.2f}×"))
        tb = r["cpu"]["ratio_to_tensorboard"]["light"] if r and "cpu" in r else None
        rows.append(_row(f"engine, default logging / TensorBoard anchor ({label}, CPU time)", tb, 1.0, "{:.2f}×"))
    st = _load("startup.json")
    if st:
        s = st["results"]["this"]["train_defaults"]
        floor = st["results"]["this"]["import_torch"]["cpu_s_median"]
        rows.append(_row("`modalscope train` at defaults, whole process (CPU s)", s["cpu_s_median"], 4.0, "{:.2f} s",
                         f"({s['cpu_s_median'] / floor:.1f}× `import torch`)"))
    else:
        rows.append(_row("`modalscope train` at defaults, whole process", None, 4.0, "{:.2f} s"))
    d = _load("dashboard_bench.json") or {}
    la = d.get("launch")
    rows.append(_row("Launch click → first chart on Live (median)", la and la["median_s"], 3.0, "{:.2f} s"))
    rd = d.get("render", {})
    worst = max((rd[v]["cold_s"] for v in ("Overview", "Gradients", "Modality gap") if v in rd), default=None)
    rows.append(_row("Live cold render, 100 000-step run, slowest tab", worst, 0.5, "{:.2f} s"))
    lt = d.get("latency")
    rows.append(_row("row written → visible on Live, median", lt and lt["median_s"], 1.0, "{:.2f} s"))
    rows.append(_row("row written → visible on Live, max", lt and lt["max_s"], 1.5, "{:.2f} s"))
    m = d.get("many")
    rows.append(_row(f"Runs page with {m['runs'] if m else 500} runs, first listing", m and m["runs_page_cold_s"], 1.0, "{:.2f} s"))
    rows.append(_row(f"Compare with {m['compare_runs'] if m else 50} runs, first render", m and m["compare_cold_s"], 1.0, "{:.2f} s"))
    sc = _load("scale_bench.json")
    rows.append(_row(f"trainer RSS growth over the second half of a {sc['steps']:,}-step run" if sc else "trainer RSS growth, 100 000 steps",
                     sc and sc["growth_mb_second_half"], 20.0, "{:.0f} MB"))
    return doctables.table(["target", "measured", "target", "status"], rows, align="llll")
