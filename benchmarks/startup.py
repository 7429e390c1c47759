"""Whole-process cost of ``modalscope train`` at defaults (and of the import floor under it).

Each variant is a fresh ``python -m modalscope ...`` process (what a user types), timed from spawn
to exit. Reported per variant: wall time and the process's own CPU time (user + sys from
``os.wait4``'s rusage, so other processes on a shared machine do not count) and its peak
RSS. On a machine loaded by other jobs wall time mostly measures the queue for a core, so
the CPU time is the figure to compare with the target (the process is single-threaded
under ``OMP_NUM_THREADS=1``: on idle cores its wall time is its CPU time plus a little I/O).

``--compare PATH`` times a second checkout (e.g. the main branch) in the same rounds,
alternated with this one, so load drift hits both alike and the ratio is fair.

Variants: ``import torch`` (the floor no change here can remove), ``modalscope --help``,
``modalscope train`` at defaults with a warm preset cache (the usual case) and once with an
empty cache (the first run on a machine).

Usage: ``python benchmarks/startup.py [--reps 5] [--compare /work/main] [--json docs/startup.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import doctables  # noqa: E402

DOC_JSON = ROOT / "docs" / "startup.json"


def timed(cmd: list[str], cwd: Path, env: dict) -> dict:
    """Wall, CPU (user+sys) and peak RSS of one child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err.strip().splitlines()[-1:]} ")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_mb": ru.ru_maxrss / 1024}


def git_commit(repo: Path) -> str:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip()


def variants(repo: Path, runs: Path, cache: Path) -> dict[str, tuple[list[str], dict]]:
    py = sys.executable
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MODALSCOPE_CACHE_DIR": str(cache), "PYTHONPATH": str(repo)}
    train = [py, "-m", "modalscope", "train", "--no-progress", "--runs-dir", str(runs)]
    return {
        "import_torch": ([py, "-c", "import torch"], env),
        "help": ([py, "-m", "modalscope", "--help"], env),
        "train_defaults": (train, env),
    }


def summarise(rows: list[dict]) -> dict:
    return {
        "n": len(rows),
        "wall_s_median": statistics.median(r["wall_s"] for r in rows),
        "cpu_s_median": statistics.median(r["cpu_s"] for r in rows),
        "cpu_s_min": min(r["cpu_s"] for r in rows),
        "maxrss_mb_max": max(r["maxrss_mb"] for r in rows),
        "raw": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--compare", help="a second checkout to time in the same rounds (e.g. the main branch)")
    ap.add_argument("--json", help="write the figures here (docs/startup.json is what docs/benchmarks.md renders)")
    args = ap.parse_args()
    repos = {"this": ROOT}
    if args.compare:
        repos["compare"] = Path(args.compare).resolve()
    load0 = os.getloadavg()
    rows: dict[str, dict[str, list[dict]]] = {k: {} for k in repos}
    cold: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, repo in repos.items():
            cache = tmp / f"cache-{label}"
            cmd, env = variants(repo, tmp / f"runs-{label}", cache)["train_defaults"]
            cold[label] = timed(cmd, repo, env)
        for _ in range(args.reps):
            for label, repo in repos.items():
                for name, (cmd, env) in variants(repo, tmp / f"runs-{label}", tmp / f"cache-{label}").items():
                    rows[label].setdefault(name, []).append(timed(cmd, repo, env))
    load1 = os.getloadavg()
    res = {
        "reps": args.reps,
        "cpu_count": os.cpu_count(),
        "loadavg_1m_start_end": [load0[0], load1[0]],
        "python": sys.version.split()[0],
        "env": "OMP_NUM_THREADS=1",
        "repos": {k: {"path": str(v), "commit": git_commit(v)} for k, v in repos.items()},
        "results": {label: {name: summarise(r) for name, r in vs.items()} for label, vs in rows.items()},
        "train_cold_cache": cold,
    }
    if "compare" in repos:
        a, b = res["results"]["this"]["train_defaults"], res["results"]["compare"]["train_defaults"]
        res["train_cpu_ratio_this_over_compare"] = a["cpu_s_median"] / b["cpu_s_median"]
    for label, vs in res["results"].items():
        for name, s in vs.items():
            print(f"{label:8s} {name:16s} cpu median {s['cpu_s_median']:.2f} s (min {s['cpu_s_min']:.2f})  wall median {s['wall_s_median']:.2f} s  rss {s['maxrss_mb_max']:.0f} MB")
    print(f"load average (1 min) {load0[0]:.1f} -> {load1[0]:.1f} on {os.cpu_count()} cores")
    if args.json:
        doctables.record(args.json, res, DOC_JSON, "docs/benchmarks.md", "startup")


@doctables.renderer("startup")
def render() -> str:
    res = json.loads(DOC_JSON.read_text())
    names = {"import_torch": "`python -c 'import torch'` (floor)", "help": "`modalscope --help`",
             "train_defaults": "`modalscope train` at defaults (warm preset cache)"}
    labels = list(res["results"])
    head = ["process"]
    names_of = {"this": "this branch", "compare": "baseline"}
    for lb in labels:
        tag = f"{names_of.get(lb, lb)} {res['repos'][lb]['commit']}"
        head += [f"CPU s, {tag}", f"wall s, {tag}"]
    rows = []
    for name, title in names.items():
        row: list[object] = [title]
        for lb in labels:
            s = res["results"][lb][name]
            row += [f"{s['cpu_s_median']:.2f}", f"{s['wall_s_median']:.2f}"]
        rows.append(row)
    row = ["`modalscope train`, first run (empty preset cache)"]
    for lb in labels:
        c = res["train_cold_cache"][lb]
        row += [f"{c['cpu_s']:.2f}", f"{c['wall_s']:.2f}"]
    rows.append(row)
    la = res["loadavg_1m_start_end"]
    note = (f"\nMedians of {res['reps']} alternated rounds, {res['env']}; 1-minute load average {la[0]:.1f} → {la[1]:.1f} "
            f"on {res['cpu_count']} cores during the run (CPU time is the process's own user + sys).\n")
    if "train_cpu_ratio_this_over_compare" in res:
        note += f"CPU time of `modalscope train`, this branch / baseline: **{res['train_cpu_ratio_this_over_compare']:.2f}×**.\n"
    return doctables.table(head, rows) + note


if __name__ == "__main__":
    main()
