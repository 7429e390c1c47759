"""Model selection: the epoch with the best VALID fused accuracy, never chosen on test.

Reporting the last epoch favours methods that happen to stop at a good moment; reporting the
best *test* epoch is optimistic selection on the test set. The standard protocol, used here,
picks the epoch from the validation split only and reports every split at that epoch:

    e* = argmax_e acc/valid/fused(e)        (earliest epoch on ties; NaN epochs never win)
    acc/best/<split>/<k> = acc/<split>/<k>(e*)   for every split and k ∈ {fused, modalities}
    best/epoch = e*                          (0-based epoch index, as in the store's epoch column)

Both are logged every epoch as a running best, so the last row is the final answer and a
live run shows its best so far. The weights at e* are kept in ``best.pt``. For regression
data ``acc/valid/fused`` is Acc-2 (see :mod:`modalscope.metrics`).

:meth:`BestTracker.update` receives only the validation score; the other splits' metrics
reach :meth:`BestTracker.snapshot` only after the decision, so test can never steer it.
"""

from __future__ import annotations

import math

SELECT_ON = "acc/valid/fused"
BEST_FILE = "best.pt"
NO_VALID = "no validation split (set data.n_valid > 0 for synthetic data): acc/best/* and best.pt are not produced"


class BestTracker:
    """Running argmax of the validation score; state is checkpointed for resume."""

    def __init__(self) -> None:
        self.epoch: int = -1
        self.score: float = -math.inf
        self.metrics: dict[str, float] = {}

    def update(self, epoch: int, valid_score: float) -> bool:
        """True when ``epoch`` is the new best (strictly better validation score)."""
        if valid_score is None or not math.isfinite(valid_score) or valid_score <= self.score:
            return False
        self.epoch, self.score = int(epoch), float(valid_score)
        return True

    def snapshot(self, metrics: dict[str, float]) -> None:
        """Keep the per-split accuracies of the best epoch (call right after a True update)."""
        self.metrics = {"acc/best/" + k[len("acc/"):]: float(v) for k, v in metrics.items() if k.startswith("acc/") and k.count("/") == 2}

    def logs(self) -> dict[str, float]:
        if self.epoch < 0:
            return {}
        return {**self.metrics, "best/epoch": float(self.epoch)}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "score": self.score, "metrics": dict(self.metrics)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state.get("epoch", -1))
        self.score = float(state.get("score", -math.inf))
        self.metrics = {str(k): float(v) for k, v in state.get("metrics", {}).items()}
