"""Encoder utilisation against the "trained alone" reference run (store-level queries).

``probe_util/<m> = (probe − probe_init) / (probe_alone − probe_init)`` on the test split
(:func:`modalscope.diagnostics.probe.utilisation`):

* ``probe`` — this run's latest ``probe/test/<m>``;
* ``probe_init`` — this run's ``probe_init/test/<m>`` (its encoder before the first step);
* ``probe_alone`` — the final ``probe/test/<m>`` of the **reference**: a ``unimodal`` run with
  ``method.modality = m`` and the same ``data`` block, ``model`` block and ``seed`` as this
  run, looked up by config in the given roots (the runs root, then the gallery). A unimodal
  run is its own reference, so its utilisation is 1 by construction.

Among several matching references the one that also shares ``epochs``, ``optim`` and
``batch_size`` wins, then the earlier root, then the most recently finished. A reference
must be finished (except the run itself, which the trainer scores just before it closes).
The query runs at read time, so a reference trained after the run still counts; where none
exists the ``reason`` column says why, for the dashboard to show.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from modalscope.diagnostics.probe import utilisation
from modalscope.errors import StoreError
from modalscope.store import PAIRING_FINALS, _status_from_meta, is_run_dir, run_finals

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

COLUMNS = ["modality", "utilisation", "probe", "probe_init", "probe_alone", "epoch", "reference", "reason"]
TRAINING_KNOBS = ("epochs", "optim", "batch_size")


def gallery_dir() -> Path:
    """The shipped gallery: ``$MODALSCOPE_SAMPLE_RUNS`` or ``sample_runs/`` next to the package."""
    env = os.environ.get("MODALSCOPE_SAMPLE_RUNS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "sample_runs"


def default_roots(runs_dir: str | Path) -> list[Path]:
    return [Path(runs_dir), gallery_dir()]


def _read_config(d: Path) -> dict | None:
    """The run's config.json, parsed once per version of the file (the Compare page asks for the
    config of every run it looks a reference up for; callers only read it)."""
    path = os.path.join(os.fspath(d), "config.json")
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_mtime_ns, st.st_size)
    if key in _CONFIGS:
        return _CONFIGS[key]
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if len(_CONFIGS) > 20_000:
        _CONFIGS.clear()
    _CONFIGS[key] = cfg
    return cfg


_CONFIGS: dict[tuple, dict] = {}


_SCANS: dict[str, tuple[int, list[tuple[Path, dict]], list[Path]]] = {}


def run_configs(root: Path) -> list[tuple[Path, dict]]:
    """(folder, config) of every run folder directly under ``root``, in name order.

    The listing is remembered while ``root``'s own mtime is unchanged (a run folder added or
    removed changes it), so the Compare page, which looks up references for every selected
    run, reads each config.json once instead of once per run and modality. Folders that were
    still incomplete (no run database or no readable config yet) are looked at again on
    every call, so a run that is being created is picked up once it is complete."""
    have = _scan(root)
    if have is None:
        return []
    _, done, pending = have
    late = [(d, cfg) for d in pending if is_run_dir(d) and (cfg := _read_config(d)) is not None]
    return sorted(done + late, key=lambda t: t[0].name) if late else list(done)


def _scan(root: Path) -> tuple[int, list[tuple[Path, dict]], list[Path]] | None:
    """The remembered listing of ``root`` (rescanned when its mtime changed), or None when it is gone."""
    try:
        stamp = os.stat(root).st_mtime_ns
    except OSError:
        return None
    key = os.path.abspath(root)
    have = _SCANS.get(key)
    if have is None or have[0] != stamp:
        done: list[tuple[Path, dict]] = []
        pending: list[Path] = []
        for d in sorted(root.iterdir()):
            if not d.is_dir():
                continue
            cfg = _read_config(d) if is_run_dir(d) else None
            if cfg is None:
                pending.append(d)
            else:
                done.append((d, cfg))
        if len(_SCANS) > 64:
            _SCANS.clear()
        have = _SCANS[key] = (stamp, done, pending)
    return have


_UNIMODAL: dict[str, tuple[tuple, dict]] = {}


def unimodal_runs(root: Path, modality: str, seed) -> list[tuple[Path, dict]]:
    """The (folder, config) pairs of :func:`run_configs` that are ``unimodal`` runs of
    ``modality`` with ``seed``: an index built once per remembered listing, so that looking up
    references for every run on the Compare page does not compare every config of the root
    with each of them."""
    scan = _scan(root)
    key = os.path.abspath(root)
    listing = run_configs(root) if scan is None or scan[2] else scan[1]  # folders still pending: the full listing

    def wanted(ref: dict) -> bool:
        method = ref.get("method") or {}
        return method.get("name") == "unimodal" and method.get("modality") == modality and ref.get("seed") == seed

    if scan is None or len(listing) != len(scan[1]):  # folders completed since the scan: not indexed yet
        return [(d, ref) for d, ref in listing if wanted(ref)]
    have = _UNIMODAL.get(key)
    if have is None or have[0] is not scan:
        index: dict[tuple, list] = {}
        for d, ref in scan[1]:
            method = ref.get("method") or {}
            if method.get("name") == "unimodal":
                index.setdefault((method.get("modality"), json.dumps(ref.get("seed"))), []).append((d, ref))
        have = _UNIMODAL[key] = (scan, index)
    return [(d, ref) for d, ref in have[1].get((modality, json.dumps(seed)), []) if wanted(ref)]


def is_reference_for(cfg: dict, ref: dict, modality: str) -> bool:
    """``ref`` is the unimodal-``modality`` run with ``cfg``'s data, model and seed."""
    method = ref.get("method") or {}
    return (
        method.get("name") == "unimodal"
        and method.get("modality") == modality
        and ref.get("data") == cfg.get("data")
        and ref.get("model") == cfg.get("model")
        and ref.get("seed") == cfg.get("seed")
    )


def find_reference(run_dir: str | Path, modality: str, roots: list[str | Path]) -> tuple[Path | None, str]:
    """(reference run folder, "") or (None, reason)."""
    run_dir = Path(run_dir)
    cfg = _read_config(run_dir)
    if cfg is None:
        return None, f"{run_dir.name} has no readable config.json"
    if is_reference_for(cfg, cfg, modality):
        return run_dir, ""
    me = os.path.abspath(run_dir)  # abspath, not resolve(): this runs for every candidate of every lookup
    key = json.dumps([cfg.get("data"), cfg.get("model"), cfg.get("seed"), [cfg.get(k) for k in TRAINING_KNOBS], modality,
                      [os.path.abspath(r) for r in roots]], sort_keys=True, default=str)
    scans = tuple(id(_scan(Path(r))) for r in roots)
    hit = _FOUND.get(key)
    if (hit is not None and time.monotonic() - hit[0] < FOUND_TTL and hit[1] == scans
            and (hit[2][0] is None or (is_run_dir(hit[2][0]) and os.path.abspath(hit[2][0]) != me))):
        return hit[2]
    found: list[tuple[tuple, Path]] = []
    for rank, root in enumerate(Path(r) for r in roots):
        if not root.is_dir():
            continue
        for d, ref in unimodal_runs(root, modality, cfg.get("seed")):
            if not is_reference_for(cfg, ref, modality) or os.path.abspath(d) == me or not is_run_dir(d):
                continue
            try:
                meta = run_finals(d, PAIRING_FINALS)[0]  # remembered for closed runs; no pandas (a trainer calls this)
                if _status_from_meta(meta) != "finished":
                    continue
                end = float(meta.get("end_time") or 0.0)
            except StoreError:
                continue
            same_training = all(ref.get(k) == cfg.get(k) for k in TRAINING_KNOBS)
            found.append(((not same_training, rank, -end), d))
    if not found:
        where = ", ".join(str(r) for r in roots)
        out: tuple[Path | None, str] = None, (
            f"no finished 'unimodal' run with modality={modality} and the same data, model and seed "
            f"in {where}: train one to measure utilisation"
        )
    else:
        out = min(found, key=lambda t: t[0])[1], ""
    if len(_FOUND) > 4096:
        _FOUND.clear()
    _FOUND[key] = (time.monotonic(), scans, out)
    return out


#: Runs sharing data, model, seed and training knobs share their reference: the answer is kept
#: this many seconds while no run folder is added to or removed from the roots and the chosen
#: reference still exists (the Compare page looks it up for every run it pairs; a candidate that
#: finishes in the meantime is seen once this has passed, as the runs table refreshes every 2 s).
FOUND_TTL = 2.0
_FOUND: dict[str, tuple[float, tuple, tuple[Path | None, str]]] = {}


def probe_utilisation(run_dir: str | Path, roots: list[str | Path]) -> pd.DataFrame:
    """One row per modality of the run: utilisation (NaN when unavailable) and the reason."""
    import pandas as pd

    return pd.DataFrame(probe_utilisation_rows(run_dir, roots), columns=COLUMNS)


def probe_utilisation_rows(run_dir: str | Path, roots: list[str | Path]) -> list[dict]:
    """:func:`probe_utilisation` as plain dicts (the trainer calls this: no pandas import at the end of a run)."""
    meta, finals = run_finals(run_dir, PAIRING_FINALS)  # one statement: this runs for every run on the Compare page
    mods = meta.get("modalities") or []
    rows = []
    for m in mods:
        row = dict.fromkeys(COLUMNS, float("nan"))
        row.update(modality=m, reference="", reason="")
        rows.append(row)
        cur, init = finals.get(f"probe/test/{m}"), finals.get(f"probe_init/test/{m}")
        if cur is None or init is None:
            row["reason"] = "this run has no encoder probes (diagnostics.probe off, a regression task, or a run older than probes)"
            continue
        row["probe"], row["epoch"] = cur
        row["probe_init"] = init[0]
        ref, why = find_reference(run_dir, m, roots)
        if ref is None:
            row["reason"] = why
            continue
        row["reference"] = str(ref)
        alone = run_finals(ref, PAIRING_FINALS)[1].get(f"probe/test/{m}")
        if alone is None:
            row["reason"] = f"reference {ref.name} has no probe/test/{m} (trained without probes)"
            continue
        row["probe_alone"] = alone[0]
        row["utilisation"] = utilisation(row["probe"], row["probe_init"], row["probe_alone"])
        if row["utilisation"] != row["utilisation"]:
            row["reason"] = (
                f"reference {ref.name} gained nothing over this run's initial probe "
                f"(alone {row['probe_alone']:.3f}, init {row['probe_init']:.3f})"
            )
    return rows
