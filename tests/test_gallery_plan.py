"""The gallery's plan: which runs it holds and in which order they are trained (no training here)."""

from __future__ import annotations

import sqlite3

from modalscope import gallery


def test_unimodal_references_are_trained_before_every_run_of_their_preset():
    runs = gallery.plan()
    names = [r.name for r in runs]
    for preset, mods in (("imbalanced", ["audio", "visual"]), ("noisy", ["audio", "visual"]), ("complementary", ["audio", "visual"]),
                         ("three_modal", ["audio", "visual", "text"])):
        refs = [names.index(f"unimodal-{m}_{preset}_s0") for m in mods]
        assert max(refs) < names.index(f"joint_{preset}_s0"), preset
    stages = [gallery._stage(r) for r in runs]
    assert stages == sorted(stages)
    assert all(names.index(r.init_from) < names.index(r.name) for r in runs if r.init_from)


def test_complementary_contrast_and_ensemble_are_in_the_gallery():
    from modalscope.methods import list_methods

    names = {r.name for r in gallery.plan()}
    assert {"joint_complementary_s0", "ogm_ge_complementary_s0", "unimodal-visual_complementary_s0"} <= names
    assert "ensemble" in list_methods()
    assert {"ensemble_complementary_s0", "ensemble_imbalanced_s2", "ensemble_noisy_s0"} <= names
    assert not any(n.startswith("cal_complementary") for n in names)  # the contrast stays small


def test_unknown_presets_are_left_out():
    assert gallery.plan(presets=("no_such_preset",)) == []


def test_thin_removes_both_checkpoints(tmp_path):
    from tests.planted import plant_run

    d = plant_run(tmp_path, "r", epochs=1, steps_per_epoch=2)
    (d / "checkpoint.pt").write_bytes(b"x")
    (d / "best.pt").write_bytes(b"x")
    note = gallery.thin(d, keep_samples=False, sample_epochs=[0])
    assert not (d / "checkpoint.pt").exists() and not (d / "best.pt").exists()
    assert "checkpoint.pt and best.pt removed" in note
    with sqlite3.connect(d / "metrics.sqlite") as con:
        assert con.execute("SELECT value FROM run WHERE key='thinned'").fetchone()[0].strip('"') == note


def test_seed0_gallery_runs_carry_what_every_live_view_shows():
    """Robustness and captum are opt-in; the gallery's seed-0 runs switch them on (the Live
    Robustness view and the Contributions cross-check read them), the other seeds stay lean."""
    from modalscope.config import resolve_config

    runs = gallery.plan()
    for r in runs:
        cfg = resolve_config(overrides=list(r.overrides))
        assert (cfg.diagnostics.robust, cfg.diagnostics.captum) == ((True, True) if r.seed == 0 else (False, False)), r.name
