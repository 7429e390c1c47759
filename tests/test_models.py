import pytest
import torch

from modalscope.models.multimodal import MultimodalModel


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


def test_resolve_heads_follows_the_method_and_warns_on_overrides():
    from modalscope.models import resolve_heads

    assert resolve_heads("auto", "trained", True) == ("trained", None)
    assert resolve_heads("auto", "slice", True) == ("slice", None)
    assert resolve_heads("auto", None, False) == ("separate", None)
    kind, warn = resolve_heads("trained", "slice", True)
    assert kind == "trained" and "untrained heads" in warn
    kind, warn = resolve_heads("slice", "trained", True)
    assert kind == "slice" and "fusion-layer slices" in warn
    assert resolve_heads("trained", "trained", True) == ("trained", None)


def test_trained_heads_keep_the_fusion_slices_in_the_output():
    m = _model("concat", heads="trained")
    out = m({"audio": torch.randn(3, 5), "visual": torch.randn(3, 7)})
    assert torch.allclose(out.slices["audio"] + out.slices["visual"], out.fused, atol=1e-5)
    assert not torch.allclose(out.logits["audio"], out.slices["audio"])
    out.logits["audio"].sum().backward()
    assert m.fusion.fc.weight.grad is None and m.encoders["audio"].net[0].weight.grad is not None


@pytest.mark.parametrize(
    "method, kind",
    [("joint", "slice"), ("ogm_ge", "slice"), ("mmpareto", "trained"), ("cpsl", "trained"), ("gmm_adaptive", "trained"),
     ("cal", "trained"), ("joint:unimodal_weight=1", "trained"), ("cpsl:aux_weight=0", "slice")],
)
def test_methods_that_train_unimodal_losses_get_trained_heads(tiny, method, kind):
    import warnings

    from modalscope.engine import Trainer

    name, _, knob = method.partition(":")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = Trainer(tiny(set=[f"method.name={name}"] + ([f"method.{knob}"] if knob else [])))
    t.writer.close("finished", "")
    t.log_file.close()
    assert t.model.head_kind == kind


def test_untrained_heads_override_is_warned_and_recorded(tiny):
    from modalscope.engine import Trainer
    from modalscope.store import open_run

    with pytest.warns(UserWarning, match="untrained heads"):
        t = Trainer(tiny(set=["method.name=joint", "model.heads=trained"]))
    t.writer.flush()
    ev = open_run(t.run_dir).events()
    assert any(k == "warning" and "untrained heads" in msg for k, msg in zip(ev["kind"], ev["message"]))
    t.writer.close("finished", "")
    t.log_file.close()
