"""Crash safety: ``kill -9`` a real trainer mid-epoch, count its rows, resume it, compare.

The reference is the same CLI command run without interruption. With a fixed seed on CPU
the resumed run must end with *identical* metrics and parameters: checkpoints carry every
RNG state and the method state, and data order is a function of (seed, epoch).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

from modalscope import store
from modalscope.cli import main
from modalscope.engine import CHECKPOINT, Trainer
from modalscope.store import open_run
from tests.conftest import cli_env, tiny_cli_args

pytestmark = pytest.mark.reliability

STEPS_PER_EPOCH = 16  # 512 train samples, batch 32: at 0.25 s a step, a kill lands >= 2 s before the epoch ends


def _args(tmp_path, epochs: int = 3) -> list[str]:
    args = tiny_cli_args(tmp_path)
    args[args.index("--epochs") + 1] = str(epochs)
    return [*args, "--seed", "7", "--set", "data.n_train=512"]


def _committed(run_dir):
    """Every committed scalar row (a fresh read-only connection each time, as a dashboard does)."""
    return open_run(run_dir).scalars()


def _kill9_at(tmp_path, name: str, kill_epoch: int, kill_step_in_epoch: int):
    """Start a slowed trainer, SIGKILL it once rows of ``kill_epoch`` past the given step are committed."""
    cmd = [sys.executable, "-m", "tests.reliability_workers", "slow-train", "0.25", "--name", name, *_args(tmp_path)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env())
    run_dir = tmp_path / "runs" / name
    target = kill_epoch * STEPS_PER_EPOCH + kill_step_in_epoch
    heartbeats = set()
    before = None
    deadline = time.time() + 120
    try:
        while time.time() < deadline and p.poll() is None:
            if (run_dir / "metrics.sqlite").exists():
                try:
                    rows = _committed(run_dir)
                    heartbeats.add(open_run(run_dir).meta().get("heartbeat"))
                except store.StoreError:
                    rows = None
                if rows is not None and (rows["name"] == "loss/fused").any():
                    if rows.loc[rows["name"] == "loss/fused", "step"].max() >= target:
                        before = rows
                        os.kill(p.pid, signal.SIGKILL)
                        break
            time.sleep(0.05)
    finally:
        if p.poll() is None and before is None:
            p.kill()
        _, err = p.communicate(timeout=60)
    assert before is not None, f"trainer never reached step {target}: {err}"
    assert p.returncode == -signal.SIGKILL
    return run_dir, before, heartbeats


def _scalars_without_timing(run_dir):
    df = open_run(run_dir).scalars()
    df = df[~df["name"].str.startswith("time/")]
    return df[["step", "epoch", "name", "value"]].sort_values(["step", "name"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same command line, run to the end without interruption (in-process: same code path)."""
    tmp = tmp_path_factory.mktemp("ref")
    assert main(["train", "--name", "ref", *_args(tmp)]) == 0
    return tmp / "runs" / "ref"


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_epoch, kill_step",
    [(1, 3), (0, 5)],
    ids=["mid-epoch-after-checkpoint", "first-epoch-before-any-checkpoint"],
)
def test_kill9_keeps_committed_rows_reads_interrupted_and_resume_matches_uninterrupted(
    tmp_path, reference, monkeypatch, kill_epoch, kill_step
):
    run_dir, before, heartbeats = _kill9_at(tmp_path, "crash", kill_epoch, kill_step)

    # 1. the store is intact and holds every row committed before the kill, unchanged.
    con = sqlite3.connect(f"file:{run_dir / 'metrics.sqlite'}?mode=ro", uri=True)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    after = _committed(run_dir)
    assert len(after) >= len(before) > 0
    assert after.head(len(before)).reset_index(drop=True).equals(before.reset_index(drop=True))
    print(f"kill -9 at epoch {kill_epoch}: {len(before)} rows committed before the kill, {len(after)} readable after, "
          f"{len(before) - int(after.head(len(before))['id'].isin(before['id']).sum())} lost")
    loss_steps = after.loc[after["name"] == "loss/fused", "step"].tolist()
    assert loss_steps == list(range(len(loss_steps)))
    done = after.loc[after["name"] == "acc/test/fused", "epoch"].tolist()
    assert done == list(range(kill_epoch)), "the kill must land inside an epoch, after the previous checkpoint"
    assert max(loss_steps) >= kill_epoch * STEPS_PER_EPOCH + kill_step

    # 2. it reads interrupted: by the dead pid, and by the stale heartbeat alone.
    assert len(heartbeats) >= 2, "the heartbeat should advance while the trainer lives"
    assert open_run(run_dir).status() == "interrupted"
    monkeypatch.setattr(store, "_pid_alive", lambda pid: True)  # as if the trainer ran on another host
    assert open_run(run_dir).status() == "running"
    time.sleep(1.2)
    assert open_run(run_dir).status(stale_after=1.0) == "interrupted"
    monkeypatch.undo()
    assert (run_dir / CHECKPOINT).is_file() == (kill_epoch > 0)

    # 3. --resume continues from the last checkpoint and ends exactly where the uninterrupted run ends.
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    run = open_run(run_dir)
    assert run.status() == "finished"
    resume_msgs = run.events().query("kind == 'resume'")["message"].tolist()
    expect = f"resumed after epoch {kill_epoch - 1} (step {kill_epoch * STEPS_PER_EPOCH})" if kill_epoch else "no checkpoint yet"
    assert len(resume_msgs) == 1 and resume_msgs[0].startswith(expect), resume_msgs

    ref = open_run(reference)
    final_ref, final_res = ref.final_scalars("acc/"), run.final_scalars("acc/")
    assert set(final_ref) >= {"acc/test/fused", "acc/test/audio", "acc/test/visual", "acc/train/fused"}
    assert final_res == final_ref
    pd_ref, pd_res = _scalars_without_timing(reference), _scalars_without_timing(run_dir)
    assert pd_res.equals(pd_ref), "every logged scalar (losses, grad norms, accuracies) must match"

    sa = torch.load(reference / CHECKPOINT, weights_only=True)
    sb = torch.load(run_dir / CHECKPOINT, weights_only=True)
    assert sa["epoch"] == sb["epoch"] == 2 and sa["step"] == sb["step"] == 3 * STEPS_PER_EPOCH
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k


def test_checkpoint_is_never_ahead_of_the_store(tiny, monkeypatch):
    """A kill between checkpoint and flush would lose an epoch's rows: rows must commit first."""
    seen = []
    orig = Trainer.save_checkpoint

    def spy(self, epoch):
        r = open_run(self.run_dir)
        seen.append((epoch, r.scalars("acc/test/fused")["epoch"].tolist(), r.scalars("loss/fused")["step"].max()))
        return orig(self, epoch)

    monkeypatch.setattr(Trainer, "save_checkpoint", spy)
    t = Trainer(tiny(epochs=2, name="order", set=["log.flush_seconds=3600"]))
    t.fit()
    assert seen == [(0, [0], 7), (1, [0, 1], 15)]  # tiny: 8 steps per epoch


def test_torn_checkpoint_write_leaves_last_complete_checkpoint_usable(tiny):
    """A kill during the checkpoint write leaves ``checkpoint.pt.tmp``; the last complete checkpoint is used."""
    t = Trainer(tiny(epochs=1, name="torn"))
    t.fit()
    good = (t.run_dir / CHECKPOINT).read_bytes()
    (t.run_dir / (CHECKPOINT + ".tmp")).write_bytes(good[: len(good) // 3])
    raw = json.loads((t.run_dir / "config.json").read_text())
    raw["epochs"] = 2
    from modalscope.config import build_config

    t2 = Trainer(build_config(raw), resume=True, run_dir=t.run_dir)
    assert t2.start_epoch == 1 and t2.global_step == 8
    t2.fit()
    assert open_run(t.run_dir).scalars("loss/fused")["step"].tolist() == list(range(16))
