import copy
import math

import pytest
import torch
import torch.nn.functional as F

from modalscope.engine import StepContext, Trainer
from modalscope.errors import ConfigError
from modalscope.methods.mie import mixup, projection_matrix, sam_epsilon, scaled_stages
from modalscope.store import open_run
from tests.conftest import run_cli, tiny_cli_args
from tests.known_answers import cuda_run_matches_cpu
from tests.method_helpers import THREE_MODAL, assert_same_state, first_step, resume_matches, run, window_off_equals_joint


def test_projection_matrix_on_a_known_spectrum():
    q, _ = torch.linalg.qr(torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0], [2.0, 0.0, -1.0]], dtype=torch.float64))
    cov = q @ torch.diag(torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64)) @ q.t()
    P, gains = projection_matrix(cov, temperature=0.4)
    # (σ − σmin)/(σmax − σmin) = (1, 0.25, 0) → gains exp(−0.4·(1, 0.25, 0))
    torch.testing.assert_close(gains, torch.exp(-0.4 * torch.tensor([1.0, 0.25, 0.0], dtype=torch.float64)))
    expect = q @ torch.diag(torch.tensor([math.exp(-0.4), math.exp(-0.1), 1.0], dtype=torch.float64)) @ q.t()
    torch.testing.assert_close(P, expect)
    flat, g = projection_matrix(torch.eye(3) * 2.0, 0.4)
    torch.testing.assert_close(flat, torch.eye(3, dtype=torch.float64))


def test_sam_epsilon_global_and_per_tensor():
    g = [torch.tensor([3.0]), torch.tensor([0.0, 4.0])]
    e = sam_epsilon(g, 0.5)
    torch.testing.assert_close(torch.cat(e), torch.tensor([0.3, 0.0, 0.4]))
    e = sam_epsilon(g, 0.5, per_tensor=True)
    torch.testing.assert_close(torch.cat(e), torch.tensor([0.5, 0.0, 0.5]))


def test_stage_schedule(tiny):
    t = Trainer(tiny(set=["method.name=mie", "method.stage_epochs=[2, 3]", "method.start_epoch=1"]))
    got = [t.method.stage_at(e) for e in range(1, 9)]
    assert got == [(0, 1), (0, 1), (1, 3), (1, 3), (1, 3), (2, 6), (2, 6), (3, 8)]
    assert [t.method.stage_modality(e) for e in (1, 3, 6, 8)] == ["audio", "visual", "audio", "visual"]


def test_stages_scale_to_the_epoch_budget(tiny):
    # pattern 1:2 (the reference's 25/50 epochs), 4 stages: boundaries round(20·(1, 3, 4, 6)/6)
    assert scaled_stages(20, 4, [1, 2]) == [3, 7, 3, 7]
    assert scaled_stages(60, 4, [1, 2]) == [10, 20, 10, 20]
    assert scaled_stages(3, 4, [1, 2]) == [1, 1, 1]
    assert sum(scaled_stages(7, 4, [1, 2])) == 7 and min(scaled_stages(7, 4, [1, 2])) >= 1
    t = Trainer(tiny(epochs=12, set=["method.name=mie", "method.start_epoch=2"]))
    assert t.method.lengths == [2, 3, 2, 3]
    assert [t.method.stage_at(e)[0] for e in range(2, 12)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_mixup_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    torch.testing.assert_close(mixup(x, 0.25, torch.tensor([2, 0, 1])), torch.tensor([[3.25, 3.0], [0.75, 0.5], [1.0, 2.5]]))


def test_mixup_step_loss_mixes_labels_and_reuses_lambda_in_the_sam_pass(tiny):
    t = Trainer(tiny(set=["method.name=mie", "method.mixup_alpha=1.0", "method.project=false"]))
    ctx, parts = first_step(t)
    key, lam, perm = t.method._mix
    assert 0.0 <= lam <= 1.0 and sorted(perm.tolist()) == list(range(len(perm)))
    x, y = ctx.batch["audio"], ctx.batch["label"]
    z = t.method.heads("audio", t.model.encoders["audio"](lam * x + (1 - lam) * x[perm]))
    expect = lam * F.cross_entropy(z, y) + (1 - lam) * F.cross_entropy(z, y[perm])
    torch.testing.assert_close(parts.total, expect, rtol=1e-5, atol=1e-6)
    t.method.optimizer_step(ctx, t._closure(ctx.batch, ctx))  # the SAM pass draws nothing new
    assert t.method._mix[0] == key and t.method._mix[1] == lam


def test_each_stage_reloads_the_best_valid_state_and_resets_the_optimiser(tiny):
    t = Trainer(tiny(epochs=3, data={"n_valid": 64}, set=["method.name=mie", "method.stage_epochs=[1]", "method.project=false"]))
    seen = []
    orig = t.method._new_stage

    def spy(ctx, k):
        best = t.method.best
        assert best is not None and len(t.optimizer.state) > 0
        orig(ctx, k)
        # the model now holds exactly the best-valid snapshot, and the optimiser has no momentum left
        for key, v in t.model.state_dict().items():
            assert torch.equal(v.cpu(), best["model"][key]), key
        assert len(t.optimizer.state) == 0
        seen.append((k, t.method.best_epoch))

    t.method._new_stage = spy
    t.fit()
    assert [k for k, _ in seen] == [1, 2]
    r = open_run(t.run_dir)
    valid = r.scalars("acc/valid/fused")["value"].tolist()
    # stage 2 starts from the better of epochs 0 and 1 on valid
    assert seen[1][1] == (0 if valid[0] >= valid[1] else 1)


def test_sam_step_restores_parameters_and_mixes_gradients(tiny):
    t = Trainer(tiny(set=["method.name=mie", "method.rho=0.5", "method.flat_ratio=0.3", "method.project=false", "method.mixup_alpha=0"]))
    ctx, parts = first_step(t)
    params = [p for p in t.parameters() if p.grad is not None]
    theta = [p.detach().clone() for p in params]
    g0 = [p.grad.detach().clone() for p in params]
    # only the audio encoder and audio head are trained in stage 0
    assert len(params) == len(list(t.model.encoders["audio"].parameters())) + len(list(t.method.heads.heads["audio"].parameters()))
    norm = torch.sqrt(sum((g**2).sum() for g in g0))
    enc, head = copy.deepcopy(t.model.encoders["audio"]), copy.deepcopy(t.method.heads.heads["audio"])
    shadow = list(enc.parameters()) + list(head.parameters())
    with torch.no_grad():
        for p, g in zip(shadow, g0):
            p.add_(0.5 * g / norm)
    l1 = F.cross_entropy(head(enc(ctx.batch["audio"])), ctx.batch["label"])
    g1 = torch.autograd.grad(l1, shadow)
    seen = {}

    def fake_step():
        seen["params"] = [p.detach().clone() for p in params]
        seen["grads"] = [p.grad.detach().clone() for p in params]

    t.optimizer.step = fake_step
    t.method.optimizer_step(ctx, t._closure(ctx.batch, ctx))
    for a, b in zip(seen["params"], theta):
        assert torch.equal(a, b)
    for got, a, b in zip(seen["grads"], g0, g1):
        torch.testing.assert_close(got, 0.7 * a + 0.3 * b, rtol=1e-4, atol=1e-7)
    assert ctx.logs["mie/flat_loss"] == pytest.approx(float(l1.detach()), rel=1e-5)


def test_projection_uses_previous_modality_layer_input_covariance(tiny):
    t = Trainer(tiny(set=["method.name=mie", "method.stage_epochs=[1, 1]", "method.rho=0", "method.temperature=0.4", "method.head_hidden=64"]))
    ctx0 = StepContext(t, epoch=1, step=0)
    t.method.on_epoch_start(ctx0)
    # 256 training samples = one no-grad batch: C = x̄ᵀx̄ is rank one, P = I − (1 − e^{−T}) u uᵀ
    with torch.no_grad():
        x = t.bundle.splits["train"].tensors["audio"]
        first = t.model.encoders["audio"].net[0]
        xbar = torch.relu(first(x)).mean(0).double()
    u = xbar / xbar.norm()
    expect = torch.eye(len(u), dtype=torch.float64) - (1 - math.exp(-0.4)) * torch.outer(u, u)
    torch.testing.assert_close(t.method.P["visual/enc1"].double(), expect, rtol=1e-5, atol=1e-6)
    assert "visual/enc0" not in t.method.P  # 16- vs 24-dim inputs: shapes differ, no projection
    assert {"visual/head0", "visual/head1"} <= set(t.method.P)
    ctx, _ = first_step(t, epoch=1)
    w = t.model.encoders["visual"].net[2].weight
    raw = w.grad.detach().clone()
    seen = {}
    t.optimizer.step = lambda: seen.setdefault("g", w.grad.detach().clone())
    t.method.optimizer_step(ctx, t._closure(ctx.batch, ctx))
    torch.testing.assert_close(seen["g"], raw @ t.method.P["visual/enc1"], rtol=1e-5, atol=1e-8)
    assert 0 < ctx.logs["mie/proj_ratio/visual"] < 1


def test_joint_variant_projects_the_fusion_block_with_the_other_modality_features(tiny):
    t = Trainer(tiny(set=["method.name=mie", "method.variant=joint", "method.rho=0"]))
    t.method.on_epoch_start(StepContext(t, epoch=0, step=0))
    with torch.no_grad():
        hbar = t.model.encoders["visual"](t.bundle.splits["train"].tensors["visual"]).mean(0).double()
    u = hbar / hbar.norm()
    expect = torch.eye(len(u), dtype=torch.float64) - (1 - math.exp(-0.4)) * torch.outer(u, u)
    torch.testing.assert_close(t.method.P["audio/fusion"].double(), expect, rtol=1e-5, atol=1e-6)
    ctx, _ = first_step(t)
    w = t.model.fusion.fc.weight
    raw = w.grad.detach().clone()
    seen = {}
    t.optimizer.step = lambda: seen.setdefault("g", w.grad.detach().clone())
    t.method.optimizer_step(ctx, t._closure(ctx.batch, ctx))
    sa, sv = t.model.fusion.input_slice("audio"), t.model.fusion.input_slice("visual")
    torch.testing.assert_close(seen["g"][:, sa], raw[:, sa] @ t.method.P["audio/fusion"], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(seen["g"][:, sv], raw[:, sv] @ t.method.P["visual/fusion"], rtol=1e-5, atol=1e-8)


def test_staged_training_leaves_the_other_encoder_untouched(tiny):
    t = Trainer(tiny(epochs=1, set=["method.name=mie", "method.stage_epochs=[1, 1]"]))
    before = copy.deepcopy(t.model.state_dict())
    t.fit()
    after = t.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoders.visual"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("encoders.audio"))


@pytest.mark.parametrize("variant", ["staged", "joint"])
def test_window_off_equals_joint(tiny, variant):
    window_off_equals_joint(tiny, ["method.name=mie", f"method.variant={variant}"])


def test_resume_restores_projection_matrices(tiny):
    saved, loaded = resume_matches(tiny, ["method.name=mie", "method.stage_epochs=[1, 2]"])
    assert "visual/enc1" in saved["P"]
    assert_same_state(saved["P"], loaded["P"])


@pytest.mark.parametrize("variant", ["staged", "joint"])
def test_three_modalities(tiny, variant):
    run_dir, final = run(tiny, ["method.name=mie", f"method.variant={variant}", "method.stage_epochs=[1]"], data=THREE_MODAL, epochs=3)
    r = open_run(run_dir)
    assert "acc/test/text" in final
    if variant == "staged":
        assert r.scalars("mie/stage")["value"].tolist() == [0, 1, 2]
        assert len(r.scalars("mie/p_gain/text")) == 1  # stage 2 (text) projects away from visual
    else:
        for m in ("audio", "visual", "text"):
            g = r.scalars(f"mie/p_gain/{m}")["value"]
            assert len(g) == 3 and ((g > math.exp(-0.4)) & (g <= 1)).all()
    assert len(r.scalars("mie/flat_loss")) == 24


def test_detached_monitor_heads_are_refused(tiny):
    with pytest.raises(ConfigError, match="mie"):
        Trainer(tiny(set=["method.name=mie", "model.fusion=gated"]))


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    p = run_cli("train", "--method", "mie", "--set", "method.stage_epochs=[1]", *tiny_cli_args(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "acc/test/fused=" in p.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda(tiny):
    cuda_run_matches_cpu(tiny, ["method.name=mie"], data=THREE_MODAL)


@pytest.mark.filterwarnings("ignore:unpickling")
def test_regression_task_is_refused_with_one_line(tmp_path):
    from modalscope.errors import ConfigError
    from tests.datafixtures import mmsa_dict, train_config, write_pickle

    write_pickle(tmp_path / "aligned_50.pkl", mmsa_dict(aligned=True))
    data = {"name": "mosi", "path": str(tmp_path / "aligned_50.pkl"), "allow_pickle": True}
    with pytest.raises(ConfigError, match="'mie' needs a classification task"):
        Trainer(train_config(tmp_path, data, method={"name": "mie"}))
