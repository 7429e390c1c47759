"""modalscope.launcher: validated argument lists, detached processes, refusal of bad fields, stop."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from modalscope import launcher
from modalscope.errors import ConfigError, StoreError
from modalscope.store import open_run
from tests.conftest import TINY_DATA

TINY = {"data": dict(TINY_DATA), "model": {"hidden": 16, "embed_dim": 8, "depth": 1}, "batch_size": 64, "epochs": 2}


class FakePopen:
    calls: list = []

    def __init__(self, argv, **kw):
        FakePopen.calls.append((argv, kw))
        self.pid = 4242

    def poll(self):
        return 0


@pytest.fixture
def fake_popen(monkeypatch):
    FakePopen.calls = []
    monkeypatch.setattr(launcher.subprocess, "Popen", FakePopen)
    return FakePopen


def test_launch_uses_argument_list_detached_session_and_log_file(tmp_path, fake_popen):
    started = launcher.launch({**TINY, "name": "mine"}, "0-1", tmp_path / "runs")
    assert [s.name for s in started] == ["mine_s0", "mine_s1"]
    argv, kw = fake_popen.calls[0]
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    assert argv[:4] == [sys.executable, "-m", "modalscope", "train"]
    assert argv[argv.index("--name") + 1] == "mine_s0" and argv[argv.index("--seed") + 1] == "0" and "--no-progress" in argv
    assert kw.get("shell", False) is False and kw["start_new_session"] is True
    assert kw["stdout"].name.endswith("mine_s0/launch.log") and kw["stderr"] == subprocess.STDOUT
    cfg = json.loads((tmp_path / "runs" / "mine_s1" / "launch.json").read_text())
    assert cfg["seed"] == 1 and cfg["name"] == "mine_s1" and cfg["data"]["n_train"] == 256


@pytest.mark.parametrize(
    "raw, seeds, message",
    [
        ({"optim": {"lr": -1}}, "0", "optim.lr"),
        ({"epochs": 0}, "0", "epochs"),
        ({"method": {"name": "nope"}}, "0", "unknown method"),
        ({"name": "../escape"}, "0", "invalid run name"),
        ({"name": "a; rm -rf /"}, "0", "invalid run name"),
        ({"name": "$(touch x)"}, "0", "invalid run name"),
        ({"data": {"name": "synthetic", "n_train": "many"}}, "0", "data.n_train"),
        ({}, "0;ls", "seeds"),
        ({}, "x", "seeds"),
        ({"method": {"name": "unimodal", "modality": "smell"}}, "0", "modality"),
    ],
)
def test_bad_fields_are_rejected_before_anything_starts(tmp_path, fake_popen, raw, seeds, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("$", r"\$")):
        launcher.launch({**TINY, **raw}, seeds, tmp_path / "runs")
    assert fake_popen.calls == []
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_existing_name_is_refused_and_default_names_are_unique(tmp_path, fake_popen):
    launcher.launch({**TINY, "name": "same"}, "0", tmp_path / "runs")
    with pytest.raises(ConfigError, match="already exists"):
        launcher.launch({**TINY, "name": "same"}, "0", tmp_path / "runs")
    a = launcher.launch(dict(TINY), "0", tmp_path / "runs")
    b = launcher.launch(dict(TINY), "0", tmp_path / "runs")
    assert a[0].name != b[0].name


def test_stop_refuses_outside_root_and_non_running(tmp_path):
    from tests.planted import plant_run

    d = plant_run(tmp_path / "gallery", "done", epochs=1, steps_per_epoch=2)
    with pytest.raises(StoreError, match="not a run folder directly inside"):
        launcher.stop_run(d, tmp_path / "runs")
    with pytest.raises(StoreError, match="not running"):
        launcher.stop_run(d, tmp_path / "gallery")


@pytest.mark.slow
def test_launched_run_survives_and_stops_with_sigterm(tmp_path):
    """A real detached trainer: reaches `running`, SIGTERM → status `interrupted`."""
    raw = {**TINY, "epochs": 400, "name": "long", "log": {"progress": False, "heartbeat_seconds": 0.5, "flush_seconds": 0.2}}
    started = launcher.launch(raw, "0", tmp_path / "runs")
    run_dir = started[0].run_dir
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if open_run(run_dir).last_id() > 0:
                break
        except StoreError:  # not created yet, or its tables are being created right now
            pass
        time.sleep(0.3)
    assert open_run(run_dir).status() == "running", (run_dir / "launch.log").read_text()
    pid = launcher.stop_run(run_dir, tmp_path / "runs")
    assert pid == open_run(run_dir).meta()["pid"]
    while time.time() < deadline and open_run(run_dir).status() == "running":
        time.sleep(0.2)
    assert open_run(run_dir).status() == "interrupted"
    assert "stopped by signal" in open_run(run_dir).meta()["error"]
