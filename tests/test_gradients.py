import math

import pytest
import torch

from core.diagnostics.gradients import dominance, gradient_stats, group_norm


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
    from core.engine import StepContext, Trainer
    from core.data import BatchLoader

    cfg = tiny(epochs=1)
    t = Trainer(cfg)
    batch = next(iter(BatchLoader(t.bundle.splits["train"], 32, shuffle=False)))
    t.model.zero_grad()
    out = t.model(batch)
    torch.nn.functional.cross_entropy(out.fused, batch["label"]).backward()
    expected = math.sqrt(sum(float((p.grad**2).sum()) for p in t.model.encoders["visual"].parameters()))
    stats = t.diagnostics.after_backward(StepContext(t))
    assert stats["grad_norm/visual"] == pytest.approx(expected, rel=1e-5)
    t.writer.close("finished")
