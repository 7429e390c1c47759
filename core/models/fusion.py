"""Late-fusion heads that always expose per-modality logits.

* ``concat``: ``z = W [h_1; …; h_M] + b``. Per-modality logits are the slices of the same
  layer, ``z_m = h_m W[:, slice_m]^T + b/M`` (the OGM-GE convention), so they sum to ``z``
  and reflect exactly what each modality contributes to the fused decision.
* ``sum``: ``z = Σ_m (W_m h_m + b_m)`` with ``z_m = W_m h_m + b_m``.
* ``gated``: ``z = W (Σ_m g_m ⊙ h_m) + b`` with ``g = σ(W_g [h_1; …; h_M])`` per modality
  and dimension. Gating mixes modalities inside the layer, so unimodal logits come from
  separate *monitor heads* trained on detached features (they never affect the model).
"""

from __future__ import annotations

import torch
from torch import nn


class ConcatFusion(nn.Module):
    sliced = True

    def __init__(self, modalities: list[str], dim: int, n_out: int):
        super().__init__()
        self.modalities = list(modalities)
        self.dim = dim
        self.fc = nn.Linear(dim * len(modalities), n_out)

    def forward(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n = len(self.modalities)
        bias = self.fc.bias / n
        logits = {}
        for i, m in enumerate(self.modalities):
            w = self.fc.weight[:, i * self.dim : (i + 1) * self.dim]
            logits[m] = torch.addmm(bias, feats[m], w.t())
        fused = logits[self.modalities[0]]
        for m in self.modalities[1:]:
            fused = fused + logits[m]
        return fused, logits

    def input_slice(self, modality: str) -> slice:
        i = self.modalities.index(modality)
        return slice(i * self.dim, (i + 1) * self.dim)


class SumFusion(nn.Module):
    sliced = True

    def __init__(self, modalities: list[str], dim: int, n_out: int):
        super().__init__()
        self.modalities = list(modalities)
        self.fc = nn.ModuleDict({m: nn.Linear(dim, n_out) for m in modalities})

    def forward(self, feats):
        logits = {m: self.fc[m](feats[m]) for m in self.modalities}
        fused = torch.stack([logits[m] for m in self.modalities]).sum(0)
        return fused, logits


class GatedFusion(nn.Module):
    sliced = False

    def __init__(self, modalities: list[str], dim: int, n_out: int):
        super().__init__()
        self.modalities = list(modalities)
        self.gate = nn.Linear(dim * len(modalities), dim * len(modalities))
        self.fc = nn.Linear(dim, n_out)
        self.dim = dim

    def forward(self, feats):
        h = torch.cat([feats[m] for m in self.modalities], dim=1)
        g = torch.sigmoid(self.gate(h)).view(h.shape[0], len(self.modalities), self.dim)
        mixed = (g * h.view(h.shape[0], len(self.modalities), self.dim)).sum(1)
        return self.fc(mixed), {}


FUSIONS = {"concat": ConcatFusion, "sum": SumFusion, "gated": GatedFusion}
