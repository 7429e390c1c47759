"""``data check``: the report's counts, shapes and problems on planted files; the CLI prints it."""

import json

import numpy as np
import pytest

from modalscope.config import resolve_config
from modalscope.data.check import check_dataset, format_report
from tests.conftest import run_cli
from tests.datafixtures import AV_FAST, cremad_tree


def write(tmp_path, nan_at=None):
    a = np.zeros((30, 4), dtype=np.float32)
    if nan_at is not None:
        a[nan_at] = np.nan
    np.savez(tmp_path / "f.npz", audio=a, visual=np.ones((30, 2, 3)), label=np.r_[np.zeros(12), np.ones(8), np.zeros(4), np.ones(6)].astype(int),
             split=np.array(["train"] * 20 + ["test"] * 10))
    return str(tmp_path / "f.npz")


def test_report_of_a_clean_file(tmp_path):
    cfg = resolve_config(base={"data": {"name": "npz", "path": write(tmp_path)}})
    r = check_dataset(cfg)
    assert r["ok"] and r["problems"] == []
    assert r["splits"]["train"]["n"] == 20 and r["splits"]["train"]["classes"] == {"class0": 12, "class1": 8}
    assert r["splits"]["test"]["classes"] == {"class0": 4, "class1": 6}
    assert r["splits"]["test"]["modalities"]["visual"] == {"shape": [2, 3], "dtype": "float32", "nonfinite": 0}
    assert r["kinds"] == {"audio": "vector", "visual": "sequence"}
    assert json.loads(json.dumps(r)) == r
    text = format_report(r)
    assert "[train] 20 samples" in text and "classes: class0=12, class1=8" in text and "no problems found" in text


def test_report_counts_nan_per_split_even_when_the_loader_refuses(tmp_path):
    p = write(tmp_path, nan_at=(22, slice(0, 3)))
    r = check_dataset(resolve_config(base={"data": {"name": "npz", "path": p}}))
    assert not r["ok"]
    assert r["problems"] == [f"{p}: modality 'audio' has 3 NaN/inf values (first in row 22)"]
    assert r["splits"]["train"]["modalities"]["audio"]["nonfinite"] == 0
    assert r["splits"]["test"]["modalities"]["audio"]["nonfinite"] == 3


def test_missing_file_is_the_first_problem(tmp_path):
    r = check_dataset(resolve_config(base={"data": {"name": "npz", "path": str(tmp_path / "missing.npz")}}))
    assert not r["ok"] and r["problems"] == [f"{tmp_path / 'missing.npz'}: file not found"] and r["splits"] == {}


def test_lazy_layout_is_decoded_item_by_item(tmp_path):
    root = cremad_tree(tmp_path / "c")
    (root / "AudioWAV" / "1002_test_02.wav").write_bytes(b"not a wav")
    r = check_dataset(resolve_config(base={"data": {"name": "cremad", "path": str(root), **AV_FAST}}))
    assert not r["ok"] and len(r["problems"]) == 1
    assert r["problems"][0].startswith(f"{root / 'AudioWAV' / '1002_test_02.wav'}: cannot read wav")
    assert r["splits"]["train"]["classes"] == {"NEU": 6, "HAP": 6}
    assert r["splits"]["test"]["modalities"]["visual"]["shape"] == [1, 3, 16, 16]


@pytest.mark.slow
def test_cli_data_check(tmp_path):
    p = write(tmp_path, nan_at=(1, 1))
    r = run_cli("data", "check", "--dataset", "npz", "--data-path", p)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "NaN/inf 1" in r.stdout and f"- {p}: modality 'audio' has 1 NaN/inf values (first in row 1)" in r.stdout
