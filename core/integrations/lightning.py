"""PyTorch Lightning callback: the ModalScope monitor inside ``Trainer.fit``.

Needs the optional extra ``modalscope[lightning]`` (pytorch-lightning 2.x). The module's
``training_step`` returns ``{"loss", "fused", "logits", "labels"}`` (``ids`` optional) and
``validation_step`` returns ``{"fused", "logits", "labels"}``; the callback does the rest:

* ``on_before_backward`` keeps the loss; ``on_after_backward`` reads the encoders' ``.grad``
  (gradient norms, shares, ratio) — under DDP the gradients are already all-reduced there,
  so rank 0 logs the gradient every rank applies;
* ``on_train_batch_end`` records the batch's predictions (``acc/train/*``, train gap);
* ``on_validation_batch_end`` collects the validation predictions and
  ``on_validation_epoch_end`` closes the epoch (accuracies, gap, GMM, W^m when
  ``drop_eval`` is given); epochs without validation are closed by ``on_train_epoch_end``;
* ``on_fit_end`` marks the run finished, ``on_exception`` failed (or interrupted).

Under DDP only global rank 0 writes; on other ranks the monitor is silent. Per-sample
statistics on rank 0 cover rank 0's shard of the data (the DistributedSampler's).
Conflict cosines need the graph before backward together with the per-modality logits,
which Lightning does not hand to callbacks; they are not logged through this callback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from modalscope.errors import ConfigError
from modalscope.monitor import Monitor

try:
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover - exercised only without the extra
    try:
        import lightning.pytorch as pl  # type: ignore[no-redef]
    except ImportError:
        raise ImportError("modalscope.integrations.lightning needs pytorch-lightning 2.x (pip install 'modalscope[lightning]')") from None


def _resolve(module: Any, spec: Any) -> Any:
    """A module attribute name ("net.pix"), a module, a list of either, or a callable of the LightningModule."""
    if callable(spec) and not isinstance(spec, torch.nn.Module):
        return spec(module)
    if isinstance(spec, str):
        obj = module
        for part in spec.split("."):
            if not hasattr(obj, part):
                raise ConfigError(f"ModalScopeCallback: the LightningModule has no attribute {spec!r}")
            obj = getattr(obj, part)
        return obj
    if isinstance(spec, (list, tuple)):
        return [_resolve(module, s) for s in spec]
    return spec


class ModalScopeCallback(pl.Callback):
    """Write a ModalScope run from a Lightning fit.

    Args:
        run: run name (under ``runs_dir``) or folder.
        modalities: modality names.
        encoders: modality → attribute path on the LightningModule (``"net.pix"``), module,
            or list of them; or one callable ``f(pl_module) -> {modality: module}``.
        fusion: the same for the layers after the encoders (optional).
        val_split: the split the validation loader is logged as (``test`` by default: the
            split the Runs and Compare pages summarise).
        **monitor_kwargs: passed to :class:`~modalscope.monitor.Monitor` (``diagnostics``,
            ``drop_eval``, ``log_every``, ``method``, ``dataset``, ``seed``, ...).
    """

    def __init__(self, run: str | Path, modalities, encoders: Mapping[str, Any] | Callable, fusion: Any = None,
                 runs_dir: str | Path = "runs", val_split: str = "test", **monitor_kwargs: Any):
        super().__init__()
        if val_split not in ("valid", "test"):
            raise ConfigError(f"ModalScopeCallback: val_split must be 'valid' or 'test', got {val_split!r}")
        self.run, self.modalities, self.encoders, self.fusion = run, list(modalities), encoders, fusion
        self.runs_dir, self.val_split, self.kwargs = runs_dir, val_split, monitor_kwargs
        self.monitor: Monitor | None = None
        self._loss: torch.Tensor | None = None
        self._val: dict[str, list] = {}
        self._closed_epoch = -1

    # ------------------------------------------------------------------ lifecycle
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.monitor is not None:
            return
        enc = self.encoders(pl_module) if callable(self.encoders) else {m: _resolve(pl_module, s) for m, s in self.encoders.items()}
        fusion = None if self.fusion is None else _resolve(pl_module, self.fusion)
        kw = dict(self.kwargs)
        kw.setdefault("epochs", trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None)
        self.monitor = Monitor(self.run, self.modalities, enc, fusion=fusion, runs_dir=self.runs_dir, rank=trainer.global_rank, **kw)

    def on_train_start(self, trainer, pl_module) -> None:
        if self.monitor is not None and self.monitor.optimizer is None and trainer.optimizers:
            self.monitor.optimizer = trainer.optimizers[0]

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self.monitor.close("finished")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.monitor is not None:
            interrupted = isinstance(exception, KeyboardInterrupt)
            msg = f"{type(exception).__name__}: {str(exception).splitlines()[0] if str(exception) else ''}"
            self.monitor.close("interrupted" if interrupted else "failed", msg)

    # ------------------------------------------------------------------ steps
    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_after_backward(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self.monitor.step(self._loss)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.monitor is not None and isinstance(outputs, Mapping):
            self.monitor.observe(fused=outputs.get("fused"), logits=outputs.get("logits"), labels=outputs.get("labels"),
                                 ids=outputs.get("ids"))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking or not isinstance(outputs, Mapping) or "fused" not in outputs:
            return
        for k in ("fused", "labels", "ids"):
            if outputs.get(k) is not None:
                self._val.setdefault(k, []).append(torch.as_tensor(outputs[k]).detach().cpu())
        for m, z in (outputs.get("logits") or {}).items():
            self._val.setdefault(f"logit:{m}", []).append(z.detach().cpu())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.monitor is None or not self._val:
            self._val = {}
            return
        cat = {k: torch.cat(v) for k, v in self._val.items()}
        self._val = {}
        split = {"fused": cat["fused"], "labels": cat["labels"], "logits": {k[6:]: v for k, v in cat.items() if k.startswith("logit:")}}
        if "ids" in cat:
            split["ids"] = cat["ids"]
        self._close_epoch(trainer, **{self.val_split: split})

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.monitor is not None and self._closed_epoch < trainer.current_epoch:
            self._close_epoch(trainer)

    def _close_epoch(self, trainer, **splits) -> None:
        self.monitor.epoch_end(**splits)
        self._closed_epoch = trainer.current_epoch
