"""benchmarks/presets.py: utilisation, the issue-13 checks, and the committed JSON matching today's presets."""

import json
import math

import numpy as np
import pytest

from benchmarks import presets as P
from modalscope.data.synthetic import PRESETS


def test_utilisation_is_the_fraction_of_the_alone_gain():
    assert P.utilisation(0.3, 0.2, 0.6) == pytest.approx(0.25)
    assert P.utilisation(0.2, 0.2, 0.6) == 0.0 and P.utilisation(0.6, 0.2, 0.6) == 1.0
    assert math.isnan(P.utilisation(0.5, 0.4, 0.4))


def _run(fused, probe=None, init=None):
    return {"acc": {"fused": fused}, "probe": probe or {}, "probe_init": init or {}}


def _record(seed, joint, audio, visual, ens, vis_probe_joint, vis_probe_alone, bayes=0.93):
    init = {"audio": 0.3, "visual": 0.2}
    return {"seed": seed, "bayes": {"fused": bayes, "audio": 0.84, "visual": 0.77},
            "runs": {"joint": _run(joint, {"audio": 0.75, "visual": vis_probe_joint}, init),
                     "unimodal:audio": _run(audio, {"audio": 0.76}, {"audio": 0.3}),
                     "unimodal:visual": _run(visual, {"visual": vis_probe_alone}, {"visual": 0.2}),
                     "ensemble": _run(ens, {"audio": 0.75, "visual": 0.6}, init)}}


def test_summary_checks_on_a_planted_suppression_case():
    res = {"modalities": ["audio", "visual"],
           "records": [_record(0, 0.76, 0.77, 0.60, 0.86, 0.30, 0.60), _record(1, 0.78, 0.77, 0.62, 0.84, 0.25, 0.70)]}
    s = P.summarise(res)
    assert (s["weak"], s["strong"]) == ("visual", "audio")
    assert s["joint"][0] == pytest.approx(0.77) and s["joint"][1] == pytest.approx(np.std([0.76, 0.78], ddof=1))
    assert s["util"]["visual"][0] == pytest.approx((0.25 + 0.1) / 2)
    assert s["checks"] == {"a_joint_within_3_of_strong_alone": True, "b_weak_util_le_0.4": True,
                           "c_ensemble_ge_joint_plus_5": True, "d_bayes_ge_joint_plus_8": True, "joint_ge_ensemble": False}
    res["records"] = [_record(0, 0.88, 0.77, 0.60, 0.86, 0.55, 0.60)]
    c = P.summarise(res)["checks"]
    assert not c["a_joint_within_3_of_strong_alone"] and not c["b_weak_util_le_0.4"] and c["joint_ge_ensemble"]
    assert not c["c_ensemble_ge_joint_plus_5"] and not c["d_bayes_ge_joint_plus_8"]


def test_committed_results_describe_todays_presets():
    """A changed preset must be re-benchmarked: the JSON records the design it was run with."""
    raw = json.loads(P.RESULTS.read_text())
    assert set(raw["design"]) == set(PRESETS)
    for p in PRESETS:
        assert raw["design"][p] == json.loads(json.dumps(P.design(p))), p
    assert set(raw["presets"]) == set(P.ALL_PRESETS)
    assert raw["settings"]["seeds"] == 5


def test_linear_probe_finds_a_planted_signal_and_not_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 800)
    signal = np.eye(4)[y] * 4.0 + rng.standard_normal((800, 4))
    noise = rng.standard_normal((800, 4))
    assert P.linear_probe(signal[:400], y[:400], signal[400:], y[400:]) > 0.85
    assert P.linear_probe(noise[:400], y[:400], noise[400:], y[400:]) < 0.35
