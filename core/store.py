"""The run store: one folder per run, one SQLite file (WAL) per run.

Layout of ``<runs_dir>/<name>/``: ``config.json`` (the resolved RunConfig), ``metrics.sqlite``
(everything logged), ``checkpoint.pt`` (last completed epoch), ``log.txt`` (human log).

Concurrency model: exactly one writer (the trainer) and any number of readers in other
processes. WAL mode lets readers see committed rows while the writer appends; writes are
buffered in memory and committed in one transaction every ``flush_rows`` rows or
``flush_seconds`` seconds, so logging never dominates a step. A killed writer loses at
most the uncommitted buffer; every committed transaction stays readable. When a run ends
the WAL is checkpointed and the file switched to rollback-journal mode, so finished runs
are a single self-contained file that can be copied, zipped or opened read-only.

Liveness: the writer stores ``pid``, ``host`` and a ``heartbeat`` timestamp (a background
thread refreshes it). A reader reports a ``running`` run as ``interrupted`` when its
heartbeat is older than ``STALE_SECONDS`` or its process is gone on this host, so a
``kill -9`` is detected without any signal handler.

All query functions return pandas DataFrames; the dashboard reads runs only through them.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from modalscope.errors import StoreError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
else:

    class _LazyPandas:
        """pandas is only needed to read runs: a training process writes without importing it (~0.3 s)."""

        def __getattr__(self, name: str):
            import pandas

            return getattr(pandas, name)

    pd = _LazyPandas()

SCHEMA_VERSION = 1
STALE_SECONDS = 30.0
STATUSES = ("running", "finished", "failed", "interrupted")
DB_NAME = "metrics.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS run(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS names(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS scalars(id INTEGER PRIMARY KEY, step INTEGER, epoch INTEGER, name_id INTEGER, value REAL);
CREATE INDEX IF NOT EXISTS scalars_name ON scalars(name_id, step);
CREATE TABLE IF NOT EXISTS histograms(id INTEGER PRIMARY KEY, epoch INTEGER, split TEXT, name TEXT, edges BLOB, counts BLOB);
CREATE TABLE IF NOT EXISTS gmm(id INTEGER PRIMARY KEY, epoch INTEGER, split TEXT, name TEXT, weights TEXT, means TEXT,
    variances TEXT, bic1 REAL, bic2 REAL, threshold REAL, balanced INTEGER);
CREATE TABLE IF NOT EXISTS samples(id INTEGER PRIMARY KEY, epoch INTEGER, split TEXT, name TEXT, sample_id INTEGER,
    gap REAL, posterior REAL, label INTEGER, correct INTEGER);
CREATE INDEX IF NOT EXISTS samples_epoch ON samples(epoch, split, name);
CREATE TABLE IF NOT EXISTS sample_arrays(id INTEGER PRIMARY KEY, epoch INTEGER, split TEXT, name TEXT, n INTEGER,
    sample_id BLOB, gap BLOB, posterior BLOB, label BLOB, correct BLOB);
CREATE INDEX IF NOT EXISTS sample_arrays_epoch ON sample_arrays(epoch, split, name);
CREATE TABLE IF NOT EXISTS contributions(id INTEGER PRIMARY KEY, epoch INTEGER, modality TEXT, info REAL,
    confidence REAL, w REAL, captum REAL);
CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, step INTEGER, epoch INTEGER, kind TEXT, message TEXT, time REAL);
CREATE TABLE IF NOT EXISTS tables(name TEXT PRIMARY KEY, data TEXT);
"""
BUCKETS_TABLE = """CREATE TABLE IF NOT EXISTS scalar_buckets(name_id INTEGER, width INTEGER, bucket INTEGER, n INTEGER, total REAL,
    first_step INTEGER, first_epoch INTEGER, first_value REAL, last_step INTEGER, last_epoch INTEGER, last_value REAL,
    min_step INTEGER, min_epoch INTEGER, min_value REAL, max_step INTEGER, max_epoch INTEGER, max_value REAL,
    PRIMARY KEY(name_id, width, bucket)) WITHOUT ROWID"""
SCHEMA += BUCKETS_TABLE + ";\n"

#: Step widths of the ``scalar_buckets`` summary: every scalar series is also kept as one row per
#: ``width`` consecutive steps (bucket ``step // width``) holding the bucket's first, last,
#: minimum and maximum rows and the sum of its values. A chart of a 100 000-step series then
#: reads ~1 600 rows instead of 100 000 (see :func:`bucket_rows`). Recorded in the run table
#: under ``scalar_buckets``: a reader uses the summary only when that key lists the width.
BUCKET_WIDTHS = (64, 1024)
BUCKET_COLS = ("name_id", "width", "bucket", "n", "total", "first_step", "first_epoch", "first_value", "last_step", "last_epoch",
               "last_value", "min_step", "min_epoch", "min_value", "max_step", "max_epoch", "max_value")


def _take(cond: str, cols: tuple[str, ...]) -> str:
    return ", ".join(f"{c} = CASE WHEN {cond} THEN excluded.{c} ELSE {c} END" for c in cols)


# Merging a flush's partial bucket into the stored one (a bucket is written again by every flush
# that adds rows to it; SET expressions all see the stored row as it was before the update).
BUCKET_UPSERT = (
    f"INSERT INTO scalar_buckets({', '.join(BUCKET_COLS)}) VALUES ({', '.join('?' * len(BUCKET_COLS))}) "
    "ON CONFLICT(name_id, width, bucket) DO UPDATE SET n = n + excluded.n, total = total + excluded.total, "
    + _take("excluded.first_step < first_step", ("first_step", "first_epoch", "first_value")) + ", "
    + _take("excluded.last_step >= last_step", ("last_step", "last_epoch", "last_value")) + ", "
    + _take("min_step IS NULL OR (excluded.min_step IS NOT NULL AND excluded.min_value < min_value)", ("min_step", "min_epoch", "min_value")) + ", "
    + _take("max_step IS NULL OR (excluded.max_step IS NOT NULL AND excluded.max_value > max_value)", ("max_step", "max_epoch", "max_value"))
)


def bucket_rows(rows: Iterable[tuple], widths: Iterable[int] = BUCKET_WIDTHS) -> list[tuple]:
    """``scalar_buckets`` rows of scalar rows ``(step, epoch, name_id, value)``, one per
    (name, width, bucket) they touch.

    The M4 aggregation of Jugel et al. ("M4: A Visualization-Oriented Time Series Data
    Aggregation", VLDB 2014): a line chart drawn from the first, last, minimum and maximum
    point of every bucket is the same picture as the chart of every point when a bucket is
    no wider than a pixel column, and every point it draws is a real logged row. ``total`` and
    ``n`` (the sum and count of the non-NaN values) give the exact bucket mean. Minimum and
    maximum skip NaN (a bucket of NaN only has NULL there); ties go to the earliest step.
    Rows of one flush may touch a bucket a stored row already holds: :data:`BUCKET_UPSERT`
    merges them, so the summary is the same however the rows were split into flushes.
    """
    rows = rows if isinstance(rows, list) else list(rows)
    if not rows:
        return []
    a = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=4 * len(rows)).reshape(-1, 4)
    step, epoch, nid, val = a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2].astype(np.int64), a[:, 3]
    nan = np.isnan(val)
    vmin, vmax = np.where(nan, np.inf, val), np.where(nan, np.inf, -val)
    widths = sorted(int(w) for w in widths)
    out: list[tuple] = []
    for w in widths[:1]:  # the finest width from the rows; coarser ones from its blocks (_coarser)
        b = step // int(w)
        o = np.argsort((nid << 40) + b, kind="stable")  # by (name, bucket), arrival order inside
        kn, kb, ks = nid[o], b[o], step[o]
        new_group = np.r_[True, (kn[1:] != kn[:-1]) | (kb[1:] != kb[:-1])]
        if np.any((np.diff(ks) < 0) & ~new_group[1:]):  # steps out of order inside a bucket: order by step
            o = np.lexsort((np.arange(len(o)), step, b, nid))
            kn, kb, ks = nid[o], b[o], step[o]
            new_group = np.r_[True, (kn[1:] != kn[:-1]) | (kb[1:] != kb[:-1])]
        start = np.flatnonzero(new_group)
        size = np.diff(np.r_[start, len(o)])
        first, last = o[start], o[start + size - 1]
        ext = []
        for v in (vmin[o], vmax[o]):  # first row (earliest step) holding the group's extreme
            hit = np.flatnonzero(v == np.repeat(np.minimum.reduceat(v, start), size))
            ext.append(o[hit[np.searchsorted(hit, start)]])
        counts = np.add.reduceat((~nan[o]).astype(np.int64), start)
        totals = np.add.reduceat(np.where(nan, 0.0, val)[o], start)
        cols = [nid[first].tolist(), [int(w)] * len(start), kb[start].tolist(), counts.tolist(), totals.tolist()]
        for i, extreme in ((first, False), (last, False), (ext[0], True), (ext[1], True)):
            vals = val[i].tolist()  # SQLite stores NaN as NULL
            if extreme and nan[i].any():  # a bucket of NaN only: no minimum or maximum
                cols += [[None if x != x else y for x, y in zip(vals, step[i].tolist())],
                         [None if x != x else y for x, y in zip(vals, epoch[i].tolist())], vals]
            else:
                cols += [step[i].tolist(), epoch[i].tolist(), vals]
        out += zip(*cols)
    fine = out
    for w in widths[1:]:
        out = out + (_coarser(fine, w) if w % widths[0] == 0 else bucket_rows(rows, (w,)))
    return out


def _coarser(fine: list[tuple], width: int) -> list[tuple]:
    """Merge blocks of a finer width (rows of :func:`bucket_rows`, in (name, block) order) into
    blocks of ``width`` (a multiple of it): counts and sums add, first/last/min/max are taken as
    :data:`BUCKET_UPSERT` takes them, so the result equals aggregating the rows directly."""
    merged: dict[tuple[int, int], list] = {}
    for r in fine:
        key = (r[0], r[2] * r[1] // width)
        m = merged.get(key)
        if m is None:
            merged[key] = [r[0], width, key[1], *r[3:]]
            continue
        m[3] += r[3]
        m[4] += r[4]
        if r[5] < m[5]:
            m[5:8] = r[5:8]
        if r[8] >= m[8]:
            m[8:11] = r[8:11]
        if r[11] is not None and (m[11] is None or r[13] < m[13]):
            m[11:14] = r[11:14]
        if r[14] is not None and (m[14] is None or r[16] > m[16]):
            m[14:17] = r[14:17]
    return [tuple(m) for m in merged.values()]

# The public, join-free shape of the scalars: ``SELECT step, epoch, name, value FROM scalar_values``.
# A view holds no data, so adding it leaves SCHEMA_VERSION at 1: files written before it get it
# the next time a writer opens them, or from :func:`ensure_views`; RunReader.sql has it either way.
SCALARS_VIEW = "scalar_values"
VIEWS = f"""
CREATE VIEW IF NOT EXISTS {SCALARS_VIEW} AS
    SELECT s.id AS id, s.step AS step, s.epoch AS epoch, n.name AS name, s.value AS value
    FROM scalars s JOIN names n ON n.id = s.name_id;
"""
SCHEMA += VIEWS

ROW_TABLES = {
    "scalars": ("step", "epoch", "name_id", "value"),
    "histograms": ("epoch", "split", "name", "edges", "counts"),
    "gmm": ("epoch", "split", "name", "weights", "means", "variances", "bic1", "bic2", "threshold", "balanced"),
    "samples": ("epoch", "split", "name", "sample_id", "gap", "posterior", "label", "correct"),
    "sample_arrays": ("epoch", "split", "name", "n", "sample_id", "gap", "posterior", "label", "correct"),
    "contributions": ("epoch", "modality", "info", "confidence", "w", "captum"),
    "events": ("step", "epoch", "kind", "message", "time"),
}


def _connect(path: Path, readonly: bool = False, timeout: float = 30.0) -> sqlite3.Connection:
    if readonly:
        uri = f"file:{path}?mode=ro"
        con = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
    else:
        con = sqlite3.connect(str(path), timeout=timeout, check_same_thread=False)
    con.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return con


def _retry(fn, attempts: int = 50, delay: float = 0.05):
    """Run ``fn`` retrying on transient SQLite lock errors (never surfaces 'database is locked')."""
    for i in range(attempts):
        try:
            return fn()
        except (sqlite3.OperationalError, pd.errors.DatabaseError) as e:  # pandas wraps the reader's errors
            msg = str(e).lower()
            if ("locked" in msg or "busy" in msg) and i < attempts - 1:
                time.sleep(delay * (1 + i % 5))
                continue
            raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _create_store(path: Path) -> None:
    """Build schema and liveness rows in a side file, then rename it into place.

    A dashboard polling the runs root may open ``metrics.sqlite`` the instant it appears;
    created in place, it would briefly have no tables and read as unreadable.
    """
    tmp = path.with_name(path.name + ".init")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(str(tmp))
    try:
        con.executescript("BEGIN;\n" + SCHEMA + "COMMIT;")  # one transaction: one sync, not one per table
        con.executemany(
            "INSERT OR REPLACE INTO run(key, value) VALUES (?, ?)",
            [("schema_version", json.dumps(SCHEMA_VERSION)), ("status", "running"), ("pid", json.dumps(os.getpid())),
             ("host", socket.gethostname()), ("heartbeat", json.dumps(time.time())), ("scalar_buckets", json.dumps(list(BUCKET_WIDTHS)))],
        )
        con.commit()
    finally:
        con.close()
    os.replace(tmp, path)


class RunWriter:
    """The single writer of one run. Buffered, thread-safe, crash-consistent."""

    def __init__(
        self,
        run_dir: str | Path,
        flush_rows: int = 2000,
        flush_seconds: float = 0.5,
        heartbeat_seconds: float = 2.0,
        resume: bool = False,
    ):
        self.dir = Path(run_dir)
        self.path = self.dir / DB_NAME
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._buf: dict[str, list[tuple]] = {t: [] for t in ROW_TABLES}
        self._n = 0
        self._last_flush = time.monotonic()
        self._lock = threading.RLock()
        self.rows_written = 0
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                _create_store(self.path)
            self.con = _connect(self.path)
            mode = self.con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self.con.execute("PRAGMA synchronous=NORMAL")
            self.con.executescript(SCHEMA)
            self.con.commit()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open run store {self.path}: {e}") from None
        except OSError as e:
            raise StoreError(f"cannot write run folder {self.dir}: {e.strerror or e}") from None
        self.journal_mode = mode
        self._names: dict[str, int] = dict(self.con.execute("SELECT name, id FROM names").fetchall())
        self._new_names: list[tuple[int, str]] = []
        existing = dict(self.con.execute("SELECT key, value FROM run").fetchall())
        sv = int(existing.get("schema_version", SCHEMA_VERSION))
        if sv > SCHEMA_VERSION:
            raise StoreError(f"{self.path} uses store schema {sv}, newer than this ModalScope ({SCHEMA_VERSION})")
        if existing.get("scalar_buckets") != json.dumps(list(BUCKET_WIDTHS)):  # a file from before the summary: build it once
            _retry(lambda: rebuild_buckets(self.con))
        now = time.time()
        meta = {
            "schema_version": SCHEMA_VERSION,
            "status": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "heartbeat": now,
        }
        if not resume or "start_time" not in existing:
            meta["start_time"] = now
        meta["error"] = ""
        self.set_many(meta)
        self._hb_period = heartbeat_seconds
        self._hb_stop = threading.Event()
        self._hb_thread = threading.Thread(target=self._heartbeat_loop, name="modalscope-heartbeat", daemon=True)
        self._hb_thread.start()

    # ------------------------------------------------------------------ run table
    def set(self, key: str, value: Any) -> None:
        self.set_many({key: value})

    def set_many(self, items: dict[str, Any]) -> None:
        rows = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in items.items()]
        with self._lock:
            _retry(lambda: self._exec_commit("INSERT OR REPLACE INTO run(key, value) VALUES (?, ?)", rows))

    def _exec_commit(self, sql: str, rows: list[tuple]) -> None:
        try:
            self.con.executemany(sql, rows)
            self.con.commit()
        except sqlite3.OperationalError:
            self.con.rollback()
            raise

    def _heartbeat_loop(self) -> None:
        """Heartbeat every ``heartbeat_seconds``; and rows left in the buffer longer than
        ``flush_seconds`` (the loop went quiet: a long evaluation, a pause) are committed from
        here, so the writer's own commits can follow its clock instead of every epoch end."""
        tick = min(self._hb_period, self.flush_seconds)
        next_beat = time.monotonic() + self._hb_period
        while not self._hb_stop.wait(tick):
            try:
                now = time.monotonic()
                if self._n and now - self._last_flush >= self.flush_seconds:
                    self.flush()  # writes the heartbeat in the same transaction
                    next_beat = now + self._hb_period
                elif now >= next_beat:
                    self.heartbeat()
                    next_beat = now + self._hb_period
            except Exception:
                pass

    def heartbeat(self) -> None:
        self.set("heartbeat", time.time())

    # ------------------------------------------------------------------ rows
    def _add(self, table: str, row: tuple) -> None:
        with self._lock:
            self._buf[table].append(row)
            self._n += 1
            if self._n >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
                self.flush()

    def _name_id(self, name: str) -> int:
        """Scalar names are interned (a run repeats a few dozen names millions of times)."""
        i = self._names.get(name)
        if i is None:
            i = len(self._names) + 1
            self._names[name] = i
            self._new_names.append((i, name))
        return i

    def log_scalar(self, step: int, epoch: int, name: str, value: float) -> None:
        with self._lock:
            self._add("scalars", (int(step), int(epoch), self._name_id(name), float(value)))

    def log_scalars(self, step: int, epoch: int, values: dict[str, float]) -> None:
        with self._lock:
            step, epoch = int(step), int(epoch)
            for k, v in values.items():
                self._buf["scalars"].append((step, epoch, self._name_id(k), float(v)))
            self._n += len(values)
            if self._n >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
                self.flush()

    def log_rows(self, rows: list[tuple], commit: bool = False) -> None:
        """Append ready ``(step, epoch, name_id, value)`` scalar rows (ids from :meth:`_name_id`);
        ``commit``: commit them now (the batched per-step path, whose own clock replaces the buffer's)."""
        with self._lock:
            if rows:
                self._buf["scalars"].extend(rows)
                self._n += len(rows)
            if commit or self._n >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
                self.flush()

    def log_histogram(self, epoch: int, split: str, name: str, edges: np.ndarray, counts: np.ndarray) -> None:
        self._add(
            "histograms",
            (int(epoch), split, name, np.asarray(edges, dtype=np.float64).tobytes(), np.asarray(counts, dtype=np.float64).tobytes()),
        )

    def log_gmm(self, epoch: int, split: str, name: str, weights, means, variances, bic1: float, bic2: float, threshold: float, balanced: int) -> None:
        self._add(
            "gmm",
            (
                int(epoch), split, name, json.dumps([float(x) for x in weights]), json.dumps([float(x) for x in means]),
                json.dumps([float(x) for x in variances]), float(bic1), float(bic2), float(threshold), int(balanced),
            ),
        )

    def log_samples(self, epoch: int, split: str, name: str, sample_id, gap, posterior, label, correct) -> None:
        """One epoch's per-sample snapshot of one split and gap series, as one ``sample_arrays`` row.

        Why arrays: the snapshot covers every sample of a split every epoch; as one SQLite row per
        sample it cost, on the default preset, about as much CPU as the training epoch it
        describes. :meth:`RunReader.samples` expands the arrays into the same frame as the
        per-sample rows that older runs hold."""
        n = len(sample_id)
        post = None if posterior is None else np.ascontiguousarray(posterior, dtype="<f8").tobytes()
        self._add(
            "sample_arrays",
            (int(epoch), split, name, int(n), np.ascontiguousarray(sample_id, dtype="<i8").tobytes(),
             np.ascontiguousarray(gap, dtype="<f8").tobytes(), post, np.ascontiguousarray(label, dtype="<i8").tobytes(),
             np.ascontiguousarray(correct, dtype="<i8").tobytes()),
        )

    def log_contribution(self, epoch: int, modality: str, info: float, confidence: float, w: float, captum: float | None = None) -> None:
        self._add("contributions", (int(epoch), modality, float(info), float(confidence), float(w), None if captum is None else float(captum)))

    def log_event(self, step: int, epoch: int, kind: str, message: str) -> None:
        self._add("events", (int(step), int(epoch), kind, message, time.time()))

    def log_table(self, name: str, df: pd.DataFrame) -> None:
        data = df.to_json(orient="split", index=False)
        with self._lock:
            _retry(lambda: self._exec_commit("INSERT OR REPLACE INTO tables(name, data) VALUES (?, ?)", [(name, data)]))

    def flush(self) -> None:
        with self._lock:
            if self._n == 0:
                self._last_flush = time.monotonic()
                return
            buf = {t: rows for t, rows in self._buf.items() if rows}
            new_names = list(self._new_names)

            def write():
                try:
                    if new_names:
                        self.con.executemany("INSERT OR IGNORE INTO names(id, name) VALUES (?, ?)", new_names)
                    for t, rows in buf.items():
                        cols = ROW_TABLES[t]
                        self.con.executemany(
                            f"INSERT INTO {t}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows
                        )
                    if "scalars" in buf:  # same transaction: a reader never sees rows without their buckets
                        self.con.executemany(BUCKET_UPSERT, bucket_rows(buf["scalars"]))
                    self.con.execute("INSERT OR REPLACE INTO run(key, value) VALUES ('heartbeat', ?)", (json.dumps(time.time()),))
                    self.con.commit()
                except sqlite3.OperationalError:
                    self.con.rollback()
                    raise

            try:
                _retry(write)
            except sqlite3.OperationalError as e:
                raise StoreError(f"cannot write to {self.path}: {e}") from None
            # a sample array counts as the samples it holds, as RunReader.counts() does
            self.rows_written += self._n + sum(r[3] - 1 for r in buf.get("sample_arrays", ()))
            self._new_names = self._new_names[len(new_names):]
            self._buf = {t: [] for t in ROW_TABLES}
            self._n = 0
            self._last_flush = time.monotonic()

    def truncate_after(self, step: int, epoch: int) -> None:
        """Drop rows logged after a checkpoint (used by --resume so the store stays consistent)."""
        with self._lock:
            self.flush()

            def do():
                lo = self.con.execute("SELECT MIN(step) FROM scalars WHERE step > ? OR epoch > ?", (step, epoch)).fetchone()[0]
                self.con.execute("DELETE FROM scalars WHERE step > ? OR epoch > ?", (step, epoch))
                for t in ("histograms", "gmm", "samples", "sample_arrays", "contributions"):
                    self.con.execute(f"DELETE FROM {t} WHERE epoch > ?", (epoch,))
                self.con.execute("DELETE FROM events WHERE step > ?", (step,))
                if lo is not None:  # the blocks that held deleted rows, recomputed in the same transaction
                    rebuild_buckets(self.con, from_step=int(lo), commit=False)
                self.con.commit()

            _retry(do)

    def close(self, status: str, error: str = "") -> None:
        """Flush everything, record the final status and make the file self-contained."""
        if status not in STATUSES:
            raise ValueError(f"bad status {status!r}")
        self._hb_stop.set()
        with self._lock:
            try:
                self.flush()
            finally:
                self.set_many({"status": status, "end_time": time.time(), "error": error, "heartbeat": time.time()})
                try:
                    self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    self.con.execute("PRAGMA journal_mode=DELETE")
                except sqlite3.OperationalError:
                    pass
                self.con.close()


def _status_from_meta(meta: dict[str, Any], stale_after: float = STALE_SECONDS) -> str:
    st = meta.get("status", "running")
    if st != "running":
        return st
    hb = float(meta.get("heartbeat") or 0)
    if time.time() - hb > stale_after:
        return "interrupted"
    pid = meta.get("pid")
    if pid and meta.get("host") == socket.gethostname() and not _pid_alive(int(pid)):
        return "interrupted"
    return "running"


def _parse_meta(rows: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in rows:
        try:
            out[k] = json.loads(v)
        except (TypeError, json.JSONDecodeError):
            out[k] = v
    return out


#: last value of every scalar in a name range: one indexed MAX(id) per matching name (the
#: (name_id, step) index holds the rowid), instead of grouping the whole scalars table.
FINAL_SQL = (
    "SELECT n.name, s.value FROM names n JOIN scalars s ON s.id = (SELECT MAX(id) FROM scalars WHERE name_id = n.id) "
    "WHERE n.name >= ? AND n.name < ? ORDER BY n.name"
)


#: everything a runs-table row needs in one statement (one statement per run is what a listing of
#: 500 runs costs): the run table (tag 0), the last value of acc/test/*, acc/best/test/* and
#: best/epoch (tag 1, as FINAL_SQL), and the last epoch with a fused test accuracy (tag 2).
SUMMARY_SQL = (
    "SELECT 0, key, value FROM run UNION ALL "
    "SELECT 1, n.name, s.value FROM names n JOIN scalars s ON s.id = (SELECT MAX(id) FROM scalars WHERE name_id = n.id) "
    "WHERE (n.name >= 'acc/test/' AND n.name < 'acc/test/\uffff') OR (n.name >= 'acc/best/test/' AND n.name < 'acc/best/test/\uffff') "
    "OR (n.name >= 'best/epoch' AND n.name < 'best/epoch\uffff') UNION ALL "
    "SELECT 2, NULL, MAX(s.epoch) FROM scalars s JOIN names n ON n.id = s.name_id WHERE n.name = 'acc/test/fused'"
)


class RunReader:
    """Read-only access to one run folder. Every query returns a pandas DataFrame."""

    def __init__(self, run_dir: str | Path, check: bool = True):
        """``check=False`` skips the schema-version query (for callers that read the metadata
        anyway and check it themselves, like :meth:`summary`)."""
        self.dir = Path(run_dir)
        self.path = self.dir / DB_NAME
        if not self.dir.is_dir():
            raise StoreError(f"run folder not found: {self.dir}")
        if not self.path.is_file():
            raise StoreError(f"{self.dir} is not a ModalScope run (no {DB_NAME})")
        if check:
            self._check()

    @property
    def name(self) -> str:
        return self.dir.name

    def _con(self) -> sqlite3.Connection:
        try:
            return _connect(self.path, readonly=True, timeout=10.0)
        except sqlite3.OperationalError:
            return sqlite3.connect(f"file:{self.path}?immutable=1", uri=True, check_same_thread=False)

    def _query(self, sql: str, params: Iterable = ()) -> pd.DataFrame:
        def do():
            with closing(self._con()) as con:  # what pd.read_sql_query builds, without its per-column date parsing pass
                cur = con.execute(sql, tuple(params))
                return pd.DataFrame.from_records(cur.fetchall(), columns=[d[0] for d in cur.description], coerce_float=True)

        try:
            return _retry(do)
        except (sqlite3.DatabaseError, pd.errors.DatabaseError) as e:
            raise StoreError(f"cannot read {self.path}: {str(e).rsplit(chr(39) + ': ', 1)[-1]}") from None

    def sql(self, query: str, params: Iterable = ()) -> pd.DataFrame:
        """Run a read-only SQL query on this run (the connection is opened read-only).

        ``scalar_values(id, step, epoch, name, value)`` is available even on files written
        before the view existed (it is then created as a TEMP view of this connection only).
        """

        def do():
            with closing(self._con()) as con:
                has = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = ?", (SCALARS_VIEW,)).fetchone()
                if not has:
                    con.execute(VIEWS.replace("CREATE VIEW IF NOT EXISTS ", "CREATE TEMP VIEW IF NOT EXISTS ").strip().rstrip(";"))
                return pd.read_sql_query(query, con, params=tuple(params))

        try:
            return _retry(do)
        except (sqlite3.DatabaseError, pd.errors.DatabaseError) as e:
            raise StoreError(f"cannot query {self.path}: {str(e).rsplit(chr(39) + ': ', 1)[-1]}") from None

    def _check(self, meta: dict[str, Any] | None = None) -> None:
        meta = self.meta() if meta is None else meta
        sv = int(meta.get("schema_version", SCHEMA_VERSION) or SCHEMA_VERSION)
        if sv > SCHEMA_VERSION:
            raise StoreError(f"{self.path} uses store schema {sv}, newer than this ModalScope ({SCHEMA_VERSION}); upgrade to read it")

    # ------------------------------------------------------------------ metadata
    def meta(self) -> dict[str, Any]:
        return _parse_meta(self._rows("SELECT key, value FROM run"))

    def _rows(self, sql: str, params: Iterable = ()) -> list[tuple]:
        """Plain tuples through one connection (no DataFrame: the small metadata queries)."""

        def do():
            with closing(self._con()) as con:
                return con.execute(sql, tuple(params)).fetchall()

        try:
            return _retry(do)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot read {self.path}: {str(e).rsplit(chr(39) + ': ', 1)[-1]}") from None

    def status(self, stale_after: float = STALE_SECONDS) -> str:
        """Stored status, except a 'running' run whose trainer is gone reads 'interrupted'."""
        return _status_from_meta(self.meta(), stale_after)

    def config(self) -> dict[str, Any]:
        p = self.dir / "config.json"
        if not p.is_file():
            return {}
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{p} is not valid JSON: {e.msg}") from None

    # ------------------------------------------------------------------ series
    def scalar_names(self) -> list[str]:
        # one index seek per name (a DISTINCT over the scalars would walk the whole (name_id, step) index)
        return [r[0] for r in self._rows("SELECT name FROM names n WHERE EXISTS (SELECT 1 FROM scalars WHERE name_id = n.id) ORDER BY name")]

    def scalars(self, names: Iterable[str] | str | None = None, prefix: str | None = None, since_id: int = 0,
                every: int = 1) -> pd.DataFrame:
        """Columns ``id, step, epoch, name, value``; filter by exact names or a name prefix.

        ``every`` > 1 keeps only steps divisible by it: the (name, step) index answers that
        without touching the skipped rows, so a strided read of a long series is ~10x faster."""
        sql = "SELECT s.id, s.step, s.epoch, n.name, s.value FROM scalars s JOIN names n ON n.id = s.name_id WHERE 1=1"
        params: list[Any] = []
        if since_id > 0:  # only then: a rowid range would stop SQLite from using the (name, step) index
            sql += " AND s.id > ?"
            params.append(since_id)
        if every > 1:
            sql += " AND s.step % ? = 0"
            params.append(int(every))
        if isinstance(names, str):
            names = [names]
        if names is not None:
            names = list(names)
            if not names:
                return pd.DataFrame(columns=["id", "step", "epoch", "name", "value"])
            sql += f" AND n.name IN ({', '.join('?' * len(names))})"
            params += names
        if prefix is not None:
            sql += " AND n.name >= ? AND n.name < ?"
            params += [prefix, prefix + "\uffff"]
        return self._query(sql + " ORDER BY s.id", params)

    def bucket_widths(self) -> tuple[int, ...]:
        """Widths of the ``scalar_buckets`` summary this file holds; () for files written before it."""
        rows = self._rows("SELECT value FROM run WHERE key = 'scalar_buckets'")
        try:
            return tuple(int(w) for w in json.loads(rows[0][0])) if rows else ()
        except (TypeError, ValueError):
            return ()

    def scalar_buckets(self, width: int, names: Iterable[str] | str | None = None, prefix: str | None = None,
                       from_bucket: int = 0) -> pd.DataFrame:
        """The ``scalar_buckets`` rows of one width (columns ``name, bucket, n, total, first_step,
        first_epoch, first_value, last_…, min_…, max_…``), ordered by name and bucket; filter by
        exact names or a name prefix, and to buckets ≥ ``from_bucket`` (a refresh re-reads only
        the newest ones). Raises StoreError when the file has no summary of that width."""
        cols = ["name", *BUCKET_COLS[2:]]
        if isinstance(names, str):
            names = [names]
        names = None if names is None else list(names)

        def do():
            with closing(self._con()) as con:
                got = con.execute("SELECT value FROM run WHERE key = 'scalar_buckets'").fetchone()
                if not got or int(width) not in json.loads(got[0]):
                    return None
                sql, params = "SELECT id, name FROM names WHERE 1=1", []
                if names is not None:
                    sql += f" AND name IN ({', '.join('?' * len(names))})"
                    params += names
                if prefix is not None:
                    sql += " AND name >= ? AND name < ?"
                    params += [prefix, prefix + "\uffff"]
                ids = sorted(con.execute(sql + " ORDER BY name", params).fetchall(), key=lambda r: r[1])
                rows = []
                for i, _ in ids:  # one primary-key range per series: rows come out in (name, bucket) order
                    rows += con.execute(f"SELECT {', '.join(BUCKET_COLS)} FROM scalar_buckets WHERE name_id = ? AND width = ? "
                                        "AND bucket >= ? ORDER BY bucket", (i, int(width), int(from_bucket))).fetchall()
                return dict(ids), rows

        try:
            got = _retry(do) if names is None or names else ({}, [])
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot read {self.path}: {str(e).rsplit(chr(39) + ': ', 1)[-1]}") from None
        if got is None:
            raise StoreError(f"{self.path} has no scalar_buckets of width {width} (has {list(self.bucket_widths()) or 'none'})")
        id_names, rows = got
        if not rows:
            return pd.DataFrame({c: pd.Series(dtype=object if c == "name" else np.float64) for c in cols})
        a = np.array(rows, dtype=np.float64)  # NULL → NaN
        ids = a[:, 0].astype(np.int64)
        uniq, inv = np.unique(ids, return_inverse=True)
        out = {"name": pd.Series(np.asarray([id_names[int(u)] for u in uniq], dtype=object)[inv], dtype=object)}
        for j, c in enumerate(BUCKET_COLS[2:], start=2):
            out[c] = a[:, j].astype(np.int64) if c in ("bucket", "n") else a[:, j]
        return pd.DataFrame(out)

    def has_scalars(self, prefix: str) -> bool:
        """Whether any scalar whose name starts with ``prefix`` has a row (indexed: one seek per name)."""
        return bool(self._rows("SELECT EXISTS (SELECT 1 FROM names n WHERE n.name >= ? AND n.name < ? "
                               "AND EXISTS (SELECT 1 FROM scalars WHERE name_id = n.id))", [prefix, prefix + "\uffff"])[0][0])

    def last_id(self) -> int:
        v = self._rows("SELECT MAX(id) FROM scalars")[0][0]
        return 0 if v is None else int(v)

    def last_value(self, name: str) -> tuple[float, int] | None:
        """(value, epoch) of the newest row of scalar ``name``, or None when it has none."""
        rows = self._rows(
            "SELECT s.value, s.epoch FROM scalars s WHERE s.id = "
            "(SELECT MAX(id) FROM scalars WHERE name_id = (SELECT id FROM names WHERE name = ?))", [name]
        )
        return (float(rows[0][0]), int(rows[0][1])) if rows else None

    def final_scalars(self, prefix: str = "") -> dict[str, float]:
        """The last value of every scalar whose name starts with ``prefix``."""
        return dict(self._rows(FINAL_SQL, [prefix, prefix + "\uffff"]))

    def histograms(self, split: str | None = None, name: str | None = None) -> pd.DataFrame:
        """Columns ``epoch, split, name, edges (ndarray), counts (ndarray)``."""
        sql, params = "SELECT epoch, split, name, edges, counts FROM histograms WHERE 1=1", []
        if split:
            sql += " AND split = ?"
            params.append(split)
        if name:
            sql += " AND name = ?"
            params.append(name)
        df = self._query(sql + " ORDER BY epoch, id", params)
        df["edges"] = [np.frombuffer(b, dtype=np.float64) for b in df["edges"]]
        df["counts"] = [np.frombuffer(b, dtype=np.float64) for b in df["counts"]]
        return df

    def gmm(self, split: str | None = None) -> pd.DataFrame:
        sql, params = "SELECT epoch, split, name, weights, means, variances, bic1, bic2, threshold, balanced FROM gmm", []
        if split:
            sql += " WHERE split = ?"
            params.append(split)
        df = self._query(sql + " ORDER BY epoch, id", params)
        for c in ("weights", "means", "variances"):
            df[c] = [json.loads(v) for v in df[c]]
        return df

    def samples(self, epoch: int | None = None, split: str | None = None, name: str | None = None) -> pd.DataFrame:
        """Columns ``epoch, split, name, sample_id, gap, posterior, label, correct``, one row per
        sample: the ``samples`` rows (older runs) followed by the expanded ``sample_arrays``."""
        sql, params = "SELECT epoch, split, name, sample_id, gap, posterior, label, correct FROM samples WHERE 1=1", []
        for col, val in (("epoch", epoch), ("split", split), ("name", name)):
            if val is not None:
                sql += f" AND {col} = ?"
                params.append(val)
        df = self._query(sql + " ORDER BY id", params)
        arrays = self._sample_arrays(sql.replace(
            "SELECT epoch, split, name, sample_id, gap, posterior, label, correct FROM samples",
            "SELECT epoch, split, name, n, sample_id, gap, posterior, label, correct FROM sample_arrays") + " ORDER BY id", params)
        if arrays is None:
            return df
        return arrays if df.empty else pd.concat([df, arrays], ignore_index=True)

    def _sample_arrays(self, sql: str, params: list) -> pd.DataFrame | None:
        """The ``sample_arrays`` rows matching ``sql`` expanded to one row per sample (None: none)."""

        def do():
            with closing(self._con()) as con:
                if not con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sample_arrays'").fetchone():
                    return []
                return con.execute(sql, tuple(params)).fetchall()

        try:
            rows = _retry(do)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot read {self.path}: {str(e).rsplit(chr(39) + ': ', 1)[-1]}") from None
        if not rows:
            return None
        ns = np.array([r[3] for r in rows], dtype=np.int64)
        ints = lambda j: np.concatenate([np.frombuffer(r[j], dtype="<i8") for r in rows]).astype(np.int64)  # noqa: E731
        gap = np.concatenate([np.frombuffer(r[5], dtype="<f8") for r in rows]).astype(np.float64)
        if all(r[6] is None for r in rows):  # as SQL NULLs read back: a column of None
            post = pd.Series([None] * int(ns.sum()), dtype=object)
        else:
            post = np.concatenate([np.frombuffer(r[6], dtype="<f8") if r[6] is not None else np.full(r[3], np.nan) for r in rows])
        return pd.DataFrame({
            "epoch": np.repeat(np.array([r[0] for r in rows], dtype=np.int64), ns),
            "split": np.repeat(np.array([r[1] for r in rows], dtype=object), ns),
            "name": np.repeat(np.array([r[2] for r in rows], dtype=object), ns),
            "sample_id": ints(4), "gap": gap, "posterior": post, "label": ints(7), "correct": ints(8),
        })

    def contributions(self) -> pd.DataFrame:
        return self._query("SELECT epoch, modality, info, confidence, w, captum FROM contributions ORDER BY epoch, id")

    def events(self) -> pd.DataFrame:
        return self._query("SELECT step, epoch, kind, message, time FROM events ORDER BY id")

    def table(self, name: str) -> pd.DataFrame | None:
        df = self._query("SELECT data FROM tables WHERE name = ?", [name])
        if df.empty:
            return None
        import io

        return pd.read_json(io.StringIO(df["data"].iloc[0]), orient="split")

    def table_names(self) -> list[str]:
        return self._query("SELECT name FROM tables ORDER BY name")["name"].tolist()

    def counts(self) -> dict[str, int]:
        """Rows per table; ``samples`` counts samples (its rows plus the entries of ``sample_arrays``)."""
        out = {t: int(self._query(f"SELECT COUNT(*) AS n FROM {t}")["n"].iloc[0]) for t in ROW_TABLES if t != "sample_arrays"}
        arr = self._rows("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'sample_arrays'")
        if arr:
            out["samples"] += int(self._rows("SELECT COALESCE(SUM(n), 0) FROM sample_arrays")[0][0])
        return out

    def best_vs_last(self) -> pd.DataFrame:
        """Accuracy at the best-valid epoch next to the last epoch's, per split and head.

        Columns ``split, key, best, last, best_epoch, last_epoch`` (``key`` = ``fused`` or a
        modality); one row per ``acc/<split>/<key>`` the run logged. ``best`` is NaN and
        ``attrs["reason"]`` says why when the run has no model selection (no valid split, or a
        run older than it). Selection is on ``acc/valid/fused`` only (:mod:`modalscope.selection`).
        """
        cols = ["split", "key", "best", "last", "best_epoch", "last_epoch"]
        df = self._query(
            "SELECT n.name, s.epoch, s.value FROM scalars s JOIN names n ON n.id = s.name_id "
            "WHERE s.id IN (SELECT MAX(id) FROM scalars GROUP BY name_id) "
            "AND ((n.name >= 'acc/' AND n.name < 'acc0') OR n.name = 'best/epoch')"
        )
        last = {n: (v, e) for n, e, v in zip(df["name"], df["epoch"], df["value"])}
        best_epoch = last.get("best/epoch", (float("nan"), None))[0]
        rows = []
        for name, (v, e) in sorted(last.items()):
            parts = name.split("/")
            if len(parts) != 3 or parts[0] != "acc":
                continue
            b = last.get(f"acc/best/{parts[1]}/{parts[2]}", (float("nan"), None))[0]
            rows.append({"split": parts[1], "key": parts[2], "best": b, "last": v, "best_epoch": best_epoch, "last_epoch": int(e)})
        out = pd.DataFrame(rows, columns=cols)
        if best_epoch != best_epoch:
            out.attrs["reason"] = str(self.meta().get("model_selection") or "this run has no acc/best/* (trained before model selection existed)")
        return out

    def summary(self) -> dict[str, Any]:
        """One row of the runs table: identity, status, progress and final accuracies.

        A few small indexed queries through one connection (the Runs page reads this for every run)."""

        def do():
            with closing(self._con()) as con:
                rows = con.execute(SUMMARY_SQL).fetchall()
            meta = _parse_meta((k, v) for t, k, v in rows if t == 0)
            finals = {k: v for t, k, v in rows if t == 1 and k.startswith("acc/test/")}
            best = {k: v for t, k, v in rows if t == 1 and not k.startswith("acc/test/")}
            e = next((v for t, _, v in rows if t == 2), None)
            return meta, finals, best, e

        try:
            meta, finals, best_finals, epochs_done = _retry(do)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot read {self.path}: {str(e).rsplit(chr(39) + ': ', 1)[-1]}") from None
        self._check(meta)
        cfg = self.config()
        method = (cfg.get("method") or {}).get("name", "?")
        if method == "unimodal":
            method = f"unimodal:{cfg['method'].get('modality')}"
        data = cfg.get("data") or {}
        row = {
            "name": self.name,
            "path": str(self.dir),
            "method": method,
            "dataset": data.get("name", "?"),
            "preset": data.get("preset", data.get("name", "")),
            "seed": cfg.get("seed"),
            "status": _status_from_meta(meta),
            "epochs": cfg.get("epochs"),
            "epochs_done": None if epochs_done is None or pd.isna(epochs_done) else int(epochs_done) + 1,
            "start_time": meta.get("start_time"),
            "end_time": meta.get("end_time"),
            "heartbeat": meta.get("heartbeat"),
            "error": meta.get("error") or "",
            "sweep": (cfg.get("tags") or {}).get("sweep", ""),
        }
        for k, v in finals.items():
            row[k.replace("acc/test/", "acc_")] = v
        if best_finals.get("best/epoch") is not None:
            row["best_epoch"] = int(best_finals["best/epoch"])
        if "acc/best/test/fused" in best_finals:
            row["best_fused"] = best_finals["acc/best/test/fused"]
        for k, v in best_finals.items():
            if k.startswith("acc/best/test/"):
                row[k.replace("acc/best/test/", "best_acc_")] = v
        return row


def bucket_points(buckets: pd.DataFrame) -> pd.DataFrame:
    """The drawn points of a :meth:`RunReader.scalar_buckets` frame, in the long layout of
    :meth:`RunReader.scalars`: each bucket's first, minimum, maximum and last row (M4), one row
    per distinct step, in step order per name. Extra columns ``bucket``, ``n`` and ``mean``
    (``total / n``, the exact mean of the bucket's values) repeat the point's bucket."""
    cols = ["step", "epoch", "name", "value", "bucket", "n", "mean"]
    if buckets is None or buckets.empty:
        return pd.DataFrame(columns=cols)
    kinds = ("first", "min", "max", "last")
    step = np.stack([buckets[f"{k}_step"].to_numpy(dtype=np.float64) for k in kinds], axis=1)
    epoch = np.stack([buckets[f"{k}_epoch"].to_numpy(dtype=np.float64) for k in kinds], axis=1)
    value = np.stack([buckets[f"{k}_value"].to_numpy(dtype=np.float64) for k in kinds], axis=1)
    order = np.argsort(np.where(np.isnan(step), np.inf, step), axis=1, kind="stable")  # by step inside a bucket; no-step last
    step, epoch, value = (np.take_along_axis(m, order, axis=1).ravel() for m in (step, epoch, value))
    codes, names = pd.factorize(buckets["name"], sort=False)
    row = np.repeat(np.arange(len(buckets)), 4)
    code = codes[row]
    keep = ~np.isnan(step)
    keep[1:] &= (step[1:] != step[:-1]) | (code[1:] != code[:-1])  # first = min etc.: one row per step
    n = buckets["n"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, buckets["total"].to_numpy(dtype=np.float64) / np.where(n > 0, n, 1), np.nan)
    row, code = row[keep], code[keep]
    name = pd.Series(np.asarray(names, dtype=object)[code], dtype=object)  # object, not str: no per-row conversion
    out = pd.DataFrame({"step": step[keep].astype(np.int64), "epoch": epoch[keep].astype(np.int64), "name": name, "value": value[keep],
                        "bucket": buckets["bucket"].to_numpy(dtype=np.int64)[row], "n": n[row].astype(np.int64), "mean": mean[row]})
    if len(names) > 1 and (np.diff(code) < 0).any():  # buckets not grouped by name: group them (stable: steps stay in order)
        out = out.iloc[np.argsort(code, kind="stable")].reset_index(drop=True)
    return out


def rebuild_buckets(con: sqlite3.Connection, from_step: int | None = None, commit: bool = True) -> None:
    """Recompute ``scalar_buckets`` from the scalar rows: all of it, or (``from_step``) every
    bucket that holds a step ≥ ``from_step`` (after rows were deleted: resume, gallery thinning).
    Records the widths under the run key ``scalar_buckets``. A write, through ``con``."""
    con.execute(BUCKETS_TABLE)
    for w in BUCKET_WIDTHS:
        lo = 0 if from_step is None else (int(from_step) // w) * w
        con.execute("DELETE FROM scalar_buckets WHERE width = ? AND bucket >= ?", (w, lo // w))
        cur = con.execute("SELECT step, epoch, name_id, value FROM scalars WHERE step >= ? ORDER BY id", (lo,))
        while chunk := cur.fetchmany(200_000):
            con.executemany(BUCKET_UPSERT, bucket_rows(chunk, (w,)))
    con.execute("INSERT OR REPLACE INTO run(key, value) VALUES ('scalar_buckets', ?)", (json.dumps(list(BUCKET_WIDTHS)),))
    if commit:
        con.commit()


def ensure_views(run_dir: str | Path) -> None:
    """Add the public views to a run file written before they existed (a write; not while the run trains)."""
    path = Path(run_dir) / DB_NAME
    if not path.is_file():
        raise StoreError(f"{run_dir} is not a ModalScope run (no {DB_NAME})")
    try:
        with closing(_connect(path)) as con:
            con.executescript(VIEWS)
            con.commit()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot add views to {path}: {e}") from None


def open_run(path: str | Path) -> RunReader:
    return RunReader(path)


def is_run_dir(path: str | Path) -> bool:
    return os.path.isfile(os.path.join(os.fspath(path), DB_NAME))


_SUMMARIES: dict[str, tuple[tuple, dict[str, Any]]] = {}
_SUMMARIES_MAX = 20_000


def _stamp(d: Path) -> tuple | None:
    """What changes whenever a run's rows or config change: (mtime_ns, size) of the database,
    its WAL and config.json. None when the database is gone."""
    out = []
    base = os.fspath(d)
    for f in (DB_NAME, DB_NAME + "-wal", "config.json"):
        try:
            st = os.stat(os.path.join(base, f))  # strings, not pathlib: called for every run of a listing
            out.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            if f == DB_NAME:
                return None
            out.append(None)
    return tuple(out)


def run_summary(d: str | Path) -> dict[str, Any]:
    """``RunReader(d).summary()``, remembered while the run's files are unchanged.

    A finished run's files never change, so listing a root of 500 runs again costs 3 stats
    per run. Rows of runs stored as ``running`` are always re-read: their status depends on
    the heartbeat's age and the trainer's pid, not only on the files."""
    d = Path(d)
    key = os.path.abspath(d)  # not resolve(): realpath costs a stat per path component, 500 times a listing
    stamp = _stamp(d)
    have = _SUMMARIES.get(key)
    if stamp is not None and have is not None and have[0] == stamp:
        return dict(have[1])
    row = RunReader(d, check=False).summary()
    if stamp is not None and row.get("status") != "running" and stamp == _stamp(d):
        if len(_SUMMARIES) >= _SUMMARIES_MAX:
            _SUMMARIES.clear()
        _SUMMARIES[key] = (stamp, dict(row))
    return row


#: the last values the Compare page and the encoder-utilisation lookup read (name prefixes for
#: :func:`run_finals`; one shared memo entry per run)
PAIRING_FINALS = ("acc/best/test/", "probe/test/", "probe_init/test/", "probe_util/")

_FINALS: dict[str, tuple[tuple, dict[str, Any]]] = {}

#: the run table (tag 0) and the last (value, epoch) of every scalar (tag 1), in one statement
FINALS_SQL = (
    "SELECT 0, key, value, NULL FROM run UNION ALL "
    "SELECT 1, n.name, s.value, s.epoch FROM names n JOIN scalars s ON s.id = (SELECT MAX(id) FROM scalars WHERE name_id = n.id)"
)


def run_finals(d: str | Path, prefixes: tuple[str, ...] | None = None) -> tuple[dict[str, Any], dict[str, tuple[float, int]]]:
    """``(meta, {name: (last value, its epoch)})`` of a run: :func:`run_brief`."""
    b = run_brief(d, prefixes)
    return b["meta"], b["finals"]


def run_brief(d: str | Path, prefixes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """What a page needs of a run besides its series, in one statement through one connection:
    ``meta`` (the run table), ``finals`` ({name: (last value, its epoch)}), ``last_id`` (newest
    scalar row id) and ``names`` (scalar names with rows, sorted). Remembered while the run is
    closed and its files unchanged.

    A closed run (no ``-wal`` file: the writer switches a finished file out of WAL mode) changes
    only when a writer opens it again, which changes the file; a run being written is always
    re-read (a WAL file can be rewritten in place at the same size). For the Compare page,
    which needs this of every run it pairs with a reference. ``prefixes``: only the finals of
    scalars whose names start with one of them (one indexed lookup per scalar read)."""
    d = Path(d)
    key = os.path.abspath(d) + "\0" + "\0".join(prefixes or ())
    stamp = _stamp(d)
    closed = stamp is not None and stamp[1] is None
    have = _FINALS.get(key)
    if closed and have is not None and have[0] == stamp:
        return _copy_brief(have[1])
    rd = RunReader(d, check=False)

    sql, params = FINALS_SQL, []
    if prefixes is not None:
        sql += " WHERE " + (" OR ".join(["(n.name >= ? AND n.name < ?)"] * len(prefixes)) or "0")
        for pre in prefixes:
            params += [pre, pre + "\uffff"]
    sql += (" UNION ALL SELECT 2, NULL, MAX(id), NULL FROM scalars"
            " UNION ALL SELECT 3, name, NULL, NULL FROM names n WHERE EXISTS (SELECT 1 FROM scalars WHERE name_id = n.id)")

    def do():
        with closing(rd._con()) as con:
            return con.execute(sql, params).fetchall()

    try:
        rows = _retry(do)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot read {rd.path}: {str(e).rsplit(chr(39) + ': ', 1)[-1]}") from None
    meta = _parse_meta((k, v) for t, k, v, _ in rows if t == 0)
    rd._check(meta)
    brief = {"meta": meta, "finals": {k: (float("nan") if v is None else float(v), int(e)) for t, k, v, e in rows if t == 1},
             "last_id": int(next((v for t, _, v, _ in rows if t == 2), None) or 0), "names": sorted(k for t, k, _, _ in rows if t == 3)}
    if closed and stamp == _stamp(d):
        if len(_FINALS) >= _SUMMARIES_MAX:
            _FINALS.clear()
        _FINALS[key] = (stamp, brief)
    return _copy_brief(brief)


def _copy_brief(b: dict[str, Any]) -> dict[str, Any]:
    return {"meta": dict(b["meta"]), "finals": dict(b["finals"]), "last_id": b["last_id"], "names": list(b["names"])}


def list_runs(*roots: str | Path) -> pd.DataFrame:
    """Summary row per run folder found directly under each root (unreadable runs are listed as such)."""
    rows = []
    for root in roots:
        r = Path(root)
        if not r.is_dir():
            continue
        for d in sorted(p for p in r.iterdir() if p.is_dir()):
            if not is_run_dir(d):
                continue
            try:
                row = run_summary(d)
            except StoreError as e:
                row = {"name": d.name, "path": str(d), "status": "unreadable", "error": str(e)}
            row["root"] = str(r)
            rows.append(row)
    return pd.DataFrame(rows)


def resolve_run(run: str | Path, runs_dir: str | Path = "runs") -> Path:
    """``RUN`` may be a run folder path or a run name under ``runs_dir``."""
    p = Path(run)
    if is_run_dir(p):
        return p
    from modalscope.config import validate_run_name

    if os.sep not in str(run):
        validate_run_name(str(run))
        q = Path(runs_dir) / str(run)
        if is_run_dir(q):
            return q
    raise StoreError(f"no run {str(run)!r} (looked for a run folder and for {Path(runs_dir) / str(run)})")


def delete_run(run_dir: str | Path, runs_root: str | Path) -> None:
    """Delete a run folder, only if it resolves to a direct child of ``runs_root``."""
    root = Path(runs_root).resolve()
    target = Path(run_dir).resolve()
    if target.parent != root or not is_run_dir(target):
        raise StoreError(f"refusing to delete {run_dir}: not a run folder directly inside {runs_root}")
    shutil.rmtree(target)
