"""Plain joint training: cross-entropy on the fused output only (the baseline every paper beats)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modalscope.methods.base import LossParts, Method, MethodParams, fused_and_unimodal, register_method


class JointParams(MethodParams):
    name: Literal["joint"] = "joint"
    unimodal_weight: float = Field(
        0.0, ge=0.0, le=10.0, description="Weight of the per-modality losses added to the fused loss (0 = plain late fusion)."
    )


@register_method("joint")
class Joint(Method):
    """``L = CE(z, y) + w·Σ_m CE(z_m, y)`` with ``w = unimodal_weight`` (0 by default).

    With ``w = 0`` this is the late-fusion baseline in which a fast modality suppresses a
    slow one; the unimodal logits (fusion-layer slices) are then only read, never trained on
    directly. With ``w > 0`` the unimodal losses act on separate trained heads.
    """

    Params = JointParams
    family = "baseline"

    @classmethod
    def unimodal_heads(cls, params) -> str | None:
        return "trained" if params.unimodal_weight > 0 else None

    def loss(self, batch, out, ctx) -> LossParts:
        return fused_and_unimodal(out, batch["label"], self.task, self.params.unimodal_weight)
