"""Helpers shared by the per-method tests: one live training step, window-off and resume checks."""

from __future__ import annotations

import json

import torch

from modalscope.config import build_config
from modalscope.data import move_batch
from modalscope.engine import StepContext, Trainer, train

THREE_MODAL = {"preset": "three_modal", "dims": {"audio": 16, "visual": 24, "text": 12}}


def first_step(trainer: Trainer, epoch: int = 0):
    """Forward + loss + method backward on the first training batch; returns (ctx, parts)."""
    batch = move_batch(next(iter(trainer._train_loader(epoch))), trainer.device)
    ctx = StepContext(trainer, epoch=epoch, step=0, batch=batch)
    trainer.optimizer.zero_grad(set_to_none=True)
    out = trainer.method.forward(trainer.model, batch, ctx)
    ctx.out = out
    parts = trainer._total_loss(batch, out, ctx)
    trainer.method.backward(parts, ctx)
    return ctx, parts


def grads(params) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.detach().clone() for p in params]


def model_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def window_off_equals_joint(tiny, method_set: list[str], **over) -> None:
    """A method whose window never opens leaves exactly joint's parameters."""
    ta = Trainer(tiny(name="joint", set=["method.name=joint"], **over))
    ta.fit()
    tb = Trainer(tiny(name="off", set=method_set + ["method.start_epoch=50", "method.end_epoch=60"], **over))
    tb.fit()
    a, b = model_state(ta), model_state(tb)
    extra = set(b) - set(a)
    assert all(k.startswith("heads.") for k in extra), extra  # a method's own trained heads, untouched off-window
    assert_same_state(a, {k: b[k] for k in a})


def resume_matches(tiny, method_set: list[str], epochs: int = 3, **over):
    """Train ``epochs`` straight vs ``epochs-1`` + resume: same metrics and parameters.

    Returns (uninterrupted trainer, the resumed trainer right after loading, resumed final metrics).
    """
    ta = Trainer(tiny(epochs=epochs, name="full", set=list(method_set), **over))
    a = ta.fit()
    tb = Trainer(tiny(epochs=epochs - 1, name="part", set=list(method_set), **over))
    tb.fit()
    saved_state = tb.method.state_dict()
    raw = json.loads((tb.run_dir / "config.json").read_text())
    raw["epochs"] = epochs
    tc = Trainer(build_config(raw), resume=True, run_dir=tb.run_dir)
    loaded_state = tc.method.state_dict()
    b = tc.fit()
    assert b == a
    assert_same_state(model_state(ta), model_state(tc))
    return saved_state, loaded_state


def run(tiny, method_set: list[str], **over):
    return train(tiny(set=list(method_set), **over))
