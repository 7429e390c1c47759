import math

import pytest
import torch

from modalscope.engine import Trainer
from modalscope.methods.ensemble import ensemble_prediction
from modalscope.store import open_run
from tests.method_helpers import first_step, grads, resume_matches


def test_prediction_is_the_sum_of_log_softmaxes():
    # softmax([0, ln 3]) = (1/4, 3/4); softmax([0, 0]) = (1/2, 1/2)
    z = {"audio": torch.tensor([[0.0, math.log(3.0)]]), "visual": torch.tensor([[0.0, 0.0]])}
    want = torch.tensor([[math.log(0.25 * 0.5), math.log(0.75 * 0.5)]])
    torch.testing.assert_close(ensemble_prediction(z), want)
    # a confident expert outweighs an unsure one: (0.9, 0.1) × (0.4, 0.6) → class 0
    z = {"audio": torch.log(torch.tensor([[0.9, 0.1]])), "visual": torch.log(torch.tensor([[0.4, 0.6]]))}
    torch.testing.assert_close(ensemble_prediction(z), torch.log(torch.tensor([[0.36, 0.06]])))
    assert ensemble_prediction({"a": torch.tensor([[1.0]]), "b": torch.tensor([[3.0]])}, "regression").item() == 2.0


@pytest.mark.parametrize("heads", ["auto", "separate", "trained"])
def test_each_encoder_learns_from_its_own_loss_only(tiny, heads):
    t = Trainer(tiny(set=["method.name=ensemble", f"model.heads={heads}"]))
    assert t.model.head_kind == "trained"
    ctx, parts = first_step(t)
    y = ctx.batch["label"]
    assert parts.total.item() == pytest.approx(sum(parts.parts[m].item() for m in ("audio", "visual")), rel=1e-6)
    groups = t.model.param_groups()
    assert all(g is None for g in grads(groups["fusion"]))
    audio = grads(groups["encoder/audio"])
    # the audio encoder's gradient is that of CE(head_audio(enc_audio(x_audio)), y), whatever visual holds
    t.optimizer.zero_grad(set_to_none=True)
    h = t.model.encoders["audio"](ctx.batch["audio"])
    torch.nn.functional.cross_entropy(t.model.heads["audio"](h), y).backward()
    for a, b in zip(audio, grads(groups["encoder/audio"])):
        torch.testing.assert_close(a, b)


def test_resume_replays_the_uninterrupted_run(tiny):
    resume_matches(tiny, ["method.name=ensemble"])


def test_logged_fused_accuracy_is_the_ensemble_prediction(tiny):
    t = Trainer(tiny(set=["method.name=ensemble"]))
    final = t.fit()
    ev = t.predict_split("test")
    want = float((ev.fused.argmax(1) == ev.labels).mean())
    logits = {m: torch.from_numpy(z) for m, z in ev.logits.items()}
    torch.testing.assert_close(torch.from_numpy(ev.fused), ensemble_prediction(logits))
    assert final["acc/test/fused"] == pytest.approx(want)
    assert open_run(t.run_dir).scalars("acc/test/fused")["value"].iloc[-1] == pytest.approx(want)


@pytest.mark.filterwarnings("ignore:unpickling")
def test_regression_prediction_is_the_mean_of_the_experts(tmp_path):
    from tests.datafixtures import mmsa_dict, train_config, write_pickle

    write_pickle(tmp_path / "aligned_50.pkl", mmsa_dict(aligned=True))
    data = {"name": "mosi", "path": str(tmp_path / "aligned_50.pkl"), "allow_pickle": True}
    t = Trainer(train_config(tmp_path, data, method={"name": "ensemble"}))
    t.fit()
    ev = t.predict_split("test")
    assert len(ev.logits) == 3
    torch.testing.assert_close(torch.from_numpy(ev.fused), torch.from_numpy(sum(ev.logits.values()) / 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda(tiny):
    t = Trainer(tiny(set=["method.name=ensemble", "device=cuda"]))
    final = t.fit()
    assert all(p.is_cuda for p in t.model.heads.parameters()) and 0.0 <= final["acc/test/fused"] <= 1.0
