"""Per-modality encoders, chosen by input kind: MLP for vectors, small 2-D CNNs for
spectrograms and (per-frame, time-pooled) video frames, a length-aware GRU for sequences.

An encoder whose class sets ``takes_lengths = True`` is called as ``enc(x, lengths)`` with
the batch's ``<modality>_len`` tensor (or None)."""

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


class ConvStack(nn.Module):
    """``depth + 1`` blocks of 3×3 conv (stride 2) → BatchNorm → ReLU, then global average pooling.

    A 2×2 max-pool follows the first block (a ResNet-style stem), so the wider later blocks
    run on a quarter of the positions: a (257, 188) CREMA-D spectrogram costs ~4× less.

    Channels start at ``max(8, hidden // 4)`` and double per block (capped at ``hidden``);
    a linear ReLU projection maps the pooled vector to ``embed_dim``. Small on purpose: it is
    the encoder imbalance studies train from scratch, not a pretrained backbone.
    """

    def __init__(self, in_ch: int, hidden: int, embed_dim: int, depth: int, dropout: float):
        super().__init__()
        ch = max(8, hidden // 4)
        layers: list[nn.Module] = []
        c_in = in_ch
        for i in range(depth + 1):
            layers += [nn.Conv2d(c_in, ch, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU()]
            if i == 0:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            c_in, ch = ch, min(ch * 2, max(hidden, 8))
        self.conv = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Sequential(nn.Linear(c_in, embed_dim), nn.ReLU())
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).mean(dim=(2, 3))
        return self.proj(self.drop(h))


class SpectrogramEncoder(nn.Module):
    """2-D CNN over a (F, T) or (C, F, T) spectrogram."""

    def __init__(self, shape: tuple[int, ...], hidden: int, embed_dim: int, depth: int, dropout: float):
        super().__init__()
        if len(shape) not in (2, 3):
            raise ValueError(f"spectrogram input must be (F, T) or (C, F, T), got {tuple(shape)}")
        self.in_ch = 1 if len(shape) == 2 else int(shape[0])
        self.net = ConvStack(self.in_ch, hidden, embed_dim, depth, dropout)
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.net(x)


class FrameEncoder(nn.Module):
    """A 2-D CNN shared over the T frames of a clip, then mean pooling over time.

    Input ``(B, T, C, H, W)``; each frame is encoded independently (``(B·T, C, H, W)``) and
    ``h = (1/T) Σ_t f(x_t)``, the temporal pooling OGM-GE applies to its ResNet frame features.
    """

    def __init__(self, shape: tuple[int, ...], hidden: int, embed_dim: int, depth: int, dropout: float):
        super().__init__()
        if len(shape) != 4:
            raise ValueError(f"frames input must be (T, C, H, W), got {tuple(shape)}")
        self.net = ConvStack(int(shape[1]), hidden, embed_dim, depth, dropout)
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        return self.net(x.reshape(b * t, *x.shape[2:])).view(b, t, -1).mean(1)


class SequenceEncoder(nn.Module):
    """GRU over ``(B, L, D)`` that honours per-sample lengths (packed sequences).

    The feature is the last hidden state of the top layer at each sample's own last valid
    step, so zero padding never reaches it; a length of 0 (an empty sequence) is treated
    as 1. Without lengths every sequence is taken as full length.
    """

    takes_lengths = True

    def __init__(self, shape: tuple[int, ...], hidden: int, embed_dim: int, depth: int, dropout: float):
        super().__init__()
        if len(shape) != 2:
            raise ValueError(f"sequence input must be (L, D), got {tuple(shape)}")
        self.gru = nn.GRU(int(shape[1]), hidden, num_layers=depth, batch_first=True, dropout=dropout if depth > 1 else 0.0)
        self.proj = nn.Sequential(nn.Linear(hidden, embed_dim), nn.ReLU())
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            _, h = self.gru(x)
        else:
            ln = lengths.detach().to("cpu", torch.int64).clamp(min=1, max=x.shape[1])
            packed = nn.utils.rnn.pack_padded_sequence(x, ln, batch_first=True, enforce_sorted=False)
            _, h = self.gru(packed)
        return self.proj(h[-1])


@register_encoder("spectrogram")
def _spectrogram(shape, hidden, embed_dim, depth, dropout):
    return SpectrogramEncoder(tuple(shape), hidden, embed_dim, depth, dropout)


@register_encoder("frames")
def _frames(shape, hidden, embed_dim, depth, dropout):
    return FrameEncoder(tuple(shape), hidden, embed_dim, depth, dropout)


@register_encoder("sequence")
def _sequence(shape, hidden, embed_dim, depth, dropout):
    return SequenceEncoder(tuple(shape), hidden, embed_dim, depth, dropout)
