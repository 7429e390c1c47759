"""Every registered method × synthetic presets × seeds, same settings for all: the results table.

Each trial is one training run with the RunConfig defaults (default model, SGD, batch 64,
``--epochs`` epochs) on a synthetic preset; only ``method`` and ``seed`` change, so every
method sees identical data, model and optimiser. ``unimodal`` runs once per modality of the
preset. Diagnostics are off (they never change the trajectory, only the wall time), so
``time/epoch`` measures the method itself.

Resumable: each finished trial appends one JSON line to ``benchmarks/results/methods.jsonl``
keyed by (method label, preset, seed, config hash); a trial whose key is already there is
skipped, so an interrupted sweep continues where it stopped and a changed default (new
hash) is re-run. Run folders go to a temporary directory that is deleted afterwards.

Writes ``docs/results.md``: per preset, fused test accuracy (mean ± std over seeds), test
accuracy of each per-modality head (the unimodal logits the model exposes: fusion-layer
slices for concat fusion, the method's own heads for MIE), the gap of the mean fused
accuracy to the preset's Bayes ceiling, and train wall time per epoch relative to
``joint`` on the same preset.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/methods.py [--methods joint,ogm_ge] [--presets
imbalanced] [--seeds 5] [--epochs 20] [--variant cpsl:aux_weight=0] [--report-only]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import doctables  # noqa: E402
from core.config import resolve_config  # noqa: E402
from core.data.synthetic import PRESETS  # noqa: E402
from core.methods import list_methods  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "methods.jsonl"
REPORT = ROOT / "docs" / "results.md"
ALL_PRESETS = ["imbalanced", "complementary", "noisy", "three_modal"]
QUIET = {"grad": False, "conflict": False, "gap": False, "samples": False, "gmm": False, "contrib": False, "captum": False}


def trial_config(method: str, preset: str, seed: int, epochs: int, runs_dir: str, modality: str | None = None, extra: dict | None = None):
    method_block: dict = {"name": method, **(extra or {})}
    if modality is not None:
        method_block["modality"] = modality
    base = {
        "runs_dir": runs_dir,
        "epochs": epochs,
        "seed": seed,
        "device": "cpu",
        "data": {"name": "synthetic", "preset": preset},
        "method": method_block,
        "log": {"progress": False, "checkpoint": False, "eval_train": False},
        "diagnostics": dict(QUIET),
    }
    return resolve_config(base=base)


def config_hash(cfg) -> str:
    raw = cfg.dump()
    raw.pop("runs_dir", None)
    raw.pop("name", None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]


def trials(methods: list[str], presets: list[str], seeds: list[int]) -> list[tuple[str, str, int, str | None]]:
    out = []
    for preset in presets:
        for method in methods:
            mods = PRESETS[preset]["modalities"] if method == "unimodal" else [None]
            for m in mods:
                for seed in seeds:
                    out.append((method, preset, seed, m))
    return out


def label(method: str, modality: str | None) -> str:
    return f"unimodal:{modality}" if modality else method


def parse_variant(text: str) -> tuple[str, str, dict]:
    """``method:key=value[:key=value]`` → (``method(key=value,...)``, method, {key: value}); values are YAML."""
    import yaml

    method, *pairs = text.split(":")
    if not method or not pairs:
        raise SystemExit(f"--variant expects method:key=value[:key=value], got {text!r}")
    extra = {}
    for pair in pairs:
        k, eq, v = pair.partition("=")
        if not eq or not k:
            raise SystemExit(f"--variant {text!r}: {pair!r} is not key=value")
        extra[k] = yaml.safe_load(v)
    return f"{method}({','.join(pairs)})", method, extra


def load_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def run_trial(cfg) -> dict:
    from core.engine import Trainer
    from core.store import open_run

    t = Trainer(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    final = t.fit()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    times = open_run(t.run_dir).scalars("time/epoch")["value"].tolist()
    return {
        "metrics": final,
        "time_per_epoch": sum(times) / len(times),
        "wall_s": wall,
        "cpu_per_epoch": cpu / len(times),
        "bayes": t.bundle.info.get("bayes", {}),
        "modalities": t.bundle.modalities,
        "run_dir": str(t.run_dir),
    }


def mean_std(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def timing_ratios(rows: list[dict], preset: str) -> dict[str, tuple[float, float]]:
    """(wall, cpu) time per epoch relative to joint: median over the interleaved timing rounds."""
    per: dict[str, dict[int, dict]] = {}
    for r in rows:
        if r.get("kind") == "timing" and r["preset"] == preset:
            per.setdefault(r["label"], {})[r["rep"]] = r
    if "joint" not in per:
        return {}
    out = {}
    for lab, reps in per.items():
        common = [k for k in reps if k in per["joint"]]
        if not common:
            continue
        wall = statistics.median(reps[k]["time_per_epoch"] / per["joint"][k]["time_per_epoch"] for k in common)
        cpu = statistics.median(reps[k]["cpu_per_epoch"] / per["joint"][k]["cpu_per_epoch"] for k in common)
        out[lab] = (wall, cpu)
    return out


def summarise(rows: list[dict], preset: str) -> list[dict]:
    """One line per method label: means over seeds (latest result per key)."""
    timing = timing_ratios(rows, preset)
    latest: dict[tuple, dict] = {}
    for r in rows:
        if r["preset"] == preset and r.get("kind", "trial") == "trial":
            latest[(r["label"], r["seed"], r["hash"])] = r
    by_label: dict[str, list[dict]] = {}
    for r in latest.values():
        by_label.setdefault(r["label"], []).append(r)
    joint_t = [r["time_per_epoch"] for r in by_label.get("joint", [])]
    joint_time = statistics.fmean(joint_t) if joint_t else float("nan")
    mods = PRESETS[preset]["modalities"]
    out = []
    for lab, rs in by_label.items():
        fused = [r["metrics"]["acc/test/fused"] for r in rs]
        per = {}
        for m in mods:
            vals = [r["metrics"][f"acc/test/{m}"] for r in rs if f"acc/test/{m}" in r["metrics"]]
            if vals:
                per[m] = mean_std(vals)
        bayes = rs[0]["bayes"].get("fused", float("nan"))
        t = statistics.fmean(r["time_per_epoch"] for r in rs)
        wall, cpu = timing.get(lab, (t / joint_time if joint_time == joint_time else float("nan"), float("nan")))
        out.append(
            {"label": lab, "n": len(rs), "fused": mean_std(fused), "per": per, "bayes": bayes,
             "gap": bayes - statistics.fmean(fused), "rel_time": wall, "rel_cpu": cpu}
        )
    def rank(lab: str) -> int:
        if lab == "joint":
            return 0
        if lab.startswith("unimodal"):
            return 3
        return 2 if "(" in lab else 1

    out.sort(key=lambda r: (rank(r["label"]), -r["fused"][0]))
    return out


def fmt(ms: tuple[float, float]) -> str:
    return f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}"


def report(rows: list[dict], presets: list[str], epochs: int, timing: str = "", command: str = "") -> str:
    lines = [
        "# Method results on the synthetic presets",
        "",
        *([f"Command: `{command}`", ""] if command else []),
        "Produced by `benchmarks/methods.py` (do not edit by hand). Every method runs with the",
        "RunConfig defaults (default model: 2-layer MLP encoders, concat fusion; SGD lr 0.05, momentum 0.9;",
        f"batch 64; {epochs} epochs) and its own default hyperparameters; only the method and the seed",
        "change. Accuracies are test accuracies in % after the last epoch, mean ± std over seeds.",
        "",
        "* **fused**: accuracy of the method's prediction.",
        "* **per-modality head accuracy**: accuracy of each modality's unimodal logits (slices of the",
        "  concat fusion layer for most methods; the method's own per-modality heads for MIE;",
        "  the only head for `unimodal:<m>`). It says how much each modality's branch can do on its",
        "  own inside the trained model; it is not a re-trained linear probe.",
        "* **gap to Bayes**: Bayes-optimal fused accuracy of the preset minus the mean fused accuracy",
        "  (percentage points; smaller is better).",
        "* **time/epoch**: training wall time per epoch relative to `joint` on the same preset (CPU,",
        "  one thread; evaluation excluded), from a separate timing pass in which every method runs",
        f"  {timing} in turn, round after round, so load on the shared machine hits all alike; the",
        "  median ratio over rounds is shown. **CPU/epoch** is the same for process CPU time (which",
        "  includes the per-epoch test evaluation, identical for all methods, so it understates ratios).",
        "* rows named `method(knob=value)` are ablations run with `--variant` (defaults otherwise).",
        "",
    ]
    for preset in presets:
        summ = summarise(rows, preset)
        if not summ:
            continue
        mods = PRESETS[preset]["modalities"]
        bayes = summ[0]["bayes"]
        lines += [f"## {preset}", "", f"Bayes ceiling (fused): {100 * bayes:.1f}%.", ""]
        head = ["method", "seeds", "fused acc", *[f"{m} head acc" for m in mods], "gap to Bayes (pp)", "time/epoch vs joint", "CPU/epoch vs joint"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for s in summ:
            per = [fmt(s["per"][m]) if m in s["per"] else "–" for m in mods]
            lines.append(
                f"| {s['label']} | {s['n']} | {fmt(s['fused'])} | " + " | ".join(per) + f" | {100 * s['gap']:.1f} | {s['rel_time']:.2f}× | {s['rel_cpu']:.2f}× |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default=",".join(list_methods()), help="comma-separated registry names (default: all)")
    ap.add_argument("--presets", default=",".join(ALL_PRESETS), help="comma-separated synthetic presets")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--results", default=str(RESULTS), help="JSON-lines cache of finished trials")
    ap.add_argument("--report", default=str(REPORT), help="markdown report to write")
    ap.add_argument("--variant", action="append", default=[], metavar="METHOD:KEY=VALUE",
                    help="extra configuration of a method, e.g. cpsl:aux_weight=0 (repeatable; row cpsl(aux_weight=0))")
    ap.add_argument("--timing-reps", type=int, default=3, help="rounds of the interleaved timing pass (0 = skip)")
    ap.add_argument("--timing-epochs", type=int, default=3, help="epochs per timing run")
    ap.add_argument("--report-only", action="store_true", help="only rebuild the report from the cache")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in list_methods()]
    if unknown:
        print(f"unknown method(s): {', '.join(unknown)}; available: {', '.join(list_methods())}", file=sys.stderr)
        return 2
    presets = [p for p in args.presets.split(",") if p]
    bad = [p for p in presets if p not in PRESETS]
    if bad:
        print(f"unknown preset(s): {', '.join(bad)}; available: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="modalscope-bench-")
    wanted = {}
    for method, preset, seed, mod in trials(methods, presets, list(range(args.seeds))):
        cfg = trial_config(method, preset, seed, args.epochs, tmp, mod)
        wanted[(label(method, mod), preset, seed, config_hash(cfg))] = cfg
    for text in args.variant:
        lab, method, extra = parse_variant(text)
        for preset in presets:
            for seed in range(args.seeds):
                cfg = trial_config(method, preset, seed, args.epochs, tmp, extra=extra)
                wanted[(lab, preset, seed, config_hash(cfg))] = cfg
    if args.report_only:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        from tqdm import tqdm

        done = {(r["label"], r["preset"], r["seed"], r["hash"]) for r in load_results(results) if r.get("kind", "trial") == "trial"}
        todo = [(k, c) for k, c in wanted.items() if k not in done]
        try:
            bar = tqdm(todo, desc="trials", unit="run", dynamic_ncols=True)
            for key, cfg in bar:
                bar.set_postfix_str(f"{key[0]} {key[1]} s{key[2]}")
                res = run_trial(cfg)
                shutil.rmtree(res.pop("run_dir"), ignore_errors=True)
                row = {"label": key[0], "preset": key[1], "seed": key[2], "hash": key[3], "epochs": args.epochs, **res}
                with open(results, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row, sort_keys=True) + "\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    timing_wanted = {}
    for (lab, preset, seed, _), cfg in wanted.items():
        if seed != 0:
            continue
        tcfg = cfg.model_copy(update={"epochs": args.timing_epochs})
        for rep in range(args.timing_reps):
            timing_wanted[(lab, preset, rep, config_hash(tcfg))] = tcfg
    if not args.report_only and timing_wanted:
        from tqdm import tqdm

        done = {(r["label"], r["preset"], r["rep"], r["hash"]) for r in load_results(results) if r.get("kind") == "timing"}
        todo = sorted((k for k in timing_wanted if k not in done), key=lambda k: (k[1], k[2]))
        tmp = tempfile.mkdtemp(prefix="modalscope-bench-")
        try:
            for key in tqdm(todo, desc="timing", unit="run", dynamic_ncols=True):
                cfg = timing_wanted[key].model_copy(update={"runs_dir": tmp})
                res = run_trial(cfg)
                shutil.rmtree(res.pop("run_dir"), ignore_errors=True)
                row = {"kind": "timing", "label": key[0], "preset": key[1], "rep": key[2], "hash": key[3],
                       "epochs": args.timing_epochs, "time_per_epoch": res["time_per_epoch"], "cpu_per_epoch": res["cpu_per_epoch"]}
                with open(results, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row, sort_keys=True) + "\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        r for r in load_results(results)
        if (r.get("kind") == "timing" and (r["label"], r["preset"], r["rep"], r["hash"]) in timing_wanted)
        or (r.get("kind", "trial") == "trial" and (r["label"], r["preset"], r["seed"], r["hash"]) in wanted)
    ]
    command = "OMP_NUM_THREADS=1 python benchmarks/methods.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only")
    text = report(rows, presets, args.epochs, f"{args.timing_epochs} epochs (seed 0)", command)
    report_path = Path(args.report)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    old = report_path.read_text(encoding="utf-8") if report_path.is_file() else ""
    report_path.write_text(doctables.carry_blocks(old, text + "\n"))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
