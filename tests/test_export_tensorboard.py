"""``modalscope runs export --format tensorboard`` writes event files that TensorBoard's reader gets back exactly."""

from __future__ import annotations

import pytest

from modalscope.cli import main
from modalscope.store import open_run
from tests.test_store_contract import _monitored_run

pytest.importorskip("tensorboard")


def test_tensorboard_export_round_trips_scalars_and_histograms(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _monitored_run(tmp_path)
    out = tmp_path / "tb"
    assert main(["runs", "export", str(run), "--format", "tensorboard", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    reader = open_run(run)
    names = reader.scalar_names()
    assert sorted(acc.Tags()["scalars"]) == names
    for name in ("acc/test/fused", "grad_share/a", "conflict/cos/b"):
        want = reader.scalars(name)
        got = acc.Scalars(name)
        assert [e.step for e in got] == want["step"].tolist()
        assert [e.value for e in got] == pytest.approx(want["value"].tolist(), rel=1e-6)
    hists = reader.histograms(split="test")
    tb = acc.Histograms("gap/test/a-b")
    assert [e.step for e in tb] == hists["epoch"].tolist()
    assert list(tb[-1].histogram_value.bucket) == pytest.approx(hists["counts"].iloc[-1].tolist())
    assert tb[-1].histogram_value.num == hists["counts"].iloc[-1].sum()


def test_tensorboard_export_refuses_other_tables(tmp_path, capsys):
    run = _monitored_run(tmp_path)
    assert main(["runs", "export", str(run), "--format", "tensorboard", "--what", "samples"]) == 2
    assert "use --what scalars" in capsys.readouterr().err
