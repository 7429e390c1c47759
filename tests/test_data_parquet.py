"""Parquet generic features: list columns and <m>.<i> wide columns give the same bundle as npz."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from modalscope.data.npz import Npz, NpzParams
from modalscope.data.parquet import Parquet, ParquetParams
from tests.datafixtures import train_config


def arrays(n=40):
    rng = np.random.default_rng(3)
    return {
        "audio": rng.standard_normal((n, 4)).astype(np.float32),
        "frames": rng.standard_normal((n, 2, 3)).astype(np.float32),
        "label": np.arange(n) % 2,
        "split": np.where(np.arange(n) < 30, "train", "test"),
    }


def write_parquet(path, a):
    cols = {"label": a["label"], "split": a["split"]}
    for i in range(a["audio"].shape[1]):
        cols[f"audio.{i}"] = a["audio"][:, i]
    cols["frames"] = pa.array([row.tolist() for row in a["frames"]], type=pa.list_(pa.list_(pa.float32())))
    pq.write_table(pa.table(cols), path)


def test_parquet_matches_npz(tmp_path):
    a = arrays()
    write_parquet(tmp_path / "f.parquet", a)
    np.savez(tmp_path / "f.npz", **a)
    bp = Parquet.build(ParquetParams(path=str(tmp_path / "f.parquet")))
    bn = Npz.build(NpzParams(path=str(tmp_path / "f.npz")))
    assert sorted(bp.modalities) == sorted(bn.modalities) == ["audio", "frames"]
    assert bp.shapes == {"audio": (4,), "frames": (2, 3)} or bp.shapes == {"frames": (2, 3), "audio": (4,)}
    for s in ("train", "test"):
        for m in ("audio", "frames"):
            assert torch.equal(bp.splits[s].tensors[m], bn.splits[s].tensors[m])
        assert torch.equal(bp.splits[s].labels, bn.splits[s].labels)


def test_parquet_ragged_lists_are_rejected(tmp_path):
    t = pa.table({"label": [0, 1], "split": ["train", "test"], "x": pa.array([[1.0, 2.0], [1.0]])})
    pq.write_table(t, tmp_path / "r.parquet")
    from modalscope.errors import DataError

    with pytest.raises(DataError, match=r"column 'x' has lists of different lengths \(1\.\.2\)"):
        Parquet.build(ParquetParams(path=str(tmp_path / "r.parquet")))


def test_allow_pickle_is_refused_for_parquet(tmp_path):
    from modalscope.config import build_config
    from modalscope.errors import ConfigError

    write_parquet(tmp_path / "f.parquet", arrays())
    with pytest.raises(ConfigError, match=r"^config error: data\.allow_pickle: does not apply to Parquet .*\(got true\)$"):
        build_config({"data": {"name": "parquet", "path": str(tmp_path / "f.parquet"), "allow_pickle": True}})
    assert build_config({"data": {"name": "parquet", "path": str(tmp_path / "f.parquet")}}).data.allow_pickle is False


@pytest.mark.slow
def test_parquet_one_epoch_training(tmp_path):
    write_parquet(tmp_path / "f.parquet", arrays())
    from modalscope.engine import Trainer

    from tests.known_answers import assert_final_is_hand_computed

    t = Trainer(train_config(tmp_path, {"name": "parquet", "path": str(tmp_path / "f.parquet"), "kinds": {"frames": "sequence"}}))
    final = t.fit()
    assert_final_is_hand_computed(final, t, {"acc/test/fused", "acc/test/audio", "acc/test/frames"})
