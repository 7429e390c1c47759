"""A planted gallery for Compare and Learn: seeds paired across methods, with the probe, utilisation
and best-valid scalars of the shared name contract set to known values (no training).

On ``imbalanced`` (seeds 0-2): visual is the weak modality (alone 0.57 vs audio 0.80), its encoder is
starved under ``joint`` (utilisation 0.2), ``ogm_ge`` recovers it without losing fused accuracy
(passes the Learn test), ``mmpareto`` recovers it but loses 5 points (fails). On ``complementary``
(seed 0) the visual head is low (0.22 vs 0.43 alone) while its encoder keeps bit 2 as well as alone
(per-bit probes): specialisation.
"""

from __future__ import annotations

from pathlib import Path

from modalscope.store import RunWriter
from tests.planted import plant_run

# method → (visual head, visual probe, visual utilisation at seed 0; +0.05 per seed for the non-joint methods)
VISUAL = {"joint": (0.30, 0.27, 0.20), "ogm_ge": (0.45, 0.50, 0.65), "mmpareto": (0.50, 0.52, 0.70)}
OGM_DELTA = (0.02, 0.03, 0.01)  # ogm_ge − joint fused accuracy, seeds 0, 1, 2
ALONE = {"audio": 0.80, "visual": 0.57}
PROBE_INIT = 0.19
VISUAL_PROBE_ALONE = 0.57


def fused(method: str, seed: int) -> float:
    """Last-epoch fused test accuracy: joint 0.78 + 0.01·seed; ogm_ge joint + OGM_DELTA; mmpareto joint − 0.05."""
    joint = 0.78 + 0.01 * seed
    return {"joint": joint, "ogm_ge": joint + OGM_DELTA[seed], "mmpareto": joint - 0.05}[method]


def _append(run_dir: Path, values: dict[str, float]) -> None:
    """Log ``values`` at the run's last step (they become its final values) and close it finished again."""
    from modalscope.store import open_run

    last = open_run(run_dir).scalars(names=["acc/test/fused"]).iloc[-1]
    w = RunWriter(run_dir, flush_rows=100_000, flush_seconds=1e9, heartbeat_seconds=3600, resume=True)
    w.log_scalars(int(last["step"]), int(last["epoch"]), values)
    w.close("finished")


def _bits(m: str, probe, init=None) -> dict[str, float]:
    out = {f"probe/bit/{m}/{b}": v for b, v in enumerate(probe)}
    out.update({f"probe_init/bit/{m}/{b}": v for b, v in enumerate(init or ())})
    return out


def plant_study(root: Path, seeds=(0, 1, 2)) -> Path:
    root = Path(root)
    for s in seeds:
        for m, acc in ALONE.items():
            d = plant_run(root, f"unimodal-{m}_imbalanced_s{s}", "unimodal", modality=m, seed=s, gap=False, final_acc=acc)
            probe = VISUAL_PROBE_ALONE if m == "visual" else 0.82
            _append(d, {f"probe/test/{m}": probe, f"probe_init/test/{m}": PROBE_INIT, f"probe_util/{m}": 1.0, "acc/best/test/fused": acc})
        for meth, (head, probe, util) in VISUAL.items():
            f = fused(meth, s)
            d = plant_run(root, f"{meth}_imbalanced_s{s}", meth, seed=s, final_acc=f)
            _append(d, {"acc/test/visual": head, "acc/test/audio": 0.76, "acc/best/test/fused": f + 0.01,
                        "probe/test/visual": probe, "probe_init/test/visual": PROBE_INIT,
                        "probe_util/visual": util + (0.05 * s if meth != "joint" else 0.0),
                        "probe/test/audio": 0.82, "probe_util/audio": 1.0})
    # complementary: the visual head is low and the encoder's overall utilisation too (0.38), but per bit it keeps
    # bit 2 as well as alone, the bit audio barely predicts (0.53): specialisation (values as measured on the preset)
    d = plant_run(root, "joint_complementary_s0", "joint", preset="complementary", seed=0, final_acc=0.84)
    _append(d, {"acc/test/visual": 0.22, "acc/test/audio": 0.62, "probe/test/visual": 0.26, "probe_init/test/visual": 0.163,
                "probe_util/visual": 0.38, "probe/test/audio": 0.7, "probe_util/audio": 0.97, "acc/best/test/fused": 0.845,
                **_bits("visual", (0.565, 0.538, 0.894), init=(0.556, 0.547, 0.607)), **_bits("audio", (0.978, 0.976, 0.529))})
    d = plant_run(root, "unimodal-visual_complementary_s0", "unimodal", modality="visual", preset="complementary", gap=False, final_acc=0.43)
    _append(d, {"probe/test/visual": 0.42, "probe_init/test/visual": 0.174, "probe_util/visual": 1.0, **_bits("visual", (0.70, 0.703, 0.895))})
    d = plant_run(root, "unimodal-audio_complementary_s0", "unimodal", modality="audio", preset="complementary", gap=False, final_acc=0.62)
    _append(d, {"probe/test/audio": 0.7})
    plant_run(root, "joint_noisy_s0", "joint", preset="noisy")
    return root
