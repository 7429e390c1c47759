"""Shared fixtures: tiny configs that train in well under a second, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings as _hyp_settings

# Property tests are reproducible in CI: the same examples on every run (no random database).
_hyp_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    _hyp_settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent

TINY_DATA = {
    "name": "synthetic",
    "preset": "imbalanced",
    "n_train": 256,
    "n_valid": 64,
    "n_test": 128,
    "dims": {"audio": 16, "visual": 24},
}


def tiny_config(tmp_path: Path, **over):
    """A small, fast RunConfig under ``tmp_path/runs`` (keyword overrides are dotted-free dict merges)."""
    from modalscope.config import resolve_config

    base = {
        "runs_dir": str(tmp_path / "runs"),
        "epochs": 2,
        "batch_size": 32,
        "data": dict(TINY_DATA),
        "model": {"hidden": 32, "embed_dim": 16, "depth": 1},
        "log": {"progress": False, "checkpoint_seconds": 0},  # a checkpoint every epoch (resume tests rely on it)
    }
    overrides = over.pop("set", [])
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return resolve_config(base=base, overrides=overrides)


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_cli(*args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m modalscope ARGS`` in a subprocess with this checkout first on the path."""
    return subprocess.run(
        [sys.executable, "-m", "modalscope", *args], capture_output=True, text=True, timeout=timeout, env=cli_env(), cwd=cwd or ROOT
    )


def tiny_cli_args(tmp_path: Path) -> list[str]:
    return [
        "--runs-dir", str(tmp_path / "runs"), "--epochs", "2", "--batch-size", "32", "--no-progress",
        "--set", "data.n_train=256", "--set", "data.n_valid=64", "--set", "data.n_test=128",
        "--set", "data.dims={audio: 16, visual: 24}", "--set", "model.hidden=32", "--set", "model.embed_dim=16",
        "--set", "log.checkpoint_seconds=0",
    ]


@pytest.fixture
def tiny(tmp_path):
    def make(**over):
        return tiny_config(tmp_path, **over)

    return make
