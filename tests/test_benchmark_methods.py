import math

import pytest

from benchmarks.methods import (
    _method_modules,
    code_hash,
    paired_interval,
    parse_variant,
    render_dataset,
    render_headline,
    summarise,
    trials,
    utilisation,
)


def _trial(label, seed, fused, probe=None, init=None, share=None, ds="imbalanced"):
    m = {"acc/test/fused": fused}
    if probe is not None:
        m["probe/test/visual"], m["probe_init/test/visual"] = probe, init
    if share is not None:
        m["mean/grad_applied_share/audio"] = share
    return {"label": label, "dataset": ds, "seed": seed, "key": "k", "time_per_epoch": 1.0, "metrics": m, "bayes": {"fused": 0.9}}


def _timing(label, rep, cpu):
    return {"kind": "timing", "label": label, "dataset": "imbalanced", "rep": rep, "key": "t", "time_per_epoch": 9.0, "cpu_per_epoch": cpu}


def test_paired_interval_and_utilisation_by_hand():
    a, b = {0: 0.80, 1: 0.90, 2: 0.85, 3: 0.5}, {0: 0.70, 1: 0.85, 2: 0.80}
    m, lo, hi, n = paired_interval(a, b)  # seed 3 unpaired: ignored; d = (0.10, 0.05, 0.05)
    half = 4.303 * (0.05 / math.sqrt(3)) / math.sqrt(3)  # sd(d) = 0.05/√3, t_{0.975,2} = 4.303
    assert n == 3 and m == pytest.approx(0.2 / 3) and (lo, hi) == pytest.approx((0.2 / 3 - half, 0.2 / 3 + half))
    assert utilisation(0.5, 0.2, 0.8) == pytest.approx(0.5)
    assert math.isnan(utilisation(0.5, 0.3, 0.3)) and math.isnan(utilisation(0.72, 0.71, 0.72))


def test_summary_columns_from_rows():
    rows = [
        _trial("joint", 0, 0.80, probe=0.30, init=0.20, share=0.9), _trial("joint", 1, 0.84, probe=0.25, init=0.20, share=0.8),
        _trial("ogm_ge", 0, 0.86, probe=0.50, init=0.20, share=0.6), _trial("ogm_ge", 1, 0.86, probe=0.40, init=0.20, share=0.5),
        _trial("unimodal:visual", 0, 0.60, probe=0.70, init=0.20), _trial("unimodal:visual", 1, 0.60, probe=0.60, init=0.20),
        _trial("ogm_ge", 0, 0.10, ds="noisy"),
    ]
    rows += [_timing("joint", r, w) for r, w in enumerate([1.0, 2.0, 1.0])] + [_timing("ogm_ge", r, w) for r, w in enumerate([1.5, 2.0, 3.0])]
    s = {r["label"]: r for r in summarise(rows, "imbalanced", "visual", "audio")}
    assert s["joint"]["fused"] == pytest.approx((0.82, 0.0282842712))
    # utilisation per seed: joint (0.1/0.5, 0.05/0.4) = (0.2, 0.125); ogm_ge (0.3/0.5, 0.2/0.4) = (0.6, 0.5)
    assert s["joint"]["util"][0] == pytest.approx(0.1625) and s["ogm_ge"]["util"][0] == pytest.approx(0.55)
    assert s["ogm_ge"]["share"][0] == pytest.approx(0.55)
    m, lo, hi, n = s["ogm_ge"]["diff"]  # paired d = (0.06, 0.02): mean 0.04, sd 0.0283, t_{0.975,1} = 12.706
    assert n == 2 and m == pytest.approx(0.04) and hi - m == pytest.approx(12.706 * 0.02)
    assert s["ogm_ge"]["closed"] == pytest.approx(0.04 / 0.08)  # (0.86 − 0.82)/(0.9 − 0.82)
    assert s["ogm_ge"]["rel_time"] == pytest.approx(1.5)  # ratios per round 1.5, 1.0, 3.0 -> median 1.5
    assert s["ogm_ge"]["n"] == 2  # the noisy row belongs to another table
    snap = {"rows": rows, "info": {"imbalanced": {"weak": "visual", "dominant": "audio"}}}
    table = render_dataset(snap, "imbalanced")
    assert "| ogm_ge | 2 | 86.0 ± 0.0 | – | 45.0 ± 7.1 | 0.55 | – | 0.55 | +4.0 [-21.4, +29.4] | – | 50% / – | 1.50× |" in table
    assert "**last epoch**: 1 of 1 balancing methods beat `joint` by ≥ 3 points" in render_headline(snap)
    assert "No results" in render_dataset(snap, "noisy")


def test_best_valid_protocol_pairs_best_with_best():
    """Δ and gap closed at the best-valid epoch compare each run's best-valid accuracy with joint's."""
    rows = []
    for seed, (jl, jb, ml, mb) in enumerate([(0.80, 0.82, 0.84, 0.90), (0.84, 0.86, 0.86, 0.88)]):
        for lab, last, best in (("joint", jl, jb), ("mie", ml, mb)):
            r = _trial(lab, seed, last)
            r["metrics"]["acc/best/test/fused"] = best
            rows.append(r)
    s = {r["label"]: r for r in summarise(rows, "imbalanced", "visual", "audio")}
    m, lo, hi, n = s["mie"]["diff_best"]  # d = (0.08, 0.02): mean 0.05, sd 0.0424, t_{0.975,1} = 12.706
    assert n == 2 and m == pytest.approx(0.05) and hi - m == pytest.approx(12.706 * 0.03)
    assert s["mie"]["closed_best"] == pytest.approx(0.05 / (0.9 - 0.84))  # joint best mean 0.84
    assert s["mie"]["closed"] == pytest.approx(0.03 / (0.9 - 0.82))  # last: 0.85 vs 0.82
    head = render_headline({"rows": rows, "info": {"imbalanced": {"weak": "visual", "dominant": "audio"}}})
    assert "**best-valid epoch**: 1 of 1 balancing methods beat `joint` by ≥ 3 points (mean paired difference); best `mie`, closing 83%" in head
    assert "**last epoch**: 0 of 1 balancing methods" in head


def test_code_key_covers_the_method_and_what_it_imports_only():
    names = lambda m: {p.name for p in _method_modules(m)}  # noqa: E731
    assert names("mmpareto") == {"base.py", "window.py", "mmpareto.py"}
    assert {"gmm_adaptive.py", "purify.py", "gap_groups.py", "base.py"} <= names("gmm_adaptive")
    assert "ogm_ge.py" not in names("gmm_adaptive") and "cal.py" not in names("mmpareto")
    assert code_hash("ogm_ge") != code_hash("mmpareto") and code_hash("joint") == code_hash("joint")


def test_variants_and_unimodal_expansion():
    assert parse_variant("cpsl:aux_weight=0:tau=1.5") == ("cpsl(aux_weight=0,tau=1.5)", "cpsl", {"aux_weight": 0, "tau": 1.5})
    t = trials(["joint", "unimodal"], ["three_modal"], [0, 1])
    assert len(t) == 2 + 3 * 2
    assert ("unimodal", "three_modal", 1, "text") in t


def test_code_key_survives_renaming_the_package():
    from benchmarks.methods import _IMPORT, _normalised

    before = "from modalscope.methods.window import joint_loss\n# run `python -m modalscope train`; see core/engine.py\nfrom modalscope.dashboard.app import x\n"
    after = "from modalscope.methods.window import joint_loss\n# run `python -m modalscope train`; see modalscope/engine.py\nfrom modalscope.dashboard.app import x\n"
    assert _normalised(before) == _normalised(after)
    assert _normalised("from modalscope.methods import a") != _normalised("from modalscope.methods import b")
    assert _IMPORT.findall(before) == _IMPORT.findall(after) == [("window", "joint_loss")]
