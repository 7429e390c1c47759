"""`modalscope sweep`: spec expansion, validation before running, local pool, re-runs, failures, Ray."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import yaml

from modalscope.cli import main
from modalscope.errors import ConfigError
from modalscope.store import RunReader, is_run_dir
from modalscope.sweep import expand, plan, run_sweep
from tests.conftest import TINY_DATA, run_cli

TINY_SETS = [
    "epochs=2", "batch-size=32", f"data.n_train={TINY_DATA['n_train']}", f"data.n_test={TINY_DATA['n_test']}",
    "data.dims={audio: 16, visual: 24}", "model.hidden=32", "model.embed_dim=16", "model.depth=1",
]
SPEC = {
    "name": "demo",
    "base": {"dataset": "synthetic", "preset": "imbalanced", "method.modality": "audio"},
    "grid": {"method": ["joint", "unimodal"], "seed": [0, 1]},
}
NAMES = ["demo_method-joint_seed-0", "demo_method-joint_seed-1", "demo_method-unimodal_seed-0", "demo_method-unimodal_seed-1"]


def _sets() -> list[str]:
    return [a for s in TINY_SETS for a in ("--set", s)]


def _write_spec(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return p


def _metrics(runs: Path) -> dict[str, dict[str, float]]:
    return {d.name: RunReader(d).final_scalars("acc/test/") for d in sorted(runs.iterdir()) if is_run_dir(d)}


# ---------------------------------------------------------------------------- spec parsing
def test_grid_times_random_with_every_key_form(tmp_path):
    spec = {
        "name": "mix",
        "base": {"dataset": "synthetic", "preset": "noisy", "epochs": 3, "model": {"hidden": 48}, "optim.momentum": 0.5},
        "grid": {"method": ["joint", "unimodal:visual"], "seed": [0, 1]},
        "random": {"n": 3, "seed": 7, "fields": {"lr": {"low": 0.001, "high": 0.1, "log": True}, "batch-size": [16, 32, 64]}},
    }
    sw = expand(spec, tmp_path / "runs")
    assert len(sw.trials) == 2 * 2 * 3
    assert sw.swept == ["method.name", "seed", "optim.lr", "batch_size"]  # modality has one value: not swept
    first = sw.trials[0].config
    assert first.data.preset == "noisy" and first.epochs == 3 and first.model.hidden == 48 and first.optim.momentum == 0.5
    for t in sw.trials:
        c = t.config
        assert 0.001 <= c.optim.lr <= 0.1 and c.batch_size in (16, 32, 64)
        assert c.tags == {"sweep": "mix", "swept": "method.name,seed,optim.lr,batch_size", "trial": f"{t.index:03d}"}
        assert c.name == t.name and t.run_dir == tmp_path / "runs" / t.name and c.log.progress is False
    uni = [t.config for t in sw.trials if t.config.method.name == "unimodal"]
    assert len(uni) == 6 and all(c.method.modality == "visual" for c in uni)
    # the 3 random draws are the same for every grid point (paired comparisons) ...
    draws = [(t.config.optim.lr, t.config.batch_size) for t in sw.trials]
    assert draws[0:3] == draws[3:6] == draws[6:9] == draws[9:12] and len(set(draws[0:3])) == 3
    # ... and reproducible from the seed, different for another seed
    assert [(t.config.optim.lr, t.config.batch_size) for t in expand(spec, tmp_path).trials] == draws
    other = dict(spec, random={**spec["random"], "seed": 8})
    assert [(t.config.optim.lr, t.config.batch_size) for t in expand(other, tmp_path).trials] != draws
    assert len({t.name for t in sw.trials}) == 12


def test_method_knobs_apply_only_to_methods_that_have_them(tmp_path):
    spec = {"name": "k", "grid": {"method": ["joint", "unimodal"], "method.modality": ["audio", "visual"]}}
    sw = expand(spec, tmp_path)
    got = [(t.config.method.name, getattr(t.config.method, "modality", None)) for t in sw.trials]
    assert got == [("joint", None), ("unimodal", "audio"), ("unimodal", "visual")]
    assert [t.name for t in sw.trials] == ["k_method-joint", "k_method-unimodal_modality-audio", "k_method-unimodal_modality-visual"]
    assert sw.trials[0].config.tags["swept"] == "method.name,method.modality"


def test_names_are_valid_and_unique_for_awkward_values(tmp_path):
    spec = {"name": "w", "base": {"tags": {"owner": "me"}}, "grid": {"optim.lr": [1e-05, 0.25], "data.scale": [{"audio": 1.0, "visual": 0.3}, {"audio": 1e20, "visual": 0.3}]}}
    sw = expand(spec, tmp_path)
    assert [t.name for t in sw.trials] == ["w_lr-1e-05_scale.audio-1", "w_lr-1e-05_scale.audio-1e20", "w_lr-0.25_scale.audio-1", "w_lr-0.25_scale.audio-1e20"]
    assert sw.swept == ["optim.lr", "data.scale.audio"]
    assert sw.trials[0].config.tags["owner"] == "me"
    assert expand({"name": "one", "base": {"seed": 3}}, tmp_path).trials[0].name == "one"


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"grid": {"seed": 3}}, "grid.seed: expected a non-empty list of values"),
        ({"grid": {"seed": []}}, "grid.seed: expected a non-empty list"),
        ({"grdi": {"seed": [1]}}, "unknown key 'grdi'"),
        ({"grid": {"lr": [0.1], "optim.lr": [0.2]}}, "both set optim.lr"),
        ({"base": {"lr": 0.1, "optim": {"lr": 0.2}}}, "base: 'optim' sets optim.lr"),
        ({"base": {"name": "x"}}, "base.name: set by the sweep"),
        ({"base": {"runs-dir": "/tmp"}}, "use --runs-dir"),
        ({"random": {"n": 0, "fields": {"lr": [0.1]}}}, "random.n: expected a whole number"),
        ({"random": {"n": 2, "fields": {"lr": {"low": 0.1, "high": 0.01}}}}, "random.fields.lr: low must be below high"),
        ({"random": {"n": 2, "fields": {"lr": {"low": 0, "high": 1, "log": True}}}}, "log range needs low > 0"),
        ({"random": {"n": 2, "fields": {"seed": [1, 2]}}, "grid": {"seed": [0]}}, "random.fields: seed is also a grid field"),
        ({"name": "a/b"}, "sweep name: invalid run name"),
        ({"resources": {"cpus": 0}}, "resources.cpus: must be > 0"),
        ({"grid": {"method": ["joint", "nosuch"]}}, "trial 001 (method.name=nosuch): method: unknown method 'nosuch'"),
        ({"grid": {"lr": [0.05, -1.0]}}, "trial 001 (optim.lr=-1): optim.lr: Input should be greater than 0"),
        ({"grid": {"method.alpah": [0.1, 0.2]}}, "trial 000 (method.alpah=0.1): method.alpah: unknown key"),
    ],
)
def test_bad_specs_are_one_line_errors(tmp_path, spec, expected):
    with pytest.raises(ConfigError) as e:
        expand(spec, tmp_path)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_bad_trial_value_is_caught_before_anything_runs(tmp_path, capsys):
    spec = _write_spec(tmp_path, {"name": "bad", "grid": {"seed": [0, 1], "optim.momentum": [0.5, 1.5]}})
    runs = tmp_path / "runs"
    rc = main(["sweep", str(spec), "--runs-dir", str(runs), *_sets()])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == "error: sweep bad: trial 001 (seed=0, optim.momentum=1.5): optim.momentum: Input should be less than 1 (got 1.5)"
    assert not runs.exists()


def test_set_cannot_override_a_swept_field(tmp_path):
    with pytest.raises(ConfigError, match=r"--set seed: this field is swept"):
        expand(SPEC, tmp_path, ["seed=4"])


# ---------------------------------------------------------------------------- local executor
@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The 2 methods × 2 seeds sweep, run once by the CLI with a pool of 2 workers."""
    tmp = tmp_path_factory.mktemp("local")
    spec = _write_spec(tmp, SPEC)
    runs = tmp / "runs"
    r = run_cli("sweep", str(spec), "--runs-dir", str(runs), "--workers", "2", "--no-progress", *_sets())
    return spec, runs, r


@pytest.mark.slow
def test_local_pool_runs_every_trial_into_its_own_tagged_folder(local_sweep):
    spec, runs, r = local_sweep
    assert r.returncode == 0, r.stderr
    assert sorted(d.name for d in runs.iterdir()) == NAMES
    table = [ln.split() for ln in r.stdout.strip().splitlines()]
    assert table[0] == ["trial", "name", "status", "acc_fused", "seconds"]
    rows = {row[1]: row for row in table[1:]}
    metrics = _metrics(runs)
    for i, name in enumerate(NAMES):
        reader = RunReader(runs / name)
        cfg = reader.config()
        assert reader.status() == "finished" and cfg["epochs"] == 2 and cfg["data"]["n_train"] == 256
        assert cfg["tags"] == {"sweep": "demo", "swept": "method.name,seed", "trial": f"{i:03d}"}
        assert rows[name][0] == f"{i:03d}" and rows[name][2] == "finished"
        assert rows[name][3] == f"{metrics[name]['acc/test/fused']:.4f}"
        assert cfg["method"]["name"] == name.split("-")[1].split("_")[0]
        assert cfg["method"].get("modality") == (None if "joint" in name else "audio")
    assert set(metrics["demo_method-unimodal_seed-0"]) == {"acc/test/fused", "acc/test/audio"}


@pytest.mark.slow
def test_rerun_skips_finished_and_resumes_interrupted(local_sweep, tmp_path, monkeypatch):
    from modalscope import engine

    spec, runs, r = local_sweep
    assert r.returncode == 0, r.stderr
    before = _metrics(runs)
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    victim = copy / "demo_method-joint_seed-1"
    shutil.rmtree(victim)
    trial = next(t for t in expand(yaml.safe_load(spec.read_text()), copy, TINY_SETS).trials if t.name == victim.name)
    trainer = engine.Trainer(trial.config, run_dir=victim)
    real_epoch = trainer._run_epoch

    def stop_after_first(epoch, bar):
        out = real_epoch(epoch, bar)
        raise engine.StopRequested("test stop")

    trainer._run_epoch = stop_after_first
    with pytest.raises(engine.StopRequested):
        trainer.fit()
    assert RunReader(victim).status() == "interrupted"

    calls = []
    real_train = engine.train

    def counting(cfg, resume=False, init_from=None, run_dir=None):
        calls.append((Path(run_dir).name, resume))
        return real_train(cfg, resume=resume, init_from=init_from, run_dir=run_dir)

    monkeypatch.setattr(engine, "train", counting)
    res = run_sweep(yaml.safe_load(spec.read_text()), copy, workers=1, overrides=TINY_SETS, progress=False)
    assert calls == [(victim.name, True)]
    status = {x["name"]: x["status"] for x in res.results}
    assert status == {n: ("finished" if n == victim.name else "skipped") for n in NAMES}
    # the resumed trial replays exactly what the uninterrupted run computed
    assert _metrics(copy) == before
    assert [e for e in RunReader(victim).events()["kind"] if e == "resume"] == ["resume"]
    calls.clear()
    again = run_sweep(yaml.safe_load(spec.read_text()), copy, workers=1, overrides=TINY_SETS, progress=False)
    assert calls == [] and {x["status"] for x in again.results} == {"skipped"}


@pytest.mark.slow
def test_changed_spec_over_finished_runs_is_refused(local_sweep, tmp_path):
    spec, runs, r = local_sweep
    assert r.returncode == 0, r.stderr
    sets = [s if s != "epochs=2" else "epochs=3" for s in TINY_SETS]
    sw = expand(SPEC, runs, sets)
    with pytest.raises(ConfigError, match=r"trial 000 \(demo_method-joint_seed-0\) exists .* different config \(epochs: 2 -> 3\)"):
        plan(sw)


def test_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from modalscope import engine

    spec = {"name": "f", "grid": {"data.scale": [{"audio": 1.0e20, "visual": 0.3}, {"audio": 1.0, "visual": 0.3}]}}
    runs = tmp_path / "runs"
    res = run_sweep(spec, runs, workers=1, overrides=TINY_SETS, progress=False)
    by = {x["name"]: x for x in res.results}
    bad, good = by["f_scale.audio-1e20"], by["f_scale.audio-1"]
    assert bad["status"] == "failed" and bad["error"].startswith("non-finite loss (nan) at step")
    assert good["status"] == "finished" and 0.0 < good["metrics"]["acc/test/fused"] <= 1.0
    meta = RunReader(runs / "f_scale.audio-1e20").meta()
    assert meta["status"] == "failed" and meta["error"] == bad["error"]
    assert [x["name"] for x in res.failed] == ["f_scale.audio-1e20"] and "failed (non-finite loss" in res.table()

    calls = []
    real_train = engine.train
    monkeypatch.setattr(engine, "train", lambda cfg, resume=False, run_dir=None, **k: calls.append((Path(run_dir).name, resume)) or real_train(cfg, resume=resume, run_dir=run_dir))
    again = run_sweep(spec, runs, workers=1, overrides=TINY_SETS, progress=False)
    assert calls == [("f_scale.audio-1e20", False)]
    assert {x["name"]: x["status"] for x in again.results} == {"f_scale.audio-1e20": "failed", "f_scale.audio-1": "skipped"}


def test_trial_dying_before_its_store_opens_still_leaves_a_failed_run(tmp_path):
    import torch

    from modalscope.sweep_executors import run_trial

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA to make device=cuda fail")
    sw = expand({"name": "d", "base": {"device": "cuda"}}, tmp_path / "runs", TINY_SETS)
    t = sw.trials[0]
    out = run_trial({"index": 0, "trial": "000", "name": t.name, "config": t.config.dump(), "run_dir": str(t.run_dir), "action": "new", "threads": 1})
    assert out["status"] == "failed" and "no CUDA device" in out["error"]
    reader = RunReader(t.run_dir)
    assert reader.meta()["status"] == "failed" and reader.config()["tags"]["sweep"] == "d"


@pytest.mark.slow
def test_dry_run_lists_actions_and_runs_nothing(local_sweep, tmp_path, capsys):
    spec, runs, r = local_sweep
    assert r.returncode == 0, r.stderr
    spec2 = dict(SPEC, grid={"method": ["joint", "unimodal"], "seed": [0, 1, 2]})
    p = _write_spec(tmp_path, spec2)
    rc = main(["sweep", str(p), "--runs-dir", str(runs), "--dry-run", *_sets()])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "6 trials (2 new, 4 skip)" in err
    actions = {ln.split()[2]: ln.split()[1] for ln in out.strip().splitlines()}
    assert actions == {**{n: "skip" for n in NAMES}, "demo_method-joint_seed-2": "new", "demo_method-unimodal_seed-2": "new"}
    assert sorted(x.name for x in runs.iterdir()) == NAMES


# ---------------------------------------------------------------------------- Ray executor
@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(660)  # the sweep subprocess has its own 600 s limit; Ray's cold start is the slow part
def test_ray_local_runtime_gives_the_same_metrics_as_the_local_pool(local_sweep, tmp_path):
    pytest.importorskip("ray")
    spec, runs, r = local_sweep
    assert r.returncode == 0, r.stderr
    ray_runs = tmp_path / "ray_runs"
    rr = run_cli("sweep", str(spec), "--runs-dir", str(ray_runs), "--executor", "ray", "--workers", "2",
                 "--cpus-per-trial", "1", "--no-progress", *_sets(), timeout=600)
    assert rr.returncode == 0, rr.stderr
    local, remote = _metrics(runs), _metrics(ray_runs)
    assert sorted(remote) == NAMES and remote == local
    assert all(not math.isnan(v) for m in remote.values() for v in m.values())
    for name in NAMES:
        assert RunReader(ray_runs / name).config()["tags"] == RunReader(runs / name).config()["tags"]
        a = RunReader(runs / name).scalars("loss/fused")["value"].tolist()
        b = RunReader(ray_runs / name).scalars("loss/fused")["value"].tolist()
        assert a == b and len(a) == 16


@pytest.mark.ray
def test_unreachable_ray_address_is_one_line_and_runs_nothing(tmp_path, capsys):
    pytest.importorskip("ray")
    spec = _write_spec(tmp_path, SPEC)
    runs = tmp_path / "runs"
    rc = main(["sweep", str(spec), "--runs-dir", str(runs), "--executor", "ray", "--address", "127.0.0.1:9", "--no-progress", *_sets()])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1] == "error: cannot reach Ray at 127.0.0.1:9: Connection refused" and not runs.exists()


def test_malformed_spec_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: {seed: [0, 1]\nbase: x")
    assert main(["sweep", str(bad), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: malformed YAML in {bad}") and "\n" not in err
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"error: sweep spec not found: {tmp_path / 'missing.yaml'}"
