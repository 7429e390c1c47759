"""Per-sample values keyed by dataset index (the training split's ``batch["idx"]``).

Methods that reason about individual samples (GMM-guided training: the modality gap of
every sample) need a value per sample that outlives a batch. The trainer owns these stores
(:meth:`modalscope.engine.Trainer.sample_store`) and checkpoints them, so a method never keeps
its own copy of the dataset and a resumed run sees the same values.

``update_ema`` follows ``v_i ← μ·v_i + (1 − μ)·x_i`` for a sample seen before and
``v_i ← x_i`` the first time it is seen, so the first epoch is not biased towards zero.
"""

from __future__ import annotations

import torch


class SampleStore:
    """A tensor of shape ``(n, *shape)`` plus a ``seen`` mask; all updates are by index."""

    def __init__(self, n: int, momentum: float = 0.9, shape: tuple[int, ...] = (), device: torch.device | str = "cpu"):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.values = torch.zeros((int(n), *shape), dtype=torch.float32, device=device)
        self.seen = torch.zeros(int(n), dtype=torch.bool, device=device)

    def __len__(self) -> int:
        return self.values.shape[0]

    def _prep(self, idx, values) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(idx, device=self.values.device).long().reshape(-1)
        values = torch.as_tensor(values, dtype=torch.float32).detach().to(self.values.device)
        return idx, values.reshape((len(idx), *self.values.shape[1:]))

    def set(self, idx, values) -> None:
        idx, values = self._prep(idx, values)
        self.values[idx] = values
        self.seen[idx] = True

    def update_ema(self, idx, values) -> None:
        idx, values = self._prep(idx, values)
        old = self.values[idx]
        seen = self.seen[idx].reshape((-1,) + (1,) * (values.dim() - 1))
        self.values[idx] = torch.where(seen, self.momentum * old + (1.0 - self.momentum) * values, values)
        self.seen[idx] = True

    def get(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, seen) for ``idx``."""
        idx = torch.as_tensor(idx, device=self.values.device).long().reshape(-1)
        return self.values[idx], self.seen[idx]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"values": self.values.cpu().clone(), "seen": self.seen.cpu().clone(), "momentum": torch.tensor(self.momentum, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        dev = self.values.device
        self.values = state["values"].to(dev, torch.float32).clone()
        self.seen = state["seen"].to(dev, torch.bool).clone()
        self.momentum = float(state["momentum"])

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> "SampleStore":
        v = state["values"]
        s = cls(v.shape[0], float(state["momentum"]), tuple(v.shape[1:]), device)
        s.load_state_dict(state)
        return s
