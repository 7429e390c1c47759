"""npz generic features: layout contract, validation, and a 1-epoch training run."""

import numpy as np
import pytest
import torch

from modalscope.data.npz import Npz, NpzParams
from tests.datafixtures import train_config


def planted(n=90, seed=0, regression=False):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    strong = np.eye(3)[y] * 3 + rng.standard_normal((n, 3)) * 0.1
    weak = rng.standard_normal((n, 5))
    split = np.where(np.arange(n) < 60, "train", np.where(np.arange(n) < 70, "valid", "test"))
    label = y.astype(np.float32) - 1.0 if regression else y
    return {"strong": strong, "weak": weak, "label": label, "split": split, "sample_id": np.array([f"s{i}" for i in range(n)])}


def test_npz_splits_rows_in_order_and_keeps_sample_ids(tmp_path):
    arrs = planted()
    np.savez(tmp_path / "f.npz", **arrs)
    b = Npz.build(NpzParams(path=str(tmp_path / "f.npz")))
    assert b.modalities == ["strong", "weak"] and b.kinds == {"strong": "vector", "weak": "vector"}
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 60, "valid": 10, "test": 20}
    assert b.class_names == ["class0", "class1", "class2"]
    test = b.splits["test"]
    assert torch.allclose(test.tensors["weak"], torch.from_numpy(arrs["weak"][70:].astype(np.float32)))
    assert test.labels.tolist() == (np.arange(70, 90) % 3).tolist()
    assert b.info["sample_id"]["test"][0] == "s70"
    item = test[2]
    assert set(item) == {"strong", "weak", "label", "idx"} and item["idx"] == 2


def test_npz_modality_subset_kinds_and_standardize(tmp_path):
    arrs = planted()
    arrs["seq"] = np.random.default_rng(1).standard_normal((90, 4, 2))
    arrs["seq_len"] = np.full(90, 3)
    arrs["class_names"] = np.array(["a", "b", "c"])
    np.savez(tmp_path / "f.npz", **arrs)
    b = Npz.build(NpzParams(path=str(tmp_path / "f.npz"), modalities=["weak", "seq"], standardize=True))
    assert b.modalities == ["weak", "seq"] and b.kinds["seq"] == "sequence" and b.class_names == ["a", "b", "c"]
    tr = b.splits["train"].tensors["weak"].double()
    assert torch.allclose(tr.mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(tr.std(0, unbiased=False), torch.ones(5, dtype=torch.float64), atol=1e-4)
    batch = b.splits["train"].batch(torch.tensor([0, 1]))
    assert batch["seq_len"].tolist() == [3, 3]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_npz_one_epoch_training(tmp_path, task):
    np.savez(tmp_path / "f.npz", **planted(regression=task == "regression"))
    from modalscope.engine import Trainer

    cfg = train_config(tmp_path, {"name": "npz", "path": str(tmp_path / "f.npz"), "task": task})
    t = Trainer(cfg)
    assert t.model.n_out == (3 if task == "classification" else 1)
    final = t.fit()
    from tests.known_answers import assert_final_is_hand_computed

    assert_final_is_hand_computed(final, t, {"acc/test/fused"} | ({"mae/test/fused"} if task == "regression" else set()))


def test_class_name_labels_map_to_sorted_indices(tmp_path):
    arrs = planted()
    arrs["label"] = np.array(["dog", "cat", "emu"])[np.arange(90) % 3]
    np.savez(tmp_path / "f.npz", **arrs)
    b = Npz.build(NpzParams(path=str(tmp_path / "f.npz")))
    assert b.class_names == ["cat", "dog", "emu"]
    assert b.splits["train"].labels[:3].tolist() == [1, 0, 2]
