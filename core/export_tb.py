"""Export a run to TensorBoard event files, for users who live in TensorBoard.

Every scalar becomes a TensorBoard scalar with the same tag at the same step (epoch-level
values sit at the step reached at the end of their epoch, as in the store). Each gap
histogram becomes a TensorBoard histogram ``gap/<split>/<pair>`` at step = epoch; its
buckets are the store's fixed bins, and min/max/sum are computed from bin centres (the
store keeps counts, not the raw gaps). Needs the optional extra ``modalscope[tensorboard]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modalscope.errors import ModalScopeError
from modalscope.store import RunReader


def export_tensorboard(run: RunReader, out: Path) -> Path:
    """Write ``out/events.out.tfevents.*``; returns ``out``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ModalScopeError("--format tensorboard needs the tensorboard package (pip install 'modalscope[tensorboard]')") from None
    out.mkdir(parents=True, exist_ok=True)
    w = SummaryWriter(log_dir=str(out))
    try:
        df = run.scalars()
        for name, step, value in zip(df["name"], df["step"], df["value"]):
            w.add_scalar(name, float(value), int(step))
        for _, h in run.histograms().iterrows():
            edges, counts = np.asarray(h["edges"]), np.asarray(h["counts"])
            if counts.sum() <= 0:
                continue
            centres = (edges[:-1] + edges[1:]) / 2
            nz = np.flatnonzero(counts)
            w.add_histogram_raw(
                f"gap/{h['split']}/{h['name']}", min=float(edges[nz[0]]), max=float(edges[nz[-1] + 1]), num=int(counts.sum()),
                sum=float((centres * counts).sum()), sum_squares=float((centres**2 * counts).sum()),
                bucket_limits=edges[1:].tolist(), bucket_counts=counts.tolist(), global_step=int(h["epoch"]),
            )
        w.flush()
    finally:
        w.close()
    return out
