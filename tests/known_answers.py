"""Reference values a test computes on its own, to compare with what a run stored.

``hand_test_metrics`` re-predicts the whole test split with a trainer's final weights in one
forward of the whole split (the method's own forward, so CAL's bottleneck and MIE's heads are
included; no engine loop, no metrics module) and scores it by the textbook formulas:
accuracy = mean 1[argmax z = y]; for regression MAE = mean |ŷ − y| and
acc2 = mean 1[ŷ > 0 = y > 0] over non-zero labels.
"""

from __future__ import annotations

import torch


def full_split_batch(trainer, split: str = "test") -> dict:
    ds = trainer.bundle.splits[split]
    items = [ds[i] for i in range(len(ds))]
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]).to(trainer.device) for k in items[0]}


@torch.no_grad()
def hand_test_metrics(trainer) -> dict[str, float]:
    batch = full_split_batch(trainer)
    from modalscope.engine import StepContext

    was = trainer.model.training
    trainer.model.eval()
    out = trainer.method.forward(trainer.model, batch, StepContext(trainer, epoch=trainer.cfg.epochs - 1, step=trainer.global_step))
    fused = trainer.method.predict(out)
    trainer.model.train(was)
    y = batch["label"].cpu()
    res: dict[str, float] = {}
    for key, z in [("fused", fused), *out.logits.items()]:
        z = z.float().cpu()
        if trainer.bundle.task == "classification":
            res[f"acc/test/{key}"] = float((z.argmax(1) == y).double().mean())
        else:
            p, yy = z.reshape(-1).double(), y.double()
            res[f"mae/test/{key}"] = float((p - yy).abs().mean())
            nz = yy != 0
            res[f"acc2/test/{key}"] = res[f"acc/test/{key}"] = float(((p[nz] > 0) == (yy[nz] > 0)).double().mean())
    return res


def assert_final_is_hand_computed(final: dict[str, float], trainer, keys: set[str] | None = None) -> dict[str, float]:
    """Every stored final test metric equals the hand re-prediction (and the wanted keys exist)."""
    import pytest

    hand = hand_test_metrics(trainer)
    for k in keys or ():
        assert k in hand, f"no hand value for {k}"
    for k, v in hand.items():
        assert final[k] == pytest.approx(v, abs=1e-6), k
    return hand


def cuda_run_matches_cpu(tiny, sets: list[str], init_from=None, device: str = "cuda", **over) -> dict[str, float]:
    """The same config trained on CPU and on CUDA.

    Known in advance: both start from the same weights (initialised on the CPU, then moved)
    and see the same first batch, so the stored step-0 ``loss/total`` agrees to float32
    rounding; and the CUDA run's stored final metrics equal a hand re-prediction with its
    final weights.
    """
    import pytest

    from modalscope.engine import Trainer
    from modalscope.store import open_run

    loss0, runs = [], []
    for i, dev in enumerate(("cpu", device)):
        t = Trainer(tiny(name=f"run{i}-{dev}", set=[*sets, f"device={dev}"], **over), init_from=init_from)
        runs.append((t, t.fit()))
        rows = open_run(t.run_dir).scalars("loss/total")
        loss0.append(float(rows.loc[rows["step"] == 0, "value"].iloc[0]))
    t, final = runs[1]
    assert t.device.type == device
    assert loss0[1] == pytest.approx(loss0[0], rel=1e-4)
    assert_final_is_hand_computed(final, t, {"acc/test/fused"})
    return final
