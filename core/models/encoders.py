"""Per-modality encoders, chosen by input kind. Feature vectors get an MLP."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

_ENCODERS: dict[str, Callable[..., nn.Module]] = {}


def register_encoder(kind: str):
    def deco(fn):
        _ENCODERS[kind] = fn
        return fn

    return deco


def build_encoder(kind: str, shape: tuple[int, ...], hidden: int, embed_dim: int, depth: int, dropout: float) -> nn.Module:
    if kind not in _ENCODERS:
        raise ValueError(f"no encoder for input kind {kind!r}; known: {', '.join(sorted(_ENCODERS))}")
    return _ENCODERS[kind](shape=shape, hidden=hidden, embed_dim=embed_dim, depth=depth, dropout=dropout)


class MLPEncoder(nn.Module):
    """``depth`` hidden ReLU layers of width ``hidden`` followed by a ReLU projection to ``embed_dim``."""

    def __init__(self, in_dim: int, hidden: int, embed_dim: int, depth: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = hidden
        layers += [nn.Linear(d, embed_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


@register_encoder("vector")
def _mlp(shape, hidden, embed_dim, depth, dropout):
    in_dim = 1
    for s in shape:
        in_dim *= int(s)
    return MLPEncoder(in_dim, hidden, embed_dim, depth, dropout)
