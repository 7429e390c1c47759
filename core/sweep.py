"""``modalscope sweep``: many runs from one spec, each trial its own run folder.

A sweep spec (YAML, read with ``yaml.safe_load``) has

* ``name`` — the sweep name (default: the spec file's stem); it prefixes every trial's run name;
* ``base`` — a partial run config shared by every trial;
* ``grid`` — ``field: [values...]``; trials are the cartesian product of all grid fields;
* ``random`` — ``{n: N, seed: S, fields: {field: [choices] | {low, high, log?, int?}}}``:
  N samples drawn once with seed S; every grid point is combined with every sample, so
  all grid points see the same random draws (paired comparisons);
* ``resources`` — ``{cpus, gpus, memory_mb}`` asked for per trial (Ray executor; ``cpus``
  also sets the torch thread count of a trial).

Field keys are the ``train`` CLI flag names (``dataset, preset, data-path, method, epochs,
batch-size, lr, seed, device``), RunConfig field names or dotted RunConfig paths
(``method.alpha``, ``data.n_train``); nested mappings are flattened to dotted paths. A
``method`` value ``unimodal:audio`` sets ``method.name=unimodal`` and
``method.modality=audio``. A ``method.<knob>`` key is dropped from trials whose method does
not have that knob (when another method does), so ``method: [joint, ogm_ge]`` crossed with
``method.alpha: [0.1, 0.5]`` gives one joint trial and two ogm_ge trials.

Run folders are addressed by absolute path (a Ray worker's working directory is not the
driver's). Every trial config is validated with :func:`modalscope.config.resolve_config` before anything
runs. Trial ``i`` is named ``<sweep>_<field>-<value>_...`` over the fields that vary and
carries ``tags.sweep``, ``tags.swept`` (the varying dotted paths, comma-separated) and
``tags.trial``. Re-running a sweep skips finished trials, resumes interrupted ones from
their last checkpoint and restarts failed ones from scratch.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from modalscope.errors import ConfigError, ModalScopeError

SPEC_KEYS = {"name", "base", "grid", "random", "resources", "description"}
RANDOM_KEYS = {"n", "seed", "fields"}
RANGE_KEYS = {"low", "high", "log", "int"}
RESOURCE_KEYS = {"cpus", "gpus", "memory_mb"}
FLAG_PATHS = {
    "dataset": "data.name",
    "preset": "data.preset",
    "data-path": "data.path",
    "data_path": "data.path",
    "method": "method.name",
    "epochs": "epochs",
    "batch-size": "batch_size",
    "batch_size": "batch_size",
    "lr": "optim.lr",
    "seed": "seed",
    "device": "device",
}
OWNED_BY_SWEEP = {"name", "runs_dir", "runs-dir", "schema_version"}
IGNORED_IN_COMPARE = {"runs_dir", "tags"}


class SweepSpecError(ConfigError):
    """A sweep spec that cannot be expanded into trials."""


@dataclass
class Trial:
    """One run of the sweep: its validated config, its folder and what to do with it."""

    index: int
    name: str
    values: dict[str, Any]
    config: Any
    run_dir: Path
    action: str = "new"
    previous: str = ""


@dataclass
class Sweep:
    name: str
    swept: list[str]
    trials: list[Trial]
    resources: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------- spec parsing
def read_spec(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SweepSpecError(f"sweep spec not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8", errors="replace"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise SweepSpecError(f"malformed YAML in {p}: {getattr(e, 'problem', None) or 'syntax error'}{where}") from None
    if not isinstance(raw, dict):
        raise SweepSpecError(f"sweep spec {p} must be a mapping with base/grid/random keys, got {type(raw).__name__}")
    raw.setdefault("name", _sanitize(p.stem))
    return raw


def canonical(key: Any, value: Any, where: str) -> list[tuple[str, Any]]:
    """One spec entry → ``[(dotted path, value), ...]`` (flag names mapped, mappings flattened)."""
    if not isinstance(key, str) or not key.strip():
        raise SweepSpecError(f"{where}: keys must be non-empty strings, got {key!r}")
    key = key.strip()
    if key in OWNED_BY_SWEEP:
        what = "the spec's top-level 'name'" if key == "name" else "--runs-dir" if "runs" in key else "ModalScope"
        raise SweepSpecError(f"{where}.{key}: set by the sweep (use {what})")
    path = FLAG_PATHS.get(key, key)
    if any(not part for part in path.split(".")):
        raise SweepSpecError(f"{where}: empty part in key {key!r}")
    if isinstance(value, dict) and value:
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out.extend(canonical(f"{path}.{k}", v, where))
        return out
    if path == "method.name" and isinstance(value, str) and ":" in value:
        name, _, modality = value.partition(":")
        return [("method.name", name), ("method.modality", modality)]
    return [(path, value)]


def _assignment(key: str, value: Any, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, v in canonical(key, value, where):
        if path in out:
            raise SweepSpecError(f"{where}: {path} is set twice")
        out[path] = v
    return out


def parse_base(base: Any) -> dict[str, Any]:
    if base is None:
        return {}
    if not isinstance(base, dict):
        raise SweepSpecError(f"base: expected a mapping of config keys to values, got {type(base).__name__}")
    out: dict[str, Any] = {}
    for k, v in base.items():
        for path, val in canonical(k, v, "base"):
            if path in out:
                raise SweepSpecError(f"base: {k!r} sets {path}, which another key already sets")
            out[path] = val
    return out


def parse_grid(grid: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """Grid axes: ``[(label, [assignment per value])]``; each assignment maps paths to values."""
    if grid is None:
        return []
    if not isinstance(grid, dict):
        raise SweepSpecError(f"grid: expected a mapping of field to a list of values, got {type(grid).__name__}")
    axes = []
    for k, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepSpecError(f"grid.{k}: expected a non-empty list of values, got {json.dumps(values, default=str)[:60]}")
        axes.append((str(k), [_assignment(k, v, f"grid.{k}") for v in values]))
    return axes


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool):
        raise SweepSpecError(f"{where}: expected a number, got {v!r}")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise SweepSpecError(f"{where}: expected a number, got {v!r}") from None
    if not math.isfinite(x):
        raise SweepSpecError(f"{where}: expected a finite number, got {v!r}")
    return x


def parse_random(spec: Any) -> tuple[list[tuple[str, Any]], int, int]:
    """``random`` → (fields, n, seed); a field is a list of choices or a ``{low, high}`` range."""
    if spec is None:
        return [], 0, 0
    if not isinstance(spec, dict):
        raise SweepSpecError("random: expected a mapping {n: N, seed: S, fields: {...}}")
    unknown = set(spec) - RANDOM_KEYS
    if unknown:
        raise SweepSpecError(f"random: unknown key {sorted(unknown)[0]!r} (allowed: n, seed, fields)")
    n, seed = spec.get("n"), spec.get("seed", 0)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 100_000:
        raise SweepSpecError(f"random.n: expected a whole number of samples from 1 to 100000, got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SweepSpecError(f"random.seed: expected a non-negative integer, got {seed!r}")
    fields = spec.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise SweepSpecError("random.fields: expected a non-empty mapping of field to choices or {low, high} range")
    out = []
    for k, dist in fields.items():
        where = f"random.fields.{k}"
        if isinstance(dist, list):
            if not dist:
                raise SweepSpecError(f"{where}: empty list of choices")
            out.append((str(k), dist))
        elif isinstance(dist, dict):
            bad = set(dist) - RANGE_KEYS
            if bad or "low" not in dist or "high" not in dist:
                raise SweepSpecError(f"{where}: a range needs low and high (optional log, int), got keys {sorted(dist)}")
            lo, hi = _number(dist["low"], f"{where}.low"), _number(dist["high"], f"{where}.high")
            if not lo < hi:
                raise SweepSpecError(f"{where}: low must be below high (got {lo:g} and {hi:g})")
            if dist.get("log") and lo <= 0:
                raise SweepSpecError(f"{where}: a log range needs low > 0 (got {lo:g})")
            if dist.get("int") and (lo != int(lo) or hi != int(hi)):
                raise SweepSpecError(f"{where}: an int range needs whole low and high")
            out.append((str(k), {"low": lo, "high": hi, "log": bool(dist.get("log")), "int": bool(dist.get("int"))}))
        else:
            raise SweepSpecError(f"{where}: expected a list of choices or a {{low, high}} range, got {json.dumps(dist, default=str)[:60]}")
    return out, n, seed


def sample_random(fields: list[tuple[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """N assignments drawn with ``numpy.random.default_rng(seed)`` (log ranges uniform in log space)."""
    import numpy as np

    if not fields:
        return [{}]
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        a: dict[str, Any] = {}
        for k, dist in fields:
            if isinstance(dist, list):
                v = dist[int(rng.integers(len(dist)))]
            elif dist["int"]:
                lo, hi = int(dist["low"]), int(dist["high"])
                v = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)) - 0.5))) if dist["log"] else int(rng.integers(lo, hi + 1))
                v = min(max(v, lo), hi)
            elif dist["log"]:
                v = float(math.exp(rng.uniform(math.log(dist["low"]), math.log(dist["high"]))))
            else:
                v = float(rng.uniform(dist["low"], dist["high"]))
            if isinstance(v, float):
                v = float(f"{v:.6g}")
            a.update(_assignment(k, v, f"random.fields.{k}"))
        samples.append(a)
    return samples


def parse_resources(res: Any) -> dict[str, float]:
    if res is None:
        return {}
    if not isinstance(res, dict):
        raise SweepSpecError("resources: expected a mapping {cpus, gpus, memory_mb}")
    out = {}
    for k, v in res.items():
        if k not in RESOURCE_KEYS:
            raise SweepSpecError(f"resources: unknown key {k!r} (allowed: cpus, gpus, memory_mb)")
        x = _number(v, f"resources.{k}")
        if x < 0 or (k == "cpus" and x <= 0):
            raise SweepSpecError(f"resources.{k}: must be {'> 0' if k == 'cpus' else '>= 0'}, got {v!r}")
        out[k] = x
    return out


# ---------------------------------------------------------------------------- expansion
def _method_fields() -> dict[str, set[str]]:
    from modalscope.methods.base import _REGISTRY

    return {name: set(cls.Params.model_fields) for name, cls in _REGISTRY.items()}


def _drop_foreign_method_knobs(raw: dict[str, Any], fields: dict[str, set[str]]) -> None:
    """Drop ``method.<knob>`` when this trial's method lacks the knob and another method has it."""
    name = raw.get("method.name", "joint")
    own = fields.get(name)
    if own is None:
        return
    known_elsewhere = set().union(*fields.values())
    for path in [p for p in raw if p.startswith("method.") and p != "method.name"]:
        knob = path.split(".")[1]
        if knob not in own and knob in known_elsewhere:
            raw.pop(path)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return str(v)


def _sanitize(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("+", "")).strip("-")
    s = re.sub(r"\.{2,}", ".", s)
    s = re.sub(r"^[^A-Za-z0-9]+", "", s)
    return s or "x"


def _short_names(paths: list[str]) -> dict[str, str]:
    def one(p: str) -> str:
        parts = p.split(".")
        if parts[-1] == "name" and len(parts) > 1:
            return parts[-2]
        return ".".join(parts[-2:]) if len(parts) > 2 else parts[-1]

    short = {p: one(p) for p in paths}
    clash = {s for s in short.values() if list(short.values()).count(s) > 1}
    return {p: (p if s in clash else s) for p, s in short.items()}


def trial_name(sweep: str, values: dict[str, Any], swept: list[str], short: dict[str, str]) -> str:
    parts = [sweep] + [f"{short[p]}-{_fmt(values[p])}" for p in swept if p in values]
    return _sanitize("_".join(parts))


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    from modalscope.config import set_dotted

    out: dict[str, Any] = {}
    for path, v in flat.items():
        set_dotted(out, path.split("."), v)
    return out


def expand(spec: dict[str, Any], runs_dir: str | Path, overrides: list[str] | None = None) -> Sweep:
    """Spec → validated trials (every config checked before anything runs)."""
    from modalscope.config import parse_override, resolve_config, validate_run_name

    if not isinstance(spec, dict):
        raise SweepSpecError("a sweep spec must be a mapping with base/grid/random keys")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise SweepSpecError(f"sweep spec: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(SPEC_KEYS))})")
    name = spec.get("name") or "sweep"
    try:
        validate_run_name(str(name))
    except ConfigError as e:
        raise SweepSpecError(f"sweep name: {e}") from None
    name = str(name)
    runs_dir = Path(runs_dir).absolute()
    base = parse_base(spec.get("base"))
    for item in overrides or []:
        path, value = parse_override(item)
        for p, v in canonical(".".join(path), value, "--set"):
            base[p] = v
    axes = parse_grid(spec.get("grid"))
    rfields, n, seed = parse_random(spec.get("random"))
    resources = parse_resources(spec.get("resources"))

    owners: dict[str, str] = {}
    for label, assignments in axes:
        for path in set().union(*assignments):
            if path in owners:
                raise SweepSpecError(f"grid: {label!r} and {owners[path]!r} both set {path}")
            owners[path] = label
    samples = sample_random(rfields, n, seed)
    for path in set().union(*samples):
        if path in owners:
            raise SweepSpecError(f"random.fields: {path} is also a grid field ({owners[path]!r})")
        owners[path] = "random"
    for path in sorted(_set_paths(overrides) & set(owners)):
        raise SweepSpecError(f"--set {path}: this field is swept by the spec ({owners[path]!r})")

    order = list(dict.fromkeys([p for _, a in axes for asg in a for p in asg] + [p for s in samples for p in s]))
    mfields = _method_fields()
    raws: list[dict[str, Any]] = []
    seen: set[str] = set()
    for combo in itertools.product(*[a for _, a in axes]) if axes else [()]:
        for sample in samples:
            raw = dict(base)
            for asg in combo:
                raw.update(asg)
            raw.update(sample)
            _drop_foreign_method_knobs(raw, mfields)
            key = json.dumps(raw, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                raws.append(raw)

    swept = [p for p in order if len({json.dumps(r[p], sort_keys=True, default=str) for r in raws if p in r}) > 1]
    short = _short_names(swept)
    names = [trial_name(name, r, swept, short) for r in raws]
    for i, nm in enumerate(names):
        if len(nm) > 128 or names.count(nm) > 1:
            digest = hashlib.sha1(json.dumps({p: raws[i].get(p) for p in order}, sort_keys=True, default=str).encode()).hexdigest()[:8]
            names[i] = f"{nm[:119]}-{digest}"
    width = max(3, len(str(len(raws) - 1)))
    trials = []
    for i, (raw, nm) in enumerate(zip(raws, names)):
        tid = f"{i:0{width}d}"
        full = dict(raw)
        full.update({"tags.sweep": name, "tags.swept": ",".join(swept), "tags.trial": tid, "log.progress": False})
        full["runs_dir"] = str(runs_dir)
        full["name"] = nm
        values = {p: raw[p] for p in swept if p in raw}
        label = ", ".join(f"{p}={_fmt(v)}" for p, v in values.items()) or "base"
        try:
            validate_run_name(nm)
            cfg = resolve_config(base=_nest(full))
        except ConfigError as e:
            msg = str(e).removeprefix("config error: ")
            raise SweepSpecError(f"sweep {name}: trial {tid} ({label}): {msg}") from None
        trials.append(Trial(index=i, name=nm, values=values, config=cfg, run_dir=Path(runs_dir) / nm))
    return Sweep(name=name, swept=swept, trials=trials, resources=resources)


def _set_paths(overrides: list[str] | None) -> set[str]:
    from modalscope.config import parse_override

    out = set()
    for item in overrides or []:
        path, value = parse_override(item)
        out |= {p for p, _ in canonical(".".join(path), value, "--set")}
    return out


# ---------------------------------------------------------------------------- planning
def _first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if not prefix and k in IGNORED_IN_COMPARE:
                continue
            d = _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
            if d:
                return d
        return None
    if a != b:
        return f"{prefix.rstrip('.')}: {json.dumps(a, default=str)[:40]} -> {json.dumps(b, default=str)[:40]}"
    return None


def plan(sweep: Sweep) -> None:
    """Decide per trial: ``new``, ``skip`` (finished), ``resume`` (interrupted), ``restart``
    (failed: the old folder is deleted when the trial starts) or ``running`` (another live
    process writes it; left alone). A finished or interrupted trial whose stored config differs
    from the spec (tags and runs_dir aside: they do not change training) is an error: the spec
    changed under an existing runs folder. Trials are matched by name, so extending a grid
    keeps the finished runs (with the trial ids they were run under)."""
    from modalscope.store import RunReader, is_run_dir

    for t in sweep.trials:
        if not is_run_dir(t.run_dir):
            t.action = "new"
            continue
        try:
            reader = RunReader(t.run_dir)
            status = reader.status()
            stored = reader.config()
        except ModalScopeError:
            t.action, t.previous = "restart", "unreadable"
            continue
        t.previous = status
        if status == "finished" or status == "interrupted":
            diff = _first_difference(stored, t.config.dump())
            if diff:
                raise SweepSpecError(
                    f"sweep {sweep.name}: trial {t.config.tags['trial']} ({t.name}) exists in {t.run_dir.parent} with a "
                    f"different config ({diff}); use another --runs-dir or sweep name"
                )
            t.action = "skip" if status == "finished" else "resume"
        elif status == "running":
            t.action = "running"
        else:
            t.action = "restart"


# ---------------------------------------------------------------------------- running
@dataclass
class SweepResult:
    sweep: Sweep
    results: list[dict[str, Any]]
    seconds: float

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["status"] == "failed"]

    def table(self) -> str:
        rows = [("trial", "name", "status", "acc_fused", "seconds")]
        for r in sorted(self.results, key=lambda r: r["index"]):
            acc = r.get("metrics", {}).get("acc/test/fused")
            rows.append((
                r["trial"], r["name"], r["status"] + (f" ({r['error'][:60]})" if r.get("error") else ""),
                "-" if acc is None else f"{acc:.4f}", f"{r.get('seconds', 0.0):.1f}",
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _stored_result(t: Trial, status: str) -> dict[str, Any]:
    from modalscope.store import RunReader

    metrics: dict[str, float] = {}
    try:
        metrics = RunReader(t.run_dir).final_scalars("acc/test/")
    except ModalScopeError:
        pass
    return {"index": t.index, "trial": t.config.tags["trial"], "name": t.name, "run_dir": str(t.run_dir),
            "status": status, "metrics": metrics, "error": "", "seconds": 0.0, "trained": False}


def run_sweep(
    spec: dict[str, Any] | str | Path,
    runs_dir: str | Path = "runs",
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    overrides: list[str] | None = None,
    cpus_per_trial: float | None = None,
    gpus_per_trial: float | None = None,
    progress: bool = True,
    dry_run: bool = False,
    on_plan: Callable[[Sweep], None] | None = None,
) -> SweepResult:
    """Expand, validate and plan the sweep, then hand the trials to an executor."""
    from modalscope import sweep_executors as ex

    if executor not in ("local", "ray"):
        raise ModalScopeError(f"unknown executor {executor!r}; choose local or ray")
    if workers is not None and workers < 1:
        raise ModalScopeError(f"--workers must be at least 1, got {workers}")
    raw = read_spec(spec) if isinstance(spec, (str, Path)) else dict(spec)
    sweep = expand(raw, runs_dir, overrides)
    plan(sweep)
    res = dict(sweep.resources)
    if cpus_per_trial is not None:
        res["cpus"] = cpus_per_trial
    if gpus_per_trial is not None:
        res["gpus"] = gpus_per_trial
    sweep.resources = res
    if on_plan is not None:
        on_plan(sweep)
    t0 = time.perf_counter()
    results = [_stored_result(t, "skipped" if t.action == "skip" else "running") for t in sweep.trials if t.action in ("skip", "running")]
    todo = [t for t in sweep.trials if t.action in ("new", "resume", "restart")]
    if dry_run or not todo:
        return SweepResult(sweep, results, 0.0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sweep.trials), initial=len(results), desc=f"sweep {sweep.name}"[:40], unit="trial", file=sys.stderr, dynamic_ncols=True)

    def on_result(r: dict[str, Any]) -> None:
        results.append(r)
        if bar is not None:
            bar.update(1)
            done = [x for x in results if x["status"] == "failed"]
            bar.set_postfix_str(f"failed {len(done)}" if done else "")

    try:
        if executor == "ray":
            ex.run_ray(sweep, todo, on_result, address=address, workers=workers)
        else:
            ex.run_local(sweep, todo, on_result, workers=workers or 1)
    finally:
        if bar is not None:
            bar.close()
    return SweepResult(sweep, results, time.perf_counter() - t0)


def _print_plan(sweep: Sweep) -> None:
    counts = {a: sum(t.action == a for t in sweep.trials) for a in ("new", "skip", "resume", "restart", "running")}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    swept = ", ".join(sweep.swept) or "nothing"
    print(f"sweep {sweep.name}: {len(sweep.trials)} trials ({summary}); swept: {swept}", file=sys.stderr, flush=True)


def cmd_sweep(args: argparse.Namespace) -> int:
    def show(sweep: Sweep) -> None:
        _print_plan(sweep)
        if args.dry_run:
            for t in sweep.trials:
                vals = " ".join(f"{p}={_fmt(v)}" for p, v in t.values.items())
                print(f"{t.config.tags['trial']}  {t.action:<8} {t.name}  {vals}".rstrip())

    import signal

    def term(signum, frame):
        raise KeyboardInterrupt

    try:
        old_term = signal.signal(signal.SIGTERM, term)
    except ValueError:
        old_term = None
    try:
        result = run_sweep(
            args.spec, runs_dir=args.runs_dir, executor=args.executor, workers=args.workers, address=args.address,
            overrides=args.set, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
            progress=not args.no_progress, dry_run=args.dry_run, on_plan=show,
        )
    except KeyboardInterrupt:
        print("sweep interrupted; run the same command again to resume (finished trials are skipped)", file=sys.stderr)
        return 130
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    if args.dry_run:
        return 0
    print(result.table())
    n_failed = len(result.failed)
    print(f"{len(result.results)} trials, {n_failed} failed, {result.seconds:.1f}s", file=sys.stderr)
    return 1 if n_failed else 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="run a grid / random sweep of trials (local process pool or Ray)")
    p.add_argument("spec", help="sweep spec YAML (base, grid, random, resources, name)")
    p.add_argument("--runs-dir", default="runs", help="folder that receives one run folder per trial")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--workers", type=int, help="parallel trials (local: process pool size, 1 = in this process; ray local runtime: CPUs)")
    p.add_argument("--address", help="Ray cluster address ('auto' joins the cluster this node belongs to); default: a local Ray runtime")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (also its torch threads); overrides resources.cpus")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial (Ray); overrides resources.gpus")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base field for every trial")
    p.add_argument("--dry-run", action="store_true", help="validate and list the trials, run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_sweep)
