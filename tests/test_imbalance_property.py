"""The default preset must show the phenomenon ModalScope exists for (3 seeds, issue 13 (a)–(c)).

On ``imbalanced`` both modalities carry the whole class code; audio is fast, visual slow.
Joint training must (a) end about where audio alone does, (b) leave the visual *encoder*
mostly untrained (linear-probe utilisation ≤ 0.4) and (c) lose ≥ 5 points to the ensemble of
separately trained encoders; (d) the Bayes ceiling stays ≥ 8 points above joint.
"""

import pytest

from benchmarks.presets import run_preset, summarise

pytestmark = pytest.mark.slow


def test_joint_starves_the_slow_encoder_on_the_default_preset():
    s = summarise(run_preset("imbalanced", [0, 1, 2], epochs=20, log=lambda _: None))
    assert (s["weak"], s["strong"]) == ("visual", "audio")
    joint, audio, ens = s["joint"][0], s["alone"]["audio"][0], s["ensemble"][0]
    assert abs(joint - audio) <= 0.03, (joint, audio)
    assert s["util"]["visual"][0] <= 0.4, s["probe"]["visual"]
    assert s["probe"]["visual"]["alone"][0] >= s["probe"]["visual"]["init"][0] + 0.15, s["probe"]["visual"]
    assert ens >= joint + 0.05, (ens, joint)
    assert s["bayes"]["fused"][0] >= joint + 0.08
