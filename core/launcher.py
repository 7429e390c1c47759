"""Start and stop training runs as detached processes (what the dashboard's Launch/Stop do).

Why a separate process per seed: a run must outlive the page that started it (reloads,
closed browser tabs, a restarted dashboard), and one failing run must not take the
dashboard down. Each run is ``python -m modalscope train --config <run>/launch.json --name <run>
--runs-dir <root> --seed <s> --no-progress``, started in its own session
(``start_new_session=True``, so a Ctrl-C in the dashboard's terminal does not reach it),
with stdout/stderr going to ``<run>/launch.log``.

Security: every field is validated through ``RunConfig`` before anything starts; the
command is an argument list (never a shell string), and user text only ever reaches the
child as a validated run name, integers, or inside the JSON config file that the child
validates again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalscope.config import RunConfig, resolve_config, validate_run_name
from modalscope.errors import ConfigError, StoreError

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_CONFIG = "launch.json"
LAUNCH_LOG = "launch.log"
MAX_SEEDS = 64

_children: list[subprocess.Popen] = []


@dataclass
class Launched:
    name: str
    run_dir: Path
    pid: int
    argv: list[str]


def parse_seeds(text: str | list[int] | int) -> list[int]:
    """``"0, 1, 2"`` or ``"0-2"`` → ``[0, 1, 2]`` (distinct, in order; at most 64)."""
    if isinstance(text, int):
        items: list[Any] = [text]
    elif isinstance(text, list):
        items = text
    else:
        items = []
        for part in str(text).replace(" ", "").split(","):
            if not part:
                continue
            if "-" in part[1:]:
                a, _, b = part.partition("-") if not part.startswith("-") else ("", "", "")
                if not (a.isdigit() and b.isdigit()) or int(b) < int(a):
                    raise ConfigError(f"seeds: {part!r} is not a range like 0-3")
                items.extend(range(int(a), int(b) + 1))
            else:
                items.append(part)
    seeds: list[int] = []
    for s in items:
        if isinstance(s, bool) or not (isinstance(s, int) or (isinstance(s, str) and s.isdigit())):
            raise ConfigError(f"seeds: {s!r} is not a non-negative integer (write e.g. 0,1,2 or 0-2)")
        v = int(s)
        if v not in seeds:
            seeds.append(v)
    if not seeds:
        raise ConfigError("seeds: give at least one seed (e.g. 0 or 0,1,2)")
    if len(seeds) > MAX_SEEDS:
        raise ConfigError(f"seeds: at most {MAX_SEEDS} seeds per launch (got {len(seeds)})")
    return seeds


def build_configs(raw: dict[str, Any], seeds: list[int], runs_dir: str | Path) -> list[RunConfig]:
    """One validated RunConfig per seed; names get ``_s<seed>`` when several seeds share a name.

    Raises ConfigError (one line) for any bad field, a bad run name, or a run folder that
    already holds a run.
    """
    raw = json.loads(json.dumps(raw))
    raw["runs_dir"] = str(runs_dir)
    base_name = raw.pop("name", None) or None
    if base_name is not None:
        validate_run_name(str(base_name))
    cfgs: list[RunConfig] = []
    taken: set[str] = set()
    for seed in seeds:
        raw_s = dict(raw, seed=seed)
        cfg = resolve_config(base=raw_s)
        if base_name:
            name = f"{base_name}_s{seed}" if len(seeds) > 1 else str(base_name)
        else:
            name = cfg.default_name()
        name = validate_run_name(_unique(name, Path(runs_dir), taken, explicit=bool(base_name)))
        taken.add(name)
        cfg.name = name
        cfgs.append(cfg)
    return cfgs


def _unique(name: str, root: Path, taken: set[str], explicit: bool) -> str:
    if (root / name).exists() or name in taken:
        if explicit:
            raise ConfigError(f"name: a run called {name!r} already exists under {root}; choose another name")
        k = 2
        while (root / f"{name}-{k}").exists() or f"{name}-{k}" in taken:
            k += 1
        name = f"{name}-{k}"
    return name


def train_argv(cfg: RunConfig, config_path: Path, python: str | None = None) -> list[str]:
    """The child's argument list (no shell): every value comes from the validated config."""
    validate_run_name(cfg.name or "")
    return [
        python or sys.executable, "-m", "modalscope", "train",
        "--config", str(config_path),
        "--name", str(cfg.name),
        "--runs-dir", str(cfg.runs_dir),
        "--seed", str(int(cfg.seed)),
        "--no-progress",
    ]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def launch(raw: dict[str, Any], seeds: list[int] | str, runs_dir: str | Path) -> list[Launched]:
    """Validate, then start one detached trainer per seed. Returns what was started."""
    seeds = parse_seeds(seeds)
    cfgs = build_configs(raw, seeds, runs_dir)
    started: list[Launched] = []
    reap()
    for cfg in cfgs:
        run_dir = Path(cfg.runs_dir) / str(cfg.name)
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise ConfigError(f"name: a run called {cfg.name!r} already exists under {cfg.runs_dir}") from None
        except OSError as e:
            raise StoreError(f"cannot create run folder {run_dir}: {e.strerror or e}") from None
        cfg_path = run_dir / LAUNCH_CONFIG
        cfg_path.write_text(json.dumps(cfg.dump(), indent=2))
        argv = train_argv(cfg, cfg_path)
        with open(run_dir / LAUNCH_LOG, "ab") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
                env=child_env(), start_new_session=True, close_fds=True,
            )
        _children.append(proc)
        started.append(Launched(str(cfg.name), run_dir, proc.pid, argv))
    return started


def reap() -> None:
    """Collect exit codes of finished children so they do not linger as zombies."""
    for p in list(_children):
        if p.poll() is not None:
            _children.remove(p)


def stop_run(run_dir: str | Path, runs_root: str | Path) -> int:
    """SIGTERM the trainer of a running run under ``runs_root`` (it finishes the step, flushes
    and records ``interrupted``). Returns the pid signalled."""
    from modalscope.store import open_run

    root = Path(runs_root).resolve()
    target = Path(run_dir).resolve()
    if target.parent != root:
        raise StoreError(f"refusing to stop {run_dir}: not a run folder directly inside {runs_root}")
    rd = open_run(target)
    meta = rd.meta()
    if rd.status() != "running":
        raise StoreError(f"run {target.name} is not running (status {rd.status()})")
    if meta.get("host") != socket.gethostname():
        raise StoreError(f"run {target.name} runs on host {meta.get('host')!r}, not this machine; stop it there")
    pid = int(meta.get("pid") or 0)
    if pid <= 1:
        raise StoreError(f"run {target.name} has no trainer pid recorded")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise StoreError(f"run {target.name}: trainer process {pid} is gone") from None
    return pid


def interrupted_message(error: str, run_dir: str) -> str:
    """An interrupted run is not a failure: say who stopped it, where, and how to go on.

    The trainer records ``stopped by signal <n> at step <s>`` (SIGTERM from the Stop button or
    ``kill``) or ``interrupted at step <s>`` (Ctrl-C)."""
    import re

    m = re.search(r"at step (\d+)", error or "")
    where = f" at step {int(m.group(1)):,}" if m else ""
    if not (Path(run_dir) / "checkpoint.pt").is_file():
        return (f"Stopped by you{where}, before the run's first checkpoint (written after an epoch at most every "
                f"`log.checkpoint_seconds`, and after the last): there is nothing to resume; start the run again.")
    return (f"Stopped by you{where}; resume with `modalscope train --resume {run_dir}` "
            f"(add `--epochs N` to train to N epochs in all). It continues from the last checkpoint "
            f"(written after an epoch at most every `log.checkpoint_seconds`); the rows logged after it are dropped and redone.")
