"""The dashboard's query layer: modalscope.store query functions behind caches keyed by (run, last row id).

Pages never open SQLite themselves. A run is addressed by a *key* ``runs/<name>`` (the
writable runs root) or ``gallery/<name>`` (the read-only ``sample_runs/``); keys map to
folders only through :func:`run_path`, which validates the name, so a URL cannot point
the app at an arbitrary path.

Caching: a run's scalars grow only by appended rows with increasing ids. The scalar cache
keeps, per (run, series selection), the frame read so far and the last id, and on each
refresh reads only rows with a larger id (``RunReader.scalars(since_id=...)``), so a live
page refreshing every half second costs one indexed ``MAX(id)`` plus the new rows. The small
per-epoch tables are cached whole, keyed by the run's last scalar id.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from modalscope.config import validate_run_name
from modalscope.errors import ConfigError, StoreError
from modalscope.store import PAIRING_FINALS, RunReader, _stamp, bucket_points, is_run_dir, list_runs, open_run, run_brief, run_finals

KINDS = ("runs", "gallery")

#: How often the Live page re-reads a running run. A refresh reads only the rows (or summary
#: buckets) added since the last one, so it costs a few tens of ms; with the trainer's 1 s flush
#: period a logged row shows within flush + this + one render.
LIVE_REFRESH_SECONDS = 0.5
#: How often the Live page looks at a run that has no rows yet (the trainer is starting): a
#: file check, or a render of an empty run, until the first rows arrive.
FIRST_ROWS_REFRESH_SECONDS = 0.2


@dataclass(frozen=True)
class Roots:
    runs_dir: str
    sample_runs: str

    def path(self, kind: str) -> Path:
        return Path(self.runs_dir if kind == "runs" else self.sample_runs)


def roots() -> Roots:
    """Roots chosen on the command line (``app.py`` stores them), else env, else defaults."""
    r = st.session_state.get("_roots")
    if isinstance(r, dict):
        return Roots(r["runs_dir"], r["sample_runs"])
    return Roots(os.environ.get("MODALSCOPE_RUNS_DIR", "runs"), os.environ.get("MODALSCOPE_SAMPLE_RUNS", "sample_runs"))


def run_key(kind: str, name: str) -> str:
    return f"{kind}/{name}"


def run_path(key: str, r: Roots | None = None) -> Path | None:
    """Folder of a run key, or None when the key is malformed (never a path outside the roots)."""
    r = r or roots()
    k = (str(key), r)
    if k not in _PATHS:  # a pure function of the key and the roots, asked for several times per run and render
        kind, _, name = str(key).partition("/")
        if kind not in KINDS:
            return None
        try:
            validate_run_name(name)
        except ConfigError:
            return None
        if len(_PATHS) > 50_000:
            _PATHS.clear()
        _PATHS[k] = r.path(kind) / name
    return _PATHS[k]


_PATHS: dict[tuple[str, Roots], Path] = {}


def is_writable(key: str) -> bool:
    return str(key).startswith("runs/")


def _memo(ttl: float | None = None, max_entries: int = 1024):
    """``st.cache_data`` for the per-run reads a page makes for every run it shows, without its
    per-call hashing and pickling (a Compare render of 50 runs makes hundreds of these calls).
    Results are shared, not copied: callers never modify them. Entries expire after ``ttl``."""

    def wrap(fn):
        store: dict[tuple, tuple[float, Any]] = {}

        def get(*args):
            now = time.monotonic()
            hit = store.get(args)
            if hit is not None and (ttl is None or now - hit[0] < ttl):
                return hit[1]
            v = fn(*args)
            if len(store) >= max_entries:
                store.clear()
            store[args] = (now, v)
            return v

        get.clear = store.clear
        _MEMOS[fn.__name__] = store
        return get

    return wrap


_MEMOS: dict[str, dict] = {}


def clear_memos(keep: tuple[str, ...] = ()) -> None:
    """Forget every :func:`_memo` result but those of the functions named in ``keep`` (the
    benchmark's cold timings)."""
    for name, m in _MEMOS.items():
        if name not in keep:
            m.clear()


# ---------------------------------------------------------------------------- runs table
@st.cache_data(ttl=2.0, show_spinner=False)
def _runs_table(runs_dir: str, sample_runs: str) -> pd.DataFrame:
    frames = []
    for kind, root in (("runs", runs_dir), ("gallery", sample_runs)):
        df = list_runs(root)
        if df.empty:
            continue
        df.insert(0, "key", [run_key(kind, n) for n in df["name"]])
        df.insert(1, "source", kind)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["key", "source", "name", "method", "preset", "status"])
    out = pd.concat(frames, ignore_index=True)
    # object, not pyarrow str: pages filter this 500-row frame dozens of times per render, and a
    # row selection of an arrow column costs ~1 ms each
    return out.astype({c: object for c in out.columns if pd.api.types.is_string_dtype(out[c].dtype)})


def runs_table(r: Roots | None = None) -> pd.DataFrame:
    r = r or roots()
    return _runs_table(str(r.runs_dir), str(r.sample_runs)).copy()


@_memo(ttl=5.0, max_entries=64)
def _configs(paths: tuple[tuple[str, str], ...]) -> dict[str, dict]:
    out = {}
    for key, p in paths:
        try:
            out[key] = RunReader(p, check=False).config()  # config.json only: no database query
        except StoreError:
            out[key] = {}
    return out


def configs(runs: pd.DataFrame) -> dict[str, dict]:
    """Full config dict of every run in ``runs`` (keyed by run key)."""
    if runs.empty:
        return {}
    return _configs(tuple(zip(runs["key"], runs["path"])))


# ---------------------------------------------------------------------------- one run
_READERS: dict[str, Any] = {}


def reader(key: str):
    """The run's RunReader (kept per folder: opening one checks the schema, which costs a query)."""
    p = run_path(key)
    if p is None or not is_run_dir(p):
        return None
    k = os.path.abspath(p)
    rd = _READERS.get(k)
    if rd is None or not rd.path.is_file():
        try:
            rd = open_run(p)
        except StoreError:
            return None
        if len(_READERS) > 512:
            _READERS.clear()
        _READERS[k] = rd
    return rd


def _open(path: str | Path) -> RunReader:
    """A reader without the schema query: every path reaching here went through :func:`reader`,
    which checked the schema when it first opened the run."""
    return RunReader(path, check=False)


@_memo(ttl=0.5, max_entries=1024)
def _meta(path: str) -> dict[str, Any]:
    return _open(path).meta()


@_memo(max_entries=4096)
def _config(path: str, mtime: float) -> dict[str, Any]:
    return _open(path).config()


def _brief(rd) -> dict[str, Any] | None:
    """``modalscope.store.run_brief`` of a closed run (no ``-wal`` file; remembered while its files
    are unchanged), else None: a page showing 50 runs asks each for its meta, last row id and
    scalar names, and one statement answers all three."""
    stamp = _stamp(rd.dir)
    if stamp is None or stamp[1] is not None:
        return None
    try:
        return run_brief(rd.dir, PAIRING_FINALS)
    except StoreError:
        return None


def last_id(key: str) -> int:
    """The run's newest scalar row id (the key of every per-run cache)."""
    rd = reader(key)
    if rd is None:
        return 0
    b = _brief(rd)
    return b["last_id"] if b is not None else rd.last_id()


class _ScalarCache:
    """Incrementally extended scalar frames per (run folder, selection)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items: dict[tuple, tuple[int, pd.DataFrame]] = {}

    def get(self, path: Path, names: tuple[str, ...] | None, prefix: str | None, upto: int, every: int = 1) -> pd.DataFrame:
        k = (os.path.abspath(path), names, prefix, every)
        with self.lock:
            have = self.items.get(k)
        if have is not None and have[0] >= upto:
            return have[1]
        since = have[0] if have is not None else 0
        new = _open(path).scalars(names=list(names) if names is not None else None, prefix=prefix, since_id=since, every=every)
        if have is not None and since > 0:
            frame = pd.concat([have[1], new], ignore_index=True) if len(new) else have[1]
        else:
            frame = new
        newest = int(new["id"].max()) if len(new) else since
        with self.lock:
            if len(self.items) > 256:
                self.items.clear()
            self.items[k] = (max(newest, upto), frame)
        return frame


@st.cache_resource(show_spinner=False)
def _scalar_cache() -> _ScalarCache:
    return _ScalarCache()


def stride(key: str) -> int:
    """Read every k-th step of step series for long runs (k from the planned number of steps,
    so it stays fixed while the run grows): at most ~``STRIDED_POINTS`` points per series.
    Off (1) when the user asks for full resolution or the run is short."""
    if st.session_state.get("full_resolution"):
        return 1
    m = meta(key)
    planned = int(m.get("steps_per_epoch") or 0) * int(config(key).get("epochs") or 0)
    return max(1, -(-planned // STRIDED_POINTS)) if planned > FULL_BELOW else 1


STRIDED_POINTS = 10_000
FULL_BELOW = 20_000


def scalars(key: str, names: list[str] | None = None, prefix: str | None = None, upto: int | None = None,
            every: int = 1) -> pd.DataFrame:
    """Scalars of one run (exact ``names`` or a name ``prefix``), cached by (run, last row id).
    ``every`` > 1 reads only steps divisible by it (see :func:`stride`)."""
    p = run_path(key)
    if p is None or not is_run_dir(p):
        return pd.DataFrame(columns=["id", "step", "epoch", "name", "value"])
    upto = last_id(key) if upto is None else upto
    return _scalar_cache().get(p, tuple(names) if names is not None else None, prefix, upto, every)


class _BucketCache:
    """Incrementally extended ``scalar_buckets`` frames per (run folder, selection, width).

    A refresh re-reads only the buckets from the oldest of each series' newest bucket on (the
    newest bucket of a series grows until the next one starts); older buckets never change
    while rows are appended in step order. The drawn points are rebuilt from the frame."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items: dict[tuple, tuple[int, pd.DataFrame, pd.DataFrame]] = {}

    def get(self, path: Path, names: tuple[str, ...] | None, prefix: str | None, upto: int, width: int) -> pd.DataFrame:
        k = (os.path.abspath(path), names, prefix, width)
        with self.lock:
            have = self.items.get(k)
        if have is not None and have[0] >= upto:
            return have[2]
        rd = _open(path)
        names_ = list(names) if names is not None else None
        if have is None or have[1].empty:
            frame = rd.scalar_buckets(width, names=names_, prefix=prefix)
        else:
            old = have[1]
            since = int(old.groupby("name")["bucket"].max().min())
            new = rd.scalar_buckets(width, names=names_, prefix=prefix, from_bucket=since)
            frame = pd.concat([old[old["bucket"] < since], new], ignore_index=True).sort_values(["name", "bucket"], kind="stable")
        points = bucket_points(frame)
        with self.lock:
            if len(self.items) > 256:
                self.items.clear()
            self.items[k] = (upto, frame, points)
        return points


@st.cache_resource(show_spinner=False)
def _bucket_cache() -> _BucketCache:
    return _BucketCache()


#: A bucketed read aims at ≥ this many buckets per series (each gives up to 4 drawn points).
MIN_BUCKETS = 1000


def bucket_width(key: str) -> int:
    """Step width of the ``scalar_buckets`` summary to draw the run's step series from, or 0 to
    read every row (short runs, *Full resolution*, runs written before the summary existed).
    The coarsest stored width that still gives ≥ ``MIN_BUCKETS`` buckets over the planned
    steps (fixed while the run grows, so the refresh cache keeps hitting)."""
    if st.session_state.get("full_resolution"):
        return 0
    rd = reader(key)
    if rd is None:
        return 0
    planned = int(meta(key).get("steps_per_epoch") or 0) * int(config(key).get("epochs") or 0)
    if planned <= FULL_BELOW:
        return 0
    widths = sorted(_widths(str(rd.dir)))
    if not widths:
        return 0
    fit = [w for w in widths if planned // w >= MIN_BUCKETS]
    return fit[-1] if fit else widths[0]


@_memo(ttl=5.0, max_entries=4096)
def _widths(path: str) -> tuple[int, ...]:
    return _open(path).bucket_widths()


def step_series(key: str, names: list[str] | None = None, prefix: str | None = None, upto: int | None = None) -> pd.DataFrame:
    """A run's step series for charts, in the long layout of :func:`scalars`. Long runs come
    from the ``scalar_buckets`` summary (each bucket's first, lowest, highest and last row, plus
    columns ``bucket``, ``n`` and ``mean`` = the exact bucket mean; ``modalscope.store.bucket_points``);
    long runs stored before the summary existed are read every :func:`stride`-th step; short
    runs and *Full resolution* read every row."""
    p = run_path(key)
    if p is None or not is_run_dir(p):
        return pd.DataFrame(columns=["id", "step", "epoch", "name", "value"])
    upto = last_id(key) if upto is None else upto
    width = bucket_width(key)
    if width:
        return _bucket_cache().get(p, tuple(names) if names is not None else None, prefix, upto, width)
    every = stride(key)
    df = scalars(key, names=names, prefix=prefix, upto=upto, every=every)
    if every > 1 and len(df) < 200:  # per-epoch series: their steps need not be multiples of the stride
        df = scalars(key, names=names, prefix=prefix, upto=upto)
    return df


@_memo(max_entries=1024)
def _scalar_names(path: str, upto: int) -> list[str]:
    return _open(path).scalar_names()


def scalar_names(key: str, upto: int | None = None) -> list[str]:
    rd = reader(key)
    if rd is None:
        return []
    b = _brief(rd) if upto is None else None
    return b["names"] if b is not None else _scalar_names(str(rd.dir), last_id(key) if upto is None else upto)


@_memo(max_entries=1024)
def _table(path: str, what: str, upto: int, arg: str | None = None) -> Any:
    rd = _open(path)
    if what == "histograms":
        return rd.histograms()
    if what == "gmm":
        return rd.gmm()
    if what == "contributions":
        return rd.contributions()
    if what == "events":
        return rd.events()
    if what == "samples":
        return rd.samples(epoch=int(arg) if arg is not None else None)
    if what == "table_names":
        return rd.table_names()
    if what == "table":
        return rd.table(arg or "")
    raise ValueError(what)


def table(key: str, what: str, arg: str | None = None, upto: int | None = None) -> Any:
    """``histograms | gmm | contributions | events | samples | table_names | table`` of a run."""
    p = run_path(key)
    if p is None or not is_run_dir(p):
        return None
    return _table(str(p), what, last_id(key) if upto is None else upto, arg)


def meta(key: str) -> dict[str, Any]:
    """Run metadata (status, heartbeat, pid, modalities, reference...), at most 0.5 s old; for a
    closed run, the metadata read with its pairing finals (``run_finals``: one statement,
    remembered while the files are unchanged; the Compare page reads both for every run)."""
    rd = reader(key)
    if rd is None:
        return {}
    b = _brief(rd)
    return b["meta"] if b is not None else _meta(str(rd.dir))


def status(key: str) -> str:
    rd = reader(key)
    return rd.status() if rd is not None else "starting"


def config(key: str) -> dict[str, Any]:
    rd = reader(key)
    if rd is None:
        return {}
    cfg = rd.dir / "config.json"
    return _config(str(rd.dir), cfg.stat().st_mtime if cfg.is_file() else 0.0)


def summary(key: str) -> dict[str, Any]:
    rd = reader(key)
    return rd.summary() if rd is not None else {}


def final_values(key: str, prefix: str = "", prefixes: tuple[str, ...] | None = None) -> dict[str, float]:
    """The last logged value of every scalar of a run whose name starts with ``prefix``
    (e.g. ``probe_util/``, ``acc/best/``): ``modalscope.store.run_finals`` (one statement,
    remembered while a closed run's files are unchanged)."""
    p = run_path(key)
    if p is None or not is_run_dir(p):
        return {}
    try:
        finals = run_finals(p, prefixes)[1]  # prefixes: read only those names (the Compare page reads 300 runs)
    except StoreError:
        return {}
    return {k: v for k, (v, _) in sorted(finals.items()) if k.startswith(prefix)}


def has_step_rows(key: str) -> bool:
    """Whether the run has logged a training step (a ``loss/`` row): False while a launched trainer starts."""
    rd = reader(key)
    return rd is not None and rd.has_scalars("loss/")


def last_row(key: str) -> dict[str, Any] | None:
    """The newest scalar row (its step and epoch give the live progress)."""
    rd = reader(key)
    if rd is None:
        return None
    lid = rd.last_id()
    if lid == 0:
        return None
    df = rd.scalars(since_id=lid - 1)
    return None if df.empty else df.iloc[-1].to_dict()


def progress(key: str) -> dict[str, Any]:
    """Steps done, total steps, elapsed seconds and an ETA from the mean step rate so far."""
    m = meta(key)
    cfg = config(key)
    row = last_row(key)
    spe = int(m.get("steps_per_epoch") or 0)
    epochs = int(cfg.get("epochs") or 0)
    total = spe * epochs
    done = int(row["step"]) + 1 if row else 0
    start = float(m.get("start_time") or time.time())
    end = m.get("end_time")
    now = float(end) if end else time.time()
    elapsed = max(0.0, now - start)
    st_ = status(key)
    eta = None
    if st_ == "running" and done > 0 and total > done:
        eta = elapsed / done * (total - done)
    fused = scalars(key, names=["acc/test/fused"])
    epochs_done = int(fused["epoch"].max()) + 1 if len(fused) else 0
    return {"done": min(done, total) if total else done, "total": total, "elapsed": elapsed, "eta": eta,
            "epoch": int(row["epoch"]) + 1 if row else 0, "epochs_done": epochs_done, "epochs": epochs, "status": st_}


def log_tail(key: str, n: int = 30) -> str:
    """Last lines of the trainer's stdout/stderr (``launch.log``) and ``log.txt``."""
    p = run_path(key)
    if p is None:
        return ""
    out = []
    for f in ("launch.log", "log.txt"):
        q = p / f
        if q.is_file():
            try:
                lines = q.read_text(encoding="utf-8", errors="replace").splitlines()[-n:]
            except OSError:
                continue
            out.append(f"--- {f}\n" + "\n".join(lines))
    return "\n".join(out)


@_memo(ttl=5.0, max_entries=4096)
def _utilisation(path: str, version: Any, roots_: tuple[str, ...]) -> list[dict]:
    from modalscope.reference import probe_utilisation_rows

    return probe_utilisation_rows(path, [Path(r) for r in roots_])


def utilisation(key: str, version: int | None = None) -> pd.DataFrame:
    """Per modality: utilisation against the trained-alone reference run (looked up now, in the
    runs root then the gallery), its probe levels, and why it is missing when it is
    (:func:`modalscope.reference.probe_utilisation`). ``version`` keys the cache (the page passes
    the number of probe rows, so a running run rescans the roots once per probe epoch, not
    once per refresh; references that appear later are found within the 5 s TTL)."""
    from modalscope.reference import COLUMNS

    rows = utilisation_rows(key, version)
    return pd.DataFrame(rows, columns=COLUMNS) if rows is not None else pd.DataFrame()


def utilisation_rows(key: str, version: int | None = None) -> list[dict] | None:
    """:func:`utilisation` as plain dicts (one per modality; None for an unknown run): the Compare
    page asks for every run it pairs, and a DataFrame each costs more than the lookup."""
    p = run_path(key)
    if p is None or not is_run_dir(p):
        return None
    r = roots()
    version = _stamp(p) if version is None else version  # the files' stamp: no database query to key the memo
    return [dict(row) for row in _utilisation(str(p), version, (str(r.runs_dir), str(r.sample_runs)))]


def method_panels(cfg: dict[str, Any]) -> tuple:
    """The panels the run's method declares (``Method.panels``); () for unknown methods."""
    from modalscope.methods.base import _REGISTRY

    cls = _REGISTRY.get(str((cfg.get("method") or {}).get("name", "")))
    return tuple(getattr(cls, "panels", ()) or ())
