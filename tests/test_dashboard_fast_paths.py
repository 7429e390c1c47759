"""Shortcuts the Compare page takes for speed give what the exact computation gives."""

from __future__ import annotations

import numpy as np
import pytest

from tests.planted import plant_run


def test_reference_index_equals_a_linear_scan_of_the_root(tmp_path):
    from modalscope import reference

    root = tmp_path / "root"
    for i, (method, mod, seed) in enumerate([("unimodal", "audio", 0), ("unimodal", "audio", 1), ("unimodal", "visual", 0),
                                             ("joint", None, 0), ("unimodal", "audio", 0)]):
        plant_run(root, f"r{i}", method=method, modality=mod, seed=seed, epochs=1, steps_per_epoch=2)
    listing = reference.run_configs(root)
    for mod in ("audio", "visual", "text"):
        for seed in (0, 1, 2):
            linear = [d.name for d, c in listing if (c.get("method") or {}).get("name") == "unimodal"
                      and c["method"].get("modality") == mod and c.get("seed") == seed]
            assert [d.name for d, _ in reference.unimodal_runs(root, mod, seed)] == linear
    assert [d.name for d, _ in reference.unimodal_runs(root, "audio", 0)] == ["r0", "r4"]
    joint = root / "r3"
    ref, why = reference.find_reference(joint, "audio", [root])
    assert why == "" and ref.name in ("r0", "r4")
    reference._FOUND.clear()
    assert reference.find_reference(joint, "audio", [root]) == (ref, "")
    assert reference.find_reference(joint, "visual", [root])[0].name == "r2"
    assert reference.find_reference(joint, "text", [root])[0] is None


def test_t_quantile_equals_scipys():
    from scipy.stats import t

    from modalscope.dashboard.comparison import t_interval, t_quantile

    for df in (1, 2, 3, 4, 5, 9, 10, 29, 30, 99):
        for level in (0.5, 0.9, 0.95, 0.99):
            assert t_quantile(level, df) == pytest.approx(t.ppf(0.5 + level / 2, df), rel=1e-10)
    mean, lo, hi, n = t_interval([1.0, 2.0, 4.0, float("nan")])
    half = t.ppf(0.975, 2) * np.std([1.0, 2.0, 4.0], ddof=1) / np.sqrt(3)
    assert n == 3 and lo == pytest.approx(mean - half, rel=1e-10) and hi == pytest.approx(mean + half, rel=1e-10)
    with pytest.raises(ValueError, match="df ≥ 1"):
        t_quantile(0.95, 0)
