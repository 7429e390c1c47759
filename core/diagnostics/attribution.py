"""Per-modality attribution with captum: an independent cross-check of the Shapley I(m).

The attributed output is the per-sample score ``−CE(z_i, y_i)`` of the fused logits, and
every modality is one feature group (all of its input elements ablated together to the
same baseline the Shapley game uses: zeros, or the mean input).

* ``feature_ablation`` (captum ``FeatureAblation``): leave-one-out,
  ``A(m) = v(M) − v(M ∖ {m})`` averaged over samples. Equals the Shapley value for two
  modalities when the interaction term is zero; in general it agrees in ranking, not value.
* ``shapley_sampling`` (captum ``ShapleyValueSampling``): Monte-Carlo Shapley over random
  modality orderings (converges to the exact I(m) of :mod:`modalscope.diagnostics.contribution`).

Cost: M + 1 forward passes (feature ablation) or ``n_samples · (M + 1)`` (Shapley sampling)
over the fixed evaluation batches, no grad.
"""

from __future__ import annotations

import torch

CAPTUM_METHODS = ("feature_ablation", "shapley_sampling")


def captum_contributions(
    model,
    batch: dict,
    y: torch.Tensor,
    task: str,
    method: str = "feature_ablation",
    absent: str = "zero",
    fill: dict | None = None,
    n_samples: int = 8,
) -> dict[str, float]:
    """Mean captum attribution per modality (see module docstring)."""
    from captum.attr import FeatureAblation, ShapleyValueSampling

    from modalscope.diagnostics.contribution import absent_fill
    from modalscope.methods.base import task_loss

    if method not in CAPTUM_METHODS:
        raise ValueError(f"captum method must be one of {', '.join(CAPTUM_METHODS)}, got {method!r}")
    mods = list(model.modalities)
    f = absent_fill(batch, mods, absent, fill)
    inputs = tuple(batch[m] for m in mods)
    if f is None:
        baselines = tuple(torch.zeros_like(x) for x in inputs)
    else:
        baselines = tuple(f[m].expand_as(x).contiguous() for m, x in zip(mods, inputs))
    masks = tuple(torch.full((1, *x.shape[1:]), i, dtype=torch.long, device=x.device) for i, x in enumerate(inputs))

    def forward(*xs: torch.Tensor) -> torch.Tensor:
        b = dict(batch)
        for m, x in zip(mods, xs):
            b[m] = x
        out = model(b)
        return -task_loss(out.fused, y, task, reduction="none")

    with torch.no_grad():
        if method == "feature_ablation":
            attr = FeatureAblation(forward).attribute(inputs, baselines=baselines, feature_mask=masks)
        else:
            attr = ShapleyValueSampling(forward).attribute(inputs, baselines=baselines, feature_mask=masks, n_samples=n_samples)
    return {m: float(a.reshape(a.shape[0], -1)[:, 0].double().mean()) for m, a in zip(mods, attr)}
