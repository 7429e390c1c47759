"""GMM-guided adaptive loss (Liu, Yu, Liu, arXiv 2510.21797; ``docs/methods.md``). Loss is [I].

Stages, by epoch: ``warmup`` (``warmup_epochs``) → ``adaptive`` → optionally ``purify``
(the last ``purify_epochs`` epochs).

* warm-up: ``L = CE(z, y) + Σ_m CE(z_m, y)``.
* the per-sample gap ``g_i = p_a,i[y_i] − p_b,i[y_i]`` is kept in the trainer's per-sample
  store (``Trainer.sample_store``), by default as an EMA of the gaps seen in the training
  batches (``gap_source=ema``, no extra pass), or set from the engine's no-grad pass over the
  training split at the end of an epoch (``gap_source=eval``). Once both branches have
  memorised the training split every eval-pass gap is ≈ 0 and the mixture separates nothing;
  the EMA remembers the epochs before memorisation, so it is the default. A
  2-component mixture is refitted at the end of warm-up and then every ``refit_every``
  epochs; ``γ_i`` is the posterior of the imbalanced component (larger |μ|) at the stored gap.
* adaptive, per sample (γ_i detached, μ_b the balanced component's mean)::

      L_i = (1 + λ_f·(1 − γ_i))·CE(z_i, y_i) + Σ_m CE(z_m,i, y_i)
          + λ_g·(1 + γ_i)·g_i² + λ_s·γ_i·(g_i − μ_b)²

  ``detach_strong`` (default on) stops the gradient of the gap terms through the modality
  that is stronger on that sample, so they only push the weak one up; without it, ``g²``
  also pulls the strong modality's true-class probability *down*. ``use_abs`` fits on |g|.
* purify: ``CE(z) + Σ_m CE(z_m)`` at ``lr × purify_lr_scale`` on ``{i : 1 − γ_i ≥ τ_b}``.

Three or more modalities [I]: one series and one mixture per modality pair; the fusion
weight uses ``γ_i = max_pairs γ_i^{ab}`` and the gap terms are summed over pairs.

Cost: one forward/backward per step; with ``gap_source=eval`` the engine's per-epoch
evaluation of the training split is reused (one extra pass if ``log.eval_train`` is off);
EM on N scalars per refit.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from modalscope.diagnostics.gap import true_class_prob
from modalscope.methods.base import LossParts, Method, MethodParams, Panel, register_method
from modalscope.methods.gap_groups import (
    fit_mixtures,
    gap_pairs,
    load_purification_state,
    mixture_scalars,
    pair_gaps,
    posteriors,
    purification_state,
)
from modalscope.methods.purify import GAP_STORE, check_gap_config, scale_lr, select_balanced, supervised_losses

STAGES = {"warmup": 0.0, "adaptive": 1.0, "purify": 2.0}


class GmmAdaptiveParams(MethodParams):
    name: Literal["gmm_adaptive"] = "gmm_adaptive"
    warmup_epochs: int = Field(10, ge=1, le=100000, description="Epochs of plain CE(z) + Σ CE(z_m) before the first GMM fit.")
    refit_every: int = Field(1, ge=1, le=100000, description="Epochs between GMM refits in the adaptive stage.")
    gap_source: Literal["ema", "eval"] = Field(
        "ema",
        description="ema: per-sample EMA of the gaps seen in the training batches (remembers the epochs before memorisation); eval: the end-of-epoch no-grad pass on the training split.",
    )
    ema_momentum: float = Field(0.9, ge=0.0, lt=1.0, description="Momentum of the per-sample gap EMA (gap_source=ema).")
    lambda_f: float = Field(1.0, ge=0.0, le=100.0, description="Extra fusion-loss weight for balanced samples.")
    lambda_g: float = Field(1.0, ge=0.0, le=100.0, description="Weight of the gap penalty g².")
    lambda_s: float = Field(0.5, ge=0.0, le=100.0, description="Weight of the pull of imbalanced samples toward μ_b.")
    use_abs: bool = Field(False, description="Fit the mixture (and the pull toward μ_b) on |g|.")
    detach_strong: bool = Field(
        True, description="Gap terms push only the weaker modality of each sample up (off: they also pull the stronger one's true-class probability down)."
    )
    purify_epochs: int = Field(0, ge=0, le=100000, description="Final epochs of fine-tuning on the balanced subset (0 = off).")
    purify_lr_scale: float = Field(0.1, gt=0.0, le=10.0, description="Learning-rate factor for the purify stage.")
    tau_b: float = Field(0.5, gt=0.0, le=1.0, description="Purify keeps samples whose balanced posterior 1 − γ ≥ τ_b.")


def batch_gaps(logits: dict[str, torch.Tensor], y: torch.Tensor, pairs: list[tuple[str, str]], detach_strong: bool = False) -> torch.Tensor:
    """(B, P) differentiable gaps ``p_a[y] − p_b[y]``, one column per pair."""
    probs = {m: true_class_prob(logits[m], y) for m in dict.fromkeys(x for p in pairs for x in p)}
    cols = []
    for a, b in pairs:
        pa, pb = probs[a], probs[b]
        if detach_strong:
            a_strong = pa.detach() >= pb.detach()
            cols.append(torch.where(a_strong, pa.detach() - pb, pa - pb.detach()))
        else:
            cols.append(pa - pb)
    return torch.stack(cols, dim=1)


def adaptive_loss(
    fused: torch.Tensor,
    logits: dict[str, torch.Tensor],
    y: torch.Tensor,
    gamma: torch.Tensor,
    mu_b: torch.Tensor,
    pairs: list[tuple[str, str]],
    lambda_f: float = 1.0,
    lambda_g: float = 1.0,
    lambda_s: float = 0.5,
    use_abs: bool = False,
    detach_strong: bool = False,
    unimodal: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample adaptive loss ``L_i`` (see module docstring) and its batch-mean parts.

    ``gamma`` is (B, P) posteriors of the imbalanced component (detached here), ``mu_b`` (P,)
    the balanced means. ``unimodal=False`` leaves the Σ CE(z_m) terms to the caller.
    """
    gamma = gamma.detach().to(fused.dtype).reshape(len(y), len(pairs))
    mu_b = torch.as_tensor(mu_b, dtype=fused.dtype, device=fused.device).reshape(1, len(pairs))
    g_fuse = gamma.max(dim=1).values
    ce = F.cross_entropy(fused, y, reduction="none")
    per = (1.0 + lambda_f * (1.0 - g_fuse)) * ce
    parts = {"fused": ce.mean().detach()}
    for m, z in logits.items():
        ce_m = F.cross_entropy(z, y, reduction="none")
        parts[m] = ce_m.mean().detach()
        if unimodal:
            per = per + ce_m
    g = batch_gaps(logits, y, pairs, detach_strong)
    gs = g.abs() if use_abs else g
    gap = (lambda_g * (1.0 + gamma) * g**2).sum(1)
    shift = (lambda_s * gamma * (gs - mu_b) ** 2).sum(1)
    per = per + gap + shift
    parts["gap"] = gap.mean().detach()
    parts["shift"] = shift.mean().detach()
    return per, parts


@register_method("gmm_adaptive")
class GmmAdaptive(Method):
    """Warm-up → GMM-weighted adaptive loss → optional purification (see module docstring)."""

    panels = (
        Panel("Training stage", ("gmm/stage",), "stage (0 warm-up · 1 adaptive · 2 purify)",
              "Warm-up trains on everything; the adaptive stage reweights samples by the GMM; purify fine-tunes on balanced ones.",
              (-0.2, 2.2), shape="hv"),
        Panel("Share of training samples the GMM calls imbalanced", ("gmm/frac_imbalanced", "gmm/gamma_mean"), "share of samples",
              "A falling share means fewer samples are carried by one modality alone.", (0.0, 1.0), 0.5, "half",
              labels=(("gmm/frac_imbalanced", "posterior > 0.5"), ("gmm/gamma_mean", "mean posterior"))),
        Panel("Where the two GMM components sit (the threshold lies between them)", ("gmm/mu_b", "gmm/mu_u", "gmm/threshold*"),
              "modality gap", "Balanced samples sit near 0, imbalanced ones at the dominant modality's side.", (-1.0, 1.0), 0.0, "no gap",
              labels=(("gmm/mu_b", "balanced mean"), ("gmm/mu_u", "imbalanced mean"))),
    )

    Params = GmmAdaptiveParams
    family = "sample"
    min_modalities = 2

    @classmethod
    def unimodal_heads(cls, params) -> str:
        return "trained"

    def __init__(self, params, modalities, task):
        super().__init__(params, modalities, task)
        self.pairs = gap_pairs(self.modalities)
        self.stage: str | None = None
        self.mixtures = None
        self.subset: np.ndarray | None = None
        self.lr_scaled = False

    @classmethod
    def check_config(cls, params, modalities, task) -> None:
        check_gap_config(cls.name, modalities, task)

    def stage_at(self, epoch: int, epochs: int) -> str:
        p = self.params
        if epoch < p.warmup_epochs:
            return "warmup"
        if p.purify_epochs > 0 and epoch >= epochs - p.purify_epochs:
            return "purify"
        return "adaptive"

    def _store(self, ctx):
        return ctx.trainer.sample_store(GAP_STORE, self.params.ema_momentum, (len(self.pairs),))

    # ------------------------------------------------------------------ stages
    def on_epoch_start(self, ctx) -> None:
        stage = self.stage_at(ctx.epoch, ctx.cfg.epochs)
        if stage == "adaptive" and self.mixtures is None:
            stage = "warmup"
        if stage == "purify" and self.mixtures is None:
            stage = "warmup"
        if stage != self.stage:
            self._enter(stage, ctx)
        ctx.log("gmm/stage", STAGES[stage])
        if stage == "purify":
            ctx.log("gmm/subset_size", float(len(self.subset)))

    def _enter(self, stage: str, ctx) -> None:
        before = self.stage
        self.stage = stage
        if stage == "purify":
            keep, frac = select_balanced(ctx, self.mixtures, self.params.tau_b)
            n = len(self._store(ctx))
            if len(keep) == 0:
                keep = np.arange(n)
            self.subset = keep
            if not self.lr_scaled:
                scale_lr(ctx.optimizer, self.params.purify_lr_scale)
                self.lr_scaled = True
            msg = f"purify: fine-tuning on {len(keep)} of {n} samples at lr x {self.params.purify_lr_scale:g}"
        elif stage == "adaptive":
            msg = "adaptive: GMM-weighted loss"
        else:
            msg = f"warmup: CE on fused and unimodal logits for {self.params.warmup_epochs} epochs"
        ctx.event("stage", f"epoch {ctx.epoch}: {msg}" + (f" (after {before})" if before else ""))

    def train_indices(self, ctx):
        return self.subset if self.stage == "purify" else None

    def on_epoch_end(self, ctx) -> None:
        if self.stage == "purify" or not self._refit_due(ctx.epoch, ctx.cfg.epochs):
            return
        store = self._store(ctx)
        if self.params.gap_source == "eval":
            ev = ctx.evals.get("train") or ctx.trainer.predict_split("train")
            store.set(ev.idx, pair_gaps(ev.logits, ev.labels, self.pairs))
        seen = store.seen.cpu().numpy()
        vals = store.values.cpu().numpy()[seen]
        if len(vals) < 2:
            return
        self.mixtures = fit_mixtures(vals, seed=ctx.cfg.seed, use_abs=self.params.use_abs)
        gamma = posteriors(self.mixtures, vals).max(axis=1)
        ctx.log("gmm/frac_imbalanced", float((gamma > 0.5).mean()))
        ctx.log("gmm/gamma_mean", float(gamma.mean()))
        for k, v in mixture_scalars(self.mixtures, self.pairs).items():
            ctx.log(k, v)

    def _refit_due(self, epoch: int, epochs: int) -> bool:
        nxt = epoch + 1
        w = self.params.warmup_epochs
        if nxt < w:
            return False
        if (nxt - w) % self.params.refit_every == 0:
            return True
        return self.stage_at(nxt, epochs) == "purify"

    # ------------------------------------------------------------------ loss
    def loss(self, batch, out, ctx) -> LossParts:
        if self.stage in (None, "warmup", "purify"):
            if self.params.gap_source == "ema" and self.stage != "purify":
                g = batch_gaps(out.logits, batch["label"], self.pairs).detach()
                self._store(ctx).update_ema(batch["idx"], g)
            return supervised_losses(self, batch, out, ctx)
        y = batch["label"]
        store = self._store(ctx)
        live = batch_gaps(out.logits, y, self.pairs).detach()
        if self.params.gap_source == "ema":
            store.update_ema(batch["idx"], live)
        stored, seen = store.get(batch["idx"])
        g = torch.where(seen[:, None], stored, live)
        gamma = torch.as_tensor(posteriors(self.mixtures, g.cpu().numpy()), dtype=out.fused.dtype, device=out.fused.device)
        mu_b = [float(m.means[m.balanced]) for m in self.mixtures]
        p = self.params
        per, parts = adaptive_loss(
            out.fused, out.logits, y, gamma, mu_b, self.pairs, p.lambda_f, p.lambda_g, p.lambda_s,
            p.use_abs, p.detach_strong, unimodal=ctx.model.head_kind != "separate",
        )
        ctx.log("gmm/gamma_batch", float(gamma.max(dim=1).values.mean()))
        return LossParts(total=per.mean(), parts=parts, per_sample=per.detach())

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"stage": self.stage, **purification_state(self)}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.stage = state.get("stage")
            load_purification_state(self, state)
