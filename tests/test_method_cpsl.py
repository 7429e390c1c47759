import math

import pytest
import torch
import torch.nn.functional as F

from modalscope.engine import StepContext, Trainer
from modalscope.data import move_batch
from modalscope.methods.cpsl import dominance_ratio, gradient_magnitudes, label_stats, penalty_coefficient, ramp, stat_loss
from modalscope.store import open_run
from tests.conftest import run_cli, tiny_cli_args
from tests.known_answers import assert_final_is_hand_computed, cuda_run_matches_cpu
from tests.method_helpers import THREE_MODAL, assert_same_state, first_step, grads, resume_matches, run, window_off_equals_joint


def test_penalty_and_ramp_values():
    assert penalty_coefficient(4.0, 2.0, 0.5) == pytest.approx(0.5)
    assert penalty_coefficient(4.0, 2.0, 0.5, "exp") == pytest.approx(math.exp(-1.0))
    assert penalty_coefficient(1.9, 2.0, 0.5) == 1.0
    assert penalty_coefficient(4.0, 2.0, 0.0) == 1.0
    assert [ramp(e, 0, 3) for e in (0, 1, 2, 3, 7)] == pytest.approx([0, 1 / 3, 2 / 3, 1, 1])
    assert ramp(4, 2, 4) == pytest.approx(0.5) and ramp(0, 0, 0) == 1.0
    assert dominance_ratio({"a": 6.0, "v": 1.0, "t": 2.0}) == ("a", pytest.approx(4.0))


def test_stat_loss_classification_by_hand():
    logits = torch.log(torch.tensor([[0.75, 0.25], [0.25, 0.75]]))
    y = torch.tensor([0, 0])
    mu, sigma = label_stats(y, "classification", 2)
    torch.testing.assert_close(mu, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(sigma, torch.tensor([0.0, 0.0]))
    # pred mean (0.5, 0.5), pred std (0.25, 0.25): 0.25 + 0.25 + 0.0625 + 0.0625
    assert float(stat_loss(logits, mu, sigma, "classification")) == pytest.approx(0.625, abs=1e-6)
    y2 = torch.tensor([0, 1])
    mu2, sigma2 = label_stats(y2, "classification", 2)
    torch.testing.assert_close(sigma2, torch.tensor([0.5, 0.5]))
    assert float(stat_loss(logits, mu2, sigma2, "classification")) == pytest.approx(2 * 0.25**2, abs=1e-6)


def test_stat_loss_regression_by_hand():
    pred, y = torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 4.0])
    mu, sigma = label_stats(y, "regression", 1)
    assert float(stat_loss(pred, mu, sigma, "regression")) == pytest.approx(1.0)


def test_live_step_loss_and_penalty_follow_the_formula(tiny):
    t = Trainer(tiny(set=["method.name=cpsl", "method.tau=1.0", "method.lambda_max=0.5", "method.warmup_epochs=0"]))
    ctx, parts = first_step(t)
    out, y = ctx.out, ctx.batch["label"]
    probs = torch.softmax(out.fused.detach(), 1)
    onehot = F.one_hot(y, probs.shape[1]).float()
    sl = ((probs.mean(0) - onehot.mean(0)) ** 2).sum() + ((probs.std(0, unbiased=False) - onehot.std(0, unbiased=False)) ** 2).sum()
    ce = F.cross_entropy(out.fused, y) + sum(F.cross_entropy(z, y) for z in out.logits.values())
    assert float(parts.total.detach()) == pytest.approx(float(ce.detach() + 0.1 * sl), rel=1e-5)
    assert ctx.logs["cpsl/stat_loss"] == pytest.approx(float(sl), rel=1e-5)
    assert t.model.head_kind == "trained"
    groups = t.model.param_groups()
    before = {g: grads(ps) for g, ps in groups.items()}
    # n_m = ‖∂L/∂h_m‖ at the fusion input, from an independent forward of the same model
    out2 = t.model(ctx.batch)
    p2 = torch.softmax(out2.fused, 1)
    sl2 = ((p2.mean(0) - onehot.mean(0)) ** 2).sum() + ((p2.std(0, unbiased=False) - onehot.std(0, unbiased=False)) ** 2).sum()
    loss2 = F.cross_entropy(out2.fused, y) + sum(F.cross_entropy(z, y) for z in out2.logits.values()) + 0.1 * sl2
    fg = torch.autograd.grad(loss2, [out2.features["audio"], out2.features["visual"]])
    norms = {"audio": fg[0].norm().item(), "visual": fg[1].norm().item()}
    d = max(norms, key=norms.get)
    o = "visual" if d == "audio" else "audio"
    r = norms[d] / norms[o]
    c = 1 / (1 + 0.5 * (r - 1.0))
    t.method.after_backward(ctx)
    for p, g in zip(groups[f"encoder/{d}"], before[f"encoder/{d}"]):
        torch.testing.assert_close(p.grad, g * c, rtol=1e-5, atol=0)
    for key in (f"encoder/{o}", "fusion"):
        for p, g in zip(groups[key], before[key]):
            assert torch.equal(p.grad, g)
    assert ctx.logs["cpsl/ratio"] == pytest.approx(r, rel=1e-5)
    assert ctx.logs["cpsl/penalty"] == pytest.approx(c, rel=1e-5)


def test_gradient_magnitudes_by_hand():
    ha, hv = torch.zeros(2, 2, requires_grad=True), torch.zeros(2, 2, requires_grad=True)
    ((ha * torch.tensor([[3.0, 0.0], [0.0, 4.0]])).sum() + (hv * torch.tensor([[1.0, 0.0], [0.0, 0.0]])).sum()).backward()
    wa, wv = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(8))
    wa.grad, wv.grad = torch.tensor([3.0, 4.0]), torch.full((8,), 0.5)
    feats, enc = {"audio": ha, "visual": hv}, {"audio": [wa], "visual": [wv]}
    assert gradient_magnitudes("features", feats, enc) == pytest.approx({"audio": 5.0, "visual": 1.0})
    assert gradient_magnitudes("encoder", feats, enc) == pytest.approx({"audio": 5.0, "visual": 2 ** 0.5})
    assert gradient_magnitudes("encoder_rms", feats, enc) == pytest.approx({"audio": 5.0 / 2 ** 0.5, "visual": 0.5})
    assert dominance_ratio({"audio": 5.0, "visual": 1.0}) == ("audio", 5.0)


def test_ratio_is_unchanged_when_an_encoder_input_is_rescaled(tiny):
    """x_a → c·x_a with the first audio layer's weights → W/c computes the same h_a: the
    fusion-input ratio is unchanged, while the raw encoder-norm ratio moves (first-layer grad × c)."""
    set_ = ["method.name=cpsl", "method.warmup_epochs=0", "method.sl_weight=0"]
    ratios = {}
    for src in ("features", "encoder"):
        for c in (1.0, 10.0):
            t = Trainer(tiny(set=set_ + [f"method.ratio_source={src}"]))
            first = t.model.encoders["audio"].net[0]
            with torch.no_grad():
                first.weight.div_(c)
            batch = move_batch(next(iter(t._train_loader(0))), t.device)
            batch["audio"] = batch["audio"] * c
            ctx = StepContext(t, epoch=0, step=0, batch=batch)
            t.optimizer.zero_grad(set_to_none=True)
            ctx.out = t.method.forward(t.model, batch, ctx)
            t.method.backward(t._total_loss(batch, ctx.out, ctx), ctx)
            t.method.after_backward(ctx)
            ratios[src, c] = ctx.logs["cpsl/ratio"]
    assert ratios["features", 10.0] == pytest.approx(ratios["features", 1.0], rel=1e-4)
    assert abs(ratios["encoder", 10.0] / ratios["encoder", 1.0] - 1) > 0.05


def test_running_label_statistics_are_an_ema(tiny):
    t = Trainer(tiny(set=["method.name=cpsl", "method.sl_stats=running", "method.sl_momentum=0.9"]))
    batches = list(t._train_loader(0))[:2]
    stats = [label_stats(b["label"], "classification", 8) for b in batches]
    for b in batches:
        ctx = StepContext(t, epoch=0, step=0, batch=b)
        t.method.loss(b, t.model(b), ctx)
    torch.testing.assert_close(t.method.run_mean, 0.9 * stats[0][0] + 0.1 * stats[1][0])
    torch.testing.assert_close(t.method.run_std, 0.9 * stats[0][1] + 0.1 * stats[1][1])


def test_window_off_equals_joint(tiny):
    window_off_equals_joint(tiny, ["method.name=cpsl"])


def test_resume_restores_running_statistics(tiny):
    saved, loaded = resume_matches(tiny, ["method.name=cpsl", "method.sl_stats=running"])
    assert set(saved) == {"run_mean", "run_std"}
    assert_same_state(saved, loaded)


def test_three_modalities(tiny):
    run_dir, final = run(tiny, ["method.name=cpsl", "method.warmup_epochs=1", "method.tau=1.02"], data=THREE_MODAL)
    r = open_run(run_dir)
    lam = r.scalars("cpsl/lambda")
    assert lam[lam["epoch"] == 0]["value"].eq(0).all() and lam[lam["epoch"] == 1]["value"].eq(0.5).all()
    # every stored step: c = 1/(1 + λ(r − τ)) when r > τ = 1.02, else 1, from the stored r and λ
    w = r.scalars(prefix="cpsl/").pivot(index="step", columns="name", values="value")
    for _, row in w.iterrows():
        lam, ratio = row["cpsl/lambda"], row["cpsl/ratio"]
        want = 1.0 / (1.0 + lam * (ratio - 1.02)) if ratio > 1.02 and lam > 0 else 1.0
        assert row["cpsl/penalty"] == pytest.approx(want, rel=1e-9)
        assert row["cpsl/conflict"] == float(ratio > 1.02)
        shares = [row[f"cpsl/share/{m}"] for m in ("audio", "visual", "text")]
        assert sum(shares) == pytest.approx(1.0)
        assert ratio == pytest.approx(max(shares) / ((sum(shares) - max(shares)) / 2), rel=1e-9)
    assert (w.loc[w["cpsl/lambda"] > 0, "cpsl/penalty"] < 1).any(), "the planted imbalance triggers the penalty"
    assert len(r.scalars("cpsl/share/text")) == 16 and "acc/test/text" in final


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    p = run_cli("train", "--method", "cpsl", "--set", "method.sl_stats=running", *tiny_cli_args(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "acc/test/fused=" in p.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda(tiny):
    cuda_run_matches_cpu(tiny, ["method.name=cpsl"], data=THREE_MODAL)


@pytest.mark.filterwarnings("ignore:unpickling")
@pytest.mark.parametrize("stats", ["batch", "running"])
def test_regression_on_a_mosi_pickle(tmp_path, stats):
    from tests.datafixtures import mmsa_dict, train_config, write_pickle

    write_pickle(tmp_path / "aligned_50.pkl", mmsa_dict(aligned=True))
    data = {"name": "mosi", "path": str(tmp_path / "aligned_50.pkl"), "allow_pickle": True}
    t = Trainer(train_config(tmp_path, data, epochs=2, method={"name": "cpsl", "sl_stats": stats, "tau": 1.0, "warmup_epochs": 0}))
    ctx, parts = first_step(t)
    y = ctx.batch["label"].float()
    pred = ctx.out.fused.detach().reshape(-1)
    sl = (pred.mean() - y.mean()) ** 2 + (pred.std(unbiased=False) - y.std(unbiased=False)) ** 2
    assert ctx.logs["cpsl/stat_loss"] == pytest.approx(float(sl), rel=1e-5)
    final = t.fit()
    assert_final_is_hand_computed(final, t, {"mae/test/fused"})
    r = open_run(t.run_dir)
    assert set(r.scalars("cpsl/share/vision")["epoch"]) == {0, 1}
    if stats == "running":
        assert t.method.run_mean.shape == ()
