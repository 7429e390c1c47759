import pytest
import torch
import torch.nn.functional as F

from modalscope.engine import Trainer
from modalscope.errors import ConfigError
from modalscope.methods.mmpareto import min_norm_weights, pareto_combine
from modalscope.store import open_run
from tests.conftest import run_cli, tiny_cli_args
from tests.known_answers import assert_final_is_hand_computed, cuda_run_matches_cpu
from tests.method_helpers import THREE_MODAL, first_step, grads, resume_matches, run, window_off_equals_joint


def test_min_norm_weights_for_two_conflicting_vectors():
    g1, g2 = [torch.tensor([1.0]), torch.tensor([0.0])], [torch.tensor([-1.0]), torch.tensor([1.0])]
    w1, w2 = min_norm_weights(g1, g2)
    assert (w1, w2) == pytest.approx((0.6, 0.4))
    out, stats = pareto_combine(g1, g2, alpha=1.5)
    # ĝ = 2(0.6·g1 + 0.4·g2) = (0.4 | 0.8), one value per tensor. Norm recovery is per tensor:
    # tensor 0: ‖g1+g2‖ = 0 < 0.4 → kept; tensor 1: ‖g1+g2‖ = 1 > 0.8 → scaled to 1.
    # (A per-encoder recovery would give (0.4, 0.8)/√0.8 = (0.447, 0.894) instead.)
    torch.testing.assert_close(torch.cat(out), torch.tensor([0.4 * 1.5, 1.0 * 1.5]))
    assert stats["cos"] == pytest.approx(-(0.5**0.5))
    assert stats["conflict"] == 1.0 and stats["w"] == pytest.approx(0.6)
    assert stats["rescale"] == pytest.approx((1.0 + 1.25) / 2)


def test_norm_recovery_is_per_tensor_on_a_two_tensor_encoder():
    # agreeing gradients (w = ½, ½): ĝ_t = g_mm,t + g_m,t, so every tensor keeps ‖g_mm,t + g_m,t‖
    g_mm = [torch.tensor([3.0, 0.0]), torch.tensor([0.0, 1.0])]
    g_m = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]
    out, stats = pareto_combine(g_mm, g_m, alpha=1.0)
    torch.testing.assert_close(out[0], torch.tensor([4.0, 0.0]))
    torch.testing.assert_close(out[1], torch.tensor([0.0, 2.0]))
    assert stats["rescale"] == 1.0
    # conflicting: w1 from the whole encoder; tensor A shrinks below ‖a+b‖ and is scaled back up,
    # tensor B is longer than ‖a+b‖ and is left as is.
    g_mm = [torch.tensor([2.0]), torch.tensor([1.0])]
    g_m = [torch.tensor([-1.0]), torch.tensor([-3.0])]
    w1, w2 = min_norm_weights(g_mm, g_m)
    # d11 = 5, d22 = 10, d12 = -5 → w1 = (10 + 5) / (5 + 10 + 10) = 0.6
    assert (w1, w2) == pytest.approx((0.6, 0.4))
    out, _ = pareto_combine(g_mm, g_m, alpha=2.0)
    # ĝ_A = 2(1.2 − 0.4) = 1.6 ≥ |2 − 1| = 1 → kept; ĝ_B = 2(0.6 − 1.2) = −1.2, |1 − 3| = 2 > 1.2 → −2
    torch.testing.assert_close(out[0], torch.tensor([3.2]))
    torch.testing.assert_close(out[1], torch.tensor([-4.0]))


def test_agreeing_gradients_are_averaged_and_doubled():
    g1, g2 = [torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])]
    out, stats = pareto_combine(g1, g2, alpha=2.0)
    torch.testing.assert_close(out[0], torch.tensor([4.0, 2.0]))
    assert stats["w"] == 0.5 and stats["rescale"] == 1.0 and stats["conflict"] == 0.0


def test_min_norm_weights_by_hand_and_clipped_to_the_simplex():
    # g1 = (1, 0), g2 = (−0.5, 3): w1 = (g2−g1)·g2 / ‖g1−g2‖² = (0.75 + 9) / (2.25 + 9) = 13/15, inside [0, 1]
    w1, w2 = min_norm_weights([torch.tensor([1.0, 0.0])], [torch.tensor([-0.5, 3.0])])
    assert (w1, w2) == pytest.approx((13 / 15, 2 / 15))
    # collinear, g2 = 2·g1: unclipped w1 = (4 − 2) / 1 = 2 → clipped to 1 (the shorter g1 is the min-norm point)
    assert min_norm_weights([torch.tensor([1.0, 0.0])], [torch.tensor([2.0, 0.0])]) == (1.0, 0.0)
    # collinear, g1 = 3·g2: unclipped w1 = (1 − 3) / 4 = −0.5 → clipped to 0
    assert min_norm_weights([torch.tensor([3.0, 0.0])], [torch.tensor([1.0, 0.0])]) == (0.0, 1.0)


def test_encoder_gradients_follow_the_formula_in_a_live_step(tiny):
    t = Trainer(tiny(set=["method.name=mmpareto", "method.alpha=1.5"]))
    assert t.model.head_kind == "trained"
    ctx, parts = first_step(t)
    groups = t.model.param_groups()
    fusion_before = grads(groups["fusion"])
    heads_before = grads(groups["heads"])
    y = ctx.batch["label"]
    out = t.model(ctx.batch)
    expected = {}
    for m in ("audio", "visual"):
        ps = groups[f"encoder/{m}"]
        a = torch.autograd.grad(F.cross_entropy(out.fused, y), ps, retain_graph=True)
        b = torch.autograd.grad(F.cross_entropy(out.logits[m], y), ps, retain_graph=True)
        g_mm, g_m = torch.cat([g.flatten() for g in a]), torch.cat([g.flatten() for g in b])
        cos = torch.dot(g_mm, g_m) / (g_mm.norm() * g_m.norm())
        if cos > 0:
            w1 = 0.5
        else:
            w1 = float(torch.clamp(torch.dot(g_m - g_mm, g_m) / (g_mm - g_m).pow(2).sum(), 0, 1))
        per = []
        for x, z in zip(a, b):
            gh = 2 * (w1 * x + (1 - w1) * z)
            ratio = (x + z).norm() / gh.norm()
            per.append((gh * ratio if ratio > 1 else gh).flatten())
        expected[m] = 1.5 * torch.cat(per)
        assert ctx.logs[f"mmpareto/cos/{m}"] == pytest.approx(float(cos), abs=1e-5)
        # before after_backward the encoder holds the plain ∇L (what gradient diagnostics read)
        torch.testing.assert_close(torch.cat([p.grad.flatten() for p in ps]), g_mm + g_m, rtol=1e-4, atol=1e-7)
    # the fused head sees only the multimodal loss, each unimodal head only its own loss
    for p, g in zip(groups["fusion"], torch.autograd.grad(F.cross_entropy(out.fused, y), groups["fusion"], retain_graph=True)):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-8)
    for m in ("audio", "visual"):
        hp = list(t.model.heads[m].parameters())
        for p, g in zip(hp, torch.autograd.grad(F.cross_entropy(out.logits[m], y), hp, retain_graph=True)):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-8)
    t.method.after_backward(ctx)
    for m in ("audio", "visual"):
        got = torch.cat([p.grad.flatten() for p in groups[f"encoder/{m}"]])
        torch.testing.assert_close(got, expected[m], rtol=1e-4, atol=1e-7)
    for p, g in zip(groups["fusion"], fusion_before):
        assert torch.equal(p.grad, g)
    for p, g in zip(groups["heads"], heads_before):
        assert torch.equal(p.grad, g)


def test_window_off_equals_joint(tiny):
    window_off_equals_joint(tiny, ["method.name=mmpareto"])


def test_resume_matches_uninterrupted(tiny):
    resume_matches(tiny, ["method.name=mmpareto"])


def test_three_modalities(tiny):
    """First step: each encoder's cos and w by hand; every stored step: w = ½ exactly when cos > 0."""
    mods = ("audio", "visual", "text")
    t = Trainer(tiny(name="step", set=["method.name=mmpareto"], data=THREE_MODAL))
    ctx, _ = first_step(t)
    y = ctx.batch["label"]
    out = t.model(ctx.batch)
    for m in mods:
        ps = t.model.param_groups()[f"encoder/{m}"]
        g_mm = torch.cat([g.flatten() for g in torch.autograd.grad(F.cross_entropy(out.fused, y), ps, retain_graph=True)])
        g_m = torch.cat([g.flatten() for g in torch.autograd.grad(F.cross_entropy(out.logits[m], y), ps, retain_graph=True)])
        cos = float(torch.dot(g_mm, g_m) / (g_mm.norm() * g_m.norm()))
        w1 = 0.5 if cos > 0 else min(1.0, max(0.0, float(torch.dot(g_m - g_mm, g_m) / (g_mm - g_m).pow(2).sum())))
        assert ctx.logs[f"mmpareto/cos/{m}"] == pytest.approx(cos, abs=1e-5)
        assert ctx.logs[f"mmpareto/w/{m}"] == pytest.approx(w1, abs=1e-5)
    t.writer.close("finished")
    run_dir, final = run(tiny, ["method.name=mmpareto"], data=THREE_MODAL)
    w = open_run(run_dir).scalars(prefix="mmpareto/").pivot(index="step", columns="name", values="value")
    assert len(w) == 16
    for m in mods:
        agree = w[f"mmpareto/cos/{m}"] > 0
        assert (w.loc[agree, f"mmpareto/w/{m}"] == 0.5).all()
        assert (w[f"mmpareto/conflict/{m}"] == (~agree).astype(float)).all()
    assert "acc/test/text" in final


def test_gated_fusion_gets_trained_heads_and_detached_heads_are_refused(tiny):
    assert Trainer(tiny(set=["method.name=mmpareto", "model.fusion=gated"])).model.head_kind == "trained"
    with pytest.warns(UserWarning, match="never reach the encoders"), pytest.raises(ConfigError, match="mmpareto"):
        Trainer(tiny(set=["method.name=mmpareto", "model.fusion=gated", "model.heads=separate"]))


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    p = run_cli("train", "--method", "mmpareto", *tiny_cli_args(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "acc/test/fused=" in p.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda(tiny):
    cuda_run_matches_cpu(tiny, ["method.name=mmpareto"], data=THREE_MODAL)


@pytest.mark.filterwarnings("ignore:unpickling")
def test_regression_with_sequence_encoders(tmp_path):
    from tests.datafixtures import mmsa_dict, train_config, write_pickle

    write_pickle(tmp_path / "aligned_50.pkl", mmsa_dict(aligned=True))
    data = {"name": "mosi", "path": str(tmp_path / "aligned_50.pkl"), "allow_pickle": True}
    t = Trainer(train_config(tmp_path, data, epochs=1, method={"name": "mmpareto"}))
    final = t.fit()
    assert_final_is_hand_computed(final, t, {"mae/test/fused"})
    cos = open_run(t.run_dir).scalars("mmpareto/cos/text")["value"]
    assert len(cos) == 3 and ((cos >= -1) & (cos <= 1)).all()


def test_antiparallel_gradients_never_give_a_complex_norm():
    """g_uni = −g_mm: the MinNorm point is 0 and rounding can make ‖ĝ‖² slightly negative."""
    import torch

    from modalscope.methods.mmpareto import pareto_combine

    g = [torch.tensor([0.1, 0.2, 0.3], dtype=torch.float32)]
    out, stats = pareto_combine(g, [-x for x in g], alpha=1.0)
    assert stats["conflict"] == 1.0 and stats["w"] == 0.5
    # ‖g_mm + g_uni‖ = 0 exactly, so there is nothing to rescale to: the factor stays 1
    assert stats["rescale"] == 1.0
    assert torch.allclose(out[0], torch.zeros(3), atol=1e-6)
