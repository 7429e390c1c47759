"""Where sweep trials run: this process, a local process pool, or Ray tasks.

No scheduling of our own: the local executor is a ``concurrent.futures`` pool (spawn
context, so every trial starts from a clean interpreter and CUDA is never forked), and the
Ray executor submits each trial as one Ray task with its CPU/GPU/memory request and lets
Ray place it. Every executor calls the same :func:`run_trial`, so a trial's result does
not depend on where it ran.

This module imports nothing heavy at the top: a spawned worker imports it first, and
:func:`_init_worker` must pin thread counts before torch is loaded.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

from modalscope.errors import ModalScopeError

ROOT = Path(__file__).resolve().parent.parent
_STOP = {"requested": False}


def _payload(t, threads: int) -> dict[str, Any]:
    return {
        "index": t.index, "trial": t.config.tags["trial"], "name": t.name, "config": t.config.dump(),
        "run_dir": str(t.run_dir), "action": t.action, "threads": int(threads),
    }


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:300] if not isinstance(e, ModalScopeError) else text[:300]


def _record_failure(run_dir: Path, cfg_dump: dict, error: str) -> None:
    """A trial that died before its trainer opened the store still leaves a ``failed`` run."""
    import json

    from modalscope.store import RunWriter, is_run_dir

    if is_run_dir(run_dir):
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.json").exists():
        (run_dir / "config.json").write_text(json.dumps(cfg_dump, indent=2))
    RunWriter(run_dir).close("failed", error)


def run_trial(payload: dict[str, Any]) -> dict[str, Any]:
    """Train one trial (new, resumed or restarted) and report status and final test metrics.

    Failures never escape: an exception or a non-finite loss becomes ``status='failed'``
    with the one-line error, and the run store records the same status.
    """
    import torch

    from modalscope import engine
    from modalscope.config import build_config
    from modalscope.store import RunReader, delete_run

    t0 = time.perf_counter()
    if _STOP["requested"]:
        return _lost(payload, "not started: the sweep was stopped", status="interrupted")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(payload["threads"])))
    run_dir = Path(payload["run_dir"])
    status, error, metrics = "finished", "", {}
    try:
        cfg = build_config(payload["config"])
        if payload["action"] == "restart" and run_dir.exists():
            delete_run(run_dir, cfg.runs_dir)
        engine.train(cfg, resume=payload["action"] == "resume", run_dir=run_dir)
    except engine.StopRequested as e:
        status, error = "interrupted", _one_line(e) or "stopped"
    except Exception as e:  # noqa: BLE001 - a failed trial is a result, not a crash of the sweep
        status, error = "failed", _one_line(e)
        try:
            _record_failure(run_dir, payload["config"], error)
        except Exception:  # noqa: BLE001 - the sweep still reports the failure
            pass
    finally:
        torch.set_num_threads(old_threads)
    try:
        metrics = RunReader(run_dir).final_scalars("acc/test/")
    except ModalScopeError:
        pass
    return {
        "index": payload["index"], "trial": payload["trial"], "name": payload["name"], "run_dir": str(run_dir),
        "status": status, "metrics": metrics, "error": error, "seconds": time.perf_counter() - t0, "trained": True,
    }


def _lost(payload: dict[str, Any], error: str, status: str = "failed") -> dict[str, Any]:
    return {"index": payload["index"], "trial": payload["trial"], "name": payload["name"], "run_dir": payload["run_dir"],
            "status": status, "metrics": {}, "error": error, "seconds": 0.0, "trained": False}


def _request_stop(signum, frame) -> None:
    _STOP["requested"] = True


def _init_worker(threads: int) -> None:
    """Pin thread counts before torch loads; SIGINT/SIGTERM between trials stop the worker
    from starting queued trials (a running trial's own handler marks it ``interrupted``)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)


def trial_threads(resources: dict[str, float]) -> int:
    """Torch threads of one trial: ``resources.cpus`` (default 1). One thread by default because
    the small models here gain little from intra-op threads, parallel trials use the cores
    better, oversubscribed OpenMP threads slow down badly on a busy machine, and an equal
    thread count makes a trial's numbers identical whichever executor ran it."""
    return max(1, int(resources.get("cpus") or 1))


def run_local(sweep, trials: list, on_result: Callable[[dict], None], workers: int = 1) -> None:
    """``workers == 1``: trials run one after another in this process; otherwise a spawn-context
    ``ProcessPoolExecutor`` of ``workers`` processes. A worker that dies (killed, out of memory)
    breaks the pool: its trial and the ones not yet started are reported failed. Ctrl-C or
    SIGTERM stops the running trials as ``interrupted`` (resumable) and ends the sweep."""
    threads = trial_threads(sweep.resources)
    payloads = [_payload(t, threads) for t in trials]
    if workers == 1:
        for p in payloads:
            res = run_trial(p)
            on_result(res)
            if res["status"] == "interrupted":
                raise KeyboardInterrupt
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(payloads)), mp_context=ctx, initializer=_init_worker, initargs=(threads,))
    try:
        futures = {pool.submit(run_trial, p): p for p in payloads}
        for fut in as_completed(futures):
            try:
                res = fut.result()
            except Exception as e:  # noqa: BLE001 - BrokenProcessPool and friends
                res = _lost(futures[fut], f"worker lost: {_one_line(e)}")
            on_result(res)
    except BaseException:
        for pid in list(getattr(pool, "_processes", None) or {}):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _ray():
    try:
        import ray
    except ImportError:
        raise ModalScopeError("the Ray executor needs Ray: pip install 'modalscope[ray]'") from None
    return ray


def start_local_ray(num_cpus: int | None = None, num_gpus: int | None = None):
    """A private single-node Ray runtime on loopback: no dashboard, no usage stats, a small
    object store (trials exchange only small result dicts). Workers import this checkout."""
    ray = _ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    path = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    kwargs: dict[str, Any] = {}
    if num_gpus is not None:
        kwargs["num_gpus"] = num_gpus
    ray.init(
        num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, object_store_memory=100 * 1024 * 1024,
        log_to_driver=False, configure_logging=False, _node_ip_address="127.0.0.1", **kwargs,
    )
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Ray retries an unreachable ``host:port`` for a long time; fail fast with one line instead.
    ``auto`` (find this node's cluster) is left to Ray."""
    import socket

    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ModalScopeError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ModalScopeError(f"cannot reach Ray at {address}: {e.strerror or e}") from None


def run_ray(sweep, trials: list, on_result: Callable[[dict], None], address: str | None = None, workers: int | None = None) -> None:
    """Each trial is one Ray task with ``num_cpus``/``num_gpus``/``memory`` from the spec's
    ``resources`` (default 1 CPU). Joins ``address`` (``auto`` or ``ray://host:port`` or
    ``host:port``) when given, else starts a local runtime with ``workers`` CPUs. A Ray
    runtime already initialised in this process is used as is and left running."""
    ray = _ray()
    started = False
    if not ray.is_initialized():
        try:
            if address:
                check_reachable(address)
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            else:
                start_local_ray(workers)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ModalScopeError(f"cannot start or join Ray{f' at {address}' if address else ''}: {_one_line(e)}") from None
        started = True
    pending: list = []
    try:
        res = sweep.resources
        opts: dict[str, Any] = {"num_cpus": float(res.get("cpus", 1)), "num_gpus": float(res.get("gpus", 0)), "max_retries": 0}
        if res.get("memory_mb"):
            opts["memory"] = int(res["memory_mb"] * 1024 * 1024)
        task = ray.remote(**opts)(run_trial)
        refs = {task.remote(p): p for p in (_payload(t, trial_threads(res)) for t in trials)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    out = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a lost worker or node fails that trial only
                    out = _lost(refs[ref], f"ray task failed: {_one_line(e)}")
                on_result(out)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
