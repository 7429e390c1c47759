"""docs/store.md is the store's public contract: every logged name is documented, and the view reads like the design says."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from modalscope.monitor import Monitor
from modalscope.store import SCALARS_VIEW, ensure_views, open_run

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "store.md"


def documented_patterns() -> list[re.Pattern]:
    """The name patterns of the table after the ``<!-- names:`` marker (first cell, in backticks)."""
    text = DOC.read_text().split("<!-- names:", 1)[1]
    pats = []
    for line in text.splitlines()[3:]:
        if not line.startswith("|"):
            break
        for name in re.findall(r"`([^`]+)`", line.split("|")[1]):
            pats.append(re.compile(re.sub(r"<[^>]+>", "[^/]+", re.escape(name).replace(r"\<", "<").replace(r"\>", ">"))))
    return pats


def _monitored_run(tmp_path: Path) -> Path:
    enc = {"a": nn.Linear(3, 2), "b": nn.Linear(3, 2)}
    x, y = torch.randn(24, 3), torch.arange(24) % 2
    with Monitor(tmp_path / "mon", ["a", "b"], enc, diagnostics={"conflict_every": 1}) as mon:
        for _ in range(2):
            for i in range(0, 24, 8):
                za, zb = enc["a"](x[i : i + 8]), enc["b"](x[i : i + 8])
                loss = nn.functional.cross_entropy(za + zb, y[i : i + 8])
                mon.backward(loss, fused=za + zb, logits={"a": za, "b": zb}, labels=y[i : i + 8])
                mon.cpsl_penalty()
            mon.epoch_end(test={"fused": enc["a"](x) + enc["b"](x), "logits": {"a": enc["a"](x), "b": enc["b"](x)}, "labels": y})
    return tmp_path / "mon"


def test_every_logged_name_is_documented(tmp_path):
    pats = documented_patterns()
    assert len(pats) > 60
    runs = [p for p in (ROOT / "sample_runs").iterdir() if (p / "metrics.sqlite").is_file()] + [_monitored_run(tmp_path)]
    seen = set()
    for r in runs:
        seen |= set(open_run(r).scalar_names())
    undocumented = sorted(n for n in seen if not any(p.fullmatch(n) for p in pats))
    assert not undocumented, f"names missing from docs/store.md: {undocumented}"
    assert "grad_applied/a" in seen and "conflict/cos/a" in seen


def test_every_metadata_key_is_documented(tmp_path):
    text = DOC.read_text().split("<!-- keys:", 1)[1].split("\n## ", 1)[0]
    documented = {k for line in text.splitlines() if line.startswith("| `") for k in re.findall(r"`([^`]+)`", line.split("|")[1])}
    runs = [p for p in (ROOT / "sample_runs").iterdir() if (p / "metrics.sqlite").is_file()] + [_monitored_run(tmp_path)]
    keys = set().union(*(open_run(r).meta() for r in runs))
    assert keys <= documented, f"keys missing from docs/store.md: {sorted(keys - documented)}"


def test_every_table_is_documented():
    con = sqlite3.connect(":memory:")
    from modalscope.store import SCHEMA

    con.executescript(SCHEMA)
    objs = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
    doc = DOC.read_text()
    for name in objs:
        assert f"| `{name}` |" in doc or f"| view `{name}` |" in doc, name


def test_view_gives_step_epoch_name_value_to_sqlite_and_pandas(tmp_path):
    run = _monitored_run(tmp_path)
    expected = open_run(run).scalars().drop(columns="id").reset_index(drop=True)
    con = sqlite3.connect(f"file:{run / 'metrics.sqlite'}?mode=ro", uri=True)
    got = pd.read_sql(f"SELECT step, epoch, name, value FROM {SCALARS_VIEW} ORDER BY id", con)
    pd.testing.assert_frame_equal(got, expected)
    n = con.execute(f"SELECT COUNT(*) FROM {SCALARS_VIEW} WHERE name = 'acc/test/fused'").fetchone()[0]
    assert n == 2  # one per epoch
    con.close()


def test_old_files_get_the_view_from_readers_and_ensure_views(tmp_path):
    run = _monitored_run(tmp_path)
    db = run / "metrics.sqlite"
    with sqlite3.connect(db) as con:
        con.execute(f"DROP VIEW {SCALARS_VIEW}")
    df = open_run(run).sql(f"SELECT epoch, value FROM {SCALARS_VIEW} WHERE name = ?", ["acc/test/fused"])
    assert df["epoch"].tolist() == [0, 1]
    with sqlite3.connect(db) as con:  # the reader's view was temporary: the file is unchanged
        assert con.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = ?", (SCALARS_VIEW,)).fetchone()[0] == 0
    ensure_views(run)
    with sqlite3.connect(db) as con:
        assert con.execute(f"SELECT COUNT(*) FROM {SCALARS_VIEW}").fetchone()[0] == open_run(run).counts()["scalars"]


def test_duckdb_reads_the_view(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    run = _monitored_run(tmp_path)
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{run / 'metrics.sqlite'}' AS r (TYPE sqlite, READ_ONLY)")
    except Exception as e:  # noqa: BLE001 - the sqlite extension is downloaded on first use
        pytest.skip(f"DuckDB's sqlite extension is not available offline: {str(e).splitlines()[0][:80]}")
    n = con.execute(f"SELECT COUNT(*) FROM r.{SCALARS_VIEW} WHERE name = 'acc/test/fused'").fetchone()[0]
    assert n == 2
