"""Unimodal ensemble: every encoder with its own head, trained on its own loss only.

This is the reference the imbalance literature compares joint training against (e.g. the
"uni-modal ensemble" of Du et al., *On Uni-Modal Feature Learning in Supervised Multi-Modal
Learning*, ICML 2023): no modality's gradient ever depends on another, so none can be
suppressed, and prediction combines the independently trained experts.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from modalscope.methods.base import LossParts, Method, MethodParams, register_method, task_loss


class EnsembleParams(MethodParams):
    name: Literal["ensemble"] = "ensemble"


def ensemble_prediction(logits: dict[str, torch.Tensor], task: str = "classification") -> torch.Tensor:
    """``Σ_m log softmax(z_m)``: the product of the experts' class posteriors (up to a constant).

    For regression the experts' outputs are averaged.
    """
    zs = list(logits.values())
    if task == "regression":
        return torch.stack(zs).mean(0)
    return torch.stack([F.log_softmax(z, dim=-1) for z in zs]).sum(0)


@register_method("ensemble")
class Ensemble(Method):
    """``L = Σ_m CE(z_m, y)`` with ``z_m = head_m(enc_m(x_m))``; prediction ``Σ_m log softmax(z_m)``.

    Uses the model's trained per-modality heads (``model.heads=trained``, what ``auto`` builds
    for it): when the config asks for another head kind (slices of the fusion layer, detached
    monitor heads), the model gets trained heads at setup, before the optimiser is built. The fusion layer is
    never used, so it receives no gradient.
    """

    Params = EnsembleParams
    family = "baseline"

    @classmethod
    def unimodal_heads(cls, params) -> str:
        return "trained"

    def setup(self, trainer) -> None:
        model = trainer.model
        if model.head_kind != "trained":
            device = next(model.parameters()).device
            model.heads = nn.ModuleDict(
                {m: nn.Linear(model.encoders[m].out_dim, model.n_out) for m in model.modalities}
            ).to(device)
            model.head_kind = "trained"
            model.__dict__.pop("_groups", None)

    def loss(self, batch, out, ctx) -> LossParts:
        parts = {m: task_loss(z, batch["label"], self.task) for m, z in out.logits.items()}
        total = sum(parts.values())
        return LossParts(total=total, parts={"fused": task_loss(self.predict(out), batch["label"], self.task).detach(),
                                             **{m: v.detach() for m, v in parts.items()}})

    def predict(self, out) -> torch.Tensor:
        return ensemble_prediction(out.logits, self.task)
