"""Start-up shortcuts change nothing but start-up: dynamo stays unimported, results stay bit-identical."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, cli_env

# Trains a tiny run with each optimiser and prints (was torch._dynamo imported?, sha256 of
# the final weights); argv[1] == "dynamo" imports torch._dynamo first, which makes
# modalscope.lazy_dynamo step aside and torch take its own path.
SCRIPT = r"""
import hashlib, io, json, sys
if sys.argv[1] == "dynamo":
    import torch._dynamo
import torch
from modalscope.engine import Trainer
from tests.conftest import tiny_config
from pathlib import Path
out = {}
for opt in ("sgd", "adam", "adamw"):
    cfg = tiny_config(Path(sys.argv[2]) / opt, epochs=2, optim={"name": opt, "lr": 0.01},
                      diagnostics={"conflict": True, "conflict_every": 3})
    t = Trainer(cfg)
    t.fit()
    buf = io.BytesIO()
    torch.save({k: v for k, v in t.model.state_dict().items()}, buf)
    h = hashlib.sha256()
    for k, v in sorted(t.model.state_dict().items()):
        h.update(k.encode()); h.update(v.detach().cpu().numpy().tobytes())
    h.update(json.dumps(t.optimizer.state_dict()["param_groups"], sort_keys=True, default=str).encode())
    for s in t.optimizer.state_dict()["state"].values():
        for k, v in sorted(s.items()):
            h.update(v.cpu().numpy().tobytes() if torch.is_tensor(v) else repr(v).encode())
    out[opt] = h.hexdigest()
print(json.dumps({"dynamo": "torch._dynamo" in sys.modules, "hashes": out}))
"""


def _run(mode: str, tmp_path) -> dict:
    p = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(tmp_path / mode)], capture_output=True, text=True,
                       env=cli_env(), cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_training_is_bit_identical_without_the_dynamo_import(tmp_path):
    lean, stock = _run("lean", tmp_path), _run("dynamo", tmp_path)
    assert lean["dynamo"] is False, "a default run imported torch._dynamo"
    assert stock["dynamo"] is True
    assert lean["hashes"] == stock["hashes"]


def test_dispatcher_delegates_to_torch_once_dynamo_is_imported():
    import torch

    from modalscope import lazy_dynamo

    lazy_dynamo.install()
    fn = torch.optim.Optimizer.zero_grad.__wrapped__
    seeded = getattr(fn, "__dynamo_disable", None)
    if seeded is None or getattr(seeded, "__wrapped__", None) is not fn:
        pytest.skip("torch._dynamo was imported before modalscope.engine in this test process: nothing was patched")
    import torch._dynamo  # noqa: F401 - the point of the test

    m = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(torch.ones(1, 2)).sum().backward()
    opt.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    # after the import the dispatcher built and holds torch's own disable wrapper
    cells = dict(zip(seeded.__code__.co_freevars, (c.cell_contents for c in seeded.__closure__)))
    assert cells["real"] is not None and cells["real"] is not fn


def test_disk_cache_serves_the_computed_value_and_recomputes_on_bad_files(tmp_path, monkeypatch):
    from modalscope.data import disk_cache

    monkeypatch.setenv("MODALSCOPE_CACHE_DIR", str(tmp_path / "c"))
    calls = []

    def compute():
        calls.append(1)
        return [["fused", 0.75], ["audio", 0.5]]

    first = disk_cache.cached_json("t", ["a", 1], compute, code=(compute,))
    again = disk_cache.cached_json("t", ["a", 1], compute, code=(compute,))
    assert first == again == [["fused", 0.75], ["audio", 0.5]] and len(calls) == 1
    disk_cache.cached_json("t", ["a", 2], compute, code=(compute,))
    assert len(calls) == 2, "different arguments must not share an entry"
    for f in (tmp_path / "c").iterdir():
        f.write_text("{not json")
    assert disk_cache.cached_json("t", ["a", 1], compute, code=(compute,)) == first and len(calls) == 3
    assert disk_cache.cached_json("t", ["a", 1], compute, code=(compute,), valid=lambda v: False) == first and len(calls) == 4
    monkeypatch.setenv("MODALSCOPE_CACHE_DIR", "off")
    disk_cache.cached_json("t", ["a", 1], compute)
    assert len(calls) == 5


def test_cached_bayes_ceilings_equal_the_monte_carlo_estimate(tmp_path, monkeypatch):
    from modalscope.data.synthetic import SyntheticParams, _bayes_cached, bayes_ceilings

    monkeypatch.setenv("MODALSCOPE_CACHE_DIR", str(tmp_path / "c"))
    p = SyntheticParams(preset="imbalanced")
    fresh = dict(_bayes_cached(p.model_dump_json(), 20_000, 3))
    assert bayes_ceilings(p, n_mc=20_000, seed=3) == fresh
    assert len(list((tmp_path / "c").iterdir())) == 1
    _bayes_cached.cache_clear()
    assert bayes_ceilings(p, n_mc=20_000, seed=3) == fresh  # from disk now


def test_cached_synthetic_arrays_equal_freshly_generated_ones(tmp_path, monkeypatch):
    """A synthetic bundle built from the on-disk array cache (cold, then warm, then a corrupt
    file) holds exactly the tensors and corruption masks of one generated without a cache."""
    import numpy as np
    import torch

    from modalscope.data.synthetic import Synthetic, SyntheticParams

    p = SyntheticParams(preset="noisy", n_train=64, n_valid=0, n_test=32)

    def build(cache):
        monkeypatch.setenv("MODALSCOPE_CACHE_DIR", cache)
        return Synthetic.build(p)

    ref = build("off")
    cache = tmp_path / "c"
    for attempt in ("cold", "warm", "corrupt"):
        if attempt == "corrupt":
            for f in cache.glob("synthetic-*.npz"):
                f.write_bytes(b"not a zip")
        b = build(str(cache))
        assert set(b.splits) == set(ref.splits) == {"train", "test"}
        for s, ds in ref.splits.items():
            assert torch.equal(b.splits[s].labels, ds.labels)
            for m in ref.modalities:
                assert torch.equal(b.splits[s].tensors[m], ds.tensors[m]), (attempt, s, m)
            assert np.array_equal(b.info["corrupted"][s], ref.info["corrupted"][s])
    assert len(list(cache.glob("synthetic-*.npz"))) == 1
