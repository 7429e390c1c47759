"""The Learn page's walk-through: step titles, the presets it tells the story on, and the *Try it* run.

*Try it* trains the gallery's own ``joint`` run configuration (preset ``imbalanced``, seed 0, the
gallery's epochs), so the run finds the gallery's ``unimodal`` references and logs its visual
encoder's utilisation: the lesson (fused ≈ audio alone, visual encoder starved) shows on the
user's own run. Its duration is measured by ``benchmarks/learn_try.py``, whose raw output the
page reads (``TRY_RESULT``); the page states no duration it has not measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STEPS = [
    "1 · Two inputs, one answer",
    "2 · Each modality alone",
    "3 · Together, one wins",
    "4 · Inside the encoder",
    "5 · Why: who gets the gradient",
    "6 · Sample by sample: the modality gap",
    "7 · Methods that rebalance",
    "8 · Not every low head is suppression",
    "9 · Try it yourself",
]
PRESET = "imbalanced"
#: the preset where each modality carries what the other lacks: joint is nearly right there
CONTRAST = "complementary"
TRY_RESULT = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "learn_try.json"


def try_config(method: str = "joint") -> dict[str, Any]:
    """The raw config *Try it* launches: the gallery's run of ``method`` on ``PRESET``, seed 0."""
    from modalscope.gallery import DEFAULT_EPOCHS

    return {"data": {"name": "synthetic", "preset": PRESET}, "method": {"name": method}, "epochs": DEFAULT_EPOCHS,
            "device": "cpu", "log": {"progress": False}}


def try_measured(path: Path = TRY_RESULT) -> dict[str, Any] | None:
    """The committed measurement of the *Try it* run (wall time and what it ended with), or None."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
