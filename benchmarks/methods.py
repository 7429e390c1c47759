"""Every registered method × datasets × seeds, same settings for all: the results table.

Each trial is one training run with the RunConfig defaults (default model, SGD, batch 64,
``--epochs`` epochs) on one dataset of :data:`DATASETS`; only ``method`` and ``seed`` change,
so every method sees identical data, model and optimiser. ``unimodal`` runs once per modality
(it is the reference of the probe utilisation). Trials log the linear probes and the gradient
diagnostics the table reads; a separate timing pass with diagnostics off measures the method.

**Cache.** Each finished trial appends one JSON line to ``benchmarks/results/methods.jsonl``
keyed by (label, dataset, seed, key); the key hashes the resolved config *and* the source of
the code that can change the result: every training-side module under ``core/`` (data, models,
engine, diagnostics, metrics, config) plus the method's own module and the ``core/methods``
modules it imports. A code change therefore reruns exactly the rows it can affect; rows of
older code stay in the cache but are never shown.

**Snapshot.** After a run, ``benchmarks/results/methods.json`` holds only the rows of the
current keys (plus the command); ``docs/results.md``'s tables are rendered from it by the
renderers registered here (:mod:`benchmarks.doctables`), never typed.

Columns (test split, %, mean over seeds): fused accuracy after the last epoch and at the
best-validation epoch (``acc/best/test/fused``); the weak modality's linear probe
(``probe/test/<weak>``) and its utilisation ``(probe − probe_init)/(probe_alone − probe_init)``
with ``probe_alone`` the ``unimodal:<weak>`` run of the same seed; the dominant modality's
probe and applied gradient share (``grad_applied_share/<dominant>``, mean over logged steps); the paired
difference of last-epoch fused accuracy against ``joint`` (same seeds) with a 95 % t-interval;
the share of the joint→Bayes gap it closes; CPU time per epoch relative to ``joint``.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/methods.py [--methods joint,ogm_ge] [--datasets
imbalanced,mfeat] [--seeds 5] [--epochs 20] [--variant cpsl:aux_weight=0] [--report-only] [--stale]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import doctables  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "methods.jsonl"
SNAPSHOT = ROOT / "benchmarks" / "results" / "methods.json"
DOC = "docs/results.md"
BALANCING = ["ogm_ge", "mmpareto", "cpsl", "mie", "gmm_adaptive", "cal"]
QUIET = {"grad": True, "conflict": False, "gap": False, "samples": False, "gmm": False, "contrib": False, "captum": False, "robust": False}
#: modules under core/ that cannot change a trial's numbers (I/O, CLI, dashboards, sweeps).
UNTRACKED = {"__main__.py", "cli.py", "gallery.py", "launcher.py", "sweep.py", "sweep_executors.py", "store.py"}

#: name → data block, weak and dominant modality. Synthetic: dominant = fast (largest input
#: scale), weak = slow; mfeat pix (≈ 97 % alone) + mor (≈ 70 %).
DATASETS: dict[str, dict] = {
    "imbalanced": {"data": {"name": "synthetic", "preset": "imbalanced"}},
    "complementary": {"data": {"name": "synthetic", "preset": "complementary"}},
    "three_modal": {"data": {"name": "synthetic", "preset": "three_modal"}},
    "noisy": {"data": {"name": "synthetic", "preset": "noisy"}},
    "mfeat": {"data": {"name": "mfeat", "views": ["pix", "mor"], "valid_fraction": 0.15}, "modalities": ["pix", "mor"],
              "weak": "mor", "dominant": "pix"},
}
DEFAULT_DATASETS = list(DATASETS)


def dataset_info(name: str) -> dict | None:
    """``{"data", "modalities", "weak", "dominant"}`` or None when this checkout lacks the dataset."""
    spec = DATASETS.get(name)
    if spec is None:
        return None
    if spec["data"]["name"] != "synthetic":
        return dict(spec)
    from modalscope.data.synthetic import PRESETS

    preset = PRESETS.get(spec["data"]["preset"])
    if preset is None:
        return None
    scale = preset["scale"]
    return {**spec, "modalities": list(preset["modalities"]), "weak": min(scale, key=scale.get), "dominant": max(scale, key=scale.get)}


# ---------------------------------------------------------------------------- code keys
#: subpackages whose source can change a trial's numbers (besides the top-level modules).
TRACKED_DIRS = ("data", "diagnostics", "models")
_IMPORT = re.compile(r"from (?:core|modalscope)\.methods(?:\.(\w+))? import ([\w, ()]+)")


def _package_root() -> Path:
    """The importable package's folder (``core/`` today), found from the loaded method registry."""
    from modalscope.methods import base

    return Path(base.__file__).resolve().parents[1]


def _normalised(text: str) -> str:
    """Source text with the package name abstracted, so renaming the package keeps every key.

    ``core`` and ``modalscope`` both become ``PKG`` (``modalscope.dashboard`` → ``dashboard``):
    a rename that only changes imports, paths and the ``python -m`` name leaves the text equal.
    """
    text = re.sub(r"\b(?:core|modalscope)\b", "PKG", text)
    return re.sub(r"\bPKG\.dashboard\b", "dashboard", text)


def _method_modules(method: str) -> list[Path]:
    """The method's module and every ``methods`` module it imports, transitively."""
    from modalscope.methods import get_method

    base = _package_root() / "methods"
    first = Path(sys.modules[get_method(method).__module__].__file__).resolve()
    todo, seen = [first], set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for mod, names in _IMPORT.findall(f.read_text(encoding="utf-8")):
            cands = [mod] if mod else [n.strip(" ()") for n in names.split(",")]
            for c in cands:
                p = base / f"{c}.py"
                if p.is_file() and p not in seen:
                    todo.append(p)
    return sorted(seen | {base / "base.py"})


def code_hash(method: str) -> str:
    """Hash of the source that can change ``method``'s results (see module docstring).

    Files are named relative to the package folder and their text is normalised
    (:func:`_normalised`), so the key survives a rename of the package.
    """
    pkg = _package_root()
    files = [p for p in pkg.glob("*.py") if p.name not in UNTRACKED]
    files += [p for d in TRACKED_DIRS for p in (pkg / d).rglob("*.py")]
    files += _method_modules(method)
    h = hashlib.sha256()
    for p in sorted(set(files), key=lambda q: q.relative_to(pkg).as_posix()):
        h.update(p.relative_to(pkg).as_posix().encode())
        h.update(_normalised(p.read_text(encoding="utf-8")).encode())
    return h.hexdigest()[:12]


def trial_key(cfg, method: str) -> str:
    raw = cfg.dump()
    raw.pop("runs_dir", None)
    raw.pop("name", None)
    return hashlib.sha256((json.dumps(raw, sort_keys=True) + code_hash(method)).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------- trials
def diagnostics_block(epochs: int, quiet: bool = False) -> dict:
    """Diagnostics the table reads (probes at init and at the end, gradient shares); all off for timing."""
    from modalscope.config import DiagnosticsConfig

    fields = DiagnosticsConfig.model_fields
    out = {k: v for k, v in QUIET.items() if k in fields}
    if quiet:
        out = {k: False for k in out}
        if "probe" in fields:
            out["probe"] = False
        return out
    if "probe" in fields:
        out["probe"] = True
    if "probe_every" in fields:
        out["probe_every"] = max(1, epochs)
    return out


def trial_config(method: str, dataset: str, seed: int, epochs: int, runs_dir: str, modality: str | None = None,
                 extra: dict | None = None, quiet: bool = False):
    from modalscope.config import resolve_config

    method_block: dict = {"name": method, **(extra or {})}
    if modality is not None:
        method_block["modality"] = modality
    base = {
        "runs_dir": runs_dir,
        "epochs": epochs,
        "seed": seed,
        "device": "cpu",
        "data": dict(DATASETS[dataset]["data"]),
        "method": method_block,
        "log": {"progress": False, "checkpoint": False, "eval_train": False},
        "diagnostics": diagnostics_block(epochs, quiet),
    }
    return resolve_config(base=base)


def trials(methods: list[str], datasets: list[str], seeds: list[int]) -> list[tuple[str, str, int, str | None]]:
    out = []
    for ds in datasets:
        info = dataset_info(ds)
        for method in methods:
            mods = info["modalities"] if method == "unimodal" else [None]
            for m in mods:
                for seed in seeds:
                    out.append((method, ds, seed, m))
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


READ_PREFIXES = ("acc/test/", "acc/best/test/", "best/epoch", "probe/test/", "probe_init/test/", "probe_util/")
MEAN_PREFIXES = ("grad_share/", "grad_applied_share/")


def run_trial(cfg) -> dict:
    from modalscope.engine import Trainer
    from modalscope.store import open_run

    t = Trainer(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    t.fit()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    r = open_run(t.run_dir)
    metrics = {k: float(v) for k, v in r.final_scalars().items() if k.startswith(READ_PREFIXES)}
    names = [n for n in r.scalar_names() if n.startswith(MEAN_PREFIXES)]
    if names:
        df = r.scalars(names)
        for n, v in df.groupby("name")["value"].mean().items():
            metrics[f"mean/{n}"] = float(v)
    times = r.scalars("time/epoch")["value"].tolist()
    return {
        "metrics": metrics,
        "time_per_epoch": sum(times) / len(times),
        "wall_s": wall,
        "cpu_per_epoch": cpu / len(times),
        "bayes": t.bundle.info.get("bayes", {}),
        "modalities": t.bundle.modalities,
        "run_dir": str(t.run_dir),
    }


# ---------------------------------------------------------------------------- statistics
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t_quantile(df: int) -> float:
    """Two-sided 95 % Student t quantile t_{0.975, df} (table; nearest lower tabulated df beyond 10)."""
    if df in T975:
        return T975[df]
    return T975[max(k for k in T975 if k <= df)] if df > 0 else float("nan")


def paired_interval(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, float, int]:
    """Mean of ``a[s] − b[s]`` over common seeds with its 95 % t-interval: (mean, lo, hi, n)."""
    common = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in common]
    if not d:
        return float("nan"), float("nan"), float("nan"), 0
    m = statistics.fmean(d)
    if len(d) < 2:
        return m, float("nan"), float("nan"), len(d)
    half = t_quantile(len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return m, m - half, m + half, len(d)


def utilisation(probe: float, init: float, alone: float) -> float:
    """``(probe − probe_init) / (probe_alone − probe_init)``: 1 = as much as training m alone.

    Undefined (NaN) when training alone lifts the probe by less than two points over its
    initial value (e.g. mfeat's 6 ``mor`` features are linearly separable at init): the ratio
    of two small differences is then noise.
    """
    den = alone - init
    return (probe - init) / den if den > 0.02 else float("nan")


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x == x]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def timing_ratios(rows: list[dict], dataset: str) -> dict[str, float]:
    """Process CPU time per epoch relative to joint: median over the interleaved timing rounds.

    CPU time, not wall time: on a machine shared with other jobs wall time measures the load
    (the same 3-epoch run varied 3× between rounds) while one-thread CPU time does not.
    """
    per: dict[str, dict[int, dict]] = {}
    for r in rows:
        if r.get("kind") == "timing" and r["dataset"] == dataset:
            per.setdefault(r["label"], {})[r["rep"]] = r
    if "joint" not in per:
        return {}
    out = {}
    for lab, reps in per.items():
        common = [k for k in reps if k in per["joint"]]
        if common:
            out[lab] = statistics.median(reps[k]["cpu_per_epoch"] / per["joint"][k]["cpu_per_epoch"] for k in common)
    return out


def gap_closed(method: dict[int, float], joint: dict[int, float], bayes: float) -> float:
    """``(mean method − mean joint) / (Bayes − mean joint)``; NaN when joint is within a point of Bayes.

    A gap under one point (e.g. a preset joint already solves) makes the ratio meaningless.
    """
    if not method or not joint or bayes != bayes:
        return float("nan")
    jm, fm = statistics.fmean(joint.values()), statistics.fmean(method.values())
    return (fm - jm) / (bayes - jm) if bayes - jm > 0.01 else float("nan")


def summarise(rows: list[dict], dataset: str, weak: str, dominant: str) -> list[dict]:
    """One line per method label on ``dataset`` (see module docstring for the columns)."""
    timing = timing_ratios(rows, dataset)
    by_label: dict[str, dict[int, dict]] = {}
    for r in rows:
        if r.get("kind", "trial") == "trial" and r["dataset"] == dataset:
            by_label.setdefault(r["label"], {})[r["seed"]] = r
    alone = {s: r["metrics"].get(f"probe/test/{weak}") for s, r in by_label.get(f"unimodal:{weak}", {}).items()}
    joint = {s: r["metrics"]["acc/test/fused"] for s, r in by_label.get("joint", {}).items()}
    joint_best = {s: r["metrics"]["acc/best/test/fused"] for s, r in by_label.get("joint", {}).items() if "acc/best/test/fused" in r["metrics"]}
    out = []
    for lab, rs in by_label.items():
        fused = {s: r["metrics"]["acc/test/fused"] for s, r in rs.items()}
        best_by_seed = {s: r["metrics"]["acc/best/test/fused"] for s, r in rs.items() if "acc/best/test/fused" in r["metrics"]}
        best = [best_by_seed.get(s, float("nan")) for s in rs]
        probe = [r["metrics"].get(f"probe/test/{weak}", float("nan")) for r in rs.values()]
        utils = []
        for s, r in rs.items():
            m = r["metrics"]
            if alone.get(s) is not None and f"probe/test/{weak}" in m and f"probe_init/test/{weak}" in m:
                utils.append(utilisation(m[f"probe/test/{weak}"], m[f"probe_init/test/{weak}"], alone[s]))
        share = [r["metrics"].get(f"mean/grad_applied_share/{dominant}", float("nan")) for r in rs.values()]
        dom_probe = [r["metrics"].get(f"probe/test/{dominant}", float("nan")) for r in rs.values()]
        bayes = next(iter(rs.values()))["bayes"].get("fused", float("nan"))
        none = (0.0, float("nan"), float("nan"), len(fused))
        out.append({
            "label": lab, "n": len(rs), "fused": mean_std(list(fused.values())), "best": mean_std(best),
            "probe": mean_std(probe), "util": mean_std(utils), "share": mean_std(share), "dom_probe": mean_std(dom_probe),
            "diff": paired_interval(fused, joint) if lab != "joint" else none,
            "diff_best": paired_interval(best_by_seed, joint_best) if lab != "joint" else none,
            "bayes": bayes, "closed": gap_closed(fused, joint, bayes), "closed_best": gap_closed(best_by_seed, joint_best, bayes),
            "rel_time": timing.get(lab, float("nan")),
        })

    def rank(lab: str) -> int:
        return 0 if lab == "joint" else 3 if lab.startswith("unimodal") else 2 if "(" in lab else 1

    out.sort(key=lambda r: (rank(r["label"]), -r["fused"][0]))
    return out


# ---------------------------------------------------------------------------- rendering
def _pct(ms: tuple[float, float]) -> str:
    return "–" if ms[0] != ms[0] else f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}"


def _num(x: float, fmt: str = "{:.2f}") -> str:
    return "–" if x != x else fmt.format(x)


def _diff(d: tuple) -> str:
    m, lo, hi, n = d
    if m != m:
        return "–"
    if lo != lo:
        return f"{100 * m:+.1f}"
    return f"{100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def load_snapshot(path: Path = SNAPSHOT) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"rows": [], "datasets": [], "command": ""}


def render_dataset(snapshot: dict, dataset: str) -> str:
    info = snapshot.get("info", {}).get(dataset)
    rows = snapshot.get("rows", [])
    if info is None or not any(r.get("dataset") == dataset for r in rows):
        return f"*No results for `{dataset}` in `benchmarks/results/methods.json` yet.*\n"
    weak, dom = info["weak"], info["dominant"]
    summ = summarise(rows, dataset, weak, dom)
    bayes = summ[0]["bayes"]
    head = ["method", "seeds", "fused (last)", "fused (best valid)", f"{weak} probe", f"{weak} utilisation",
            f"{dom} probe", f"{dom} applied grad share", "Δ vs joint, last [95% CI] (pp)", "Δ vs joint, best valid [95% CI] (pp)",
            "gap closed (last / best valid)", "CPU time/epoch vs joint"]
    body = [[s["label"], s["n"], _pct(s["fused"]), _pct(s["best"]), _pct(s["probe"]), _num(s["util"][0]),
             _pct(s["dom_probe"]), _num(s["share"][0]), *(("–", "–", "–") if s["label"] == "joint" else (
                 _diff(s["diff"]), _diff(s["diff_best"]), f"{_num(s['closed'], '{:.0%}')} / {_num(s['closed_best'], '{:.0%}')}")),
             _num(s["rel_time"], "{:.2f}×")] for s in summ]
    note = f"Bayes ceiling (fused): {_num(100 * bayes, '{:.1f}')}%. Weak modality: `{weak}`; dominant: `{dom}`.\n\n"
    return note + doctables.table(head, body)


def render_headline(snapshot: dict, dataset: str = "imbalanced") -> str:
    info = snapshot.get("info", {}).get(dataset)
    rows = snapshot.get("rows", [])
    if info is None or not any(r.get("dataset") == dataset for r in rows):
        return f"*No results for `{dataset}` yet.*\n"
    summ = {s["label"]: s for s in summarise(rows, dataset, info["weak"], info["dominant"])}
    present = [m for m in BALANCING if m in summ]
    body = [[m, _diff(summ[m]["diff"]), _num(summ[m]["closed"], "{:.0%}"), _diff(summ[m]["diff_best"]), _num(summ[m]["closed_best"], "{:.0%}"),
             _num(summ[m]["util"][0]), _num(summ[m]["share"][0])] for m in present]
    text = doctables.table(["method", "Δ vs joint, last [95% CI] (pp)", "gap closed, last", "Δ vs joint, best valid [95% CI] (pp)",
                            "gap closed, best valid", f"{info['weak']} utilisation", f"{info['dominant']} applied grad share"], body)
    j = summ.get("joint")
    if j is None or not present:
        return text
    text += (f"\njoint: {_pct(j['fused'])} last, {_pct(j['best'])} best valid; weak-modality utilisation {_num(j['util'][0])}, "
             f"dominant applied share {_num(j['share'][0])}.\n\n")
    for proto, dkey, ckey in (("last epoch", "diff", "closed"), ("best-valid epoch", "diff_best", "closed_best")):
        wins = sum(1 for m in present if summ[m][dkey][0] == summ[m][dkey][0] and summ[m][dkey][0] >= 0.03)
        best = max(present, key=lambda m: summ[m][ckey] if summ[m][ckey] == summ[m][ckey] else float("-inf"))
        text += (f"* **{proto}**: {wins} of {len(present)} balancing methods beat `joint` by ≥ 3 points (mean paired difference); "
                 f"best `{best}`, closing {_num(summ[best][ckey], '{:.0%}')} of the joint→Bayes gap.\n")
    return text


def render_variants(snapshot: dict, dataset: str = "imbalanced") -> str:
    """Each ``method(key=value)`` row against its own method's default, paired by seed (last and best valid)."""
    rows = [r for r in snapshot.get("rows", []) if r.get("dataset") == dataset and r.get("kind", "trial") == "trial"]
    by_label: dict[str, dict[int, dict]] = {}
    for r in rows:
        by_label.setdefault(r["label"], {})[r["seed"]] = r["metrics"]
    body = []
    for lab in sorted(by_label):
        base = lab.split("(")[0]
        if "(" not in lab or base not in by_label:
            continue
        cells = [f"`{lab}` − `{base}`"]
        for key in ("acc/test/fused", "acc/best/test/fused"):
            a = {s: m[key] for s, m in by_label[lab].items() if key in m}
            b = {s: m[key] for s, m in by_label[base].items() if key in m}
            cells.append(_diff(paired_interval(a, b)))
        body.append(cells)
    if not body:
        return f"*No variant rows for `{dataset}` yet.*\n"
    return doctables.table(["variant − default", "Δ last [95% CI] (pp)", "Δ best valid [95% CI] (pp)"], body)


def _seeds(seeds) -> str:
    return ", ".join(f"{d} {n}" for d, n in seeds.items()) if isinstance(seeds, dict) else str(seeds)


def render_setup(snapshot: dict) -> str:
    if not snapshot.get("rows"):
        return "*The benchmark has not been run on this code yet.*\n"
    lines = [f"Command: `{snapshot.get('command', '')}`", "",
             f"Epochs: {snapshot.get('epochs')}; seeds per dataset: {_seeds(snapshot.get('seeds'))}; timing: {snapshot.get('timing', '')}.", "",
             "Code keys (hash of the source each row depends on): " + ", ".join(f"`{k}` {v}" for k, v in sorted(snapshot.get("code", {}).items())) + "."]
    return "\n".join(lines) + "\n"


def _register() -> None:
    doctables.renderer("methods.setup")(lambda: render_setup(load_snapshot()))
    doctables.renderer("methods.headline")(lambda: render_headline(load_snapshot()))
    doctables.renderer("methods.variants")(lambda: render_variants(load_snapshot()))
    for ds in DATASETS:
        doctables.renderer(f"methods.{ds}")(lambda ds=ds: render_dataset(load_snapshot(), ds))


_register()


def write_docs() -> None:
    from benchmarks.doctables import blocks

    for doc in (DOC, "docs/methods.md"):
        for key in blocks((ROOT / doc).read_text(encoding="utf-8")):
            if key.startswith("methods."):
                doctables.write_block(doc, key)


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    from modalscope.methods import list_methods

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default=",".join(m for m in list_methods() if m != "purify"), help="comma-separated registry names (default: all but purify)")
    ap.add_argument("--datasets", default=",".join(DEFAULT_DATASETS), help=f"comma-separated, from {', '.join(DATASETS)}")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    ap.add_argument("--dataset-seeds", default="", metavar="DS=N[,DS=N]", help="fewer (or more) seeds for some datasets, e.g. mfeat=3")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--results", default=str(RESULTS), help="JSON-lines cache of finished trials")
    ap.add_argument("--snapshot", default=str(SNAPSHOT), help="JSON the doc tables are rendered from")
    ap.add_argument("--variant", action="append", default=[], metavar="METHOD:KEY=VALUE",
                    help="extra configuration of a method, e.g. cpsl:aux_weight=0 (repeatable; row cpsl(aux_weight=0))")
    ap.add_argument("--variant-datasets", default="", metavar="DS[,DS]",
                    help="datasets the --variant rows run on (default: every selected dataset)")
    ap.add_argument("--timing-reps", type=int, default=3, help="rounds of the interleaved timing pass (0 = skip)")
    ap.add_argument("--timing-epochs", type=int, default=3, help="epochs per timing run")
    ap.add_argument("--report-only", action="store_true", help="only rebuild the snapshot and the doc from the cache")
    ap.add_argument("--stale", action="store_true", help="list the trials the cache lacks for the current code, then exit")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in list_methods()]
    if unknown:
        print(f"unknown method(s): {', '.join(unknown)}; available: {', '.join(list_methods())}", file=sys.stderr)
        return 2
    for needed in ("joint", "unimodal"):
        if needed not in methods:
            methods.insert(0, needed)
    datasets = [d for d in args.datasets.split(",") if d]
    bad = [d for d in datasets if d not in DATASETS]
    if bad:
        print(f"unknown dataset(s): {', '.join(bad)}; available: {', '.join(DATASETS)}", file=sys.stderr)
        return 2
    missing = [d for d in datasets if dataset_info(d) is None]
    if missing:
        print(f"skipping dataset(s) this checkout lacks: {', '.join(missing)}", file=sys.stderr)
        datasets = [d for d in datasets if d not in missing]
    n_seeds = {d: args.seeds for d in datasets}
    for item in filter(None, args.dataset_seeds.split(",")):
        d, _, n = item.partition("=")
        if d not in n_seeds or not n.isdigit():
            print(f"--dataset-seeds: {item!r} is not DATASET=N for a selected dataset", file=sys.stderr)
            return 2
        n_seeds[d] = int(n)
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="modalscope-bench-")
    wanted, timing_wanted = {}, {}
    plan = [t for d in datasets for t in trials(methods, [d], list(range(n_seeds[d])))]
    for method, ds, seed, mod in plan:
        cfg = trial_config(method, ds, seed, args.epochs, tmp, mod)
        wanted[(label(method, mod), ds, seed, trial_key(cfg, method))] = cfg
        if seed == 0 and method != "unimodal":
            tcfg = trial_config(method, ds, 0, args.timing_epochs, tmp, mod, quiet=True)
            for rep in range(args.timing_reps):
                timing_wanted[(label(method, mod), ds, rep, trial_key(tcfg, method))] = tcfg
    variant_datasets = [d for d in args.variant_datasets.split(",") if d] or datasets
    if not set(variant_datasets) <= set(datasets):
        print(f"--variant-datasets: {', '.join(sorted(set(variant_datasets) - set(datasets)))} not among --datasets", file=sys.stderr)
        return 2
    for text in args.variant:
        lab, method, extra = parse_variant(text)
        for ds in variant_datasets:
            for seed in range(n_seeds[ds]):
                cfg = trial_config(method, ds, seed, args.epochs, tmp, extra=extra)
                wanted[(lab, ds, seed, trial_key(cfg, method))] = cfg
    cached = load_results(results)
    done = {(r["label"], r["dataset"], r["seed"], r["key"]) for r in cached if r.get("kind", "trial") == "trial" and "dataset" in r}
    tdone = {(r["label"], r["dataset"], r["rep"], r["key"]) for r in cached if r.get("kind") == "timing" and "dataset" in r}
    todo = [(k, c) for k, c in wanted.items() if k not in done]
    ttodo = sorted((k for k in timing_wanted if k not in tdone), key=lambda k: (k[1], k[2]))
    if args.stale:
        for k, _ in todo:
            print("missing", *k[:3])
        print(f"{len(todo)} trial(s) and {len(ttodo)} timing run(s) to run for the current code", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    if not args.report_only:
        try:
            for i, (key, cfg) in enumerate(todo):
                print(f"[{i + 1}/{len(todo)}] {key[0]} {key[1]} seed {key[2]}", file=sys.stderr, flush=True)
                res = run_trial(cfg)
                shutil.rmtree(res.pop("run_dir"), ignore_errors=True)
                row = {"label": key[0], "dataset": key[1], "seed": key[2], "key": key[3], "epochs": args.epochs, **res}
                with open(results, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row, sort_keys=True) + "\n")
            for i, key in enumerate(ttodo):
                print(f"[timing {i + 1}/{len(ttodo)}] {key[0]} {key[1]} round {key[2]}", file=sys.stderr, flush=True)
                res = run_trial(timing_wanted[key].model_copy(update={"runs_dir": tmp}))
                shutil.rmtree(res.pop("run_dir"), ignore_errors=True)
                row = {"kind": "timing", "label": key[0], "dataset": key[1], "rep": key[2], "key": key[3],
                       "epochs": args.timing_epochs, "time_per_epoch": res["time_per_epoch"], "cpu_per_epoch": res["cpu_per_epoch"]}
                with open(results, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row, sort_keys=True) + "\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        r for r in load_results(results) if "dataset" in r and (
            (r.get("kind") == "timing" and (r["label"], r["dataset"], r["rep"], r["key"]) in timing_wanted)
            or (r.get("kind", "trial") == "trial" and (r["label"], r["dataset"], r["seed"], r["key"]) in wanted))
    ]
    for r in rows:
        r.pop("wall_s", None)
    command = "OMP_NUM_THREADS=1 python benchmarks/methods.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--report-only", "--stale"))
    snapshot = {
        "command": command.strip(), "epochs": args.epochs, "seeds": n_seeds,
        "timing": f"{args.timing_reps} interleaved rounds of {args.timing_epochs} epochs (seed 0, diagnostics off)",
        "datasets": datasets, "info": {d: dataset_info(d) for d in datasets},
        "code": {m: code_hash(m) for m in sorted({k[0].split("(")[0].split(":")[0] for k in wanted})},
        "rows": sorted(rows, key=lambda r: (r["dataset"], r["label"], r.get("kind", "trial"), r.get("seed", r.get("rep", 0)))),
    }
    Path(args.snapshot).write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
    if Path(args.snapshot).resolve() == SNAPSHOT.resolve():
        write_docs()
    for ds in datasets:
        print(f"## {ds}\n\n{render_dataset(snapshot, ds)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
