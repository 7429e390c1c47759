"""Monitor: ModalScope's modality diagnostics for a training loop you already have.

The user keeps their model, data and loop. The monitor is told which parameters belong to
which modality's encoder and is handed, each step, what the loop already computed (the
loss, and when available the fused logits, the per-modality logits and the labels). It
writes the same run store as :class:`~modalscope.engine.Trainer` (``core/store.py``), under the
same scalar names with the same meanings, so the dashboard's Runs, Live and Compare pages
read it live and unchanged. Added to a plain loop::

    mon = Monitor("my_run", ["pix", "mor"], {"pix": model.pix, "mor": model.mor})   # +1
    with mon:                                                                        # +1
        for epoch in range(E):
            for x, y in loader:
                fused, logits = model(x); loss = F.cross_entropy(fused, y)
                mon.backward(loss, fused=fused, logits=logits, labels=y)             # replaces loss.backward()
                opt.step(); opt.zero_grad()
            mon.epoch_end(test=predict(test_x, test_y))                              # +1

What is logged, and from where (the maths is the Trainer's, imported, not copied):

* every ``log_every`` steps: ``loss/total``, ``grad_norm/<m>``, ``grad_share/<m>``,
  ``grad_ratio``, ``conflict/flag`` read from ``.grad`` after the backward
  (:func:`modalscope.diagnostics.gradients.gradient_stats`); the gradient as it is then is the
  gradient *before* any method edits it, as in the Trainer;
* every ``diagnostics.conflict_every`` steps (50 by default, as in the Trainer), when :meth:`backward` is given per-modality
  logits still attached to the graph: ``conflict/cos/<m>`` and ``conflict/cos_fusion``
  (:func:`modalscope.diagnostics.conflict.conflict_cosines`, cross-entropy as the unimodal loss);
* every epoch: ``acc/train/*`` from the epoch's training forward passes, ``acc/<split>/*``
  for each split passed to :meth:`epoch_end`, and on gap epochs the modality-gap
  histograms, GMM and per-sample snapshot (:class:`modalscope.diagnostics.monitor.DiagnosticsMonitor`).
  The ``train`` gap comes from the per-sample predictions accumulated during the epoch, in
  train mode and while the weights move (the Trainer uses a no-grad pass after the epoch:
  close, not identical);
* ``contrib/info|conf|w/<m>`` (Shapley value, confidence, W^m) when ``drop_eval`` is given;
* ``probe/<split>/<m>`` (and ``probe_init/…`` at step 0) encoder probes when ``features``
  is given (:mod:`modalscope.diagnostics.probe`, the Trainer's cadence).

ModalScope's own Trainer logs its per-step scalars and ``acc/train/*`` through this class too
(:meth:`Monitor.attach` on the Trainer's store), so both kinds of run share one logging path.

Liveness follows the Trainer's contract: ``status`` starts ``running`` with a heartbeat; a
``with`` block, :meth:`close`, an uncaught exception (``sys.excepthook``) or interpreter
exit (``atexit``) records ``finished`` / ``failed`` / ``interrupted``; a killed process is
seen as ``interrupted`` by readers through its stale heartbeat. Under
``torch.distributed`` only rank 0 writes; other ranks get a monitor whose logging calls
do nothing (the gradient-editing calls still act on every rank).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import sys
import time
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from modalscope.errors import ConfigError, StoreError
from modalscope.diagnostics.step_buffer import StepBuffer
from modalscope.store import DB_NAME, RunWriter

#: The monitor's departures from the Trainer's diagnostics defaults (none today: both evaluate
#: conflict cosines every 50 steps, each evaluation costing two or three extra backward passes).
DEFAULTS: dict = {}
_OPEN: "weakref.WeakSet[Monitor]" = weakref.WeakSet()
_HOOKED = False


def _params(x: Any, what: str) -> list[nn.Parameter]:
    """Parameters of a module, of several modules, or a list of parameters (deduplicated, in order)."""
    items = x if isinstance(x, (list, tuple)) else [x]
    out: list[nn.Parameter] = []
    for it in items:
        if isinstance(it, nn.Module):
            out.extend(it.parameters())
        elif isinstance(it, torch.Tensor):
            out.append(it)
        else:
            raise ConfigError(f"{what}: expected an nn.Module, a list of modules or a list of parameters, got {type(it).__name__}")
    seen: set[int] = set()
    uniq = [p for p in out if not (id(p) in seen or seen.add(id(p)))]
    if not uniq:
        raise ConfigError(f"{what}: has no parameters")
    return uniq


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def _cat_1d(items: list, device: torch.device) -> torch.Tensor:
    """Concatenate per-batch labels or ids (tensors, arrays or lists) into one 1-D tensor on ``device``."""
    if all(isinstance(t, torch.Tensor) and t.ndim == 1 for t in items):
        out = torch.cat(items) if len(items) > 1 else items[0]
        return out.to(device)
    return torch.cat([torch.as_tensor(t, device=device).reshape(-1) for t in items])


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0") or 0)


def _excepthook(etype, value, tb):
    for mon in list(_OPEN):
        status = "interrupted" if issubclass(etype, KeyboardInterrupt) else "failed"
        mon.close(status, f"{etype.__name__}: {str(value).splitlines()[0] if str(value) else ''}")
    _PREV_HOOK(etype, value, tb)


_PREV_HOOK = sys.excepthook


def _at_exit() -> None:
    for mon in list(_OPEN):
        mon.close("finished")


def _install_hooks() -> None:
    global _HOOKED, _PREV_HOOK
    if _HOOKED:
        return
    _PREV_HOOK = sys.excepthook
    sys.excepthook = _excepthook
    atexit.register(_at_exit)
    _HOOKED = True


class Monitor:
    """Writes a ModalScope run store from any training loop (see the module docstring).

    Args:
        run: run name (a folder under ``runs_dir``) or a path to the run folder.
        modalities: modality names, in the order the dashboard shows them.
        encoders: modality → ``nn.Module`` (or list of modules / parameters) of its encoder.
        fusion: optional module(s) after the encoders, logged as ``grad_norm/fusion``.
        epochs: planned epochs (the dashboard's progress bar); optional.
        steps_per_epoch: optional; otherwise learnt at the end of the first epoch.
        task: ``classification`` (default) or ``regression``.
        diagnostics: overrides of :class:`modalscope.config.DiagnosticsConfig` (e.g.
            ``{"conflict_every": 5, "gap_splits": ["train", "test"]}``), validated the same way.
        log_every: log step scalars every N steps.
        drop_eval: ``f(drop: frozenset[str]) -> {"fused", "labels"[, "logits"]}`` evaluated
            with the modalities in ``drop`` absent (for Shapley / W^m).
        features: ``f(split) -> ({m: (n, d) features}, labels)`` or None for a missing split;
            encoder probes at init, every ``diagnostics.probe_every`` epochs and at the last one.
        n_classes: for the probes (default: largest label + 1).
        optimizer: optional, to log ``lr``.
        method, dataset, seed, config: descriptive fields written to ``config.json``.
    """

    def __init__(
        self,
        run: str | Path,
        modalities: Iterable[str],
        encoders: Mapping[str, Any],
        *,
        fusion: Any = None,
        runs_dir: str | Path = "runs",
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        task: str = "classification",
        diagnostics: Mapping[str, Any] | None = None,
        log_every: int = 1,
        drop_eval: Callable[[frozenset], Any] | None = None,
        features: Callable[[str], Any] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        method: str = "custom",
        dataset: str = "custom",
        seed: int | None = None,
        config: Mapping[str, Any] | None = None,
        rank: int | None = None,
        heartbeat_seconds: float = 2.0,
        n_classes: int | None = None,
    ):
        from modalscope.config import DiagnosticsConfig, validate_run_name
        from pydantic import ValidationError

        self.modalities = [str(m) for m in modalities]
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ConfigError("modalities: give at least one name, without repeats")
        unknown = [m for m in encoders if m not in self.modalities]
        missing = [m for m in self.modalities if m not in encoders]
        if unknown or missing:
            raise ConfigError(f"encoders: keys must be the modalities {self.modalities} (missing {missing}, unknown {unknown})")
        if task not in ("classification", "regression"):
            raise ConfigError(f"task must be 'classification' or 'regression', got {task!r}")
        if int(log_every) < 1:
            raise ConfigError("log_every must be >= 1")
        try:
            self.dcfg = DiagnosticsConfig(**{**DEFAULTS, **dict(diagnostics or {})})
        except ValidationError as e:
            err = e.errors()[0]
            raise ConfigError(f"diagnostics.{'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None
        self.groups: dict[str, list[nn.Parameter]] = {f"encoder/{m}": _params(encoders[m], f"encoders[{m!r}]") for m in self.modalities}
        if fusion is not None:
            self.groups["fusion"] = _params(fusion, "fusion")
        self.task = task
        self.log_every = int(log_every)
        self.drop_eval, self.features, self.optimizer = drop_eval, features, optimizer
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.step_no, self.epoch = 0, 0
        self._last_step = 0
        self._separable: bool | None = None
        self._epoch_steps = 0
        self._t0 = time.perf_counter()
        self.closed = False
        self.rank = _rank() if rank is None else int(rank)
        self.enabled = self.rank == 0
        self._reset_epoch()
        self.n_classes = n_classes
        self.collect_gap = True
        self.owns_store = True
        self.writer = None
        self._buffer = None
        p = Path(run)
        if isinstance(run, Path) or os.sep in str(run):
            self.run_dir = p
        else:
            validate_run_name(str(run))
            self.run_dir = Path(runs_dir) / str(run)
        if not self.enabled:
            return
        if (self.run_dir / DB_NAME).exists():
            raise StoreError(f"run {self.run_dir} already exists (choose another run name)")
        cfg = {
            "name": self.run_dir.name,
            "source": "monitor",
            "method": {"name": method},
            "data": {"name": dataset, "modalities": self.modalities},
            "epochs": epochs,
            "seed": seed,
            "diagnostics": self.dcfg.model_dump(),
            "log": {"every_steps": self.log_every},
            **({"user": dict(config)} if config else {}),
        }
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
        except OSError as e:
            raise StoreError(f"cannot write run folder {self.run_dir}: {e.strerror or e}") from None
        self.writer = RunWriter(self.run_dir, heartbeat_seconds=heartbeat_seconds)
        self._buffer = StepBuffer(self.writer, self.groups, self.dcfg.conflict_tau)
        from modalscope import __version__

        self.writer.set_many(
            {"version": __version__, "modalities": self.modalities, "task": task, "source": "monitor", "thinned": "",
             "steps_per_epoch": int(steps_per_epoch or 0), "reference": {}, "device": ""}
        )
        self.log_file = open(self.run_dir / "log.txt", "a", encoding="utf-8")
        from modalscope.diagnostics.monitor import DiagnosticsMonitor

        view = SimpleNamespace(
            cfg=SimpleNamespace(diagnostics=self.dcfg, seed=0 if seed is None else int(seed)),
            writer=self.writer,
            bundle=SimpleNamespace(modalities=self.modalities),
            full_bundle=SimpleNamespace(info={}),
        )
        self._diag = DiagnosticsMonitor(view)  # type: ignore[arg-type]
        _OPEN.add(self)
        _install_hooks()
        self.event("start", f"monitoring {self.modalities}" + (f" for {epochs} epochs" if epochs else ""))
        if features is not None:
            self._probe_init()

    @classmethod
    def attach(cls, writer: RunWriter, groups: Mapping[str, list], modalities: list[str], diagnostics, task: str,
               log_every: int = 1) -> "Monitor":
        """A monitor that logs into a store someone else owns (the Trainer: one per-step logging path).

        ``groups`` are role-tagged parameter groups (``encoder/<m>``, ``fusion``, ...) as
        :meth:`modalscope.models.multimodal.MultimodalModel.param_groups` returns them. The owner
        keeps the run's lifecycle (status, heartbeat, close) and its own per-epoch evaluation.
        """
        self = cls.__new__(cls)
        self.modalities = list(modalities)
        self.groups = dict(groups)
        self.dcfg = diagnostics
        self.task, self.log_every = task, int(log_every)
        self.drop_eval = self.features = self.optimizer = None
        self.epochs = self.steps_per_epoch = None
        self.step_no, self.epoch, self._last_step = 0, 0, 0
        self._separable = None
        self.closed, self.rank, self.enabled = False, 0, True
        self.n_classes = None
        self.collect_gap, self.owns_store = False, False
        self.writer, self.run_dir = writer, writer.dir
        self._buffer = StepBuffer(writer, self.groups, diagnostics.conflict_tau, flush_seconds=writer.flush_seconds)
        self._reset_epoch()
        return self

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, etype, value, tb) -> bool:
        if etype is None:
            self.close("finished")
        elif issubclass(etype, KeyboardInterrupt):
            self.close("interrupted", f"interrupted at step {self.step_no}")
        else:
            self.close("failed", f"{etype.__name__}: {str(value).splitlines()[0] if str(value) else ''}")
        return False

    def close(self, status: str = "finished", error: str = "") -> None:
        """Flush and record the final status (idempotent)."""
        if self.closed:
            return
        self.closed = True
        _OPEN.discard(self)
        if self.writer is None or not self.owns_store:
            return
        try:
            self.drain()
        except Exception:  # noqa: BLE001 - closing must record the status whatever the last rows did
            pass
        self._line(f"[{status}] {error}".rstrip())
        try:
            self.writer.close(status, error)
        finally:
            self.log_file.close()

    def event(self, kind: str, message: str) -> None:
        if self.writer is None or self.closed or not self.owns_store:
            return
        self.writer.log_event(self.step_no, self.epoch, kind, message)
        self._line(f"[{kind}] {message}")

    def _line(self, text: str) -> None:
        self.log_file.write(time.strftime("%H:%M:%S ") + text + "\n")
        self.log_file.flush()

    def log(self, values: Mapping[str, float], step: int | None = None) -> None:
        """Log any extra scalars (user names) at this step."""
        if self.writer is not None and not self.closed and values:
            self._buffer.log(self._last_step if step is None else step, self.epoch, {k: float(v) for k, v in values.items()})

    def drain(self) -> None:
        """Write the staged per-step rows to the store's buffer now (epoch end and close do this)."""
        self._reduce_chunk()
        if self._buffer is not None:
            self._buffer.drain()

    # ------------------------------------------------------------------ per step
    def backward(self, loss: torch.Tensor, *, fused=None, logits: Mapping[str, torch.Tensor] | None = None, labels=None,
                 ids=None, **extra: float) -> None:
        """``loss.backward()`` plus the step's diagnostics (conflict cosines need the live graph)."""
        conflict: dict[str, float] = {}
        if (self.enabled and self.dcfg.conflict and logits and labels is not None and len(logits) >= 1
                and self.step_no % self.dcfg.conflict_every == 0 and self.step_no % self.log_every == 0):
            conflict = self._conflict(loss, fused, logits, labels)
        loss.backward()
        self.step(loss, fused=fused, logits=logits, labels=labels, ids=ids, **conflict, **extra)

    def _conflict(self, loss, fused, logits, labels) -> dict[str, float]:
        from modalscope.diagnostics.conflict import conflict_cosines
        from modalscope.methods.base import task_loss

        live = {m: z for m, z in logits.items() if m in self.modalities and isinstance(z, torch.Tensor) and z.requires_grad}
        if not live or not loss.requires_grad:
            return {}
        y = labels
        fused_loss = task_loss(fused, y, self.task) if isinstance(fused, torch.Tensor) and fused.requires_grad else loss
        uni = {m: task_loss(z, y, self.task) for m, z in live.items()}
        enc = {m: self.groups[f"encoder/{m}"] for m in self.modalities}
        if self._separable is None:
            self._separable = self._check_separable(live)
        return conflict_cosines(fused_loss, uni, enc, self.groups.get("fusion", []), separable=self._separable)

    def _check_separable(self, live: Mapping[str, torch.Tensor]) -> bool:
        """Does each modality's logits depend on its own encoder only? (Checked once, on the first graph.)

        Then one backward pass of Σ_m L_m gives every ∇θ_m L_m (see ``conflict_cosines``);
        otherwise each unimodal loss needs its own pass."""
        for m, z in live.items():
            others = [p for k in self.modalities if k != m for p in self.groups[f"encoder/{k}"] if p.requires_grad]
            if others and any(g is not None for g in torch.autograd.grad(z.sum(), others, retain_graph=True, allow_unused=True)):
                return False
        return True

    def step(self, loss=None, *, fused=None, logits: Mapping[str, torch.Tensor] | None = None, labels=None, ids=None,
             **extra: float) -> None:
        """Call after ``loss.backward()`` (and before ``optimizer.step()``); logs what is due."""
        if not self.enabled or self.closed:
            self.step_no += 1
            return
        self.observe(fused=fused, logits=logits, labels=labels, ids=ids)
        if self.step_no % self.log_every == 0 and self._buffer is not None:
            losses = None
            if loss is not None:
                losses = {"loss/total": loss if isinstance(loss, torch.Tensor) and loss.numel() == 1 else float(loss)}
            self._buffer.stage(self.step_no, self.epoch, losses, ("raw",) if self.dcfg.grad else (), extra)
        self._last_step = self.step_no
        self.step_no += 1
        self._epoch_steps += 1

    def observe(self, *, fused=None, logits: Mapping[str, torch.Tensor] | None = None, labels=None, ids=None) -> None:
        """Record one batch's predictions (for ``acc/train/*`` and the train gap) without a step.

        :meth:`step` calls this; use it directly where predictions arrive after the
        gradients (a Lightning ``on_train_batch_end``)."""
        if self.enabled and not self.closed and labels is not None and isinstance(fused, torch.Tensor):
            self._accumulate(fused, logits or {}, labels, ids)

    def grad_norms(self) -> list[torch.Tensor]:
        """Per-parameter gradient norms on the device (no host sync), for :meth:`stage`."""
        return self._buffer.grad_norms()

    def check_finite(self, on: bool = True) -> None:
        """Check staged losses at each flush: a non-finite one raises
        :class:`~modalscope.diagnostics.step_buffer.NonFinite` naming its step (the Trainer's stop)."""
        if self._buffer is not None:
            self._buffer.check_finite = on

    def has_train_predictions(self) -> bool:
        """Whether this epoch's training forward passes were kept for the train-split gap."""
        self._reduce_chunk()
        return self.collect_gap and self._gap_due("train") and bool(self._acc["labels"])

    def train_result(self):
        """The epoch's training predictions as an ``EvalResult`` (sorted by sample id)."""
        self._reduce_chunk()
        return self._train_result()

    def stage(self, step: int, epoch: int, losses: Mapping[str, torch.Tensor] | None, norms=("raw",),
              extras: Mapping[str, float] | None = None, write: bool = True) -> None:
        """Queue one step's device-side scalars (see :class:`~modalscope.diagnostics.step_buffer.StepBuffer`):
        loss tensors, gradient-norm blocks read from ``.grad`` now, and host floats."""
        if self.writer is not None and not self.closed:
            if not self.dcfg.grad:
                norms = ()
            self._buffer.stage(step, epoch, losses, norms, extras, write)

    def ogm_ge(self, logits: Mapping[str, torch.Tensor], labels: torch.Tensor, alpha: float = 0.3, ge: bool = True,
               multi_ratio: str = "min", tensors: str = "weights") -> dict[str, float]:
        """OGM-GE on the encoders' ``.grad`` (call after :meth:`backward`/:meth:`step`, before ``optimizer.step()``)."""
        from modalscope.methods.grad_edit import ogm_ge_

        logs = ogm_ge_({m: self.groups[f"encoder/{m}"] for m in self.modalities}, dict(logits), labels, alpha, ge, multi_ratio, tensors)
        self._log_method(logs)
        return logs

    def cpsl_penalty(self, tau: float = 2.0, lam: float = 0.5, penalty: str = "inverse", source: str | None = None,
                     features: Mapping[str, torch.Tensor] | None = None) -> dict[str, float]:
        """CPSL's conflict-aware penalty on the dominant encoder's ``.grad`` (same placement as :meth:`ogm_ge`;
        ``source``/``features`` as in :func:`modalscope.methods.grad_edit.cpsl_penalty_`)."""
        from modalscope.methods.grad_edit import cpsl_penalty_

        logs = cpsl_penalty_({m: self.groups[f"encoder/{m}"] for m in self.modalities}, tau, lam, penalty, source,
                             dict(features) if features else None)
        self._log_method(logs)
        return logs

    def _log_method(self, logs: dict[str, float]) -> None:
        if self.enabled and not self.closed and self._last_step % self.log_every == 0 and self._buffer is not None:
            self._buffer.stage(self._last_step, self.epoch, None, ("applied",) if self.dcfg.grad else (), logs)

    # ------------------------------------------------------------------ per epoch
    def _reset_epoch(self) -> None:
        from modalscope.metrics import RunningAccuracy

        self._running = RunningAccuracy(self.task)
        self._acc: dict[str, list] = {"fused": [], "labels": [], "ids": [], **{m: [] for m in self.modalities}}
        self._chunk: list[tuple] = []
        self._seen = 0
        self._epoch_steps = 0
        self._t0 = time.perf_counter()

    def start_epoch(self, epoch: int | None = None) -> None:
        """Reset the per-epoch accumulators (``epoch_end`` does this itself)."""
        if epoch is not None:
            self.epoch = int(epoch)
        self._reset_epoch()

    def train_accuracy(self) -> dict[str, float]:
        """``acc/train/*`` of the training forward passes recorded since the epoch started."""
        self._reduce_chunk()
        return self._running.compute()

    def _gap_due(self, split: str) -> bool:
        return (self.dcfg.gap and self.task == "classification" and split in self.dcfg.gap_splits
                and self.epoch % self.dcfg.gap_every == 0)

    #: batches whose predictions are kept (detached references, no copy) before they are reduced
    #: in one go: the per-step cost is a list append, the device work runs once per chunk.
    CHUNK = 32

    def _accumulate(self, fused: torch.Tensor, logits: Mapping[str, torch.Tensor], labels, ids) -> None:
        """Keep one batch's predictions; every ``CHUNK`` batches they are reduced to the running
        training accuracy (on the device, no sync) and, on gap epochs, to the per-sample predictions."""
        names = tuple(m for m in self.modalities if m in logits)
        if self._chunk and self._chunk[-1][1] != names:
            self._reduce_chunk()
        self._chunk.append((fused.detach(), names, [logits[m].detach() for m in names], labels, ids))
        if len(self._chunk) >= self.CHUNK:
            self._reduce_chunk()

    def _reduce_chunk(self) -> None:
        if not getattr(self, "_chunk", None):
            return
        chunk, self._chunk = self._chunk, []
        fused = torch.cat([c[0] for c in chunk]) if len(chunk) > 1 else chunk[0][0]
        names = chunk[0][1]
        logits = [torch.cat([c[2][j] for c in chunk]) if len(chunk) > 1 else chunk[0][2][j] for j in range(len(names))]
        y = _cat_1d([c[3] for c in chunk], fused.device)
        self._running.update(fused, logits, list(names), y)
        start, self._seen = self._seen, self._seen + len(y)
        if not self.collect_gap:
            return
        same = [m for m, z in zip(names, logits) if z.shape == fused.shape]
        if self._gap_due("train") and len(same) >= 2:
            self._acc["fused"].append(fused)
            self._acc["labels"].append(y)
            for m, z in zip(names, logits):
                if m in same:
                    self._acc[m].append(z)
            ids = [c[4] for c in chunk]
            if all(i is None for i in ids):
                self._acc["ids"].append(torch.arange(start, start + len(y)))
            else:
                parts, pos = [], start
                for c, i in zip(chunk, ids):
                    n = len(c[0])
                    parts.append(torch.arange(pos, pos + n) if i is None else torch.as_tensor(i).reshape(-1).cpu())
                    pos += n
                self._acc["ids"].append(_cat_1d(parts, torch.device("cpu")))

    def _result(self, split: str, data: Any):
        from modalscope.engine import EvalResult
        from modalscope.metrics import split_metrics

        if callable(data):
            data = data()
        if isinstance(data, (tuple, list)):
            data = dict(zip(("fused", "labels", "logits"), data))
        if not isinstance(data, Mapping) or "fused" not in data or "labels" not in data:
            raise ConfigError(f"epoch_end({split}=...): give a dict with 'fused' and 'labels' (and optionally 'logits', 'ids')")
        fused, labels = _np(data["fused"]), _np(data["labels"])
        logits = {m: _np(z) for m, z in (data.get("logits") or {}).items() if m in self.modalities}
        ids = _np(data["ids"]) if data.get("ids") is not None else np.arange(len(labels))
        res = EvalResult(split=split, idx=ids.astype(np.int64), labels=labels, fused=fused, logits=logits)
        res.metrics = split_metrics(self.task, split, fused, logits, labels)
        return res

    def epoch_end(self, **splits: Any) -> dict[str, float]:
        """Close the epoch: accuracies, gap/GMM, contributions, probes; returns what was logged.

        ``splits``: ``valid=`` / ``test=`` predictions over a whole split, each a dict
        ``{"fused", "labels", "logits"?, "ids"?}`` (or a callable returning one).
        """
        if not self.enabled or self.closed:
            self.epoch += 1
            self._reset_epoch()
            return {}
        bad = [s for s in splits if s not in ("train", "valid", "test")]
        if bad:
            raise ConfigError(f"epoch_end: unknown split {bad[0]!r} (use train, valid or test)")
        metrics: dict[str, float] = {}
        train_time = time.perf_counter() - self._t0
        metrics.update(self.train_accuracy())
        self.drain()
        evals = {s: self._result(s, d) for s, d in splits.items()}
        for s, ev in evals.items():
            if s != "train":
                metrics.update(ev.metrics)
        if self._gap_due("train") and self._acc["labels"] and "train" not in evals:
            evals["train"] = self._train_result()
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            for s in self.dcfg.gap_splits:
                if s in evals and self._gap_due(s) and len(evals[s].logits) >= 2:
                    metrics.update(self._diag.gap_diagnostics(self.epoch, evals[s]))
            if self.drop_eval is not None and self.dcfg.contrib:
                metrics.update(self._contributions(evals.get("test")))
            if self.features is not None and self._probe_due():
                metrics.update(self._probes())
        if self.optimizer is not None:
            metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])
        metrics["time/epoch"] = train_time
        self.writer.log_scalars(self.step_no, self.epoch, metrics)
        if not self.steps_per_epoch and self._epoch_steps:
            self.steps_per_epoch = self._epoch_steps
            self.writer.set("steps_per_epoch", self._epoch_steps)
        fused = metrics.get("acc/test/fused", float("nan"))
        self._line(f"epoch {self.epoch + 1}/{self.epochs or '?'} test fused={fused:.3f} ({train_time:.1f}s)")
        self.epoch += 1
        self._reset_epoch()
        return metrics

    def _train_result(self):
        from modalscope.engine import EvalResult
        from modalscope.metrics import split_metrics

        cat = {k: torch.cat([t.float() if k != "labels" and k != "ids" else t for t in v]).cpu().numpy()
               for k, v in self._acc.items() if v}
        # Sorted by sample id, so the per-sample snapshot (chosen by position) follows the same
        # samples every epoch whatever order the loader served them in.
        order = np.argsort(cat["ids"], kind="stable")
        cat = {k: v[order] for k, v in cat.items()}
        logits = {m: cat[m] for m in self.modalities if m in cat}
        res = EvalResult("train", cat["ids"].astype(np.int64), cat["labels"], cat["fused"], logits)
        res.metrics = split_metrics(self.task, "train", res.fused, logits, res.labels)
        return res

    def _contributions(self, test) -> dict[str, float]:
        """Shapley I(m), confidence D(m) and W^m from the user's drop-a-modality evaluation."""
        from modalscope.diagnostics.contribution import confidence, contribution_weights, shapley_values
        from modalscope.methods.base import task_loss

        cache: dict[frozenset, Mapping] = {}

        def run(drop: frozenset) -> Mapping:
            if drop not in cache:
                with torch.no_grad():
                    r = self.drop_eval(drop)
                if isinstance(r, (tuple, list)):
                    r = dict(zip(("fused", "labels", "logits"), r))
                if not isinstance(r, Mapping) or "fused" not in r or "labels" not in r:
                    raise ConfigError("drop_eval must return a dict with 'fused' and 'labels' (and optionally 'logits')")
                cache[drop] = r
            return cache[drop]

        def value(present: frozenset) -> float:
            r = run(frozenset(self.modalities) - present)
            fused = torch.as_tensor(r["fused"]).float()
            y = torch.as_tensor(r["labels"])
            y = y.long() if self.task == "classification" else y.float()
            return -float(task_loss(fused, y, self.task))

        info = shapley_values(value, self.modalities)
        full = run(frozenset())
        src = full.get("logits") or (test.logits if test is not None else {})
        ysrc = full["labels"] if full.get("logits") else (test.labels if test is not None else None)
        conf = {m: confidence(torch.as_tensor(np.asarray(_np(src[m]))), torch.as_tensor(_np(ysrc)).long(), self.task)
                if m in src and ysrc is not None else float("nan") for m in self.modalities}
        w = contribution_weights(info, {m: (0.0 if math.isnan(c) else c) for m, c in conf.items()}, self.dcfg.contrib_temperature)
        logs: dict[str, float] = {}
        for m in self.modalities:
            self.writer.log_contribution(self.epoch, m, info[m], conf[m], w[m], None)
            logs[f"contrib/info/{m}"] = info[m]
            logs[f"contrib/conf/{m}"] = conf[m]
            logs[f"contrib/w/{m}"] = w[m]
        return logs

    def _probe_due(self) -> bool:
        """The Trainer's cadence: after epochs k−1, 2k−1, … (k = ``probe_every``) and after the last epoch."""
        last = self.epochs is not None and self.epoch == self.epochs - 1
        return self.dcfg.probe and self.task == "classification" and ((self.epoch + 1) % self.dcfg.probe_every == 0 or last)

    def _probes(self) -> dict[str, float]:
        """``probe/<split>/<m>``: linear probes (:func:`modalscope.diagnostics.probe.probe_features`) on the
        features ``features(split)`` returns, fitted on train, scored on valid/test."""
        from modalscope.diagnostics.probe import probe_features

        sets = {}
        with torch.no_grad():
            for split in ("train", "valid", "test"):
                r = self.features(split)
                if r is None:
                    continue
                if not isinstance(r, (tuple, list)) or len(r) != 2 or not isinstance(r[0], Mapping):
                    raise ConfigError(f"features({split!r}) must return ({{modality: features}}, labels) or None")
                sets[split] = ({m: _np(v) for m, v in r[0].items()}, _np(r[1]).astype(np.int64))
        if "train" not in sets or len(sets) < 2:
            raise ConfigError("features: give the 'train' split and at least one of 'valid'/'test' (the probe is fitted on train)")
        n_classes = self.n_classes or int(max(int(y.max(initial=0)) for _, y in sets.values())) + 1
        out: dict[str, float] = {}
        for m in self.modalities:
            if m not in sets["train"][0]:
                continue
            held_out = {s: (f[m], y) for s, (f, y) in sets.items() if s != "train" and m in f}
            acc, _ = probe_features(sets["train"][0][m], sets["train"][1], held_out, max(n_classes, 2))
            out.update({f"probe/{s}/{m}": a for s, a in acc.items()})
        return out

    def _probe_init(self) -> None:
        """Probes of the untrained encoders at step 0, under ``probe/…`` and ``probe_init/…`` (the Trainer's names)."""
        if not (self.dcfg.probe and self.task == "classification"):
            return
        with torch.random.fork_rng():
            vals = self._probes()
        self.writer.log_scalars(0, 0, {**vals, **{"probe_init/" + k[len("probe/"):]: v for k, v in vals.items()}})
