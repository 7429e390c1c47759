"""Generated tables inside hand-written docs: one mechanism for every number a doc shows.

A doc marks a generated block with two HTML comments (invisible on GitHub)::

    <!-- generated:KEY -->
    ...table rendered by a script from committed raw output...
    <!-- /generated:KEY -->

A benchmark script registers a renderer for ``KEY`` (a function that reads the committed JSON
and returns markdown) with :func:`renderer`, and calls :func:`write_block` after a run. The
test ``tests/test_doc_tables.py`` re-renders every block of every doc from the committed JSON
and fails on any drift, so a table can never be typed or edited by hand.

Renderers live in the benchmark module that writes the JSON; the check finds those
modules by their ``doctables.renderer(`` use and imports them without running any benchmark.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent

#: extra modules with renderers that the scan below would not find.
MODULES: list[str] = []


def _renderer_modules() -> list[str]:
    """Benchmark modules that register renderers (found by their ``renderer(`` use; imported, never run)."""
    here = Path(__file__).resolve().parent
    return sorted(
        f"benchmarks.{p.stem}" for p in here.glob("*.py")
        if p.stem != "doctables" and "doctables.renderer(" in p.read_text(encoding="utf-8")
    )


_RENDERERS: dict[str, Callable[[], str]] = {}
_BLOCK = re.compile(r"(<!-- generated:(?P<key>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=key) -->)", re.S)


def renderer(key: str):
    """Decorator: ``fn() -> markdown`` renders block ``key`` from committed raw output."""

    def deco(fn: Callable[[], str]) -> Callable[[], str]:
        _RENDERERS[key] = fn
        return fn

    return deco


def table(headers: list[str], rows: list[list[object]], align: str | None = None) -> str:
    """A GitHub markdown table (``align``: one of ``l``/``r`` per column, default left then right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def replace_block(text: str, key: str, body: str) -> str:
    """``text`` with block ``key``'s body replaced (the block must already exist)."""
    body = body if body.endswith("\n") else body + "\n"
    found = False

    def sub(m: re.Match) -> str:
        nonlocal found
        if m.group("key") != key:
            return m.group(0)
        found = True
        return m.group(1) + body + m.group(4)

    out = _BLOCK.sub(sub, text)
    if not found:
        raise KeyError(f"no <!-- generated:{key} --> block in the document")
    return out


def write_block(doc: str | Path, key: str) -> None:
    """Render ``key`` and write it into ``doc`` (a path relative to the repository root)."""
    path = ROOT / doc
    path.write_text(replace_block(path.read_text(encoding="utf-8"), key, _RENDERERS[key]()), encoding="utf-8")


def carry_blocks(old: str, new: str) -> str:
    """``new`` plus every generated block of ``old`` that ``new`` lacks, appended at the end.

    For scripts that rewrite a whole document (``benchmarks/methods.py`` writes
    ``docs/results.md``): blocks other scripts own survive the rewrite.
    """
    have = blocks(new)
    kept = [m.group(0) for m in _BLOCK.finditer(old) if m.group("key") not in have]
    if not kept:
        return new
    return new.rstrip("\n") + "\n\n" + "\n\n".join(kept) + "\n"


def record(path: str | Path, data, doc_json: str | Path, doc: str | Path, key: str) -> None:
    """Write a benchmark's raw output to ``path``; when that is the committed record ``doc_json``
    (not a scratch file), re-render block ``key`` of ``doc`` from it, so the two never disagree."""
    path = Path(path)
    path.write_text(json.dumps(data, indent=2) + "\n")
    if path.resolve() == Path(doc_json).resolve():
        write_block(doc, key)


def blocks(text: str) -> dict[str, str]:
    return {m.group("key"): m.group("body") for m in _BLOCK.finditer(text)}


def check_docs(docs: list[Path] | None = None) -> list[str]:
    """Every generated block whose body differs from what its renderer gives now (or has none)."""
    for mod in {*MODULES, *_renderer_modules()}:
        importlib.import_module(mod)
    docs = docs if docs is not None else [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    drift = []
    for doc in docs:
        for key, body in blocks(doc.read_text(encoding="utf-8")).items():
            fn = _RENDERERS.get(key)
            if fn is None:
                drift.append(f"{doc.name}: block {key!r} has no registered renderer")
                continue
            want = fn()
            want = want if want.endswith("\n") else want + "\n"
            if body != want:
                drift.append(f"{doc.name}: block {key!r} differs from what its script renders")
    return drift
