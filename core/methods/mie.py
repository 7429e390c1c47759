"""MIE / IGM: flat-gradient (SAM) training + cross-modal gradient projection (Jiang, Chi, Yang; IJCAI-25).

Reference code ``njustkmg/IJCAI25-IGM`` trains one modality per stage with its own MLP head,
long stages (25/50 epochs on CREMA-D), reloads the best checkpoint and starts a new optimiser
at every stage, and applies mixup to the trained modality's input. All of that is here:
stages are scaled to the epoch budget (``stage_epochs`` unset), the best state is chosen on
the **validation** split (kept in memory, never on test), and mixup is on (``mixup_alpha`` = 1, the
reference's value; 0 turns it off).
Deliberate differences: the perturbation is standard SAM (perturb, recompute, *restore*,
step) with a usable radius instead of an unrestored 1e-10 nudge, and the heads are linear by
default (the reference's 512→256→64 MLP heads are sized for ResNet features; on small
encoder outputs an extra hidden layer keeps the slow modality's loss at chance for whole
stages, so the comparison would measure the head rather than the method).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from modalscope.errors import ConfigError
from modalscope.methods.base import LossParts, Method, Panel, register_method, task_loss
from modalscope.methods.window import WindowParams, joint_loss
from modalscope.models.multimodal import ModelOutput


class MIEParams(WindowParams):
    name: Literal["mie"] = "mie"
    variant: Literal["staged", "joint"] = Field(
        "staged",
        description="staged: train one modality (encoder + own head) per stage, alternating (reference code); joint: train the fused model and all heads together every step.",
    )
    stage_epochs: list[Annotated[int, Field(ge=1, le=100000)]] | None = Field(
        None, min_length=1, max_length=64,
        description="Stage lengths in epochs, cycled (stage k trains modality k mod M); unset = n_stages stages scaled to the epoch budget.",
    )
    n_stages: int = Field(4, ge=1, le=1000, description="Number of stages when stage_epochs is unset (capped at the number of active epochs).")
    stage_pattern: list[Annotated[int, Field(ge=1, le=1000)]] = Field(
        [1, 2], min_length=1, max_length=64,
        description="Relative stage lengths, cycled, when stage_epochs is unset (reference CREMA-D: 25, 50 → 1, 2).",
    )
    reload_best: bool = Field(True, description="At each stage start (from the second), reload the state with the best validation fused accuracy so far.")
    reset_optimizer: bool = Field(True, description="At each stage start (from the second), drop the optimiser's state (momentum, Adam moments): a new optimiser.")
    mixup_alpha: float = Field(1.0, ge=0.0, le=100.0, description="Mixup on the trained inputs with λ ~ Beta(α, α), as the reference (α = 1); 0 = off.")
    rho: float = Field(0.05, ge=0.0, le=10.0, description="SAM radius ρ: ε = ρ·g/‖g‖.")
    flat_ratio: float = Field(0.3, ge=0.0, le=1.0, description="β: update gradient (1−β)·∇L(θ) + β·∇L(θ+ε); 1 = pure SAM, 0 = no SAM.")
    sam_norm: Literal["global", "per_tensor"] = Field(
        "global", description="‖g‖ over all trained parameters (standard SAM) or per tensor (reference code)."
    )
    temperature: float = Field(0.4, ge=0.0, le=100.0, description="T in P = U·diag(exp(−T·(σ−σ_min)/(σ_max−σ_min)))·Uᵀ.")
    project: bool = Field(True, description="Apply the cross-modal gradient projection W.grad ← W.grad·P.")
    fuse: Literal["mean_prob", "sum_logprob"] = Field(
        "mean_prob",
        description="staged prediction: mean of the heads' softmaxes (reference) or sum of their log-softmaxes (product of experts).",
    )
    head_hidden: int = Field(
        0, ge=0, le=8192,
        description="Hidden width of each per-modality head: 0 = linear head (default), > 0 = an MLP h → hidden → C (the reference's heads are MLPs sized for ResNet features).",
    )


def projection_matrix(cov: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``P = U diag(exp(−T(σ−σ_min)/(σ_max−σ_min))) Uᵀ`` from ``U, σ = svd(C)``; returns (P, gains).

    Directions in which the other modality's layer inputs vary most get weight e^{−T};
    directions it never uses keep weight 1. A flat spectrum (σ_max = σ_min) gives P = I.
    """
    c = cov.detach().double().cpu()
    u, s, _ = torch.linalg.svd(c)
    span = s.max() - s.min()
    norm = (s - s.min()) / span if span > 0 else torch.zeros_like(s)
    gains = torch.exp(-temperature * norm)
    return (u * gains) @ u.t(), gains


def sam_epsilon(grads: list[torch.Tensor], rho: float, per_tensor: bool = False) -> list[torch.Tensor]:
    """``ε = ρ·g/‖g‖`` (global norm over all tensors, or per tensor)."""
    if per_tensor:
        return [rho * g / (g.norm() + 1e-12) for g in grads]
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])) if grads else torch.zeros(())
    return [rho * g / (total + 1e-12) for g in grads]


def scaled_stages(budget: int, n_stages: int, pattern: list[int]) -> list[int]:
    """Stage lengths that fill ``budget`` epochs: stage k ∝ ``pattern[k mod len]``, each ≥ 1.

    Boundaries are ``round(budget·cum_k / total)``, so the lengths sum to ``budget`` exactly;
    with fewer epochs than stages every stage is one epoch long.
    """
    if budget <= 0:
        return [1]
    n = min(n_stages, budget)
    weights = [pattern[k % len(pattern)] for k in range(n)]
    total, cum, bounds = sum(weights), 0, [0]
    for k, w in enumerate(weights):
        cum += w
        b = round(budget * cum / total)
        bounds.append(min(max(b, bounds[-1] + 1), budget - (n - k - 1)))
    bounds[-1] = budget
    return [b - a for a, b in zip(bounds, bounds[1:])]


def mixup(x: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """``λ·x + (1 − λ)·x[perm]`` (the reference's mixup of the trained modality's input)."""
    return lam * x + (1.0 - lam) * x[perm]


def linear_layers(module: nn.Module | None) -> list[nn.Linear]:
    return [] if module is None else [x for x in module.modules() if isinstance(x, nn.Linear)]


class _Heads(nn.Module):
    def __init__(self, modalities: list[str], dim: int, hidden: int, n_out: int):
        super().__init__()

        def head() -> nn.Module:
            if hidden <= 0:
                return nn.Linear(dim, n_out)
            return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

        self.heads = nn.ModuleDict({m: head() for m in modalities})

    def forward(self, m: str, h: torch.Tensor) -> torch.Tensor:
        return self.heads[m](h)


@register_method("mie")
class MIE(Method):
    """MIE: SAM-flattened updates plus gradient projection away from the other modality's subspace.

    Each modality gets its own head (linear, or an MLP with ``head_hidden > 0``), owned by the method.

    **staged** (reference): stage k trains modality ``m = modalities[k mod M]`` only:
    ``L0 = CE(head_m(φ_m(x_m)), y)``. Stage lengths are ``stage_epochs`` (cycled) or, unset,
    ``n_stages`` stages with lengths ∝ ``stage_pattern`` filling the active epochs. At the start
    of every stage from the second: reload the state (encoders, fusion, heads) with the best
    validation fused accuracy seen so far (``reload_best``; kept in memory, chosen on valid,
    never on test; skipped without a valid split) and drop the optimiser state
    (``reset_optimizer``). ``mixup_alpha > 0``: the trained input is ``λx + (1−λ)x[π]`` with
    ``λ ~ Beta(α, α)`` and a random permutation π per step, ``L0 = λ·CE(z, y) + (1−λ)·CE(z, y[π])``
    (joint variant: every modality mixed with the same λ, π). Prediction:
    ``p = mean_m softmax(head_m(h_m))`` (``fuse=sum_logprob``: ``Σ_m log_softmax(head_m(h_m))``). **joint**: ``L0 = CE(z, y) + Σ_m CE(head_m(h_m), y)``
    on the fused model; prediction = the fused logits.

    Per step: ``g0 = ∇L0(θ)``; ``ε = ρ·g0/‖g0‖``; ``g1 = ∇L0(θ+ε)`` (full recompute);
    restore θ; ``g = (1−β)·g0 + β·g1`` (``β = flat_ratio``; logged ``mie/flat_loss = L0(θ+ε)``).

    Projection: for each Linear layer (encoder, head; fusion slice in the joint variant) with
    weight W: ``W.grad ← W.grad·P``, ``P = U diag(exp(−T(σ−σ_min)/(σ_max−σ_min))) Uᵀ`` where
    ``U, σ = svd(C)`` and ``C = Σ_batches x̄ᵀx̄`` accumulates the batch-mean input x̄ of the
    *same* layer (same position, same weight shape) of the other modality in a no-grad pass
    over the training set. staged: the other modality is the one of the previous stage, P is
    built once at each stage start (stage ≥ 2). joint: C sums over all other modalities and
    P is rebuilt every epoch; the concat fusion layer's column block of modality m uses the
    other modalities' fusion inputs (their features h_n: the diagonal blocks of the
    concat-input covariance).

    Then ``optimizer.step()``. Logged: ``loss/total`` (= L0), ``mie/flat_loss``, ``mie/stage``,
    ``mie/p_gain/<m>`` (mean eigen-gain of m's P), ``mie/proj_ratio/<m>`` (‖W.grad·P‖/‖W.grad‖).
    Outside ``[start_epoch, end_epoch)`` the step *and the prediction* are exactly ``joint``.
    """

    panels = (
        Panel("Stage (which modality trains)", ("mie/stage",), "stage index", "Staged MIE trains one modality per stage, in turn.",
              shape="hv"),
        Panel("Gradient kept by the projection", ("mie/proj_ratio/*",), "‖g projected‖ / ‖g‖",
              "Below 1 the update was turned away from the other modality's feature directions, protecting what it learned.",
              (0.0, 1.05), 1.0, "no projection"),
        Panel("Loss at the sharpness-probe point", ("mie/flat_loss",), "loss (nats)",
              "The loss after a step of size ρ uphill; SAM lowers it, which favours flat minima."),
    )

    Params = MIEParams
    family = "gradient"

    def __init__(self, params, modalities, task):
        super().__init__(params, modalities, task)
        self.heads: _Heads | None = None
        self.P: dict[str, torch.Tensor] = {}
        self.gains: dict[str, float] = {}
        self._dev: dict[str, torch.Tensor] = {}
        self.lengths: list[int] = list(params.stage_epochs or [1])
        self.best: dict | None = None
        self.best_acc = float("-inf")
        self.best_epoch = -1
        self._mix: tuple | None = None

    @classmethod
    def check_config(cls, params, modalities, task) -> None:
        super().check_config(params, modalities, task)
        if len(modalities) < 2:
            raise ConfigError("method 'mie' needs at least 2 modalities")
        if task != "classification":
            raise ConfigError("method 'mie' needs a classification task (its heads are softmax classifiers)")

    def setup(self, trainer) -> None:
        model = trainer.model
        if model.head_kind == "separate":
            raise ConfigError("method 'mie' cannot run with model.heads=separate (detached monitor heads); use heads=auto, slice or trained")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(trainer.cfg.seed + 7919)
            self.heads = _Heads(self.modalities, trainer.cfg.model.embed_dim, self.params.head_hidden, model.n_out)
        p = self.params
        if p.stage_epochs is None:
            budget = min(p.end_epoch, trainer.cfg.epochs) - p.start_epoch
            self.lengths = scaled_stages(budget, p.n_stages, p.stage_pattern)

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"mie_heads": self.heads} if self.heads is not None else {}

    # ------------------------------------------------------------------ schedule
    def stage_at(self, epoch: int) -> tuple[int, int]:
        """(stage index, first epoch of that stage) for an active epoch."""
        e, k, first = epoch - self.params.start_epoch, 0, self.params.start_epoch
        lengths = self.lengths
        while e >= lengths[k % len(lengths)]:
            e -= lengths[k % len(lengths)]
            first += lengths[k % len(lengths)]
            k += 1
        return k, first

    def stage_modality(self, epoch: int) -> str:
        return self.modalities[self.stage_at(epoch)[0] % len(self.modalities)]

    # ------------------------------------------------------------------ forward / loss
    def forward(self, model, batch, ctx) -> ModelOutput:
        if not self.params.active(ctx.epoch):
            return model(batch)
        staged_train = self.params.variant == "staged" and model.training
        if model.training and self.params.mixup_alpha > 0:
            batch = self._mixed(batch, ctx, [self.stage_modality(ctx.epoch)] if staged_train else self.modalities)
        if staged_train:
            m = self.stage_modality(ctx.epoch)
            h = model.encoders[m](batch[m])
            z = self.heads(m, h)
            return ModelOutput(fused=z, logits={m: z}, features={m: h})
        feats = model.encode(batch)
        fused, _ = model.head(feats)
        logits = {m: self.heads(m, feats[m]) for m in self.modalities}
        if self.params.variant == "staged":
            if self.params.fuse == "mean_prob":
                probs = torch.stack([torch.softmax(z, 1) for z in logits.values()]).mean(0)
                fused = torch.log(probs.clamp_min(1e-12))
            else:
                fused = torch.stack([torch.log_softmax(z, 1) for z in logits.values()]).sum(0)
        return ModelOutput(fused=fused, logits=logits, features=feats)

    def _mixed(self, batch: dict, ctx, modalities: list[str]) -> dict:
        """The batch with ``modalities`` mixed; λ and π are drawn once per step (SAM's second pass reuses them)."""
        key = (ctx.step, id(batch))
        if self._mix is None or self._mix[0] != key:
            a = self.params.mixup_alpha
            lam = float(torch.distributions.Beta(a, a).sample())
            perm = torch.randperm(len(batch["label"]), device=batch["label"].device)
            self._mix = (key, lam, perm)
        _, lam, perm = self._mix
        out = dict(batch)
        for m in modalities:
            out[m] = mixup(batch[m], lam, perm)
        return out

    def _ce(self, z: torch.Tensor, y: torch.Tensor, ctx) -> torch.Tensor:
        """CE, or the mixup loss ``λ·CE(z, y) + (1−λ)·CE(z, y[π])`` on a mixed training step."""
        if self._mix is not None and self._mix[0][0] == ctx.step and self.params.mixup_alpha > 0 and ctx.model.training:
            _, lam, perm = self._mix
            return lam * task_loss(z, y, self.task) + (1.0 - lam) * task_loss(z, y[perm], self.task)
        return task_loss(z, y, self.task)

    def loss(self, batch, out, ctx) -> LossParts:
        if not self.params.active(ctx.epoch):
            return joint_loss(batch, out, self.task)
        y = batch["label"]
        if self.params.variant == "staged":
            (m, z), = out.logits.items()
            l0 = self._ce(z, y, ctx)
            return LossParts(total=l0, parts={m: l0.detach()})
        fused = self._ce(out.fused, y, ctx)
        parts, total = {"fused": fused}, fused
        for m, z in out.logits.items():
            lm = self._ce(z, y, ctx)
            parts[m] = lm.detach()
            total = total + lm
        return LossParts(total=total, parts=parts)

    # ------------------------------------------------------------------ update
    def optimizer_step(self, ctx, closure) -> None:
        if not self.params.active(ctx.epoch):
            ctx.optimizer.step()
            return
        params = [p for p in ctx.trainer.parameters() if p.grad is not None]
        beta, rho = self.params.flat_ratio, self.params.rho
        if beta > 0 and rho > 0 and params:
            g0 = [p.grad.detach().clone() for p in params]
            eps = sam_epsilon(g0, rho, self.params.sam_norm == "per_tensor")
            saved = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p, e in zip(params, eps):
                    p.add_(e)
            parts1 = closure()
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
            for p, a in zip(params, g0):
                b = p.grad if p.grad is not None else torch.zeros_like(a)
                p.grad = (1.0 - beta) * a + beta * b
            ctx.log("mie/flat_loss", float(parts1.total.detach()))
        if self.params.project and self.P:
            self._project(ctx)
        ctx.optimizer.step()

    def _layers(self, model, m: str) -> list[tuple[str, torch.Tensor, slice]]:
        """(key, weight, column slice) of every projectable Linear layer of modality m."""
        out = [(f"enc{i}", lin.weight, slice(None)) for i, lin in enumerate(linear_layers(model.encoders[m]))]
        out += [(f"head{i}", lin.weight, slice(None)) for i, lin in enumerate(linear_layers(self.heads.heads[m]))]
        if self.params.variant == "joint":
            fusion = model.fusion
            if model.fusion_kind == "concat":
                out.append(("fusion", fusion.fc.weight, fusion.input_slice(m)))
            elif model.fusion_kind == "sum":
                out.append(("fusion", fusion.fc[m].weight, slice(None)))
        return out

    def _project(self, ctx) -> None:
        trained = [self.stage_modality(ctx.epoch)] if self.params.variant == "staged" else self.modalities
        for m in trained:
            before = after = 0.0
            for key, w, cols in self._layers(ctx.model, m):
                P = self.P.get(f"{m}/{key}")
                if P is None or w.grad is None:
                    continue
                g = w.grad[:, cols]
                if g.shape[1] != P.shape[0]:
                    continue
                dev = self._dev.get(f"{m}/{key}")
                if dev is None or dev.device != g.device:
                    dev = self._dev[f"{m}/{key}"] = P.to(device=g.device, dtype=g.dtype)
                new = g @ dev
                before += float(g.pow(2).sum())
                after += float(new.pow(2).sum())
                w.grad[:, cols] = new
            if before > 0:
                ctx.log(f"mie/proj_ratio/{m}", (after / before) ** 0.5)

    # ------------------------------------------------------------------ projection matrices
    @torch.no_grad()
    def _covariances(self, ctx, sources: list[str]) -> dict[tuple[str, str], torch.Tensor]:
        """``C = Σ_batches x̄ᵀx̄`` for every projectable layer of each source modality."""
        from modalscope.data import BatchLoader, move_batch

        trainer, model = ctx.trainer, ctx.model
        cov: dict[tuple[str, str], torch.Tensor] = {}
        hooks = []

        def hook_for(key):
            def fn(mod, inp):
                x = inp[0].detach().reshape(-1, inp[0].shape[-1]).double().mean(0)
                c = torch.outer(x, x)
                cov[key] = cov[key] + c if key in cov else c

            return fn

        for n in sources:
            for i, lin in enumerate(linear_layers(model.encoders[n])):
                hooks.append(lin.register_forward_pre_hook(hook_for((n, f"enc{i}"))))
            for i, lin in enumerate(linear_layers(self.heads.heads[n])):
                hooks.append(lin.register_forward_pre_hook(hook_for((n, f"head{i}"))))
        joint = self.params.variant == "joint" and model.fusion_kind in ("concat", "sum")
        was = model.training
        model.eval()
        try:
            for batch in BatchLoader(trainer.bundle.splits["train"], 512, shuffle=False):
                batch = move_batch(batch, trainer.device)
                if joint:
                    feats = model.encode(batch)
                    for n in sources:
                        self.heads(n, feats[n])
                        hook_for((n, "fusion"))(None, (feats[n],))
                else:
                    for n in sources:
                        self.heads(n, model.encoders[n](batch[n]))
        finally:
            for h in hooks:
                h.remove()
            model.train(was)
        return cov

    def _rebuild(self, ctx, targets: list[str], sources: list[str]) -> None:
        cov = self._covariances(ctx, sources)
        shapes = {(m, key): (tuple(w.shape), cols) for m in self.modalities for key, w, cols in self._layers(ctx.model, m)}
        self.P, self.gains, self._dev = {}, {}, {}
        for m in targets:
            gains = []
            for key, w, cols in self._layers(ctx.model, m):
                wshape = tuple(w[:, cols].shape)
                mats = [
                    c for (n, k), c in cov.items()
                    if k == key and n != m and _shape_of(shapes, n, key) == wshape
                ]
                if not mats:
                    continue
                P, g = projection_matrix(sum(mats), self.params.temperature)
                self.P[f"{m}/{key}"] = P.float()
                gains.append(float(g.mean()))
            if gains:
                self.gains[m] = sum(gains) / len(gains)

    def on_epoch_start(self, ctx) -> None:
        if not self.params.active(ctx.epoch):
            return
        if self.params.variant == "staged":
            k, first = self.stage_at(ctx.epoch)
            m = self.modalities[k % len(self.modalities)]
            ctx.log("mie/stage", k)
            if k >= 1 and ctx.epoch == first:
                self._new_stage(ctx, k)
            if self.params.project and k >= 1 and ctx.epoch == first:
                prev = self.modalities[(k - 1) % len(self.modalities)]
                self._rebuild(ctx, [m], [prev])
                ctx.event("mie", f"stage {k}: training {m}, gradients projected away from {prev}'s input subspace")
            elif k == 0 and ctx.epoch == first:
                self.P, self.gains, self._dev = {}, {}, {}
        elif self.params.project:
            self._rebuild(ctx, self.modalities, self.modalities)
        for m, g in self.gains.items():
            ctx.log(f"mie/p_gain/{m}", g)

    # ------------------------------------------------------------------ best state, stage restarts
    def _snapshot(self, ctx) -> dict:
        return {
            "model": {k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()},
            "heads": {k: v.detach().cpu().clone() for k, v in self.heads.state_dict().items()},
        }

    def on_epoch_end(self, ctx) -> None:
        """Remember the state with the best validation fused accuracy (never test)."""
        if not (self.params.active(ctx.epoch) and self.params.variant == "staged" and self.params.reload_best):
            return
        ev = ctx.evals.get("valid")
        if ev is None:
            return
        acc = ev.metrics.get("acc/valid/fused")
        if acc is not None and acc > self.best_acc:
            self.best_acc, self.best_epoch = float(acc), ctx.epoch
            self.best = self._snapshot(ctx)

    def _new_stage(self, ctx, k: int) -> None:
        notes = []
        if self.params.reload_best and self.best is not None:
            ctx.model.load_state_dict(self.best["model"])
            self.heads.load_state_dict(self.best["heads"])
            notes.append(f"reloaded the best-valid state of epoch {self.best_epoch} (valid fused {self.best_acc:.3f})")
        if self.params.reset_optimizer:
            ctx.optimizer.state.clear()
            notes.append("new optimiser state")
        if notes:
            ctx.event("mie", f"stage {k}: " + "; ".join(notes))
            ctx.log("mie/reload_epoch", float(self.best_epoch))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        state = {"P": {k: v.clone() for k, v in self.P.items()}, "gains": dict(self.gains)}
        if self.best is not None:
            state["best"] = self.best
            state["best_acc"] = self.best_acc
            state["best_epoch"] = self.best_epoch
        return state

    def load_state_dict(self, state: dict) -> None:
        self.P = {k: v.float() for k, v in state.get("P", {}).items()}
        self.gains = {k: float(v) for k, v in state.get("gains", {}).items()}
        self._dev = {}
        self.best = state.get("best")
        self.best_acc = float(state.get("best_acc", float("-inf")))
        self.best_epoch = int(state.get("best_epoch", -1))


def _shape_of(shapes: dict, n: str, key: str):
    v = shapes.get((n, key))
    if v is None:
        return None
    shape, cols = v
    if isinstance(cols, slice) and cols != slice(None):
        return (shape[0], cols.stop - cols.start)
    return shape
