"""Unimodal training: the model is built with one modality only (the reference every
multimodal run must be compared with; most-requested baseline in this field's trackers)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modalscope.errors import ConfigError
from modalscope.methods.base import LossParts, Method, MethodParams, register_method, task_loss


class UnimodalParams(MethodParams):
    name: Literal["unimodal"] = "unimodal"
    modality: str = Field("visual", min_length=1, description="The single modality to train on.")


@register_method("unimodal")
class Unimodal(Method):
    """``L = CE(z_m, y)`` on a model that only has modality ``m``; fused output = ``z_m``."""

    Params = UnimodalParams
    family = "baseline"

    @classmethod
    def check_config(cls, params, modalities, task) -> None:
        if params.modality not in modalities:
            raise ConfigError(
                f"method.modality: {params.modality!r} is not a modality of this dataset; choose one of: {', '.join(modalities)}"
            )

    @classmethod
    def used_modalities(cls, params, modalities):
        return [params.modality]

    def loss(self, batch, out, ctx) -> LossParts:
        fused = task_loss(out.fused, batch["label"], self.task)
        return LossParts(total=fused, parts={"fused": fused, self.params.modality: fused.detach()})
