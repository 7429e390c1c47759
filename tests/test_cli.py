import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_cli, tiny_cli_args


def test_train_prints_run_folder_and_runs_commands(tmp_path):
    r = run_cli("train", "--method", "joint", "--name", "c1", *tiny_cli_args(tmp_path))
    assert r.returncode == 0, r.stderr
    run_dir = r.stdout.strip().splitlines()[-1]
    assert run_dir.endswith("c1")
    runs = str(tmp_path / "runs")
    ls = run_cli("runs", "list", "--runs-dir", runs)
    assert ls.returncode == 0 and "c1" in ls.stdout and "finished" in ls.stdout
    show = run_cli("runs", "show", "c1", "--runs-dir", runs)
    assert "status:   finished" in show.stdout and "bayes ceiling" in show.stdout
    out = tmp_path / "s.csv"
    ex = run_cli("runs", "export", "c1", "--runs-dir", runs, "--out", str(out))
    assert ex.returncode == 0
    df = pd.read_csv(out)
    assert {"step", "epoch", "name", "value"} <= set(df.columns) and (df["name"] == "loss/fused").sum() == 16
    pq = tmp_path / "s.parquet"
    assert run_cli("runs", "export", "c1", "--runs-dir", runs, "--format", "parquet", "--out", str(pq)).returncode == 0
    assert len(pd.read_parquet(pq)) == len(df)


def test_set_override_and_unimodal(tmp_path):
    r = run_cli("train", "--method", "unimodal", "--set", "method.modality=audio", "--name", "u", *tiny_cli_args(tmp_path))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "runs" / "u" / "config.json").read_text())
    assert cfg["method"] == {"name": "unimodal", "modality": "audio"}


def test_user_errors_are_one_line_without_traceback(tmp_path):
    cases = [
        (["train", "--set", "optim.lr=-1"], "optim.lr"),
        (["train", "--method", "nosuch"], "unknown method 'nosuch'"),
        (["train", "--name", "../x"], "invalid run name"),
        (["train", "--config", str(tmp_path / "missing.yaml")], "config file not found"),
        (["runs", "show", "ghost", "--runs-dir", str(tmp_path)], "no run 'ghost'"),
        (["train", "--resume", str(tmp_path / "nothing")], "not a run folder"),
    ]
    for args, expected in cases:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = [ln for ln in r.stderr.strip().splitlines() if ln]
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_existing_name_is_refused(tmp_path):
    args = ["train", "--name", "dup", *tiny_cli_args(tmp_path)]
    assert run_cli(*args).returncode == 0
    r = run_cli(*args)
    assert r.returncode == 2 and "already exists" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_dashboard_takes_its_streamlit_child_down(tmp_path, sig):
    """SIGTERM (or Ctrl-C's SIGINT) to ``modalscope dashboard`` stops its Streamlit server too."""
    import signal
    import time
    import urllib.request

    from tests.browser import free_port
    from tests.conftest import cli_env

    port = free_port()
    parent = subprocess.Popen([sys.executable, "-m", "modalscope", "dashboard", "--port", str(port), "--runs-dir", str(tmp_path / "r"),
                               "--sample-runs", str(tmp_path / "g")], env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise AssertionError("dashboard did not start")
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
        assert len(children) == 1
        child = int(children[0])
        parent.send_signal(getattr(signal, sig))
        assert parent.wait(30) == 130
        deadline = time.time() + 15
        while time.time() < deadline and Path(f"/proc/{child}").exists() and "Z" not in _proc_state(child):
            time.sleep(0.2)
        assert not Path(f"/proc/{child}").exists() or "Z" in _proc_state(child), "the Streamlit child is still running"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
    finally:
        parent.kill()


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.slow
def test_resume_extends_a_finished_run_or_refuses_in_one_line(tmp_path):
    from modalscope.store import open_run

    r = run_cli("train", "--method", "joint", "--name", "ext", *tiny_cli_args(tmp_path))
    assert r.returncode == 0, r.stderr
    run_dir = tmp_path / "runs" / "ext"
    again = run_cli("train", "--resume", str(run_dir), "--no-progress")
    assert again.returncode == 2
    assert again.stderr.strip() == (f"error: --resume {run_dir}: the run already finished its 2 epochs; "
                                    "add --epochs N with N > 2 to train it further")
    short = run_cli("train", "--resume", str(run_dir), "--epochs", "1", "--no-progress")
    assert short.returncode == 2 and "already finished its 2 epochs" in short.stderr
    other = run_cli("train", "--resume", str(run_dir), "--lr", "0.5", "--epochs", "3")
    assert other.returncode == 2 and "--lr cannot change it" in other.stderr
    ext = run_cli("train", "--resume", str(run_dir), "--epochs", "3", "--no-progress")
    assert ext.returncode == 0, ext.stderr
    rd = open_run(run_dir)
    s = rd.summary()
    assert (s["status"], s["epochs_done"], s["epochs"]) == ("finished", 3, 3)
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 3
    fused = rd.scalars(names=["acc/test/fused"])
    assert sorted(fused["epoch"]) == [0, 1, 2]


def test_runs_list_dashes_and_export_default_into_the_run_folder(tmp_path):
    from tests.planted import plant_run

    root = tmp_path / "runs"
    plant_run(root, "both", epochs=2, steps_per_epoch=2)
    plant_run(root, "vis", "unimodal", modality="visual", gap=False, epochs=2, steps_per_epoch=2, final_acc=0.55)
    ls = run_cli("runs", "list", "--runs-dir", str(root))
    assert ls.returncode == 0, ls.stderr
    lines = {ln.split()[0]: ln.split() for ln in ls.stdout.splitlines()[1:]}
    header = ls.stdout.splitlines()[0].split()
    vis = dict(zip(header, lines["vis"]))
    assert vis["acc_audio"] == "—" and vis["acc_visual"] == "0.5500" and "NaN" not in ls.stdout and "None" not in ls.stdout
    assert dict(zip(header, lines["both"]))["epochs_done"] == "2"
    stopped = plant_run(root, "stopped", epochs=2, steps_per_epoch=2, status="running")
    from modalscope.store import RunWriter

    RunWriter(stopped, resume=True, heartbeat_seconds=3600).close("interrupted", "stopped by signal 15 at step 3")
    (stopped / "checkpoint.pt").write_bytes(b"")
    show = run_cli("runs", "show", "stopped", "--runs-dir", str(root))
    assert f"status:   interrupted · Stopped by you at step 3; resume with modalscope train --resume {stopped}" in show.stdout
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    ex = run_cli("runs", "export", "vis", "--runs-dir", str(root), cwd=cwd)
    assert ex.returncode == 0, ex.stderr
    out = root / "vis" / "export_scalars.csv"
    assert ex.stdout.strip() == str(out) and out.is_file() and not any(cwd.iterdir())
    assert len(pd.read_csv(out)) > 0
    ignored = subprocess.run(["git", "check-ignore", "-q", "sample_runs/joint_imbalanced_s0/export_scalars.csv"],
                             cwd=Path(__file__).resolve().parent.parent)
    assert ignored.returncode == 0, "export files are not in .gitignore"
