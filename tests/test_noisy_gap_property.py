"""On the ``noisy`` preset the stored train-set gap is bimodal and its imbalanced component is the corrupted subset."""

import pytest

from modalscope.config import resolve_config
from modalscope.engine import Trainer
from modalscope.store import RunReader

pytestmark = pytest.mark.slow


def test_noisy_preset_gap_mixture_finds_the_corrupted_samples(tmp_path):
    cfg = resolve_config(base={"runs_dir": str(tmp_path), "name": "noisy", "log": {"progress": False, "checkpoint": False},
                               "diagnostics": {"conflict": False, "contrib": False, "captum": False, "gap_splits": ["train"]}},
                         overrides=["data.preset=noisy", "method.name=joint"])
    t = Trainer(cfg)
    t.fit()
    last = cfg.epochs - 1
    run = RunReader(t.run_dir)
    g = run.gmm(split="train")
    bic1, bic2, means, bal = g[(g.epoch == last) & (g.name == "audio-visual")][["bic1", "bic2", "means", "balanced"]].iloc[0]
    assert bic1 - bic2 > 100, "train-set gap histogram is not bimodal by BIC"
    assert abs(means[bal]) < 0.2 and means[1 - bal] < -0.5, means

    snap = run.samples(epoch=last, split="train").sort_values("sample_id")
    ids, post = snap["sample_id"].to_numpy(), snap["posterior"].to_numpy()
    mask = t.full_bundle.info["corrupted"]["train"][ids]
    flagged = post > 0.5
    precision = (flagged & mask).sum() / flagged.sum()
    recall = (flagged & mask).sum() / mask.sum()
    assert precision >= 0.8 and recall >= 0.5, (precision, recall)

    logged = run.scalars(["gmm/train/corrupt_precision", "gmm/train/corrupt_recall"])
    final = dict(zip(logged[logged.epoch == last].name, logged[logged.epoch == last].value))
    assert final["gmm/train/corrupt_precision"] == pytest.approx(precision)
    assert final["gmm/train/corrupt_recall"] == pytest.approx(recall)
