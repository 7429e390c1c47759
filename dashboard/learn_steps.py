"""The Learn page's walk-through: step titles and the preset it tells the story on."""

STEPS = [
    "1 · Two inputs, one answer",
    "2 · Each modality alone",
    "3 · Together, one wins",
    "4 · Why: who gets the gradient",
    "5 · Sample by sample: the modality gap",
    "6 · Methods that rebalance",
    "7 · Try it yourself",
]
PRESET = "imbalanced"
