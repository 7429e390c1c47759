"""Per-step scalars kept on the device and written in batches: the shared per-step logging path.

Why: a training step of a small model takes about a millisecond; reading each step's loss and
gradient norms to the host, building a dict of floats and a store row per value costs a large
part of that (and, on a GPU, a host sync per step). Here a logged step costs one fused norm
kernel (``torch._foreach_norm`` over every tracked parameter's ``.grad``); the 0-d tensors
of the step's losses and those per-parameter norms are kept as device scalars. Every
``flush_steps`` steps (or ``flush_seconds``, or when asked: epoch end, close, a crash) the
pending values are stacked in one ``torch.stack``, moved to the host in one transfer, and the statistics of
:mod:`modalscope.diagnostics.gradients` are computed for all of them at once in float64 numpy:

* ``grad_norm/<g> = sqrt(Σ_{p ∈ g} ‖∇p‖²)`` per parameter group (encoders and fusion);
* ``grad_share/<m> = n_m / Σ_k n_k`` (1/M when every norm is 0);
* ``grad_ratio = n_d / mean_{k≠d} n_k`` (d the largest; capped at 10⁶), ``conflict/flag = 1[ratio > τ]``;
* the same under ``grad_applied*`` (no flag) for the gradient after a method edited it.

The values equal :func:`~modalscope.diagnostics.gradients.gradient_stats` up to float rounding
(the group sums are taken in float64 here, float32 there; ``tests/test_step_buffer.py``).
Rows reach the store in step order, so for every name the row ids follow the steps as before.
A killed process loses at most the pending rows (at most ``flush_seconds`` of them, like the
store's own buffer); what was written stays a consistent store.

Loss columns can also be checked for finiteness at each flush (the Trainer's non-finite-loss
stop): the check names the exact first bad step and writes no row of it or after it.
"""

from __future__ import annotations

import time
from itertools import repeat
from typing import Mapping, Sequence

import numpy as np
import torch

RATIO_CAP = 1e6


class NonFinite(Exception):
    """A staged loss was not finite (raised from :meth:`StepBuffer.drain` when checking)."""

    def __init__(self, step: int, epoch: int, values: dict[str, float]):
        self.step, self.epoch, self.values = step, epoch, values
        bad = [k for k, v in list(values.items())[1:] if not np.isfinite(v)] or [next(iter(values), "loss/total")]
        first = next(iter(values.values()), float("nan"))
        super().__init__(f"non-finite loss ({first}) at step {step}, epoch {epoch}: {', '.join(bad)}")


class StepBuffer:
    """Pending per-step rows of one run (see the module docstring)."""

    def __init__(self, writer, groups: Mapping[str, Sequence[torch.nn.Parameter]], tau: float = 2.0,
                 flush_steps: int = 256, flush_seconds: float = 0.5):
        self.writer = writer
        self.tau = float(tau)
        self.flush_steps = int(flush_steps)
        self.flush_seconds = float(flush_seconds)
        keys = list(groups)
        self.params = [p for k in keys for p in groups[k]]
        seg = np.array([i for i, k in enumerate(keys) for _ in groups[k]], dtype=np.int64)
        self._onehot = np.zeros((len(self.params), len(keys)))
        self._onehot[np.arange(len(self.params)), seg] = 1.0
        self.group_names = [k.split("/", 1)[1] if k.startswith("encoder/") else k for k in keys]
        self.enc_cols = [i for i, k in enumerate(keys) if k.startswith("encoder/")]
        self.pending: list[tuple] = []
        self._layouts: dict[tuple, tuple] = {}
        self._last = time.monotonic()
        self.check_finite = False

    # ------------------------------------------------------------------ per step
    def grad_norms(self) -> list[torch.Tensor]:
        """Per-parameter ``‖∇p‖₂`` as device scalars (0 for a parameter without ``.grad``); no host sync."""
        grads = [p.grad for p in self.params]
        try:
            return torch._foreach_norm(grads)
        except (TypeError, RuntimeError):  # a parameter without .grad (None in the list)
            pass
        present = [g for g in grads if g is not None]
        it = iter(torch._foreach_norm(present)) if present else iter(())
        dev = present[0].device if present else (self.params[0].device if self.params else torch.device("cpu"))
        zero = torch.zeros((), device=dev)
        return [zero if g is None else next(it) for g in grads]

    def stage(self, step: int, epoch: int, losses: Mapping[str, torch.Tensor | float] | None = None,
              norms: Sequence = (), extras: Mapping[str, float] | None = None, write: bool = True) -> None:
        """Queue one step: ``losses`` (name → 0-d tensor), gradient blocks ``norms`` (each ``"raw"`` or
        ``"applied"`` — read now, or ``(block, norms)`` read earlier by :meth:`grad_norms` — or
        ``"same"``: the applied gradient is the raw one, not read again), and
        host floats ``extras``. ``write=False`` stages the losses for the finiteness check only."""
        tensors: list[torch.Tensor] = []
        names: list[str] = []
        if losses:
            for k, v in losses.items():
                if isinstance(v, torch.Tensor):
                    names.append(k)
                    if v.requires_grad:
                        v = v.detach()
                    tensors.append(v.reshape(()) if v.ndim else v)
                else:
                    extras = {**(extras or {}), k: float(v)}
        blocks: list[str] = []
        for b in norms:
            if isinstance(b, tuple):  # (block, norms read earlier with grad_norms())
                blocks.append(b[0])
                tensors.extend(b[1])
            else:
                blocks.append(b)
                if b != "same":
                    tensors.extend(self.grad_norms())
        row = tensors or None  # stacked with the other pending rows of its layout at the flush
        layout = (tuple(names), tuple(blocks), write)
        self.pending.append((int(step), int(epoch), layout, row, dict(extras) if extras else None))
        if len(self.pending) >= self.flush_steps or time.monotonic() - self._last >= self.flush_seconds:
            self.drain(commit=True)

    def log(self, step: int, epoch: int, values: Mapping[str, float]) -> None:
        """Host floats for a step (a method's own scalars); written in order with the staged rows."""
        if values:
            self.pending.append((int(step), int(epoch), None, None, dict(values)))

    # ------------------------------------------------------------------ flush
    def _names(self, layout: tuple) -> tuple[list[str], list[int]]:
        have = self._layouts.get(layout)
        if have is None:
            losses, blocks, _ = layout
            names = list(losses)
            for b in blocks:
                pre = ("grad_norm/", "grad_share/", "grad_ratio", True) if b == "raw" else ("grad_applied/", "grad_applied_share/", "grad_applied_ratio", False)
                names += [pre[0] + g for g in self.group_names]
                if len(self.enc_cols) >= 2:
                    names += [pre[1] + self.group_names[i] for i in self.enc_cols] + [pre[2]] + (["conflict/flag"] if pre[3] else [])
            have = self._layouts[layout] = (names, [self.writer._name_id(n) for n in names])
        return have

    def _values(self, layout: tuple, x: np.ndarray) -> np.ndarray:
        """(steps, names) float64 values of one layout from its staged (steps, columns) array."""
        losses, blocks, _ = layout
        cols = [x[:, : len(losses)]]
        j = len(losses)
        P = len(self.params)
        raw = None
        for b in blocks:
            if b == "same":
                norms = raw
            else:
                norms = x[:, j : j + P]
                j += P
                if b == "raw":
                    raw = norms
            g = np.sqrt(np.square(norms) @ self._onehot)
            cols.append(g)
            if len(self.enc_cols) >= 2:
                e = g[:, self.enc_cols]
                tot = e.sum(1, keepdims=True)
                with np.errstate(divide="ignore", invalid="ignore"):
                    share = np.where(tot > 0, e / np.where(tot > 0, tot, 1.0), 1.0 / e.shape[1])
                    top = e.max(1)
                    mean_others = (tot[:, 0] - top) / (e.shape[1] - 1)
                    r = np.where(mean_others > 0, top / np.where(mean_others > 0, mean_others, 1.0), np.inf)
                r = np.minimum(r, RATIO_CAP)
                cols += [share, r[:, None]]
                if b == "raw":
                    cols.append((r > self.tau).astype(np.float64)[:, None])
        return np.concatenate(cols, axis=1) if cols else np.zeros((len(x), 0))

    def drain(self, commit: bool = False) -> None:
        """Move every pending row to the store's buffer (``commit``: and commit it).

        With ``check_finite``, raises :class:`NonFinite` for the first step whose staged loss
        is not finite, after writing every row before it."""
        self._last = time.monotonic()
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        by_layout: dict[tuple, list[int]] = {}
        for i, e in enumerate(pending):
            if e[3] is not None:
                by_layout.setdefault(e[2], []).append(i)
        vals: dict[int, np.ndarray] = {}
        as_lists: dict[int, list] = {}
        all_finite: dict[int, bool] = {}
        ids_of: dict[tuple, list[int]] = {}
        for layout, idx in by_layout.items():
            flat = [t for i in idx for t in pending[i][3]]
            try:
                x = torch.stack(flat)
            except RuntimeError:  # values on several devices: bring them to the first one's
                x = torch.stack([t.float().to(flat[0].device) for t in flat])
            x = x.reshape(len(idx), -1).double().cpu().numpy()
            v = self._values(layout, x)
            names, ids = self._names(layout)
            ids_of[layout] = ids
            rows_v = v.tolist()
            fin = np.isfinite(v[:, : len(layout[0])]).all(1).tolist()
            for k, i in enumerate(idx):
                vals[i] = v[k]
                as_lists[i] = rows_v[k]
                all_finite[i] = fin[k]
        rows: list[tuple] = []
        bad = None
        name_id = self.writer._name_id
        for i, (step, epoch, layout, _, extras) in enumerate(pending):
            if i in vals:
                v = vals[i]
                nl = len(layout[0])
                if self.check_finite and nl and not all_finite[i]:
                    bad = NonFinite(step, epoch, dict(zip(layout[0], v[:nl].tolist())))
                    break
                if layout[2]:
                    rows.extend(zip(repeat(step), repeat(epoch), ids_of[layout], as_lists[i]))
            if extras:
                rows.extend((step, epoch, name_id(k), float(x)) for k, x in extras.items())
        self.writer.log_rows(rows, commit=commit)
        if bad is not None:
            raise bad

