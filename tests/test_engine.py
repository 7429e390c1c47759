import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

from modalscope.engine import Trainer, train
from modalscope.errors import TrainingError
from modalscope.store import open_run
from tests.conftest import cli_env, tiny_cli_args


def test_run_logs_every_named_scalar_for_every_step_and_epoch(tiny):
    cfg = tiny(epochs=2)
    run_dir, final = train(cfg)
    r = open_run(run_dir)
    steps_per_epoch = -(-256 // 32)
    total = 2 * steps_per_epoch
    for name in ["loss/fused", "loss/total", "loss/audio", "loss/visual", "grad_norm/audio", "grad_norm/visual", "grad_norm/fusion"]:
        assert r.scalars(name)["step"].tolist() == list(range(total)), name
    for name in ["acc/train/fused", "acc/test/fused", "acc/test/audio", "acc/test/visual", "acc/train/audio", "lr", "time/epoch"]:
        assert r.scalars(name)["epoch"].tolist() == [0, 1], name
    assert r.status() == "finished"
    assert set(final) == {"acc/test/fused", "acc/test/audio", "acc/test/visual"}
    cfg_json = json.loads((run_dir / "config.json").read_text())
    assert cfg_json["method"]["name"] == "joint"
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "log.txt").read_text()


def test_unimodal_builds_one_modality(tiny):
    run_dir, final = train(tiny(set=["method.name=unimodal", "method.modality=visual"]))
    assert set(final) == {"acc/test/fused", "acc/test/visual"}
    assert final["acc/test/fused"] == final["acc/test/visual"]


def test_resume_continues_step_count_and_matches_uninterrupted(tiny, tmp_path):
    a_dir, a = train(tiny(epochs=3, name="full"))
    b_dir, _ = train(tiny(epochs=2, name="part"))
    from modalscope.config import build_config

    raw = json.loads((b_dir / "config.json").read_text())
    raw["epochs"] = 3
    t = Trainer(build_config(raw), resume=True, run_dir=b_dir)
    assert t.start_epoch == 2 and t.global_step == 16
    b = t.fit()
    assert b == a
    r = open_run(b_dir)
    assert r.scalars("loss/fused")["step"].tolist() == list(range(24))
    assert r.scalars("acc/test/fused")["epoch"].tolist() == [0, 1, 2]
    assert "resume" in r.events()["kind"].tolist()


def test_nan_loss_fails_with_step_and_keeps_data(tiny, monkeypatch):
    from modalscope.methods import joint

    orig = joint.Joint.loss

    def bad(self, batch, out, ctx):
        parts = orig(self, batch, out, ctx)
        if ctx.step == 5:
            parts.total = parts.total * float("nan")
            parts.parts["fused"] = parts.total
        return parts

    monkeypatch.setattr(joint.Joint, "loss", bad)
    cfg = tiny(epochs=2, name="nan")
    t = Trainer(cfg)
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at step 5, epoch 0: loss/fused"):
        t.fit()
    r = open_run(t.run_dir)
    assert r.status() == "failed"
    assert "step 5" in r.meta()["error"]
    assert r.scalars("loss/fused")["step"].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_sigterm_marks_interrupted_and_keeps_rows(tmp_path):
    args = tiny_cli_args(tmp_path)
    args[args.index("--epochs") + 1] = "500"
    p = subprocess.Popen([sys.executable, "-m", "modalscope", "train", "--name", "sig", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    db = tmp_path / "runs" / "sig" / "metrics.sqlite"
    deadline = time.time() + 60
    n = 0
    while time.time() < deadline:
        if db.exists():
            try:
                n = len(open_run(db.parent).scalars("loss/fused"))
            except Exception:
                n = 0
            if n > 20:
                break
        time.sleep(0.1)
    assert n > 20
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    r = open_run(db.parent)
    assert r.status() == "interrupted"
    steps = r.scalars("loss/fused")["step"].tolist()
    assert len(steps) >= n and steps == list(range(len(steps)))


def test_time_based_checkpoints_write_the_last_epoch_and_the_same_best_weights(tiny, monkeypatch):
    """With a long ``log.checkpoint_seconds`` only the last epoch is checkpointed; best.pt then holds
    exactly the weights that a checkpoint-every-epoch run writes for the best-valid epoch."""
    saved = []
    orig = Trainer.save_checkpoint
    monkeypatch.setattr(Trainer, "save_checkpoint", lambda self, epoch: (saved.append(epoch), orig(self, epoch))[1])
    runs = {}
    for name, period in (("every", 0), ("timed", 3600)):
        saved.clear()
        t = Trainer(tiny(epochs=4, name=name, set=[f"log.checkpoint_seconds={period}", "optim.lr=0.5"]))
        t.fit()
        runs[name] = (t.run_dir, list(saved))
    assert runs["every"][1] == [0, 1, 2, 3] and runs["timed"][1] == [3]
    a = torch.load(runs["every"][0] / "best.pt", weights_only=True)
    b = torch.load(runs["timed"][0] / "best.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == int(open_run(runs["timed"][0]).final_scalars("best/")["best/epoch"])
    assert a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
