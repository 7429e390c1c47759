"""The diagnostics monitor inside the engine: what it stores, and that it never changes training."""

import json
import sqlite3

import numpy as np
import pytest
import torch

from modalscope.engine import Trainer
from modalscope.store import open_run

ALL_ON = {"conflict": True, "conflict_every": 1, "probe": True, "probe_every": 1, "gap": True, "gmm": True, "samples": True, "contrib": True,
          "captum": True, "captum_method": "shapley_sampling"}
ALL_OFF = {"grad": False, "conflict": False, "probe": False, "gap": False, "contrib": False, "captum": False}


def _params_after(tiny, diag, **over):
    t = Trainer(tiny(diagnostics=diag, log={"progress": False, "checkpoint": False}, **over))
    t.fit()
    return {k: v.detach().clone() for k, v in t.model.state_dict().items()}, t


@pytest.mark.parametrize("heads", ["slice", "separate"])
def test_trajectory_is_bitwise_identical_with_diagnostics_on_and_off(tiny, heads):
    fusion = "concat" if heads == "slice" else "gated"
    on, _ = _params_after(tiny, ALL_ON, name=f"on-{heads}", model={"hidden": 32, "embed_dim": 16, "depth": 1, "dropout": 0.2, "fusion": fusion, "heads": heads})
    off, _ = _params_after(tiny, ALL_OFF, name=f"off-{heads}", model={"hidden": 32, "embed_dim": 16, "depth": 1, "dropout": 0.2, "fusion": fusion, "heads": heads})
    assert on.keys() == off.keys()
    for k in on:
        assert torch.equal(on[k], off[k]), k


def test_joint_run_stores_histograms_gmm_samples_contributions(tiny):
    _, t = _params_after(tiny, {"conflict_every": 2, "gap_bins": 20, "captum": True})
    con = sqlite3.connect(t.run_dir / "metrics.sqlite")
    n_train, n_test = len(t.bundle.splits["train"]), len(t.bundle.splits["test"])

    hist = con.execute("SELECT epoch, split, name, edges, counts FROM histograms ORDER BY id").fetchall()
    assert {(e, s, n) for e, s, n, *_ in hist} == {(e, s, "audio-visual") for e in (0, 1) for s in ("train", "test")}
    for e, s, n, edges, counts in hist:
        edges, counts = np.frombuffer(edges), np.frombuffer(counts)
        np.testing.assert_allclose(edges, np.linspace(-1, 1, 21))
        assert counts.sum() == (n_train if s == "train" else n_test)

    rows = con.execute("SELECT epoch, split, name, weights, means, variances, bic1, bic2, threshold, balanced FROM gmm").fetchall()
    assert len(rows) == 4
    for _, _, name, w, mu, var, b1, b2, thr, bal in rows:
        assert name == "audio-visual"
        w, mu = json.loads(w), json.loads(mu)
        assert sum(w) == pytest.approx(1.0)
        assert abs(mu[bal]) <= abs(mu[1 - bal])
        assert np.isfinite(b1) and np.isfinite(b2)

    assert len(open_run(t.run_dir).samples(epoch=1, split="train")) == n_train
    snap = open_run(t.run_dir).samples(epoch=1, split="test").sort_values("sample_id")
    ids, gaps, post, lab, cor = (snap[c].tolist() for c in ("sample_id", "gap", "posterior", "label", "correct"))
    assert list(ids) == list(range(n_test))
    assert list(lab) == t.bundle.splits["test"].labels.tolist()
    ev = t.predict_split("test")
    p = {m: torch.softmax(torch.from_numpy(ev.logits[m]), 1)[torch.arange(n_test), torch.from_numpy(ev.labels)] for m in ("audio", "visual")}
    np.testing.assert_allclose(gaps, (p["audio"] - p["visual"]).numpy(), atol=1e-5)
    np.testing.assert_array_equal(cor, (ev.fused.argmax(1) == ev.labels).astype(int))
    assert all(0.0 <= x <= 1.0 for x in post)

    contrib = con.execute("SELECT epoch, modality, info, confidence, w, captum FROM contributions").fetchall()
    assert {(e, m) for e, m, *_ in contrib} == {(e, m) for e in (0, 1) for m in ("audio", "visual")}
    for e in (0, 1):
        assert sum(r[4] for r in contrib if r[0] == e) == pytest.approx(1.0)
        assert all(r[5] is not None for r in contrib if r[0] == e)

    from modalscope.store import RunReader

    reader = RunReader(t.run_dir)
    names = set(reader.scalar_names())
    for n in ("conflict/cos/audio", "conflict/cos/visual", "conflict/cos_fusion", "gap/train/audio-visual/mean",
              "gmm/train/evidence", "gmm/test/frac_imbalanced", "contrib/w/audio", "contrib/info/visual",
              "contrib/conf/audio", "contrib/captum/visual", "grad_share/audio", "grad_ratio"):
        assert n in names, n
    steps = reader.scalars("conflict/cos/audio")["step"].tolist()
    assert steps and all(s % 2 == 0 for s in steps)


def test_contribution_scalars_match_direct_recomputation(tiny):
    """The stored I(m) equals the Shapley value recomputed from the final weights on the fixed batches."""
    from modalscope.diagnostics.contribution import shapley_values, subset_value_fn

    _, t = _params_after(tiny, {"conflict": False, "gap": False, "captum": False, "contrib_batches": 2, "contrib_absent": "mean"}, epochs=1)
    con = sqlite3.connect(t.run_dir / "metrics.sqlite")
    stored = dict(con.execute("SELECT modality, info FROM contributions WHERE epoch=0").fetchall())
    ds = t.bundle.splits["test"]
    batch = ds.batch(torch.arange(2 * t.cfg.batch_size))
    fill = {m: ds_mean for m, ds_mean in ((m, t.bundle.splits["train"].tensors[m].double().mean(0).float()) for m in ("audio", "visual"))}
    t.model.eval()
    exact = shapley_values(subset_value_fn(t.model, batch, batch["label"], "classification", "mean", fill), ["audio", "visual"])
    assert stored == pytest.approx(exact, rel=1e-4, abs=1e-6)


def test_three_modalities_store_every_pair_and_strong_weak(tiny):
    data = {"name": "synthetic", "preset": "three_modal", "n_train": 128, "n_test": 64, "dims": {"audio": 8, "visual": 8, "text": 8}}
    _, t = _params_after(tiny, {"conflict_every": 1, "captum": False}, data=data, epochs=1)
    con = sqlite3.connect(t.run_dir / "metrics.sqlite")
    names = {r[0] for r in con.execute("SELECT DISTINCT name FROM histograms")}
    assert names == {"audio-visual", "audio-text", "visual-text", "strong-weak"}
    assert {r[0] for r in con.execute("SELECT DISTINCT name FROM gmm")} == names
    (n,) = con.execute("SELECT COUNT(*) FROM contributions").fetchone()
    assert n == 3
    from modalscope.store import RunReader

    scal = set(RunReader(t.run_dir).scalar_names())
    assert {"conflict/cos_fusion", "conflict/cos_fusion/audio-visual", "conflict/cos/text", "gmm/train/evidence"} <= scal
