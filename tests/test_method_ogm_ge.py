import math

import pytest
import torch

from modalscope.engine import Trainer
from modalscope.methods.ogm_ge import ogm_coefficients, ogm_ratios, ogm_scores
from modalscope.store import open_run
from tests.conftest import run_cli, tiny_cli_args
from tests.known_answers import cuda_run_matches_cpu
from tests.method_helpers import THREE_MODAL, first_step, grads, resume_matches, run, window_off_equals_joint


def test_coefficient_on_a_two_sample_batch():
    y = torch.tensor([0, 1])
    logits = {
        "audio": torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8]])),
        "visual": torch.log(torch.tensor([[0.6, 0.4], [0.5, 0.5]])),
    }
    s = {m: float(v) for m, v in ogm_scores(logits, y).items()}
    assert s["audio"] == pytest.approx(1.7, abs=1e-6) and s["visual"] == pytest.approx(1.1, abs=1e-6)
    r = ogm_ratios(s)
    assert r["audio"] == pytest.approx(1.7 / 1.1) and r["visual"] == pytest.approx(1.1 / 1.7)
    k = ogm_coefficients(r, alpha=0.3)
    assert k["audio"] == pytest.approx(1 - math.tanh(0.3 * 1.7 / 1.1), abs=1e-6)
    assert k["audio"] == pytest.approx(0.56696, abs=1e-4)
    assert k["visual"] == 1.0


def test_three_modality_ratios():
    s = {"audio": 3.0, "visual": 1.0, "text": 2.0}
    assert ogm_ratios(s, "min") == pytest.approx({"audio": 3.0, "visual": 0.5, "text": 2.0})
    assert ogm_ratios(s, "mean") == pytest.approx({"audio": 2.25, "visual": (1 / 3 + 1 / 2) / 2, "text": (2 + 2 / 3) / 2})
    k = ogm_coefficients(ogm_ratios(s, "min"), 0.5)
    assert k == pytest.approx({"audio": 1 - math.tanh(1.5), "visual": 1.0, "text": 1 - math.tanh(1.0)})


def _setup(tiny, ge: bool):
    t = Trainer(tiny(set=["method.name=ogm_ge", "method.alpha=0.5", f"method.ge={str(ge).lower()}"]))
    ctx, _ = first_step(t)
    y = ctx.batch["label"]
    s = {m: torch.softmax(z.detach(), 1)[torch.arange(len(y)), y].sum().item() for m, z in ctx.out.logits.items()}
    k = {m: (1 - math.tanh(0.5 * s[m] / s[o])) if s[m] > s[o] else 1.0 for m, o in (("audio", "visual"), ("visual", "audio"))}
    groups = t.model.param_groups()
    before = {g: grads(ps) for g, ps in groups.items()}
    return t, ctx, k, groups, before, s


def test_plain_ogm_scales_only_dominant_encoder_weights(tiny):
    t, ctx, k, groups, before, s = _setup(tiny, ge=False)
    assert min(k.values()) < 1.0
    t.method.after_backward(ctx)
    for m in ("audio", "visual"):
        for p, g in zip(groups[f"encoder/{m}"], before[f"encoder/{m}"]):
            expect = g * k[m] if p.dim() >= 2 else g
            torch.testing.assert_close(p.grad, expect, rtol=1e-6, atol=0)
    for p, g in zip(groups["fusion"], before["fusion"]):
        assert torch.equal(p.grad, g)
    assert ctx.logs["ogm/coeff/audio"] == pytest.approx(k["audio"])
    assert ctx.logs["ogm/ratio"] == pytest.approx(s["audio"] / s["visual"], rel=1e-5)


def test_ge_adds_gaussian_noise_with_the_raw_gradient_std(tiny):
    t, ctx, k, groups, before, _ = _setup(tiny, ge=True)
    torch.manual_seed(123)
    t.method.after_backward(ctx)
    torch.manual_seed(123)
    for m in t.model.modalities:
        for p, g in zip(groups[f"encoder/{m}"], before[f"encoder/{m}"]):
            if p.dim() < 2:
                assert torch.equal(p.grad, g)
                continue
            expect = g * k[m] + torch.zeros_like(g).normal_(0.0, g.std().item() + 1e-8)
            torch.testing.assert_close(p.grad, expect, rtol=1e-6, atol=1e-9)


def test_scores_come_from_the_fusion_slices_even_with_trained_heads(tiny):
    with pytest.warns(UserWarning, match="untrained heads"):
        t = Trainer(tiny(set=["method.name=ogm_ge", "method.ge=false", "model.heads=trained"]))
    assert t.model.head_kind == "trained"
    ctx, _ = first_step(t)
    y, h = ctx.batch["label"], ctx.out.features
    W, b, d = t.model.fusion.fc.weight.detach(), t.model.fusion.fc.bias.detach(), t.model.fusion.dim
    # z_m = h_m W[:, slice_m]ᵀ + b/2 (bias split evenly), computed here from the raw weights
    sl = {"audio": h["audio"].detach() @ W[:, :d].t() + b / 2, "visual": h["visual"].detach() @ W[:, d:].t() + b / 2}
    s = {m: torch.softmax(z, 1)[torch.arange(len(y)), y].sum().item() for m, z in sl.items()}
    s_heads = {m: torch.softmax(z.detach(), 1)[torch.arange(len(y)), y].sum().item() for m, z in ctx.out.logits.items()}
    assert abs(s_heads["audio"] - s["audio"]) > 1e-3  # the untrained heads would give other scores
    t.method.after_backward(ctx)
    assert ctx.logs["ogm/score/audio"] == pytest.approx(s["audio"], rel=1e-5)
    assert ctx.logs["ogm/score/visual"] == pytest.approx(s["visual"], rel=1e-5)


def test_default_model_keeps_slices_and_no_unimodal_loss(tiny):
    t = Trainer(tiny(set=["method.name=ogm_ge"]))
    assert t.model.head_kind == "slice" and t.model.heads is None
    ctx, parts = first_step(t)
    torch.testing.assert_close(parts.total, torch.nn.functional.cross_entropy(ctx.out.fused, ctx.batch["label"]))


def test_window_off_equals_joint(tiny):
    window_off_equals_joint(tiny, ["method.name=ogm_ge"])


def test_resume_matches_uninterrupted_with_noise(tiny):
    resume_matches(tiny, ["method.name=ogm_ge", "method.alpha=0.8"])


def test_three_modalities_log_per_modality_ratios(tiny):
    """Every stored step: ρ_m = s_m / min_{k≠m} s_k and k_m = 1 − tanh(0.3·ρ_m) (ρ_m > 1) from the stored scores."""
    run_dir, final = run(tiny, ["method.name=ogm_ge"], data=THREE_MODAL)
    w = open_run(run_dir).scalars(prefix="ogm/").pivot(index="step", columns="name", values="value")
    mods = ("audio", "visual", "text")
    assert len(w) == 16
    for _, row in w.iterrows():
        s = {m: row[f"ogm/score/{m}"] for m in mods}
        for m in mods:
            rho = s[m] / min(v for k, v in s.items() if k != m)
            assert row[f"ogm/ratio/{m}"] == pytest.approx(rho, rel=1e-9)
            assert row[f"ogm/coeff/{m}"] == pytest.approx(1 - math.tanh(0.3 * rho) if rho > 1 else 1.0, rel=1e-9)
        top = max(s, key=s.get)
        assert row[f"ogm/coeff/{top}"] < 1.0, "the leading modality is always slowed down"
    assert "acc/test/text" in final


def test_modulation_applies_only_inside_the_window(tiny):
    run_dir, _ = run(tiny, ["method.name=ogm_ge", "method.start_epoch=1", "method.end_epoch=2"])
    r = open_run(run_dir)
    assert r.scalars("ogm/coeff/audio")["epoch"].unique().tolist() == [1]


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    p = run_cli("train", "--method", "ogm_ge", "--set", "method.alpha=0.5", *tiny_cli_args(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "acc/test/fused=" in p.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda(tiny):
    cuda_run_matches_cpu(tiny, ["method.name=ogm_ge"], data=THREE_MODAL)


@pytest.mark.filterwarnings("ignore:unpickling")
def test_regression_task_is_refused_with_one_line(tmp_path):
    from modalscope.errors import ConfigError
    from tests.datafixtures import mmsa_dict, train_config, write_pickle

    write_pickle(tmp_path / "aligned_50.pkl", mmsa_dict(aligned=True))
    data = {"name": "mosi", "path": str(tmp_path / "aligned_50.pkl"), "allow_pickle": True}
    with pytest.raises(ConfigError, match="'ogm_ge' needs a classification task"):
        Trainer(train_config(tmp_path, data, method={"name": "ogm_ge"}))


def test_ge_noise_without_host_sync_matches_the_item_version():
    from modalscope.methods.ogm_ge import ge_noise

    for shape in [(64, 32), (7,), (1,)]:
        g = torch.randn(shape) * 0.01
        torch.manual_seed(5)
        fast = ge_noise(g)
        torch.manual_seed(5)
        std = g.std().item() if g.numel() > 1 else 0.0
        exact = torch.zeros_like(g).normal_(0.0, std + 1e-8)
        torch.testing.assert_close(fast, exact, rtol=1e-6, atol=1e-12)
        assert fast.abs().max() > 0
