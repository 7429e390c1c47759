import math

import pytest
import torch

from modalscope.diagnostics.gradients import dominance, gradient_stats, group_norm


def test_group_norm_equals_hand_computation():
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(1, 2))
    a.grad = torch.tensor([3.0, 0.0])
    b.grad = torch.tensor([[0.0, 4.0]])
    assert float(group_norm([a, b])) == pytest.approx(5.0)
    c = torch.nn.Parameter(torch.zeros(1))
    assert float(group_norm([c])) == 0.0


def test_gradient_stats_shares_ratio_flag():
    pa = torch.nn.Parameter(torch.zeros(1))
    pv = torch.nn.Parameter(torch.zeros(1))
    pf = torch.nn.Parameter(torch.zeros(1))
    pa.grad, pv.grad, pf.grad = torch.tensor([6.0]), torch.tensor([-2.0]), torch.tensor([1.0])
    out = gradient_stats({"encoder/audio": [pa], "encoder/visual": [pv], "fusion": [pf]}, ["audio", "visual"], tau=2.0)
    assert out["grad_norm/audio"] == pytest.approx(6.0)
    assert out["grad_norm/visual"] == pytest.approx(2.0)
    assert out["grad_norm/fusion"] == pytest.approx(1.0)
    assert out["grad_share/audio"] == pytest.approx(0.75)
    assert out["grad_ratio"] == pytest.approx(3.0)
    assert out["conflict/flag"] == 1.0
    out = gradient_stats({"encoder/audio": [pa], "encoder/visual": [pv]}, ["audio", "visual"], tau=4.0)
    assert out["conflict/flag"] == 0.0


def test_dominance_three_modalities():
    d, r = dominance({"a": 4.0, "v": 1.0, "t": 3.0})
    assert d == "a" and r == pytest.approx(2.0)
    d, r = dominance({"a": 1.0, "v": 0.0})
    assert d == "a" and math.isinf(r)


def test_engine_logs_hand_computable_grad_norm(tiny):
    """The logged encoder norm equals the norm recomputed from the same batch and weights."""
    from modalscope.engine import Trainer
    from modalscope.data import BatchLoader

    cfg = tiny(epochs=1)
    t = Trainer(cfg)
    batch = next(iter(BatchLoader(t.bundle.splits["train"], 32, shuffle=False)))
    t.model.zero_grad()
    out = t.model(batch)
    torch.nn.functional.cross_entropy(out.fused, batch["label"]).backward()
    expected = math.sqrt(sum(float((p.grad**2).sum()) for p in t.model.encoders["visual"].parameters()))
    stats = gradient_stats(t.model.param_groups(), t.bundle.modalities)
    assert stats["grad_norm/visual"] == pytest.approx(expected, rel=1e-5)
    t.writer.close("finished")


def test_stored_grad_norm_rows_equal_a_hand_computed_first_step(tiny):
    """Train one step through the engine; the stored step-0 rows equal norms computed here.

    One batch holds the whole training split, so the step's gradient is that of the mean
    cross-entropy of the fused output over all 32 samples, whatever the shuffled order.
    The reference recomputes it on a copy of the initial weights with float64 sums.
    """
    import copy

    from modalscope.engine import Trainer
    from modalscope.store import open_run

    t = Trainer(tiny(epochs=1, batch_size=32, data={"n_train": 32}, set=["method.name=joint", "diagnostics.conflict=false"]))
    ref = copy.deepcopy(t.model)
    split = t.bundle.splits["train"]
    batch = split.batch(torch.arange(len(split)))
    torch.nn.functional.cross_entropy(ref(batch).fused, batch["label"]).backward()
    hand = {m: math.sqrt(sum(float(p.grad.double().square().sum()) for p in ref.encoders[m].parameters())) for m in ("audio", "visual")}
    t.fit()
    rows = open_run(t.run_dir).scalars()
    step0 = {n: v for n, v in zip(rows[rows["step"] == 0]["name"], rows[rows["step"] == 0]["value"])}
    for m in ("audio", "visual"):
        assert step0[f"grad_norm/{m}"] == pytest.approx(hand[m], rel=1e-5)
        assert step0[f"grad_share/{m}"] == pytest.approx(hand[m] / (hand["audio"] + hand["visual"]), rel=1e-5)
    big, small = max(hand.values()), min(hand.values())
    assert step0["grad_ratio"] == pytest.approx(big / small, rel=1e-5)
    assert hand["audio"] != pytest.approx(hand["visual"], rel=1e-2), "planted imbalance: the two norms differ"
