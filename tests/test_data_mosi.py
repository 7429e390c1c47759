"""MMSA pickles (MOSI / MOSEI / CH-SIMS) and MOSI's regression metrics."""

import numpy as np
import pytest
import torch

from modalscope.data.mmsa import Mosi, MosiParams
from modalscope.metrics import regression_metrics
from tests.datafixtures import mmsa_dict, train_config, write_pickle


def test_regression_metrics_hand_computed():
    y = np.array([2.6, -1.2, 0.0, 0.4, -2.0])
    p = np.array([1.4, 0.3, -0.5, 0.6, -3.5])
    m = regression_metrics("test", p, {"text": p}, y)
    assert m["acc2/test/fused"] == pytest.approx(3 / 4)
    assert m["acc7/test/fused"] == pytest.approx(1 / 5)
    assert m["mae/test/fused"] == pytest.approx(np.mean([1.2, 1.5, 0.5, 0.2, 1.5]))
    assert m["f1/test/fused"] == pytest.approx(0.5 * 0.8 + 0.5 * (2 / 3))
    assert m["corr/test/fused"] == pytest.approx(np.corrcoef(p, y)[0, 1])
    assert m["acc/test/text"] == m["acc2/test/text"] == m["acc2/test/fused"]


def test_mmsa_pickle_opens_with_lengths_and_inf_fix(tmp_path):
    d = mmsa_dict()
    write_pickle(tmp_path / "unaligned_50.pkl", d)
    with pytest.warns(UserWarning, match="unpickling"):
        b = Mosi.build(MosiParams(path=str(tmp_path / "unaligned_50.pkl"), allow_pickle=True))
    assert b.task == "regression" and b.n_classes == 1 and b.modalities == ["text", "audio", "vision"]
    assert b.kinds == {m: "sequence" for m in b.modalities} and b.shapes == {"text": (6, 5), "audio": (6, 4), "vision": (6, 3)}
    tr = b.splits["train"]
    assert tr.tensors["audio"][0, 0, 0].item() == 0.0 and torch.isfinite(tr.tensors["audio"]).all()
    assert tr.labels.dtype == torch.float32 and np.allclose(tr.labels.numpy(), d["train"]["regression_labels"])
    batch = tr.batch(torch.tensor([0, 1, 2]))
    assert batch["audio_len"].tolist() == d["train"]["audio_lengths"][:3]
    assert batch["text_len"].tolist() == [6, 6, 6]
    assert b.info["sample_id"]["valid"][0] == "valid_0"


def test_sims_label_range(tmp_path):
    from modalscope.errors import DataError

    write_pickle(tmp_path / "s.pkl", mmsa_dict())
    with pytest.raises(DataError, match=r"label -?\d.* is out of range \[-1, 1\] for sims"), pytest.warns(UserWarning):
        Mosi.build(MosiParams(path=str(tmp_path / "s.pkl"), allow_pickle=True, variant="sims"))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:unpickling")
def test_mosi_one_epoch_regression_logs_mosi_metrics(tmp_path):
    from modalscope.engine import Trainer
    from modalscope.store import open_run

    write_pickle(tmp_path / "aligned_50.pkl", mmsa_dict(aligned=True))
    t = Trainer(train_config(tmp_path, {"name": "mosi", "path": str(tmp_path / "aligned_50.pkl"), "allow_pickle": True}))
    assert t.model.n_out == 1
    final = t.fit()
    from tests.known_answers import assert_final_is_hand_computed

    assert_final_is_hand_computed(final, t, {"mae/test/fused", "acc2/test/fused"})
    names = set(open_run(t.run_dir).scalars()["name"])
    for metric in ("acc2", "acc7", "f1", "mae", "corr"):
        for key in ("fused", "text", "audio", "vision"):
            assert f"{metric}/test/{key}" in names
