import pytest
import torch

from core.models.multimodal import MultimodalModel


def _model(fusion, heads="auto"):
    torch.manual_seed(0)
    return MultimodalModel(["audio", "visual"], {"audio": "vector", "visual": "vector"}, {"audio": (5,), "visual": (7,)},
                           n_out=4, hidden=8, embed_dim=6, depth=1, fusion=fusion, heads=heads)


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_sliced_logits_sum_to_fused(fusion):
    m = _model(fusion)
    batch = {"audio": torch.randn(3, 5), "visual": torch.randn(3, 7)}
    out = m(batch)
    assert torch.allclose(out.logits["audio"] + out.logits["visual"], out.fused, atol=1e-5)


def test_gated_uses_detached_monitor_heads():
    m = _model("gated")
    assert m.head_kind == "separate"
    out = m({"audio": torch.randn(3, 5), "visual": torch.randn(3, 7)})
    out.logits["audio"].sum().backward()
    assert all(p.grad is None for p in m.encoders["audio"].parameters())
    assert m.heads["audio"].weight.grad is not None


def test_drop_zeroes_input():
    m = _model("concat")
    batch = {"audio": torch.randn(3, 5), "visual": torch.randn(3, 7)}
    a = m(batch, drop={"visual"})
    b = m({"audio": batch["audio"], "visual": torch.zeros(3, 7)})
    assert torch.allclose(a.fused, b.fused)


def test_param_groups_partition_parameters():
    m = _model("concat")
    groups = m.param_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    assert set(groups) == {"encoder/audio", "encoder/visual", "fusion"}
