"""Thin engine adapter: the trainer calls these hooks; the maths lives in sibling modules.

``DiagnosticsMonitor`` reads the model, its gradients and the per-epoch evaluation arrays;
it never changes parameters, gradients or RNG state, so switching diagnostics on or off
leaves the training trajectory unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.diagnostics.gradients import gradient_stats

if TYPE_CHECKING:  # pragma: no cover
    from core.engine import EvalResult, StepContext, Trainer


class DiagnosticsMonitor:
    def __init__(self, trainer: "Trainer"):
        self.trainer = trainer
        self.cfg = trainer.cfg.diagnostics

    def before_backward(self, ctx: "StepContext", parts) -> dict[str, float]:
        """Runs on the live graph before the method's backward (extra autograd.grad allowed here)."""
        return {}

    def after_backward(self, ctx: "StepContext") -> dict[str, float]:
        """Raw gradients (before any method modulation)."""
        if not self.cfg.grad:
            return {}
        return gradient_stats(ctx.model.param_groups(), ctx.modalities, self.cfg.conflict_tau)

    def on_epoch_end(self, ctx: "StepContext", evals: dict[str, "EvalResult"]) -> dict[str, float]:
        return {}
