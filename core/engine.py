"""The training loop. It owns the loop; methods shape loss and gradients through hooks.

Per step it logs ``loss/<part>`` (``loss/fused``, ``loss/<m>`` ...), ``loss/total``,
``grad_norm/<m>``, ``grad_norm/fusion`` (before the method edits gradients),
``grad_applied/<m>`` (what the optimiser gets) and what the method and the diagnostics add;
per epoch ``acc/{train,valid,test}/{fused,<m>}``, ``acc/best/…`` and ``best/epoch`` (model
selection on the valid split, :mod:`modalscope.selection`), ``lr`` and ``time/epoch``; encoder
probes ``probe/…`` before the first step and every ``diagnostics.probe_every`` epochs, and
``probe_util/<m>`` at the end when a matching unimodal reference run exists
(:mod:`modalscope.reference`).

Robustness contract:

* checkpoint after every epoch (atomic replace) with model, optimiser, scheduler, method
  state and every RNG state; data order is a function of (seed, epoch), so a resumed run
  replays exactly what an uninterrupted one would have done;
* SIGINT/SIGTERM finish the current step, flush the store and mark the run ``interrupted``;
* a non-finite loss stops the run as ``failed`` with the step, the epoch and the loss part.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from modalscope import __version__, lazy_dynamo
from modalscope.config import RunConfig, validate_run_name
from modalscope.data import BatchLoader, DatasetBundle, get_dataset, move_batch
from modalscope.diagnostics.monitor import DiagnosticsMonitor
from modalscope.diagnostics.sample_store import SampleStore
from modalscope.diagnostics.step_buffer import NonFinite
from modalscope.errors import StoreError, TrainingError
from modalscope.methods import LossParts, Method, get_method, task_loss
from modalscope.metrics import split_metrics
from modalscope.models import ModelOutput, build_model, resolve_heads
from modalscope.selection import BEST_FILE, NO_VALID, SELECT_ON, BestTracker
from modalscope.monitor import Monitor
from modalscope.store import RunWriter

CHECKPOINT = "checkpoint.pt"
lazy_dynamo.install()


class StopRequested(Exception):
    """Raised inside the loop when SIGINT/SIGTERM asked the run to stop."""


NonFiniteLoss = NonFinite  # raised when the staged losses are checked (see _train_step)


@dataclass
class EvalResult:
    """Stacked no-grad predictions over one split, in dataset-index order."""

    split: str
    idx: np.ndarray
    labels: np.ndarray
    fused: np.ndarray
    logits: dict[str, np.ndarray]
    metrics: dict[str, float] = field(default_factory=dict)
    features: dict[str, torch.Tensor] | None = None


@dataclass
class StepContext:
    """What hooks see: the trainer, the position in training and a place to log scalars."""

    trainer: "Trainer"
    epoch: int = 0
    step: int = 0
    batch: dict | None = None
    out: ModelOutput | None = None
    logs: dict[str, float] = field(default_factory=dict)
    evals: dict[str, EvalResult] = field(default_factory=dict)

    @property
    def model(self):
        return self.trainer.model

    @property
    def optimizer(self):
        return self.trainer.optimizer

    @property
    def cfg(self) -> RunConfig:
        return self.trainer.cfg

    @property
    def device(self) -> torch.device:
        return self.trainer.device

    @property
    def modalities(self) -> list[str]:
        return self.trainer.bundle.modalities

    @property
    def task(self) -> str:
        return self.trainer.bundle.task

    def log(self, name: str, value: float) -> None:
        self.logs[name] = float(value)

    def event(self, kind: str, message: str) -> None:
        self.trainer.event(kind, message)


def pick_device(choice: str) -> torch.device:
    if choice == "cuda":
        if not torch.cuda.is_available():
            from modalscope.errors import ConfigError

            raise ConfigError("device: 'cuda' requested but no CUDA device is available (use device=auto or cpu)")
        return torch.device("cuda")
    if choice == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    ns = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [ns[0], torch.from_numpy(ns[1].astype(np.int64)), int(ns[2]), int(ns[3]), float(ns[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write-then-rename: a crash or a full disk leaves the previous file intact, never half of one.

    ``durable=False`` skips the fsync: the rename is still atomic for a process that dies
    (kill -9, OOM), only a power cut could lose the newest file; used for the per-epoch
    checkpoints, whose last one is written durably.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from None


def load_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)``: a checkpoint can never execute code on load.

    torch's own refusal text tells the reader how to load the file unsafely; the user sees
    instead what was refused (e.g. ``Unsupported global: GLOBAL io.open``).
    """
    import pickle
    import re
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"Unsupported (global: GLOBAL \S+|operand \d+)", str(e))
        why = f" ({m.group(0)})" if m else ""
        raise StoreError(
            f"cannot read checkpoint {path}: refused by weights_only loading, it holds pickled objects other than tensors{why}"
        ) from None
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one line
        first = re.split(r"(?<=\.)\s", str(e).strip(), maxsplit=1)[0]
        raise StoreError(f"cannot read checkpoint {path}: truncated or not a checkpoint ({type(e).__name__}: {first[:160]})") from None


def _first_detail(e: Exception) -> str:
    """The informative line of a state-dict error (torch puts a generic header first)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]
    return lines[0][:200]


def build_bundle(cfg: RunConfig) -> DatasetBundle:
    return get_dataset(cfg.data.name).build(cfg.data)


class Trainer:
    """Builds data, model, method and store from a RunConfig and runs the loop."""

    def __init__(
        self,
        cfg: RunConfig,
        resume: bool = False,
        init_from: str | Path | None = None,
        run_dir: str | Path | None = None,
        bundle: DatasetBundle | None = None,
    ):
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        full = bundle if bundle is not None else build_bundle(cfg)
        method_cls: type[Method] = get_method(cfg.method.name)
        method_cls.check_config(cfg.method, full.modalities, full.task)
        used = method_cls.used_modalities(cfg.method, full.modalities)
        self.full_bundle = full
        self.bundle = full.select_modalities(used)
        if "train" not in self.bundle.splits or "test" not in self.bundle.splits:
            from modalscope.errors import DataError

            raise DataError("the dataset must have non-empty 'train' and 'test' splits")
        seed_everything(cfg.seed)
        self.model = build_model(cfg, self.bundle, self._head_kind(method_cls)).to(self.device)
        self.method: Method = method_cls(cfg.method, self.bundle.modalities, self.bundle.task)
        self.method.setup(self)
        for mod in self.method.extra_modules().values():
            mod.to(self.device)
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self.start_epoch = 0
        self.global_step = 0
        self._stop_signal: int | None = None
        self._ema_step_time: float | None = None
        self.sample_stores: dict[str, SampleStore] = {}
        self.best = BestTracker()

        if run_dir is None:
            name = cfg.name or cfg.default_name()
            validate_run_name(name)
            run_dir = Path(cfg.runs_dir) / name
            if cfg.name is None and not resume:
                k = 2
                while (run_dir / "metrics.sqlite").exists() or run_dir.exists():
                    run_dir = Path(cfg.runs_dir) / f"{name}-{k}"
                    k += 1
        self.run_dir = Path(run_dir)
        # Checkpoints are read and applied before the run folder is touched, so a bad
        # --init-from or --resume file is refused without changing anything on disk.
        init_note = self._init_weights(Path(init_from)) if init_from is not None else None
        resumed = self._load_resume_state() if resume else None
        if not resume:
            if (self.run_dir / "metrics.sqlite").exists():
                raise StoreError(f"run {self.run_dir} already exists (use --resume {self.run_dir} or another --name)")
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                (self.run_dir / "config.json").write_text(json.dumps(cfg.dump(), indent=2))
            except OSError as e:
                raise StoreError(f"cannot write run folder {self.run_dir}: {e.strerror or e}") from None
        self.writer = RunWriter(
            self.run_dir,
            flush_rows=cfg.log.flush_rows,
            flush_seconds=cfg.log.flush_seconds,
            heartbeat_seconds=cfg.log.heartbeat_seconds,
            resume=resume,
        )
        self.writer.set_many(
            {
                "version": __version__,
                "git_commit": _git_commit(),
                "device": str(self.device),
                "modalities": self.bundle.modalities,
                "task": self.bundle.task,
                "steps_per_epoch": len(self._train_loader(0)),
                "n_train": len(self.bundle.splits["train"]),
                "reference": {k: v for k, v in self.bundle.info.items() if k in ("bayes", "preset")},
                "thinned": "",
            }
        )
        if init_note:
            self.event("init", init_note)
        if self.head_warning and not resume:
            self.event("warning", self.head_warning)
        if resume:
            self._resume(resumed)
        self.diagnostics = DiagnosticsMonitor(self)
        # Per-step scalars and acc/train go through the same Monitor a user's own loop uses.
        self.monitor = Monitor.attach(
            self.writer, self.model.param_groups(), self.bundle.modalities, cfg.diagnostics, self.bundle.task, cfg.log.every_steps
        )
        self.monitor.check_finite()
        # The train-split gap comes from the training forward passes (no extra pass; see _run_epoch).
        self.monitor.collect_gap = not (cfg.log.eval_train or getattr(self.method, "needs_train_eval", False))
        self.log_file = open(self.run_dir / "log.txt", "a", encoding="utf-8")
        self._untouched: bool | None = None

    # ------------------------------------------------------------------ construction
    def _head_kind(self, method_cls: type[Method]) -> str:
        """Resolve ``model.heads`` against the method's declared need; a disagreement is warned once."""
        from modalscope.models.fusion import FUSIONS

        fusion = self.cfg.model.fusion if len(self.bundle.modalities) > 1 else "sum"
        kind, warn = resolve_heads(self.cfg.model.heads, method_cls.unimodal_heads(self.cfg.method), FUSIONS[fusion].sliced)
        self.head_warning = f"method {method_cls.name!r}: {warn}" if warn else None
        if warn:
            warnings.warn(self.head_warning, UserWarning, stacklevel=3)
        return kind

    def parameters(self) -> list[torch.nn.Parameter]:
        params = list(self.model.parameters())
        for mod in self.method.extra_modules().values():
            params += list(mod.parameters())
        return params

    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        params = self.parameters()
        if o.name == "sgd":
            return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        if o.name == "adam":
            return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)

    def _make_scheduler(self):
        o = self.cfg.optim
        if o.schedule == "step":
            return torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=o.step_size, gamma=o.gamma)
        if o.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.cfg.epochs)
        return None

    def _train_loader(self, epoch: int, indices=None) -> BatchLoader:
        loader = BatchLoader(self.bundle.splits["train"], self.cfg.batch_size, shuffle=True, seed=self.cfg.seed, indices=indices)
        loader.set_epoch(epoch)
        return loader

    def _init_weights(self, run: Path) -> str:
        ck = run / CHECKPOINT if run.is_dir() else run
        if not ck.is_file():
            raise StoreError(f"--init-from {run}: no checkpoint.pt found")
        state = load_checkpoint(ck)
        try:
            self.model.load_state_dict(state["model"])
        except (RuntimeError, KeyError, TypeError) as e:
            raise StoreError(f"checkpoint {ck} does not fit this model: {_first_detail(e)}") from None
        return f"weights initialised from {run}"

    def _load_resume_state(self) -> dict | None:
        """Load the last checkpoint into model, optimiser, method and RNGs (None: no checkpoint yet)."""
        ck = self.run_dir / CHECKPOINT
        if not ck.is_file():
            return None
        state = load_checkpoint(ck)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler") is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            for name, mod in self.method.extra_modules().items():
                mod.load_state_dict(state["extra"][name])
            self.method.load_state_dict(state.get("method", {}))
            self.sample_stores = {k: SampleStore.from_state_dict(v, self.device) for k, v in state.get("sample_stores", {}).items()}
            self.best.load_state_dict(state.get("best", {}))
            set_rng_state(state["rng"])
            self.start_epoch = int(state["epoch"]) + 1
            self.global_step = int(state["step"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            raise StoreError(f"checkpoint {ck} does not fit this run's model: {_first_detail(e)}") from None
        return state

    def _resume(self, state: dict | None) -> None:
        """Drop rows logged after the checkpoint, so the store replays exactly what training will redo."""
        if state is None:
            self.writer.truncate_after(-1, -1)
            self.event("resume", "no checkpoint yet: restarting from epoch 0")
            return
        self.writer.truncate_after(self.global_step, int(state["epoch"]))
        self.event("resume", f"resumed after epoch {state['epoch']} (step {self.global_step})")

    def save_checkpoint(self, epoch: int) -> None:
        import io

        state = {
            "epoch": epoch,
            "step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "method": self.method.state_dict(),
            "extra": {k: m.state_dict() for k, m in self.method.extra_modules().items()},
            "sample_stores": {k: st.state_dict() for k, st in self.sample_stores.items()},
            "best": self.best.state_dict(),
            "rng": rng_state(),
            "version": __version__,
        }
        best = getattr(self, "_best_pending", None)
        if best is not None:
            self.save_best(*best)
            self._best_pending = None
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.run_dir / CHECKPOINT, buf.getvalue(), durable=epoch >= self.cfg.epochs - 1)
        self._last_checkpoint = time.monotonic()

    def _checkpoint_due(self, epoch: int) -> bool:
        """After the last epoch, and otherwise once ``log.checkpoint_seconds`` have passed since the
        last checkpoint (0: every epoch). Writing one costs a few milliseconds, as much as several
        steps of a small model; a kill loses at most that period of training, which --resume redoes
        exactly (the store is truncated back to the checkpoint)."""
        period = self.cfg.log.checkpoint_seconds
        if epoch >= self.cfg.epochs - 1 or period <= 0:
            return True
        last = getattr(self, "_last_checkpoint", None)
        if last is None:
            self._last_checkpoint = last = self._t_start
        return time.monotonic() - last >= period

    def _keep_best(self, epoch: int, score: float) -> None:
        """Remember the best-valid weights (a host copy); ``best.pt`` is written with the next
        checkpoint, so on disk it always belongs to the same point of training as checkpoint.pt."""
        self._best_pending = (epoch, score, {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()},
                              {k: {n: t.detach().to("cpu", copy=True) for n, t in m.state_dict().items()}
                               for k, m in self.method.extra_modules().items()})

    def save_best(self, epoch: int, score: float, model_state: dict | None = None, extra_state: dict | None = None) -> None:
        """``best.pt``: the weights at the best-valid epoch (``--init-from`` reads it like a checkpoint)."""
        import io

        state = {
            "epoch": epoch,
            "valid_score": score,
            "selected_on": SELECT_ON,
            "model": self.model.state_dict() if model_state is None else model_state,
            "extra": {k: m.state_dict() for k, m in self.method.extra_modules().items()} if extra_state is None else extra_state,
            "version": __version__,
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.run_dir / BEST_FILE, buf.getvalue())

    def sample_store(self, name: str, momentum: float = 0.9, shape: tuple[int, ...] = ()) -> SampleStore:
        """Per-training-sample values keyed by ``batch["idx"]``, created on first use, checkpointed."""
        if name not in self.sample_stores:
            n = len(self.bundle.splits["train"])
            self.sample_stores[name] = SampleStore(n, momentum, shape, self.device)
        return self.sample_stores[name]

    # ------------------------------------------------------------------ logging
    def event(self, kind: str, message: str, epoch: int | None = None) -> None:
        ep = self._epoch if epoch is None and hasattr(self, "_epoch") else (epoch or 0)
        self.writer.log_event(self.global_step, ep, kind, message)
        self._log_line(f"[{kind}] {message}")

    def _log_line(self, text: str) -> None:
        f = getattr(self, "log_file", None)
        if f is not None:
            f.write(time.strftime("%H:%M:%S ") + text + "\n")
            f.flush()

    # ------------------------------------------------------------------ signals
    def _install_signals(self) -> dict:
        old = {}

        def handler(signum, frame):
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signum

        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                old[s] = signal.signal(s, handler)
            except ValueError:
                pass
        return old

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, float]:
        """Train to the last epoch; returns the final test metrics."""
        old = self._install_signals()
        self._t_start = time.monotonic()
        self._epoch = self.start_epoch
        status, error = "finished", ""
        final: dict[str, float] = {}
        bar = None
        try:
            total = (self.cfg.epochs - self.start_epoch) * len(self._train_loader(self.start_epoch))
            bar = _progress(total, self.cfg.log.progress, self.run_dir.name)
            self.event("start", f"training {self.cfg.method.name} on {self.bundle.modalities} for {self.cfg.epochs} epochs")
            if self.start_epoch == 0:
                self.writer.log_scalars(0, 0, self.diagnostics.probe_init())
            if "valid" not in self.bundle.splits:
                self.writer.set("model_selection", NO_VALID)
            for epoch in range(self.start_epoch, self.cfg.epochs):
                self._epoch = epoch
                final = self._run_epoch(epoch, bar)
            self.finalize()
        except StopRequested:
            status, error = "interrupted", f"stopped by signal {self._stop_signal} at step {self.global_step}"
        except KeyboardInterrupt:
            status, error = "interrupted", f"interrupted at step {self.global_step}"
        except NonFiniteLoss as e:
            status, error = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - recorded, then re-raised
            status, error = "failed", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            try:
                self.monitor.drain()
            except NonFiniteLoss as nf:  # the staged losses went non-finite first: that is the cause
                self._close("failed", str(nf), bar, old)
                raise TrainingError(str(nf)) from e
            except Exception:  # noqa: BLE001
                pass
            self._close(status, error, bar, old)
            raise
        self._close(status, error, bar, old)
        if status == "failed":
            raise TrainingError(error)
        if status == "interrupted":
            raise StopRequested(error)
        return final

    def finalize(self) -> None:
        """End-of-run extras (robustness tables etc.) — methods and diagnostics extend this."""
        fn = getattr(self.method, "on_train_end", None)
        if fn is not None:
            fn(StepContext(self, epoch=self._epoch, step=self.global_step))
        self._log_utilisation()
        if self.cfg.diagnostics.robust:
            from modalscope.diagnostics.robustness import evaluate_robustness

            scalars, table = evaluate_robustness(self, self.cfg.diagnostics.robust_levels, seed=self.cfg.seed)
            self.writer.log_scalars(self.global_step, self._epoch, scalars)
            self.writer.log_table("robustness", table)

    def _log_utilisation(self) -> None:
        """``probe_util/<m>`` when a matching unimodal reference run exists (else an event saying why not)."""
        if not self.diagnostics.probes_enabled():
            return
        from modalscope.reference import default_roots, probe_utilisation_rows

        self.writer.flush()
        try:
            rows = probe_utilisation_rows(self.run_dir, default_roots(self.cfg.runs_dir))
        except StoreError as e:
            self.event("probe_util", f"utilisation not computed: {e}")
            return
        logs = {f"probe_util/{r['modality']}": r["utilisation"] for r in rows if r["utilisation"] == r["utilisation"]}
        if logs:
            self.writer.log_scalars(self.global_step, self._epoch, logs)
        missing = [f"{r['modality']}: {r['reason']}" for r in rows if r["utilisation"] != r["utilisation"]]
        if missing:
            self.event("probe_util", "no utilisation for " + "; ".join(missing))

    def _close(self, status, error, bar, old) -> None:
        if bar is not None:
            bar.close()
        try:
            self.monitor.drain()
        except NonFiniteLoss as e:
            status, error = "failed", str(e)
        except Exception:  # noqa: BLE001 - the status is recorded whatever the last rows did
            pass
        self._log_line(f"[{status}] {error}".rstrip())
        try:
            self.writer.close(status, error)
        finally:
            self.log_file.close()
            for s, h in old.items():
                try:
                    signal.signal(s, h)
                except (ValueError, TypeError):
                    pass

    def _check_stop(self) -> None:
        if self._stop_signal is not None:
            raise StopRequested()

    def _run_epoch(self, epoch: int, bar) -> dict[str, float]:
        t0 = time.perf_counter()
        ctx = StepContext(self, epoch=epoch, step=self.global_step)
        self.model.train()
        self.method.on_epoch_start(ctx)
        self._flush_logs(ctx, epoch_level=True)
        indices = self.method.train_indices(ctx)
        loader = self._train_loader(epoch, indices)
        self.monitor.start_epoch(epoch)
        for batch in loader:
            self._train_step(move_batch(batch, self.device), epoch)
            if bar is not None:
                bar.update(1)
            self._check_stop()
        self.monitor.drain()
        train_time = time.perf_counter() - t0
        evals = self.evaluate(epoch)
        ctx = StepContext(self, epoch=epoch, step=self.global_step, evals=evals)
        metrics: dict[str, float] = self.monitor.train_accuracy()
        for split, ev in evals.items():
            if split != "train":
                metrics.update(ev.metrics)
        diag_evals = evals
        if "train" not in evals and self.monitor.has_train_predictions():
            # Diagnostics only (the method's hooks never see it): the train split as the
            # training forward passes of this epoch predicted it (train mode, weights moving).
            diag_evals = {**evals, "train": self.monitor.train_result()}
        metrics.update(self.diagnostics.on_epoch_end(ctx, diag_evals))
        self.method.on_epoch_end(ctx)
        metrics.update(ctx.logs)
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        metrics["time/epoch"] = train_time
        if "valid" in evals:
            valid_score = evals["valid"].metrics.get(SELECT_ON, float("nan"))
            if self.best.update(epoch, valid_score):
                self.best.snapshot(metrics)
                if self.cfg.log.checkpoint:
                    self._keep_best(epoch, valid_score)
            metrics.update(self.best.logs())
        self.writer.log_scalars(self.global_step, epoch, metrics)
        if self.scheduler is not None:
            self.scheduler.step()
        if self.cfg.log.checkpoint and self._checkpoint_due(epoch):
            self.writer.flush()  # a checkpoint never gets ahead of the committed rows (--resume truncates back to it)
            self.save_checkpoint(epoch)
        fused = metrics.get("acc/test/fused", float("nan"))
        per = " ".join(f"{m}={metrics.get(f'acc/test/{m}', float('nan')):.3f}" for m in self.bundle.modalities)
        self._log_line(f"epoch {epoch + 1}/{self.cfg.epochs} test fused={fused:.3f} {per} ({train_time:.1f}s)")
        if bar is not None:
            bar.set_postfix_str(f"ep {epoch + 1} fused {fused:.3f} {per}")
        return {k: v for k, v in metrics.items() if k.startswith(("acc/test/", "acc2/test/", "mae/test/"))}

    def _closure(self, batch: dict, ctx: StepContext) -> Callable[[], LossParts]:
        def closure() -> LossParts:
            self.optimizer.zero_grad(set_to_none=True)
            out = self.method.forward(self.model, batch, ctx)
            parts = self._total_loss(batch, out, ctx)
            self.method.backward(parts, ctx)
            return parts

        return closure

    def _total_loss(self, batch: dict, out: ModelOutput, ctx: StepContext) -> LossParts:
        parts = self.method.loss(batch, out, ctx)
        if self.model.head_kind == "separate" and out.logits:
            mon = sum(task_loss(z, batch["label"], self.bundle.task) for z in out.logits.values())
            parts.total = parts.total + mon
        return parts

    def _train_step(self, batch: dict, epoch: int) -> None:
        """One step. Losses and gradient norms are staged on the device (one stack per step) and
        read in batches by the monitor's :class:`~modalscope.diagnostics.step_buffer.StepBuffer`,
        which also checks the losses: a non-finite one stops the run at its next flush (at the
        latest at the end of the epoch, before any evaluation or checkpoint), naming the exact
        step and writing no row of it or after it."""
        ctx = StepContext(self, epoch=epoch, step=self.global_step, batch=batch)
        self.optimizer.zero_grad(set_to_none=True)
        out = self.method.forward(self.model, batch, ctx)
        ctx.out = out
        parts = self._total_loss(batch, out, ctx)
        losses = {"loss/total": parts.total, **{f"loss/{k}": v for k, v in parts.parts.items()}}
        log_now = self.global_step % self.cfg.log.every_steps == 0
        grad = log_now and self.cfg.diagnostics.grad
        conflict = self.diagnostics.before_backward(ctx, parts) if log_now else {}
        self.method.backward(parts, ctx)
        raw = self.monitor.grad_norms() if grad else None
        self.method.after_backward(ctx)
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.cfg.optim.grad_clip)
        applied = None
        if grad:
            if self._untouched is None:
                self._untouched = self.diagnostics.gradients_untouched(ctx)
            applied = "same" if self._untouched else ("applied", self.monitor.grad_norms())
        self.method.optimizer_step(ctx, self._closure(batch, ctx))
        self.monitor.observe(fused=self.method.predict(out), logits=out.logits, labels=batch["label"], ids=batch.get("idx"))
        if log_now:
            if conflict or ctx.logs:
                conflict = {**conflict, **ctx.logs}
            self.monitor.stage(self.global_step, epoch, losses, (("raw", raw), applied) if grad else (), conflict)
        else:
            self.monitor.stage(self.global_step, epoch, losses, (), None, write=False)
        self.global_step += 1

    def _flush_logs(self, ctx: StepContext, epoch_level: bool = False) -> None:
        if ctx.logs:
            self.writer.log_scalars(self.global_step, ctx.epoch, ctx.logs)
            ctx.logs.clear()

    # ------------------------------------------------------------------ evaluation
    @torch.inference_mode()
    def predict_split(
        self, split: str, batch_size: int = 512, transform: Callable[[dict], dict] | None = None, features: bool = False
    ) -> EvalResult:
        """No-grad predictions for a whole split (``transform`` may corrupt inputs).

        ``features=True`` also keeps every encoder's raw output (``EvalResult.features``), read
        by forward hooks on the encoders, so the probes reuse this pass instead of running
        their own. It is left None when an encoder did not see every row exactly once.
        """
        ds = self.bundle.splits[split]
        was = self.model.training
        self.model.eval()
        idx, labels, fused = [], [], []
        logits: dict[str, list] = {m: [] for m in self.bundle.modalities}
        feats: dict[str, list] = {m: [] for m in self.model.modalities}
        hooks = []
        if features:
            for m in self.model.modalities:
                hooks.append(self.model.encoders[m].register_forward_hook(
                    lambda mod, inp, out, m=m: feats[m].append(out.detach().reshape(len(out), -1).float().cpu())))
        try:
            for batch in BatchLoader(ds, batch_size, shuffle=False):
                batch = move_batch(batch, self.device)
                if transform is not None:
                    batch = transform(batch)
                out = self.method.forward(self.model, batch, StepContext(self, epoch=self._epoch_or0(), step=self.global_step))
                fused.append(self.method.predict(out).float().cpu())
                for m, z in out.logits.items():
                    logits[m].append(z.float().cpu())
                idx.append(batch["idx"].cpu())
                labels.append(batch["label"].cpu())
        finally:
            for h in hooks:
                h.remove()
            self.model.train(was)
        kept = None
        if features:
            kept = {m: torch.cat(v) for m, v in feats.items() if v}
            if len(kept) != len(feats) or any(len(v) != len(ds) for v in kept.values()):
                kept = None
        res = EvalResult(
            split=split,
            idx=torch.cat(idx).numpy(),
            labels=torch.cat(labels).numpy(),
            fused=torch.cat(fused).numpy(),
            logits={m: torch.cat(v).numpy() for m, v in logits.items() if v},
            features=kept,
        )
        res.metrics = split_metrics(self.bundle.task, split, res.fused, res.logits, res.labels)
        return res

    def _epoch_or0(self) -> int:
        return getattr(self, "_epoch", 0)

    def needs_train_eval(self, epoch: int) -> bool:
        """A no-grad pass over the training split costs about a third of an epoch: only when asked
        (the train-split gap diagnostics use the training forward passes instead)."""
        return self.cfg.log.eval_train or getattr(self.method, "needs_train_eval", False)

    def evaluate(self, epoch: int) -> dict[str, EvalResult]:
        out = {}
        for split in ("train", "valid", "test"):
            if split not in self.bundle.splits:
                continue
            if split == "train" and not self.needs_train_eval(epoch):
                continue
            out[split] = self.predict_split(split, features=self.diagnostics.probe_reuses(split, epoch))
        return out


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc[:40], unit="step", dynamic_ncols=True, file=sys.stderr, leave=True)


_GIT_COMMIT: list[str] = []


def _git_commit() -> str:
    """The checkout's short commit (read once per process: a git subprocess costs milliseconds)."""
    if not _GIT_COMMIT:
        _GIT_COMMIT.append(_read_git_commit())
    return _GIT_COMMIT[0]


def _read_git_commit() -> str:
    import subprocess

    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def train(cfg: RunConfig, resume: bool = False, init_from: str | Path | None = None, run_dir: str | Path | None = None) -> tuple[Path, dict[str, float]]:
    """Build a Trainer and run it; returns (run folder, final test metrics)."""
    t = Trainer(cfg, resume=resume, init_from=init_from, run_dir=run_dir)
    metrics = t.fit()
    return t.run_dir, metrics
