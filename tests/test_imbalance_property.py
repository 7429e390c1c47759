"""The default preset must show the phenomenon ModalScope exists for (mean of 3 seeds)."""

import numpy as np
import pytest

from core.config import resolve_config
from core.engine import train

pytestmark = pytest.mark.slow


def _final(tmp_path, seed, overrides):
    cfg = resolve_config(base={"runs_dir": str(tmp_path), "seed": seed, "log": {"progress": False},
                               "diagnostics": {"conflict": False, "gap": False, "contrib": False, "captum": False}},
                         overrides=overrides)
    run_dir, m = train(cfg)
    return m


def test_joint_suppresses_visual_and_leaves_room_below_bayes(tmp_path):
    from core.data.synthetic import SyntheticParams, bayes_ceilings

    joint = [_final(tmp_path, s, ["method.name=joint"]) for s in range(3)]
    alone = [_final(tmp_path, s, ["method.name=unimodal", "method.modality=visual"]) for s in range(3)]
    vis_joint = np.mean([m["acc/test/visual"] for m in joint])
    vis_alone = np.mean([m["acc/test/visual"] for m in alone])
    fused_joint = np.mean([m["acc/test/fused"] for m in joint])
    bayes = bayes_ceilings(SyntheticParams(preset="imbalanced"))
    assert vis_alone - vis_joint >= 0.05, (vis_joint, vis_alone)
    assert bayes["fused"] - max(bayes["audio"], bayes["visual"]) >= 0.05
    assert bayes["fused"] - fused_joint >= 0.05, (bayes["fused"], fused_joint)
