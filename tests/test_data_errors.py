"""Every bad-file case fails on open with one line naming the file and the problem."""

import numpy as np
import pytest

from modalscope.data import get_dataset
from modalscope.errors import ConfigError, DataError
from tests.conftest import run_cli
from tests.datafixtures import AV_FAST, cremad_tree, ks_tree, mmsa_dict, write_pickle


def npz(tmp_path, **change):
    rng = np.random.default_rng(0)
    a = {"audio": rng.standard_normal((30, 4)), "visual": rng.standard_normal((30, 6)), "label": np.arange(30) % 3,
         "split": np.where(np.arange(30) < 20, "train", "test")}
    a.update(change)
    a = {k: v for k, v in a.items() if v is not None}
    np.savez(tmp_path / "f.npz", **a)
    return str(tmp_path / "f.npz")


def build(name, **params):
    src = get_dataset(name)
    return src.build(src.Params(**params))


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_mismatched_lengths(tmp_path):
    p = npz(tmp_path, visual=np.zeros((29, 6)))
    with pytest.raises(DataError) as e:
        build("npz", path=p)
    assert one_line(e) == f"{p}: mismatched lengths: modality 'visual' has 29 rows, label has 30"


def test_nan_features(tmp_path):
    a = np.zeros((30, 4))
    a[7, 2] = np.nan
    a[9, 0] = np.inf
    p = npz(tmp_path, audio=a)
    with pytest.raises(DataError) as e:
        build("npz", path=p)
    assert one_line(e) == f"{p}: modality 'audio' has 2 NaN/inf values (first in row 7)"


def test_label_out_of_range(tmp_path):
    p = npz(tmp_path)
    with pytest.raises(DataError) as e:
        build("npz", path=p, n_classes=2)
    assert one_line(e) == f"{p}: label 2 is out of range for 2 classes (0..1)"
    p = npz(tmp_path, label=np.r_[np.arange(29) % 3, -1])
    with pytest.raises(DataError, match="label -1 is out of range"):
        build("npz", path=p)


def test_empty_split(tmp_path):
    p = npz(tmp_path, split=np.array(["train"] * 25 + ["valid"] * 5))
    with pytest.raises(DataError) as e:
        build("npz", path=p)
    assert one_line(e) == f"{p}: split 'test' is empty (every dataset needs train and test rows)"


def test_unknown_split_value_and_missing_label(tmp_path):
    p = npz(tmp_path, split=np.array(["train"] * 20 + ["dev"] * 10))
    with pytest.raises(DataError, match=r"split has values 'dev'; allowed: train, valid, test"):
        build("npz", path=p)
    p = npz(tmp_path, label=None)
    with pytest.raises(DataError, match=r"no 'label' array \(has: audio, visual, split\)"):
        build("npz", path=p)


def test_missing_modality(tmp_path):
    p = npz(tmp_path)
    with pytest.raises(DataError) as e:
        build("npz", path=p, modalities=["audio", "text"])
    assert one_line(e) == f"{p}: modality 'text' not found (has: audio, visual)"
    d = mmsa_dict()
    del d["test"]["vision"]
    write_pickle(tmp_path / "m.pkl", d)
    with pytest.raises(DataError, match=r"split 'test' has no modality 'vision'"), pytest.warns(UserWarning):
        build("mosi", path=str(tmp_path / "m.pkl"), allow_pickle=True)


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as e:
        build("npz", path=str(tmp_path / "nope.npz"))
    assert one_line(e) == f"{tmp_path / 'nope.npz'}: file not found"


def test_missing_wav_names_the_file_and_list_line(tmp_path):
    root = cremad_tree(tmp_path / "c")
    gone = root / "AudioWAV" / "1001_train_01.wav"
    gone.unlink()
    with pytest.raises(DataError) as e:
        build("cremad", path=str(root), **AV_FAST)
    assert one_line(e) == f"{gone}: missing audio for clip '1001_train_01' ({root / 'train.csv'} line 2)"
    with pytest.warns(UserWarning, match="skipped 1 listed clips"):
        b = build("cremad", path=str(root), skip_missing=True, **AV_FAST)
    assert len(b.splits["train"]) == 11


def test_missing_frames_and_unknown_emotion(tmp_path):
    root = cremad_tree(tmp_path / "c")
    for f in (root / "Image-01-FPS" / "1000_test_00").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"1000_test_00: missing frames for clip '1000_test_00' \(.*test.csv line 1\)"):
        build("cremad", path=str(root), **AV_FAST)
    (root / "train.csv").write_text("1000_train_00,XYZ\n")
    with pytest.raises(DataError) as e:
        build("cremad", path=str(root), **AV_FAST)
    assert one_line(e) == f"{root / 'train.csv'} line 1: label 'XYZ' is not one of the 6 classes (NEU, HAP, SAD, FEA, DIS, ANG)"


def test_ks_label_out_of_range_and_empty_split(tmp_path):
    root = ks_tree(tmp_path / "k")
    (root / "my_test.txt").write_text("ks_test_0 7\n")
    with pytest.raises(DataError) as e:
        build("kinetics_sounds", path=str(root))
    assert one_line(e) == f"{root / 'my_test.txt'} line 1: label 7 is out of range (0..2)"
    (root / "my_test.txt").write_text("\n")
    with pytest.raises(DataError) as e:
        build("kinetics_sounds", path=str(root))
    assert one_line(e) == f"{root / 'my_test.txt'}: split 'test' is empty"


def test_pickle_needs_allow_pickle(tmp_path):
    write_pickle(tmp_path / "aligned_50.pkl", mmsa_dict())
    with pytest.raises(DataError) as e:
        build("mosi", path=str(tmp_path / "aligned_50.pkl"))
    assert one_line(e) == f"{tmp_path / 'aligned_50.pkl'}: is a pickle; unpickling can run code: pass --allow-pickle (data.allow_pickle=true) only if you trust this file"
    root = ks_tree(tmp_path / "k", fmt="pkl")
    with pytest.raises(DataError, match=r"ks_train_0\.pkl: is a pickle; unpickling can run code: pass --allow-pickle"):
        build("kinetics_sounds", path=str(root))
    with pytest.warns(UserWarning, match="unpickling"):
        b = build("kinetics_sounds", path=str(root), allow_pickle=True, image_size=16)
    assert b.shapes["audio"] == (20, 30)
    np.savez(tmp_path / "o.npz", audio=np.array([object()] * 3, dtype=object), label=np.zeros(3), split=np.array(["train"] * 3))
    with pytest.raises(DataError, match="holds object arrays .a pickle.; pass --allow-pickle"):
        build("npz", path=str(tmp_path / "o.npz"))


def test_bad_spectrogram_fails_when_read_with_its_file(tmp_path):
    root = ks_tree(tmp_path / "k")
    spec = np.load(root / "audio" / "ks_train_2.npy")
    spec[0, 1, 1] = np.nan
    np.save(root / "audio" / "ks_train_2.npy", spec)
    np.save(root / "audio" / "ks_train_3.npy", np.zeros((20, 31), dtype=np.float32))
    b = build("kinetics_sounds", path=str(root), image_size=16)
    with pytest.raises(DataError, match=r"ks_train_2\.npy: spectrogram has 1 NaN/inf values"):
        b.splits["train"][2]
    with pytest.raises(DataError, match=r"ks_train_3\.npy: spectrogram shape \(20, 31\) differs from the first clip's \(20, 30\)"):
        b.splits["train"][3]


def test_unknown_view_is_a_config_error():
    from modalscope.config import resolve_config

    with pytest.raises(ConfigError) as e:
        resolve_config(overrides=["data.name=mfeat", "data.views=[pix,foo]"])
    assert one_line(e) == 'config error: data.views: unknown view \'foo\'; choose from fou, fac, kar, pix, zer, mor (got ["pix", "foo"])'


@pytest.mark.slow
def test_cli_prints_one_line_without_traceback(tmp_path):
    a = np.zeros((30, 4))
    a[3, 1] = np.nan
    p = npz(tmp_path, audio=a)
    r = run_cli("train", "--dataset", "npz", "--data-path", p, "--runs-dir", str(tmp_path / "runs"), "--no-progress")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {p}: modality 'audio' has 1 NaN/inf values (first in row 3)"
    assert not (tmp_path / "runs").exists()
    write_pickle(tmp_path / "m.pkl", mmsa_dict())
    r = run_cli("train", "--dataset", "mosi", "--data-path", str(tmp_path / "m.pkl"), "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {tmp_path / 'm.pkl'}: is a pickle; unpickling can run code: pass --allow-pickle (data.allow_pickle=true) only if you trust this file"]
