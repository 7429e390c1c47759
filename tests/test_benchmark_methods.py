import pytest

from benchmarks.methods import parse_variant, report, summarise, trials


def _trial(label, seed, fused, audio, t=1.0):
    return {"label": label, "preset": "imbalanced", "seed": seed, "hash": "h", "time_per_epoch": t,
            "metrics": {"acc/test/fused": fused, "acc/test/audio": audio}, "bayes": {"fused": 0.9}}


def _timing(label, rep, wall, cpu):
    return {"kind": "timing", "label": label, "preset": "imbalanced", "rep": rep, "hash": "t", "time_per_epoch": wall, "cpu_per_epoch": cpu}


def test_summary_means_gap_and_median_timing_ratio():
    rows = [_trial("joint", 0, 0.80, 0.5), _trial("joint", 1, 0.84, 0.7), _trial("ogm_ge", 0, 0.85, 0.6)]
    rows += [_timing("joint", r, w, 1.0) for r, w in enumerate([1.0, 2.0, 1.0])]
    rows += [_timing("ogm_ge", r, w, 1.5) for r, w in enumerate([1.5, 2.0, 3.0])]
    s = {r["label"]: r for r in summarise(rows, "imbalanced")}
    assert s["joint"]["fused"] == pytest.approx((0.82, 0.0282842712))
    assert s["joint"]["gap"] == pytest.approx(0.08)
    assert s["joint"]["per"]["audio"][0] == pytest.approx(0.6)
    assert s["ogm_ge"]["rel_time"] == pytest.approx(1.5)  # ratios per round 1.5, 1.0, 3.0 -> median 1.5
    assert s["ogm_ge"]["rel_cpu"] == pytest.approx(1.5)
    text = report(rows, ["imbalanced"], 20, "3 epochs")
    assert "| joint | 2 | 82.0 ± 2.8 | 50.0" not in text and "| joint | 2 | 82.0 ± 2.8 | 60.0 ± 14.1 |" in text


def test_variants_and_unimodal_expansion():
    assert parse_variant("cpsl:aux_weight=0:tau=1.5") == ("cpsl(aux_weight=0,tau=1.5)", "cpsl", {"aux_weight": 0, "tau": 1.5})
    t = trials(["joint", "unimodal"], ["three_modal"], [0, 1])
    assert len(t) == 2 + 3 * 2
    assert ("unimodal", "three_modal", 1, "text") in t
