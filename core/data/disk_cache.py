"""A small on-disk cache for deterministic, expensive start-up computations (JSON values only).

Why: the synthetic presets' Bayes ceilings are a 200 000-sample Monte Carlo estimate
(~0.3 s of CPU) recomputed by every ``modalscope train``; they depend only on the dataset
parameters, the Monte Carlo size and seed, and the code that computes them. The cache key
is a SHA-256 of exactly those: the JSON of the arguments plus the source text of the
functions that compute the value, so editing that code invalidates old entries instead of
serving stale numbers.

Location: ``$MODALSCOPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/modalscope``, else
``~/.cache/modalscope``; ``MODALSCOPE_CACHE_DIR=off`` disables it. A cache that cannot be
read or written (read-only home, corrupt file) is ignored and the value is computed: the
cache can make a run faster, never different or failing. Values are JSON (never pickle),
so a planted cache file cannot execute code.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any, Callable


def cache_dir() -> Path | None:
    env = os.environ.get("MODALSCOPE_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modalscope"


def cache_key(namespace: str, args: Any, code: tuple[Callable, ...] = ()) -> str:
    h = hashlib.sha256(namespace.encode())
    h.update(json.dumps(args, sort_keys=True).encode())
    for fn in code:
        h.update(inspect.getsource(fn).encode())
    return h.hexdigest()[:32]


def cached_json(namespace: str, args: Any, compute: Callable[[], Any], code: tuple[Callable, ...] = (),
                valid: Callable[[Any], bool] = lambda v: True) -> Any:
    """``compute()``, or its earlier result stored under (namespace, args, code)."""
    root = cache_dir()
    if root is None:
        return compute()
    path = root / f"{namespace}-{cache_key(namespace, args, code)}.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        if valid(value):
            return value
    except (OSError, ValueError):
        pass
    value = compute()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
    return value


def cached_arrays(namespace: str, args: Any, compute: Callable[[], dict[str, Any]], code: tuple[Any, ...] = ()) -> dict[str, Any]:
    """``compute()`` (a dict of numpy arrays), or its earlier result stored under (namespace, args, code).

    Stored as an uncompressed ``.npz`` and read with ``allow_pickle=False`` (plain arrays only,
    never objects), so loading a planted file cannot run code; a file that cannot be read is
    recomputed, like :func:`cached_json`."""
    import numpy as np

    root = cache_dir()
    if root is None:
        return compute()
    path = root / f"{namespace}-{cache_key(namespace, args, code)}.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception:  # noqa: BLE001 - missing, truncated or not an npz: recompute (never fail a run)
        pass
    value = compute()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **value)
        os.replace(tmp, path)
    except OSError:
        pass
    return value
