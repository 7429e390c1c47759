"""Purification fine-tune: keep training only on the samples the gap mixture calls balanced.

Step D of the GMM-guided method (Liu, Yu, Liu, arXiv 2510.21797; ``docs/methods.md``), usable on
its own after any run: ``modalscope train --init-from RUN --method purify --epochs 5``.

At the first epoch the (initialised) model predicts the whole training split without
gradients; the per-pair gaps ``g_i = p_a,i[y_i] − p_b,i[y_i]`` go into the trainer's
per-sample store, a two-component mixture is fitted per pair, and the subset
``{i : 1 − γ_i ≥ τ_b}`` is frozen for the rest of the run (and checkpointed, so a resume
trains on the same samples). The paper reports that this fine-tune helps even without the
adaptive loss. Training then uses ``L = CE(z, y) + Σ_m CE(z_m, y)`` at ``lr × lr_scale``.

Cost: one no-grad pass over the training split and one EM fit per pair, once.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from modalscope.errors import ConfigError
from modalscope.methods.base import fused_and_unimodal, LossParts, Method, MethodParams, Panel, register_method
from modalscope.methods.gap_groups import (
    balanced_subset,
    fit_mixtures,
    gap_pairs,
    load_purification_state,
    mixture_scalars,
    pair_gaps,
    posteriors,
    purification_state,
)

GAP_STORE = "gmm/gap"


class PurifyParams(MethodParams):
    name: Literal["purify"] = "purify"
    tau_b: float = Field(0.5, gt=0.0, le=1.0, description="Keep samples whose balanced posterior 1 − γ is at least this.")
    lr_scale: float = Field(0.1, gt=0.0, le=10.0, description="Multiply the learning rate by this for the fine-tune.")
    use_abs: bool = Field(False, description="Fit the mixture on |g| instead of the signed gap.")


def supervised_losses(method: Method, batch: dict, out, ctx) -> LossParts:
    """``CE(z, y) + Σ_m CE(z_m, y)`` (the unimodal terms are left to the engine for monitor heads)."""
    own = ctx.model.head_kind != "separate"
    return fused_and_unimodal(out, batch["label"], method.task, weight=1.0 if own else 0.0)


def scale_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = g["lr"] * factor


def check_gap_config(name: str, modalities: list[str], task: str) -> None:
    if len(modalities) < 2:
        raise ConfigError(f"method {name!r} needs at least 2 modalities (it compares them), the data has {len(modalities)}")
    if task != "classification":
        raise ConfigError(f"method {name!r} needs a classification task (the gap is a true-class probability)")


def select_balanced(ctx, mixtures, tau_b: float) -> tuple[np.ndarray, float]:
    """(subset of seen training positions with 1 − γ ≥ τ_b, fraction imbalanced) from the gap store."""
    store = ctx.trainer.sample_store(GAP_STORE)
    seen = store.seen.cpu().numpy()
    gamma = posteriors(mixtures, store.values.cpu().numpy())
    keep = balanced_subset(gamma, tau_b)
    keep = keep[seen[keep]]
    frac = float((gamma.max(axis=1)[seen] > 0.5).mean()) if seen.any() else float("nan")
    return keep, frac


@register_method("purify")
class Purify(Method):
    """Fine-tune on the GMM-filtered balanced subset (see module docstring)."""

    panels = (
        Panel("Balanced subset used for fine-tuning", ("gmm/subset_size",), "training samples",
              "Only the samples the GMM calls balanced are kept; this is how many.", shape="hv"),
        Panel("Share of training samples the GMM calls imbalanced", ("gmm/frac_imbalanced", "gmm/pi_u"), "share of samples",
              "The share of samples dropped from fine-tuning because one modality carries them alone.", (0.0, 1.0), 0.5, "half",
              labels=(("gmm/frac_imbalanced", "posterior > 0.5"), ("gmm/pi_u", "imbalanced weight π"))),
    )

    Params = PurifyParams
    family = "sample"
    min_modalities = 2

    def __init__(self, params, modalities, task):
        super().__init__(params, modalities, task)
        self.pairs = gap_pairs(self.modalities)
        self.mixtures = None
        self.subset: np.ndarray | None = None
        self.lr_scaled = False

    @classmethod
    def check_config(cls, params, modalities, task) -> None:
        check_gap_config(cls.name, modalities, task)

    def on_epoch_start(self, ctx) -> None:
        if self.subset is None:
            ev = ctx.trainer.predict_split("train")
            gaps = pair_gaps(ev.logits, ev.labels, self.pairs)
            store = ctx.trainer.sample_store(GAP_STORE, shape=(len(self.pairs),))
            store.set(ev.idx, gaps)
            self.mixtures = fit_mixtures(gaps, seed=ctx.cfg.seed, use_abs=self.params.use_abs)
            keep, frac = select_balanced(ctx, self.mixtures, self.params.tau_b)
            n = len(store)
            if len(keep) == 0:
                ctx.event("stage", f"purify: no sample has 1 - gamma >= {self.params.tau_b}; fine-tuning on all {n}")
                keep = np.arange(n)
            else:
                ctx.event("stage", f"purify: fine-tuning on {len(keep)} of {n} samples (balanced posterior >= {self.params.tau_b})")
            self.subset = keep
            ctx.log("gmm/frac_imbalanced", frac)
            for k, v in mixture_scalars(self.mixtures, self.pairs).items():
                ctx.log(k, v)
        if not self.lr_scaled:
            scale_lr(ctx.optimizer, self.params.lr_scale)
            self.lr_scaled = True
        ctx.log("gmm/stage", 2.0)
        ctx.log("gmm/subset_size", float(len(self.subset)))

    def train_indices(self, ctx):
        return self.subset

    def loss(self, batch, out, ctx) -> LossParts:
        return supervised_losses(self, batch, out, ctx)

    def state_dict(self) -> dict:
        return purification_state(self)

    def load_state_dict(self, state: dict) -> None:
        if state:
            load_purification_state(self, state)
