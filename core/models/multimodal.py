"""The multimodal model: one encoder per modality, a fusion layer, per-modality logits.

Parameters are tagged by role (``encoder/<m>``, ``fusion``, ``heads``) through
:meth:`MultimodalModel.param_groups`, which is how gradient diagnostics and gradient
modulation methods find "the audio encoder" without string matching on names.

Per-modality logits ``z_m`` come from one of three head kinds (``model.heads``):

* ``slice``: the slices of the concat/sum fusion layer, ``z_m = h_m W_mᵀ + b/M`` (OGM-GE);
* ``trained``: a separate linear head per modality on ``h_m``, trained with the encoders by
  whatever unimodal loss the method adds (MMPareto's ``head_audio``/``head_video``);
* ``separate``: detached monitor heads the engine trains on their own (never reach the encoders).

``auto`` lets the method choose (:func:`resolve_heads`). The fusion-layer slices are always
available in ``ModelOutput.slices`` (empty for gated fusion), whatever the head kind, so a
method whose rule is defined on the slices (OGM-GE) reads them even with trained heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from modalscope.models.encoders import build_encoder
from modalscope.models.fusion import FUSIONS


@dataclass
class ModelOutput:
    fused: torch.Tensor
    logits: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    slices: dict[str, torch.Tensor] = field(default_factory=dict)


def resolve_heads(requested: str, wanted: str | None, sliced: bool) -> tuple[str, str | None]:
    """(head kind to build, warning or None) from ``model.heads`` and the method's wish.

    ``wanted`` is what the method declares (:meth:`modalscope.methods.base.Method.unimodal_heads`):
    ``"trained"`` when it trains unimodal losses (they must act on heads of their own, not on
    the fusion layer), ``"slice"`` when it reads the fusion-layer slices and trains no unimodal
    loss, None when it does not care. ``requested`` (``model.heads``) overrides unless it is
    ``auto``; a choice that leaves the method's per-modality scores or losses on heads no loss
    trains, or that moves its unimodal losses onto the fusion layer, comes with a warning.
    """
    default = "slice" if sliced else "separate"
    if requested == "auto":
        if wanted == "trained":
            return "trained", None
        return default, None
    warn = None
    if wanted == "trained" and requested == "slice":
        warn = "model.heads=slice: this method's unimodal losses act on the fusion-layer slices instead of separate trained heads"
    elif wanted == "trained" and requested == "separate":
        warn = "model.heads=separate: this method's unimodal losses train detached monitor heads and never reach the encoders"
    elif requested == "trained" and wanted != "trained":
        warn = (
            "model.heads=trained: no loss of this method trains the per-modality heads, so per-modality "
            "accuracies (and any score read from out.logits) come from untrained heads"
        )
    return requested, warn


class MultimodalModel(nn.Module):
    def __init__(
        self,
        modalities: list[str],
        kinds: dict[str, str],
        shapes: dict[str, tuple[int, ...]],
        n_out: int,
        hidden: int = 128,
        embed_dim: int = 64,
        depth: int = 2,
        dropout: float = 0.0,
        fusion: str = "concat",
        heads: str = "auto",
    ):
        super().__init__()
        self.modalities = list(modalities)
        self.n_out = n_out
        self.encoders = nn.ModuleDict(
            {m: build_encoder(kinds[m], shapes[m], hidden, embed_dim, depth, dropout) for m in modalities}
        )
        if len(modalities) == 1:
            fusion = "sum"
        self.fusion_kind = fusion
        self.fusion = FUSIONS[fusion](self.modalities, embed_dim, n_out)
        if heads == "auto":
            heads = "slice" if self.fusion.sliced else "separate"
        if heads == "slice" and not self.fusion.sliced:
            raise ValueError(f"fusion {fusion!r} has no per-modality slices; use model.heads=separate")
        self.head_kind = heads
        self.heads = nn.ModuleDict({m: nn.Linear(embed_dim, n_out) for m in modalities}) if heads in ("separate", "trained") else None
        self.feature_hook = None

    def encode(self, batch: dict, drop: set[str] | frozenset = frozenset(), fill: dict | None = None) -> dict[str, torch.Tensor]:
        """Features per modality; a modality in ``drop`` gets zero input (or ``fill[m]``)."""
        feats = {}
        for m in self.modalities:
            x = batch[m]
            if m in drop:
                x = fill[m].expand_as(x) if fill and m in fill else torch.zeros_like(x)
            enc = self.encoders[m]
            feats[m] = enc(x, batch.get(f"{m}_len")) if getattr(enc, "takes_lengths", False) else enc(x)
        if self.feature_hook is not None:
            feats = self.feature_hook(feats)
        return feats

    def head(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fused, logits, _ = self.head_and_slices(feats)
        return fused, logits

    def head_and_slices(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(fused logits, per-modality logits of the head kind, fusion-layer slices)."""
        fused, slices = self.fusion(feats)
        logits = slices
        if self.heads is not None:
            logits = {m: self.heads[m](feats[m] if self.head_kind == "trained" else feats[m].detach()) for m in self.modalities}
        return fused, logits, slices

    def forward(self, batch: dict, drop: set[str] | frozenset = frozenset(), fill: dict | None = None) -> ModelOutput:
        feats = self.encode(batch, drop, fill)
        fused, logits, slices = self.head_and_slices(feats)
        return ModelOutput(fused=fused, logits=logits, features=feats, slices=slices)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role; computed once (the module tree is fixed after construction)."""
        cached = self.__dict__.get("_groups")
        if cached is not None:
            return cached
        groups = {f"encoder/{m}": list(self.encoders[m].parameters()) for m in self.modalities}
        groups["fusion"] = list(self.fusion.parameters())
        if self.heads is not None:
            groups["heads"] = list(self.heads.parameters())
        self.__dict__["_groups"] = groups
        return groups

    def encoder_params(self, m: str) -> list[nn.Parameter]:
        return list(self.encoders[m].parameters())
