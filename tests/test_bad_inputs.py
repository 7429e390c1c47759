"""Bad input through the command line: one line naming the problem, exit 2, no traceback.

Every case calls ``modalscope.cli.main`` (the function behind ``modalscope``) in-process, so a
stray exception would escape as a test error instead of being printed; a few cases are
also run as real subprocesses to check the process boundary. ``docs/reliability.md``
lists each case id with the input and the message.
"""

from __future__ import annotations

import errno
import json
import pickle
import shutil
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from modalscope import store
from modalscope.cli import main
from modalscope.engine import CHECKPOINT, Trainer
from modalscope.store import open_run
from tests.conftest import run_cli, tiny_cli_args, tiny_config

pytestmark = pytest.mark.reliability


@dataclass
class Env:
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    donor: Path
    other: Path
    shallow: Path

    def copy_donor(self, name: str = "copy") -> Path:
        dst = self.tmp / "runs" / name
        shutil.copytree(self.donor, dst)
        return dst

    def file(self, name: str, content: str | bytes) -> str:
        p = self.tmp / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(p)

    def tiny(self) -> list[str]:
        return tiny_cli_args(self.tmp)


@dataclass
class Case:
    id: str
    argv: Callable[[Env], list[str]]
    expect: str
    check: Callable[[Env], None] | None = None
    before_training: bool = True
    tags: tuple = field(default_factory=tuple)


class MaliciousPickle:
    """Unpickling calls ``open(path, 'w')``: the file appearing means code ran."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_malicious_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"model": MaliciousPickle(str(marker)), "epoch": 0}, path)


def _no_marker(env: Env) -> None:
    assert not (env.tmp / "pwned").exists(), "the checkpoint's pickle code ran"


def _unchanged_store(env: Env) -> None:
    r = open_run(env.tmp / "runs" / "copy")
    assert r.status() == "finished" and r.events()["kind"].tolist().count("resume") == 0


def _disk_full_sqlite(env: Env) -> list[str]:
    class FullDisk:
        def __init__(self, con):
            self._con = con

        def executemany(self, sql, rows):
            if sql.startswith("INSERT INTO scalars"):
                raise sqlite3.OperationalError("database or disk is full")
            return self._con.executemany(sql, rows)

        def __getattr__(self, k):
            return getattr(self._con, k)

    real = store._connect
    env.monkeypatch.setattr(store, "_connect", lambda path, readonly=False, timeout=30.0: real(path, readonly, timeout) if readonly else FullDisk(real(path, readonly, timeout)))
    return ["train", "--name", "full", *env.tiny()]


def _check_disk_full_sqlite(env: Env) -> None:
    env.monkeypatch.undo()
    r = open_run(env.tmp / "runs" / "full")
    assert r.status() == "failed" and "database or disk is full" in r.meta()["error"]


def _disk_full_checkpoint(env: Env) -> list[str]:
    import os

    real = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) >= 2:  # the first epoch's checkpoint fits, the second does not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    env.monkeypatch.setattr(os, "fsync", fsync)
    return ["train", "--name", "fullck", *env.tiny()]


def _check_disk_full_checkpoint(env: Env) -> None:
    d = env.tmp / "runs" / "fullck"
    assert not (d / (CHECKPOINT + ".tmp")).exists()
    assert torch.load(d / CHECKPOINT, weights_only=True)["epoch"] == 0, "the previous checkpoint must survive"
    r = open_run(d)
    assert r.status() == "failed" and r.scalars("acc/test/fused")["epoch"].tolist() == [0, 1]


def _readonly_mkdir(env: Env) -> list[str]:
    real = Path.mkdir

    def mkdir(self, *a, **k):
        if str(self).startswith(str(env.tmp / "runs")):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *a, **k)

    env.monkeypatch.setattr(Path, "mkdir", mkdir)
    return ["train", "--name", "ro", *env.tiny()]


def _readonly_store(env: Env) -> list[str]:
    d = env.copy_donor()
    real = store._connect
    env.monkeypatch.setattr(store, "_connect", lambda path, readonly=False, timeout=30.0: real(path, True, timeout))
    return ["train", "--resume", str(d), "--epochs", "2", "--no-progress"]  # the donor finished: extend it


def _full_config_write(env: Env) -> list[str]:
    real = Path.write_text

    def write_text(self, *a, **k):
        if self.name == "config.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *a, **k)

    env.monkeypatch.setattr(Path, "write_text", write_text)
    return ["train", "--name", "fullcfg", *env.tiny()]


def _nan_inject(env: Env) -> list[str]:
    from modalscope.methods import joint

    orig = joint.Joint.loss

    def bad(self, batch, out, ctx):
        parts = orig(self, batch, out, ctx)
        if ctx.step == 3:
            parts.total = parts.total * float("inf")
            parts.parts["fused"] = parts.total
        return parts

    env.monkeypatch.setattr(joint.Joint, "loss", bad)
    return ["train", "--name", "inf", *env.tiny()]


def _check_failed_at(name: str, step: int, what: str):
    def check(env: Env) -> None:
        r = open_run(env.tmp / "runs" / name)
        assert r.status() == "failed"
        assert f"at step {step}" in r.meta()["error"] and what in r.meta()["error"]
        assert r.scalars("loss/total")["step"].tolist() == list(range(step)), "rows before the failure stay"

    return check


def _corrupt(env: Env, how: str) -> str:
    d = env.copy_donor()
    db = d / "metrics.sqlite"
    data = db.read_bytes()
    if how == "garbage":
        db.write_bytes(b"\x00garbage" * 512)
    elif how == "truncated":
        db.write_bytes(data[: len(data) // 2])
    elif how == "header":
        db.write_bytes(b"NOT SQLITE FORMAT" + data[17:])
    return str(d)


def _swap_checkpoint(env: Env, content: bytes | None = None) -> str:
    d = env.copy_donor()
    (d / CHECKPOINT).write_bytes((env.other / CHECKPOINT).read_bytes() if content is None else content)
    return str(d)


def _newer_store(env: Env) -> str:
    d = env.copy_donor()
    con = sqlite3.connect(d / "metrics.sqlite")
    con.execute("UPDATE run SET value='7' WHERE key='schema_version'")
    con.commit()
    con.close()
    return str(d)


def _bad_config_json(env: Env) -> str:
    d = env.copy_donor()
    (d / "config.json").write_text('{"epochs": 2, "method": ')
    return str(d)


def _newer_config_json(env: Env) -> str:
    d = env.copy_donor()
    raw = json.loads((d / "config.json").read_text())
    raw["schema_version"] = 3
    raw["precision"] = "bf16"
    (d / "config.json").write_text(json.dumps(raw))
    return str(d)


def _truncated_checkpoint(env: Env) -> str:
    data = (env.donor / CHECKPOINT).read_bytes()
    return _swap_checkpoint(env, data[: len(data) // 2])


def _pickle_checkpoint(env: Env) -> str:
    d = env.copy_donor()
    write_malicious_checkpoint(d / CHECKPOINT, env.tmp / "pwned")
    return str(d)


def _plain_pickle_checkpoint(env: Env) -> str:
    p = env.tmp / "plain.pt"
    p.write_bytes(pickle.dumps(MaliciousPickle(str(env.tmp / "pwned"))))
    return str(p)


def _no_checkpoint_run(env: Env) -> str:
    d = env.copy_donor("nock")
    (d / CHECKPOINT).unlink()
    return str(d)


RUNS = lambda env: str(env.tmp / "runs")  # noqa: E731

CASES = [
    # --- out-of-range and wrong-type values (flags and --set) ---
    Case("lr-negative-flag", lambda e: ["train", "--lr", "-0.5"], "optim.lr: Input should be greater than 0 (got -0.5)"),
    Case("lr-nan", lambda e: ["train", "--set", "optim.lr=.nan"], "optim.lr: Input should be"),
    Case("lr-inf", lambda e: ["train", "--set", "optim.lr=.inf"], "optim.lr: Input should be"),
    Case("epochs-zero-flag", lambda e: ["train", "--epochs", "0"], "epochs: Input should be greater than or equal to 1 (got 0)"),
    Case("epochs-too-many", lambda e: ["train", "--set", "epochs=1000000"], "epochs: Input should be less than or equal to 100000"),
    Case("batch-size-not-int-flag", lambda e: ["train", "--batch-size", "abc"], "argument --batch-size: invalid int value: 'abc'"),
    Case("batch-size-word", lambda e: ["train", "--set", "batch_size=big"], "batch_size: Input should be a valid integer"),
    Case("seed-negative-flag", lambda e: ["train", "--seed", "-3"], "seed: Input should be greater than or equal to 0 (got -3)"),
    Case("seed-too-large", lambda e: ["train", "--set", "seed=99999999999"], "seed: Input should be less than or equal to 2147483647"),
    Case("dropout-one", lambda e: ["train", "--set", "model.dropout=1.0"], "model.dropout: Input should be less than 1"),
    Case("hidden-huge", lambda e: ["train", "--set", "model.hidden=100000"], "model.hidden: Input should be less than or equal to 8192"),
    Case("flush-seconds-zero", lambda e: ["train", "--set", "log.flush_seconds=0"], "log.flush_seconds: Input should be greater than 0"),
    Case("device-unknown-flag", lambda e: ["train", "--device", "tpu"], "device: Input should be 'auto', 'cpu' or 'cuda'"),
    Case("tags-not-mapping", lambda e: ["train", "--set", "tags=3"], "tags: Input should be a valid dictionary"),
    Case("section-not-mapping", lambda e: ["train", "--set", "optim=3"], "optim: Input should be a valid dictionary"),
    Case("classes-one", lambda e: ["train", "--set", "data.n_classes=1"], "data.n_classes: Input should be greater than or equal to 2"),
    Case("gap-split-unknown", lambda e: ["train", "--set", "diagnostics.gap_splits=[validation]"], "diagnostics.gap_splits.0: Input should be 'train', 'valid' or 'test'"),
    Case("bool-not-bool", lambda e: ["train", "--set", "log.checkpoint=maybe"], "log.checkpoint: Input should be a valid boolean"),
    Case("value-into-scalar", lambda e: ["train", "--set", "epochs.x=1"], "epochs: Input should be a valid integer"),
    # --- unknown names ---
    Case("method-unknown-flag", lambda e: ["train", "--method", "ogm"], "method: unknown method 'ogm'; available:"),
    Case("dataset-unknown-flag", lambda e: ["train", "--dataset", "imagenet"], "data: unknown dataset 'imagenet'; available:"),
    Case("preset-unknown-flag", lambda e: ["train", "--preset", "hard"], "data.preset: Input should be 'balanced'"),
    Case("subcommand-unknown", lambda e: ["fly"], "invalid choice: 'fly'"),
    Case("flag-unknown", lambda e: ["train", "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    Case("port-not-int", lambda e: ["dashboard", "--port", "x"], "argument --port: invalid int value: 'x'"),
    Case("export-format-unknown", lambda e: ["runs", "export", "r", "--format", "xlsx"], "argument --format: invalid choice: 'xlsx'"),
    # --- config files ---
    Case("yaml-malformed", lambda e: ["train", "--config", e.file("c.yaml", "epochs: [1, 2\n")], "malformed YAML in"),
    Case("yaml-bad-indent", lambda e: ["train", "--config", e.file("c.yaml", "optim:\n  lr: 0.1\n lr: 2\n")], "malformed YAML in"),
    Case("yaml-not-mapping", lambda e: ["train", "--config", e.file("c.yaml", "- epochs\n- 3\n")], "must hold a mapping of keys to values, got list"),
    Case("yaml-binary", lambda e: ["train", "--config", e.file("c.yaml", b"\xff\xfe\x00garbage: [\n")], "malformed YAML in"),
    Case("json-malformed", lambda e: ["train", "--config", e.file("c.json", '{"epochs": 3,,}')], "malformed JSON in"),
    Case("json-empty", lambda e: ["train", "--config", e.file("c.json", "")], "malformed JSON in"),
    Case("json-not-mapping", lambda e: ["train", "--config", e.file("c.json", "[1, 2]")], "must hold a mapping of keys to values, got list"),
    Case("config-newer-schema", lambda e: ["train", "--config", e.file("c.yaml", "schema_version: 2\nprecision: bf16\n")], "schema_version: config schema 2 is newer than this ModalScope understands (1)"),
    Case("config-key-from-newer-schema", lambda e: ["train", "--config", e.file("c.yaml", "precision: bf16\n")], "precision: unknown key"),
    Case("config-nested-unknown-key", lambda e: ["train", "--config", e.file("c.yaml", "optim:\n  lookahead: 5\n")], "optim.lookahead: unknown key"),
    # --- --set syntax ---
    Case("set-without-equals", lambda e: ["train", "--set", "epochs"], "--set expects dotted.key=value, got 'epochs'"),
    Case("set-empty-key", lambda e: ["train", "--set", "=3"], "--set has an empty key in '=3'"),
    Case("set-empty-segment", lambda e: ["train", "--set", "optim..lr=1"], "--set has an empty key in 'optim..lr=1'"),
    # --- names and paths ---
    Case("name-with-slash", lambda e: ["train", "--name", "a/b"], "invalid run name 'a/b'"),
    Case("name-dotdot", lambda e: ["train", "--name", ".."], "invalid run name '..'"),
    Case("name-absolute", lambda e: ["train", "--name", "/etc/x"], "invalid run name '/etc/x'"),
    Case("runs-show-dotdot", lambda e: ["runs", "show", "..", "--runs-dir", RUNS(e)], "invalid run name '..'"),
    Case("runs-dir-under-file", lambda e: ["train", *e.tiny(), "--runs-dir", e.file("afile", "x") + "/runs"], "cannot write run folder", tags=("Not a directory",)),
    Case("runs-dir-read-only", lambda e: _readonly_mkdir(e), "cannot write run folder", tags=("Permission denied",)),
    Case("run-store-read-only", lambda e: _readonly_store(e), "cannot open run store", tags=("readonly database",)),
    Case("disk-full-config", lambda e: _full_config_write(e), "cannot write run folder", tags=("No space left on device",)),
    Case("disk-full-store", lambda e: _disk_full_sqlite(e), "database or disk is full", check=_check_disk_full_sqlite, before_training=False),
    Case("disk-full-checkpoint", lambda e: _disk_full_checkpoint(e), "checkpoint.pt: No space left on device", check=_check_disk_full_checkpoint, before_training=False),
    Case("export-into-missing-folder", lambda e: ["runs", "export", str(e.donor), "--out", str(e.tmp / "nope" / "x.csv")], "Cannot save file into a non-existent directory"),
    # --- run stores ---
    Case("store-garbage", lambda e: ["runs", "show", _corrupt(e, "garbage")], "metrics.sqlite: file is not a database"),
    Case("store-truncated", lambda e: ["runs", "show", _corrupt(e, "truncated")], "metrics.sqlite: database disk image is malformed"),
    Case("store-bad-header-resume", lambda e: ["train", "--resume", _corrupt(e, "header"), "--epochs", "2", "--no-progress"], "cannot open run store", tags=("not a database",)),
    Case("store-newer-schema", lambda e: ["runs", "show", _newer_store(e)], "uses store schema 7, newer than this ModalScope (1)"),
    Case("run-config-json-malformed", lambda e: ["train", "--resume", _bad_config_json(e)], "malformed JSON in"),
    Case("run-config-newer-schema", lambda e: ["train", "--resume", _newer_config_json(e)], "config schema 3 is newer"),
    # --- checkpoints ---
    Case("resume-foreign-checkpoint", lambda e: ["train", "--resume", _swap_checkpoint(e), "--epochs", "2", "--no-progress"], "does not fit this run's model: size mismatch for encoders.audio", check=_unchanged_store),
    Case("init-from-foreign-model", lambda e: ["train", "--name", "init", *e.tiny(), "--init-from", str(e.other)], "does not fit this model: size mismatch for encoders.audio", check=lambda e: _assert_absent(e.tmp / "runs" / "init")),
    Case("init-from-other-depth", lambda e: ["train", "--name", "init", *e.tiny(), "--init-from", str(e.shallow)], "does not fit this model: Missing key(s) in state_dict: \"encoders.audio.net.4.weight\""),
    Case("init-from-no-checkpoint", lambda e: ["train", "--name", "init", *e.tiny(), "--init-from", _no_checkpoint_run(e)], "no checkpoint.pt found"),
    Case("checkpoint-truncated", lambda e: ["train", "--resume", _truncated_checkpoint(e), "--epochs", "2", "--no-progress"], "cannot read checkpoint", check=_unchanged_store, tags=("truncated",)),
    Case("checkpoint-random-bytes", lambda e: ["train", "--name", "init", *e.tiny(), "--init-from", e.file("junk.pt", b"\x80\x04junk" * 99)], "cannot read checkpoint"),
    Case("checkpoint-pickle-with-code", lambda e: ["train", "--resume", _pickle_checkpoint(e), "--epochs", "2", "--no-progress"], "cannot read checkpoint", check=lambda e: (_no_marker(e), _unchanged_store(e)), tags=("refused by weights_only", "GLOBAL io.open")),
    Case("checkpoint-bare-pickle", lambda e: ["train", "--name", "init", *e.tiny(), "--init-from", _plain_pickle_checkpoint(e)], "cannot read checkpoint", check=_no_marker, tags=("refused by weights_only",)),
    # --- training that goes non-finite ---
    Case("training-diverges-nan", lambda e: ["train", "--name", "nan", *e.tiny(), "--lr", "10", "--set", "optim.momentum=0.99", "--set", "data.scale={audio: 1000, visual: 1000}"], "non-finite loss (nan) at step 2, epoch 0", check=_check_failed_at("nan", 2, "loss/fused"), before_training=False),
    Case("training-loss-inf", lambda e: _nan_inject(e), "non-finite loss (inf) at step 3, epoch 0: loss/fused", check=_check_failed_at("inf", 3, "loss/fused"), before_training=False),
]


def _assert_absent(p: Path) -> None:
    assert not p.exists(), f"{p} was created although the input was refused"


@pytest.fixture(scope="module")
def donors(tmp_path_factory):
    """A finished tiny run (matching ``tiny_cli_args``), one of another width and one of another depth."""
    root = tmp_path_factory.mktemp("donors")
    from modalscope.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["train", *tiny_cli_args(root), "--name", "donor", "--epochs", "1"]))
    Trainer(cfg).fit()
    other = config_from_args(build_parser().parse_args(["train", *tiny_cli_args(root), "--name", "other", "--epochs", "1",
                                                         "--set", "model.hidden=8"]))
    Trainer(other).fit()
    Trainer(tiny_config(root, name="shallow", epochs=1, model={"depth": 1})).fit()
    return root / "runs" / "donor", root / "runs" / "other", root / "runs" / "shallow"


def test_at_least_thirty_distinct_cases():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_error(case: Case, tmp_path, monkeypatch, capsys, donors):
    env = Env(tmp_path, monkeypatch, *donors)
    (tmp_path / "runs").mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path)
    argv = case.argv(env)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse usage errors exit through SystemExit
        rc = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (argv, err)
    assert "Traceback" not in err
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    if case.before_training:
        assert lines == errors, f"nothing but the error line expected: {err}"
    assert case.expect in errors[0], errors[0]
    for t in case.tags:
        assert t in errors[0], errors[0]
    if case.check:
        case.check(env)


@pytest.mark.slow
def test_real_process_prints_one_line_without_traceback(tmp_path):
    """The same guarantee across the process boundary (usage error; refused pickle, which also warns in torch)."""
    ck = tmp_path / "evil.pt"
    write_malicious_checkpoint(ck, tmp_path / "pwned")
    cases = [
        (["train", "--batch-size", "abc"], "invalid int value"),
        (["train", *tiny_cli_args(tmp_path), "--init-from", str(ck)], "refused by weights_only"),
    ]
    for args, expected in cases:
        r = run_cli(*args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "runs").exists(), "a refused --init-from must not create a run folder"


def test_docs_table_lists_every_case():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "reliability.md").read_text()
    missing = [c.id for c in CASES if f"| `{c.id}` |" not in doc]
    assert missing == []
