"""modalscope.monitor.Monitor on hand-computed cases: gradients, methods, gap, contributions, liveness."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from modalscope.errors import ConfigError, StoreError
from modalscope.monitor import Monitor
from modalscope.store import open_run

ROOT = Path(__file__).resolve().parent.parent


class Planted(nn.Module):
    """Two one-weight 'encoders': the loss 3·a + 4·b gives gradients 3 and 4, known by hand."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(1, 1, bias=False)
        self.b = nn.Linear(1, 1, bias=False)


def _mon(tmp_path, model, **kw) -> Monitor:
    return Monitor(tmp_path / "run", ["a", "b"], {"a": model.a, "b": model.b}, **kw)


def test_grad_norms_shares_and_ratio_match_hand_values(tmp_path):
    model = Planted()
    with _mon(tmp_path, model) as mon:
        loss = 3 * model.a.weight.sum() + 4 * model.b.weight.sum()
        loss.backward()
        mon.step(loss)
    run = open_run(tmp_path / "run")
    f = run.final_scalars()
    assert f["grad_norm/a"] == pytest.approx(3.0) and f["grad_norm/b"] == pytest.approx(4.0)
    assert f["grad_share/a"] == pytest.approx(3 / 7) and f["grad_share/b"] == pytest.approx(4 / 7)
    assert f["grad_ratio"] == pytest.approx(4 / 3) and f["conflict/flag"] == 0.0
    assert f["loss/total"] == pytest.approx(float(loss.detach()))
    assert run.status() == "finished" and run.meta()["modalities"] == ["a", "b"]


def test_cpsl_penalty_halves_the_dominant_encoder_and_logs_applied_gradient(tmp_path):
    model = Planted()
    with _mon(tmp_path, model) as mon:
        (3 * model.a.weight.sum() + 12 * model.b.weight.sum()).backward()
        mon.step()
        logs = mon.cpsl_penalty(tau=2.0, lam=0.5)
    # r = 12/3 = 4 > τ = 2, c = 1/(1 + 0.5·(4 − 2)) = 0.5 on the dominant encoder b
    assert logs["cpsl/penalty"] == pytest.approx(0.5) and logs["cpsl/ratio"] == pytest.approx(4.0)
    assert float(model.b.weight.grad) == pytest.approx(6.0) and float(model.a.weight.grad) == pytest.approx(3.0)
    f = open_run(tmp_path / "run").final_scalars()
    assert f["grad_norm/b"] == pytest.approx(12.0)  # before the method, as in the Trainer
    assert f["grad_applied/b"] == pytest.approx(6.0) and f["grad_applied_ratio"] == pytest.approx(2.0)


def test_ogm_without_noise_scales_the_dominant_encoder_by_one_minus_tanh(tmp_path):
    model = nn.ModuleDict({"a": nn.Linear(2, 3), "b": nn.Linear(2, 3)})
    with Monitor(tmp_path / "run", ["a", "b"], {"a": model["a"], "b": model["b"]}) as mon:
        x = torch.randn(4, 2)
        y = torch.tensor([0, 1, 2, 0])
        za, zb = model["a"](x), model["b"](x)
        (za.sum() + zb.sum()).backward()
        before = {m: model[m].weight.grad.clone() for m in "ab"}
        logs = mon.ogm_ge({"a": za, "b": zb}, y, alpha=0.3, ge=False)
    sa, sb = (float(torch.softmax(z.detach(), 1).gather(1, y[:, None]).sum()) for z in (za, zb))
    dom, rho = ("a", sa / sb) if sa > sb else ("b", sb / sa)
    k = 1 - math.tanh(0.3 * rho)
    assert logs[f"ogm/coeff/{dom}"] == pytest.approx(k)
    torch.testing.assert_close(model[dom].weight.grad, before[dom] * k)
    other = "b" if dom == "a" else "a"
    torch.testing.assert_close(model[other].weight.grad, before[other])


def test_gap_histogram_and_contributions_on_planted_predictions(tmp_path):
    """Modality a is always right with p = 0.9; b is uniform over 4 classes: gap = 0.9 − 0.25 for every sample."""
    n, k = 40, 4
    y = torch.arange(n) % k
    za = torch.full((n, k), math.log(0.1 / 3))
    za[torch.arange(n), y] = math.log(0.9)
    zb = torch.zeros(n, k)
    model = Planted()

    def drop_eval(drop):  # the fused prediction uses modality a only: I(b) = 0
        return {"fused": torch.zeros(n, k) if "a" in drop else za, "labels": y, "logits": {"a": za, "b": zb}}

    with _mon(tmp_path, model, drop_eval=drop_eval, diagnostics={"gap_bins": 8}) as mon:
        for i in range(0, n, 10):
            loss = model.a.weight.sum() + model.b.weight.sum()
            loss.backward()
            mon.step(loss, fused=za[i : i + 10], logits={"a": za[i : i + 10], "b": zb[i : i + 10]}, labels=y[i : i + 10])
        logs = mon.epoch_end(test={"fused": za, "logits": {"a": za, "b": zb}, "labels": y})
    assert logs["acc/train/fused"] == 1.0 and logs["acc/test/a"] == 1.0
    assert logs["gap/train/a-b/mean"] == pytest.approx(0.65) and logs["gap/test/a-b/std"] == pytest.approx(0.0, abs=1e-9)
    run = open_run(tmp_path / "run")
    h = run.histograms(split="train")
    assert h["counts"].iloc[0].sum() == n and h["counts"].iloc[0][np.searchsorted(h["edges"].iloc[0], 0.65) - 1] == n
    assert logs["contrib/info/b"] == pytest.approx(0.0, abs=1e-9)
    # v({a}) − v(∅) = −CE(za) + CE(uniform) = −(−log 0.9) + log 4
    assert logs["contrib/info/a"] == pytest.approx(math.log(0.9) + math.log(4), rel=1e-5)
    assert logs["contrib/conf/a"] == pytest.approx(0.9, rel=1e-5) and logs["contrib/conf/b"] == pytest.approx(0.25)
    assert set(run.contributions()["modality"]) == {"a", "b"}
    assert len(run.samples(split="train")) == n


def test_conflict_cosine_is_one_when_the_fused_loss_is_the_unimodal_loss(tmp_path):
    model = Planted()
    head = nn.Linear(1, 2)
    with _mon(tmp_path, model, fusion=head, diagnostics={"conflict_every": 1}) as mon:
        x, y = torch.randn(8, 1), torch.randint(0, 2, (8,))
        za = head(model.a(x))
        zb = head(model.b(x))
        fused = za  # the fused output is modality a's logits: ∇θa L = ∇θa L_a
        mon.backward(torch.nn.functional.cross_entropy(fused, y), fused=fused, logits={"a": za, "b": zb}, labels=y)
    f = open_run(tmp_path / "run").final_scalars("conflict/")
    assert f["conflict/cos/a"] == pytest.approx(1.0) and f["conflict/cos/b"] == 0.0


def test_bad_inputs_get_one_line_errors(tmp_path):
    model = Planted()
    with pytest.raises(ConfigError, match="missing"):
        Monitor(tmp_path / "r", ["a", "b"], {"a": model.a})
    with pytest.raises(ConfigError, match="no parameters"):
        Monitor(tmp_path / "r", ["a", "b"], {"a": model.a, "b": nn.ReLU()})
    with pytest.raises(ConfigError, match="diagnostics.conflict_every"):
        Monitor(tmp_path / "r", ["a", "b"], {"a": model.a, "b": model.b}, diagnostics={"conflict_every": 0})
    _mon(tmp_path, model).close()
    with pytest.raises(StoreError, match="already exists"):
        _mon(tmp_path, model)


def test_exception_in_with_block_marks_the_run_failed(tmp_path):
    model = Planted()
    with pytest.raises(RuntimeError):
        with _mon(tmp_path, model):
            raise RuntimeError("boom in my loop")
    run = open_run(tmp_path / "run")
    assert run.status() == "failed" and run.meta()["error"] == "RuntimeError: boom in my loop"


@pytest.mark.parametrize("ending, status", [("raise ValueError('bad batch')", "failed"), ("pass", "finished")])
def test_uncaught_exception_and_plain_exit_are_recorded(tmp_path, ending, status):
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        from torch import nn
        from modalscope.monitor import Monitor
        a, b = nn.Linear(1, 1), nn.Linear(1, 1)
        mon = Monitor({str(tmp_path / 'run')!r}, ["a", "b"], {{"a": a, "b": b}})
        {ending}
    """)
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    run = open_run(tmp_path / "run")
    assert run.status() == status
    if status == "failed":
        assert run.meta()["error"] == "ValueError: bad batch"


def test_non_zero_rank_writes_nothing(tmp_path):
    model = Planted()
    mon = _mon(tmp_path, model, rank=1)
    (model.a.weight.sum() + model.b.weight.sum()).backward()
    mon.step(1.0)
    mon.epoch_end()
    mon.close()
    assert not (tmp_path / "run").exists()


def test_cross_modal_logits_are_not_treated_as_separable(tmp_path):
    """When z_b also reads encoder a, ∇θa of Σ L_m mixes the modalities: the monitor must notice and not use the one-pass shortcut."""
    model = Planted()
    with _mon(tmp_path, model, diagnostics={"conflict_every": 1}) as mon:
        x, y = torch.randn(8, 1), torch.randint(0, 2, (8,))
        ha, hb = model.a(x), model.b(x)
        za = torch.cat([ha, -ha], 1)
        zb = torch.cat([hb + ha, -hb], 1)  # b's logits depend on encoder a too
        mon.backward(torch.nn.functional.cross_entropy(za, y), fused=za, logits={"a": za, "b": zb}, labels=y)
        assert mon._separable is False
    assert open_run(tmp_path / "run").final_scalars("conflict/")["conflict/cos/a"] == pytest.approx(1.0)


def test_probes_from_a_features_callable_at_init_and_last_epoch(tmp_path):
    """Encoder a's features are the one-hot label (probe accuracy 1); b's are constant (probe = majority share)."""
    y_tr, y_te = torch.arange(60) % 3, torch.tensor([0, 0, 0, 0, 1, 2])
    onehot = torch.nn.functional.one_hot

    def features(split):
        if split == "valid":
            return None
        y = y_tr if split == "train" else y_te
        return {"a": onehot(y, 3).float(), "b": torch.ones(len(y), 2)}, y

    model = Planted()
    with _mon(tmp_path, model, features=features, epochs=2, diagnostics={"probe_every": 5}) as mon:
        assert not any(k.startswith("probe/") for k in mon.epoch_end())  # epoch 0 of 2, probe_every 5: not due
        assert "probe/test/a" in mon.epoch_end()  # the last epoch always is
    f = open_run(tmp_path / "run")
    init = f.scalars(prefix="probe_init/")
    assert init["step"].tolist() == [0, 0] and dict(zip(init["name"], init["value"]))["probe_init/test/a"] == 1.0
    last = f.final_scalars("probe/")
    assert last["probe/test/a"] == 1.0 and last["probe/test/b"] == pytest.approx(4 / 6)
    assert len(f.scalars("probe/test/a")) == 2  # init and last epoch


def test_cpsl_penalty_measured_at_the_fusion_input(tmp_path):
    """n_m = ‖∂L/∂h_m‖: with L = 3·h_a + 12·h_b the ratio is 4 whatever the encoders' parameters are."""
    model = Planted()
    with torch.no_grad():
        model.b.weight.fill_(5.0)
    with _mon(tmp_path, model) as mon:
        x = torch.full((1, 1), 2.0)
        ha, hb = model.a(x), model.b(x)
        ha.retain_grad()
        hb.retain_grad()
        (3 * ha.sum() + 12 * hb.sum()).backward()
        mon.step()
        logs = mon.cpsl_penalty(tau=2.0, lam=0.5, features={"a": ha, "b": hb})
        with pytest.raises(ValueError, match="retain_grad"):
            mon.cpsl_penalty(source="features")
    assert logs["cpsl/ratio"] == pytest.approx(4.0) and logs["cpsl/penalty"] == pytest.approx(0.5)
    assert float(model.b.weight.grad) == pytest.approx(12.0)  # 12·x = 24, halved


def test_train_snapshot_follows_the_same_samples_whatever_the_batch_order(tmp_path):
    n, k = 30, 3
    y = torch.arange(n) % k
    za = torch.randn(n, k)
    zb = torch.randn(n, k)
    model = Planted()
    with _mon(tmp_path, model, diagnostics={"samples_max": 10}) as mon:
        for epoch in range(2):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
            for i in range(0, n, 10):
                idx = order[i : i + 10]
                (model.a.weight.sum() + model.b.weight.sum()).backward()
                mon.step(fused=za[idx], logits={"a": za[idx], "b": zb[idx]}, labels=y[idx], ids=idx)
            mon.epoch_end()
    s = open_run(tmp_path / "run").samples(split="train")
    first, second = (s[s["epoch"] == e].sort_values("sample_id") for e in (0, 1))
    assert first["sample_id"].tolist() == second["sample_id"].tolist() and len(first) == 10
    np.testing.assert_allclose(first["gap"].to_numpy(), second["gap"].to_numpy())  # same samples, same predictions
