"""The modulation epoch window shared by the gradient-side methods.

BalanceMM gives every method ``modulation_starts`` / ``modulation_ends``: inside the window
the method acts, outside it the step is plain joint training (cross-entropy on the fused
output, unmodified gradients, plain optimiser step). Methods that reuse this mixin fall
back to :func:`joint_loss` outside the window, so a window that never opens reproduces
``joint`` bit for bit (tested per method).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from modalscope.methods.base import LossParts, MethodParams, fused_and_unimodal


class WindowParams(MethodParams):
    start_epoch: int = Field(0, ge=0, le=100000, description="First epoch (0-based) in which the method acts.")
    end_epoch: int = Field(100000, ge=0, le=100000, description="Epoch at which the method stops (exclusive); plain joint training outside [start, end).")

    @model_validator(mode="after")
    def _ordered(self):
        if self.end_epoch < self.start_epoch:
            raise ValueError(f"end_epoch ({self.end_epoch}) must be >= start_epoch ({self.start_epoch})")
        return self

    def active(self, epoch: int) -> bool:
        return self.start_epoch <= epoch < self.end_epoch


def joint_loss(batch: dict, out, task: str) -> LossParts:
    """Exactly what ``joint`` (unimodal_weight = 0) back-propagates and logs."""
    return fused_and_unimodal(out, batch["label"], task)
