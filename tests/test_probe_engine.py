"""Probes, utilisation, model selection and applied gradients through the engine and the store."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from modalscope.data import BatchLoader
from modalscope.data.base import DatasetBundle, TensorMultimodalDataset
from modalscope.engine import Trainer, build_bundle
from modalscope.reference import probe_utilisation
from modalscope.selection import BestTracker
from modalscope.store import RunReader

QUIET = {"progress": False}
LEAN = {"conflict": False, "gap": False, "contrib": False, "captum": False, "robust": False}


def _series(reader: RunReader, prefix: str) -> pd.DataFrame:
    return reader.scalars(prefix=prefix).pivot_table(index="step", columns="name", values="value")


def test_probe_cadence_and_names(tiny, monkeypatch):
    import modalscope.diagnostics.probe as probe_mod

    passes = []
    own_pass = probe_mod.encoder_features
    monkeypatch.setattr(probe_mod, "encoder_features", lambda model, ds, *a, **k: passes.append(len(ds)) or own_pass(model, ds, *a, **k))
    diag = {**LEAN, "gap": True, "gmm": False, "samples": False, "probe_every": 2}
    t = Trainer(tiny(epochs=3, name="cad", data={"n_valid": 64}, log=QUIET, diagnostics=diag))
    t.fit()
    # the init probe needs passes of its own; later ones reuse the valid/test evaluation, and take
    # one encoder pass over train (the train-split gap comes from the training forward passes, so
    # no evaluation pass over train exists to reuse)
    assert passes == [256, 64, 128, 256, 256]
    r = RunReader(t.run_dir)
    rows = r.scalars(prefix="probe/test/visual")
    # before the first step (step 0), after epoch 1 (every 2nd) and after the last epoch 2
    spe = len(t._train_loader(0))
    assert list(zip(rows["step"], rows["epoch"])) == [(0, 0), (2 * spe, 1), (3 * spe, 2)]
    names = set(r.scalar_names())
    for m in ("audio", "visual"):
        for s in ("valid", "test"):
            assert {f"probe/{s}/{m}", f"probe_init/{s}/{m}"} <= names
        assert {f"probe/bit/{m}/{b}" for b in range(3)} <= names
    assert "probe/train/audio" not in names
    init = r.scalars(prefix="probe_init/test/")
    assert (init["step"] == 0).all() and len(init) == 2
    # the last probe reused the evaluation passes' features: a pass of its own gives the same numbers
    last = r.scalars(prefix="probe/")
    last = last[last["epoch"] == 2].set_index("name")["value"].to_dict()
    assert t.diagnostics.probes() == last


def _train(tiny, **over):
    t = Trainer(tiny(log=QUIET, **over))
    t.fit()
    return t


def test_utilisation_is_one_for_the_reference_and_zero_for_an_untrained_encoder(tiny):
    data = {"n_valid": 64, "strength": {"audio": [1.5] * 3, "visual": [1.5] * 3}, "scale": {"audio": 1.0, "visual": 1.0}}
    common = dict(data=data, diagnostics=LEAN)
    ref = _train(tiny, name="alone", epochs=3, optim={"lr": 0.2}, method={"name": "unimodal", "modality": "visual"}, **common)
    me = probe_utilisation(ref.run_dir, [ref.run_dir.parent])
    (row,) = me.itertuples()
    assert row.modality == "visual" and row.utilisation == 1.0 and row.reference == str(ref.run_dir)
    assert RunReader(ref.run_dir).final_scalars("probe_util/")["probe_util/visual"] == 1.0
    assert row.probe_alone > row.probe_init  # the reference did learn something

    # lr 1e-12 without momentum or decay: the updates vanish in float32 rounding, the encoders stay at init
    frozen = tiny(name="frozen", epochs=2, optim={"lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0}, log=QUIET, **common)
    t = Trainer(frozen)
    w0 = {k: v.clone() for k, v in t.model.encoders["visual"].state_dict().items()}
    t.fit()
    assert all(torch.equal(w0[k], v) for k, v in t.model.encoders["visual"].state_dict().items())
    df = probe_utilisation(t.run_dir, [ref.run_dir.parent]).set_index("modality")
    assert df.loc["visual", "utilisation"] == 0.0
    assert df.loc["visual", "probe_alone"] == row.probe_alone
    assert df.loc["visual", "reference"] == str(ref.run_dir)
    assert RunReader(t.run_dir).final_scalars("probe_util/") == {"probe_util/visual": 0.0}
    assert math.isnan(df.loc["audio", "utilisation"]) and "no finished 'unimodal' run with modality=audio" in df.loc["audio", "reason"]


def test_reference_must_match_data_model_and_seed(tiny):
    common = dict(epochs=1, diagnostics=LEAN)
    ref = _train(tiny, name="alone-s1", seed=1, method={"name": "unimodal", "modality": "visual"}, **common)
    run = _train(tiny, name="joint-s0", seed=0, **common)
    df = probe_utilisation(run.run_dir, [ref.run_dir.parent]).set_index("modality")
    assert math.isnan(df.loc["visual", "utilisation"]) and "same data, model and seed" in df.loc["visual", "reason"]
    # a reference trained later counts: the query runs at read time
    later = _train(tiny, name="alone-s0", seed=0, method={"name": "unimodal", "modality": "visual"}, **common)
    df = probe_utilisation(run.run_dir, [ref.run_dir.parent]).set_index("modality")
    assert df.loc["visual", "reference"] == str(later.run_dir)
    assert df.loc["visual", "probe_alone"] == RunReader(later.run_dir).final_scalars("probe/test/visual")["probe/test/visual"]


def test_best_tracker_selects_on_valid_only():
    """Valid peaks at epoch 1, test at epoch 2: the best epoch is 1 and reports epoch 1's test."""
    tr = BestTracker()
    valid = [0.5, 0.7, 0.6, 0.7]
    test = [0.4, 0.5, 0.9, 0.95]
    for e, (v, te) in enumerate(zip(valid, test)):
        if tr.update(e, v):
            tr.snapshot({"acc/valid/fused": v, "acc/test/fused": te, "loss/total": 1.0})
    assert tr.logs() == {"acc/best/valid/fused": 0.7, "acc/best/test/fused": 0.5, "best/epoch": 1.0}
    assert not tr.update(4, float("nan"))


def _permuted_test(bundle: DatasetBundle, seed: int = 0) -> DatasetBundle:
    test = bundle.splits["test"]
    g = torch.Generator().manual_seed(seed)
    labels = test.labels[torch.randperm(len(test), generator=g)]
    tensors = {m: torch.randn(x.shape, generator=g) for m, x in test.tensors.items()}
    splits = {**bundle.splits, "test": TensorMultimodalDataset(tensors, labels)}
    return DatasetBundle(splits, bundle.modalities, bundle.kinds, bundle.shapes, bundle.task, bundle.class_names, bundle.info)


def test_best_epoch_never_reads_test(tiny):
    """Replacing the test split by noise with shuffled labels leaves the chosen epoch and the
    valid accuracies at it unchanged (only acc/best/test/* moves)."""
    cfg = dict(epochs=4, data={"n_valid": 64}, diagnostics={**LEAN, "probe": False}, log=QUIET, optim={"lr": 0.2})
    clean_cfg = tiny(name="clean", **cfg)
    bundle = build_bundle(clean_cfg)
    runs = {}
    for name, b in (("clean", bundle), ("noise", _permuted_test(bundle))):
        t = Trainer(tiny(name=name, **cfg), bundle=b)
        t.fit()
        runs[name] = RunReader(t.run_dir)
    sel = {k: _series(r, "best/") for k, r in runs.items()}
    pd.testing.assert_frame_equal(sel["clean"], sel["noise"])
    val = {k: _series(r, "acc/best/valid/") for k, r in runs.items()}
    pd.testing.assert_frame_equal(val["clean"], val["noise"])
    assert not _series(runs["clean"], "acc/best/test/").equals(_series(runs["noise"], "acc/best/test/"))
    best = int(sel["clean"]["best/epoch"].iloc[-1])
    valid = runs["clean"].scalars("acc/valid/fused")["value"].to_numpy()
    assert best == int(np.argmax(valid))
    bvl = runs["clean"].best_vs_last().set_index(["split", "key"])
    test_acc = runs["clean"].scalars("acc/test/fused")["value"].to_numpy()
    assert bvl.loc[("test", "fused"), "best"] == test_acc[best] and bvl.loc[("test", "fused"), "last"] == test_acc[-1]
    ck = torch.load(runs["clean"].dir / "best.pt", map_location="cpu", weights_only=True)
    assert ck["epoch"] == best and ck["valid_score"] == valid[best]


def test_no_valid_split_says_so(tiny):
    t = _train(tiny, name="nov", epochs=1, data={"n_valid": 0}, diagnostics={**LEAN, "probe": False})
    r = RunReader(t.run_dir)
    assert not (t.run_dir / "best.pt").exists()
    assert "best/epoch" not in r.scalar_names()
    assert "no validation split" in r.best_vs_last().attrs["reason"]


def _grad_rows(reader: RunReader) -> pd.DataFrame:
    return pd.concat([_series(reader, p) for p in ("grad_", "ogm/coeff/")], axis=1)


def test_grad_applied_equals_grad_norm_under_joint_and_is_clipped(tiny):
    t = _train(tiny, name="joint", epochs=1, diagnostics={**LEAN, "probe": False})
    g = _grad_rows(RunReader(t.run_dir))
    assert len(g) == len(t._train_loader(0))
    for k in ("audio", "visual", "fusion"):
        np.testing.assert_array_equal(g[f"grad_applied/{k}"], g[f"grad_norm/{k}"])
    np.testing.assert_array_equal(g["grad_applied_ratio"], g["grad_ratio"])
    np.testing.assert_array_equal(g["grad_applied_share/visual"], g["grad_share/visual"])

    c = _train(tiny, name="clip", epochs=1, optim={"grad_clip": 0.05}, diagnostics={**LEAN, "probe": False})
    g = _grad_rows(RunReader(c.run_dir))
    raw = np.sqrt(sum(g[f"grad_norm/{k}"] ** 2 for k in ("audio", "visual", "fusion")))
    applied = np.sqrt(sum(g[f"grad_applied/{k}"] ** 2 for k in ("audio", "visual", "fusion")))
    assert (raw > 0.05).all()
    np.testing.assert_allclose(applied, 0.05, rtol=1e-4)


def test_grad_applied_is_k_times_grad_norm_under_ogm_without_noise(tiny):
    method = {"name": "ogm_ge", "ge": False, "tensors": "all", "alpha": 0.5}
    t = _train(tiny, name="ogm", epochs=1, method=method, diagnostics={**LEAN, "probe": False})
    g = _grad_rows(RunReader(t.run_dir))
    for m in ("audio", "visual"):
        np.testing.assert_allclose(g[f"grad_applied/{m}"], g[f"ogm/coeff/{m}"] * g[f"grad_norm/{m}"], rtol=1e-5)
    np.testing.assert_array_equal(g["grad_applied/fusion"], g["grad_norm/fusion"])
    assert (g[["ogm/coeff/audio", "ogm/coeff/visual"]].min(axis=1) < 0.95).all()  # damping really happened


def test_stored_grad_norm_equals_independent_recomputation(tiny):
    """The first stored grad_norm/visual row = ‖∇θ_visual CE(z, y)‖ recomputed from the initial
    weights and the first training batch of epoch 0 (float64 sum of squares)."""
    cfg = tiny(name="hand", epochs=1, diagnostics={**LEAN, "probe": False})
    t = Trainer(cfg)
    init = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.fit()
    stored = RunReader(t.run_dir).scalars("grad_norm/visual")
    assert stored["step"].iloc[0] == 0

    from modalscope.models import build_model

    model = build_model(cfg, t.bundle)
    model.load_state_dict(init)
    loader = BatchLoader(t.bundle.splits["train"], cfg.batch_size, shuffle=True, seed=cfg.seed)
    loader.set_epoch(0)
    batch = next(iter(loader))
    loss = torch.nn.functional.cross_entropy(model(batch).fused, batch["label"])
    grads = torch.autograd.grad(loss, list(model.encoders["visual"].parameters()))
    expected = math.sqrt(sum(float((gr.double() ** 2).sum()) for gr in grads))
    assert stored["value"].iloc[0] == pytest.approx(expected, rel=1e-5)


def test_resume_replays_probes_and_selection_exactly(tiny):
    from modalscope.config import build_config
    import json

    over = dict(data={"n_valid": 64}, diagnostics={**LEAN, "probe_every": 2}, optim={"lr": 0.2})
    full = _train(tiny, name="full", epochs=3, **over)
    part = _train(tiny, name="part", epochs=2, **over)
    raw = json.loads((part.run_dir / "config.json").read_text())
    raw["epochs"] = 3
    t = Trainer(build_config(raw), resume=True, run_dir=part.run_dir)
    t.fit()
    keep = ("probe", "acc/best/", "best/", "grad_applied")
    frames = []
    for d in (full.run_dir, part.run_dir):
        df = RunReader(d).scalars()
        df = df[df["name"].str.startswith(keep)]
        frames.append(df[["step", "epoch", "name", "value"]].sort_values(["step", "name"]).reset_index(drop=True))
    # epoch 1 is a probe epoch of both runs (every 2nd), so the stores match row for row
    pd.testing.assert_frame_equal(frames[0], frames[1])
    a = torch.load(full.run_dir / "best.pt", weights_only=True)
    b = torch.load(part.run_dir / "best.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
