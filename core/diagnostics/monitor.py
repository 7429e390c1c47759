"""Thin engine adapter: the trainer calls these hooks; the maths lives in sibling modules.

``DiagnosticsMonitor`` reads the model, its gradients and the per-epoch evaluation arrays;
it never changes parameters, gradients or RNG state, so switching diagnostics on or off
leaves the training trajectory unchanged.

Cadence (``RunConfig.diagnostics``):

* every logged step — gradient norms, shares, dominance ratio, conflict flag
  (:mod:`~modalscope.diagnostics.gradients`);
* every ``conflict_every`` steps — fused-vs-unimodal gradient cosines
  (:mod:`~modalscope.diagnostics.conflict`);
* every ``gap_every`` epochs (epochs 0, k, 2k, …) — modality-gap histograms, GMM fits and the
  per-sample snapshot on ``gap_splits`` (:mod:`~modalscope.diagnostics.gap`,
  :mod:`~modalscope.diagnostics.gmm`);
* every epoch — Shapley information I(m), confidence D(m), contribution W^m and the captum
  cross-check on a fixed set of test batches (:mod:`~modalscope.diagnostics.contribution`,
  :mod:`~modalscope.diagnostics.attribution`);
* before the first step, every ``probe_every`` epochs (after epochs k−1, 2k−1, …) and after
  the last epoch — linear probes on frozen encoder features (:mod:`~modalscope.diagnostics.probe`);
* every logged step, after the method's ``after_backward`` and gradient clipping — the
  applied-gradient norms (``grad_applied/*``, staged by the Trainer through
  :class:`~modalscope.diagnostics.step_buffer.StepBuffer`; the raw ones are reused when
  :meth:`DiagnosticsMonitor.gradients_untouched`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch


if TYPE_CHECKING:  # pragma: no cover
    from modalscope.engine import EvalResult, StepContext, Trainer

GMM_MIN_SAMPLES = 10
#: reuse the raw gradient statistics as ``grad_applied/*`` when nothing can have edited the
#: gradients in between (see ``DiagnosticsMonitor.gradients_untouched``); tests switch it off
#: to compare with the recomputed values.
REUSE_RAW_GRADIENTS = True
SNAPSHOT_SEED = 12345
PROBE_SEED = 24680
PROBE_SPLITS = ("valid", "test")


class DiagnosticsMonitor:
    def __init__(self, trainer: "Trainer"):
        self.trainer = trainer
        self.cfg = trainer.cfg.diagnostics
        self._contrib_batch: dict | None = None
        self._mean_fill: dict | None = None
        self._snapshot: dict[tuple[str, int], np.ndarray] = {}
        self._probe_rows: dict[str, np.ndarray | None] = {}

    # ------------------------------------------------------------------ per step
    def before_backward(self, ctx: "StepContext", parts) -> dict[str, float]:
        """Runs on the live graph before the method's backward (extra autograd.grad allowed here)."""
        if not self.cfg.conflict or ctx.step % self.cfg.conflict_every != 0:
            return {}
        out, batch = ctx.out, ctx.batch
        if out is None or batch is None or not out.fused.requires_grad:
            return {}
        from modalscope.diagnostics.conflict import conflict_cosines, live_unimodal_logits
        from modalscope.methods.base import task_loss

        model = ctx.model
        y = batch["label"]
        fused = task_loss(out.fused, y, ctx.task)
        uni = {m: task_loss(z, y, ctx.task) for m, z in live_unimodal_logits(model, out).items()}
        enc = {m: model.encoder_params(m) for m in ctx.modalities}
        fusion = model.param_groups().get("fusion", [])
        separable = getattr(model, "feature_hook", None) is None and getattr(model, "fusion_kind", "") in ("concat", "sum", "gated")
        return conflict_cosines(fused, uni, enc, fusion, separable=separable)

    def gradients_untouched(self, ctx: "StepContext") -> bool:
        """True when nothing between the raw read and the optimiser step can change ``.grad``:
        the method keeps the base class's no-op ``after_backward`` and there is no clipping.
        Then the applied gradient *is* the raw gradient and its statistics are reused (exactly
        equal: the same tensors, read again, would give the same numbers at twice the cost)."""
        from modalscope.methods.base import Method

        t = ctx.trainer
        return REUSE_RAW_GRADIENTS and type(t.method).after_backward is Method.after_backward and t.cfg.optim.grad_clip <= 0

    # ------------------------------------------------------------------ per epoch
    def on_epoch_end(self, ctx: "StepContext", evals: dict[str, "EvalResult"]) -> dict[str, float]:
        out: dict[str, float] = {}
        devices = [torch.cuda.current_device()] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if self.probe_due(ctx.epoch):
                out.update(self.probes(evals))
            if self.cfg.gap and self._gap_due(ctx.epoch) and ctx.task == "classification":
                for split in self.cfg.gap_splits:
                    if split in evals:
                        out.update(self.gap_diagnostics(ctx.epoch, evals[split]))
            if self.cfg.contrib:
                out.update(self.contributions(ctx))
        return out

    # ------------------------------------------------------------------ probes
    def probes_enabled(self) -> bool:
        t = self.trainer
        return self.cfg.probe and t.bundle.task == "classification" and "train" in t.bundle.splits

    def probe_due(self, epoch: int) -> bool:
        """After epochs k−1, 2k−1, … (k = ``probe_every``) and after the last epoch."""
        return self.probes_enabled() and ((epoch + 1) % self.cfg.probe_every == 0 or epoch == self.trainer.cfg.epochs - 1)

    def probe_init(self) -> dict[str, float]:
        """Probes of the untrained encoders, logged before the first step under both
        ``probe_init/…`` (the utilisation baseline) and ``probe/…`` (the first point of the curve)."""
        if not self.probes_enabled():
            return {}
        devices = [torch.cuda.current_device()] if self.trainer.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            vals = self.probes()
        return {**vals, **{"probe_init/" + k[len("probe/"):]: v for k, v in vals.items()}}

    def _probe_subset(self, split: str) -> np.ndarray | None:
        """A fixed seeded subset of at most ``probe_max_samples`` rows (None: the whole split)."""
        if split not in self._probe_rows:
            n = len(self.trainer.bundle.splits[split])
            k = self.cfg.probe_max_samples
            rows = None if n <= k else np.sort(np.random.default_rng(PROBE_SEED).choice(n, size=k, replace=False))
            self._probe_rows[split] = rows
        return self._probe_rows[split]

    def probe_reuses(self, split: str, epoch: int) -> bool:
        """Whether the epoch's evaluation pass over ``split`` should keep encoder features for the probe."""
        return self.probe_due(epoch) and self._probe_subset(split) is None

    def _features(self, split: str, evals: dict | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Encoder features of ``split``: from the evaluation pass when it kept them, else a pass of their own."""
        from modalscope.diagnostics.probe import encoder_features

        t = self.trainer
        ev = (evals or {}).get(split)
        if ev is not None and ev.features is not None and self._probe_subset(split) is None:
            return ev.features, torch.as_tensor(ev.labels)  # rows aligned with the labels; order is irrelevant to a probe
        return encoder_features(t.model, t.bundle.splits[split], t.device, self._probe_subset(split))

    def probes(self, evals: dict | None = None) -> dict[str, float]:
        """``probe/<split>/<m>`` for valid and test, and ``probe/bit/<m>/<b>`` (test, synthetic data).

        Reuses the encoder features the epoch's evaluation passes kept (``evals``); a split
        without them (the train split when no diagnostic needs its pass, the init probe, a
        split above ``probe_max_samples``) gets one no-grad encoder pass of its own.
        """
        from modalscope.diagnostics.probe import probe_features

        t = self.trainer
        splits = ["train", *(s for s in PROBE_SPLITS if s in t.bundle.splits)]
        feats = {s: self._features(s, evals) for s in splits}
        n_bits = 0
        if t.cfg.data.name == "synthetic":
            from modalscope.data.synthetic import n_bits as bits_of

            n_bits = bits_of(t.model.n_out)
        out: dict[str, float] = {}
        for m in t.model.modalities:
            x, y = feats["train"][0][m], feats["train"][1]
            evals = {s: (feats[s][0][m], feats[s][1]) for s in splits[1:]}
            acc, bits = probe_features(x, y, evals, t.model.n_out, n_bits if "test" in evals else 0)
            for s, a in acc.items():
                out[f"probe/{s}/{m}"] = a
            for b, a in enumerate(bits.get("test", [])):
                out[f"probe/bit/{m}/{b}"] = a
        return out

    def _gap_due(self, epoch: int) -> bool:
        """Same cadence as ``Trainer.needs_train_eval`` (which provides the train-split pass)."""
        return epoch % self.cfg.gap_every == 0

    def gap_diagnostics(self, epoch: int, ev: "EvalResult") -> dict[str, float]:
        """Histogram, GMM fit and per-sample snapshot for every gap series of one split."""
        from modalscope.diagnostics.gap import gap_histogram, gap_series, primary_series
        from modalscope.diagnostics.gmm import fit_gap_mixture

        writer = self.trainer.writer
        mods = self.trainer.bundle.modalities
        series = gap_series(ev.logits, ev.labels, mods)
        if not series:
            return {}
        split = ev.split
        main = primary_series(list(series))
        correct = np.asarray(ev.fused).argmax(1) == np.asarray(ev.labels) if np.ndim(ev.fused) == 2 else np.zeros(len(ev.labels), bool)
        corrupted = self._corruption_mask(split, ev.idx)
        sel = self._snapshot_rows(split, len(ev.idx))
        logs: dict[str, float] = {}
        for name, g in series.items():
            edges, counts = gap_histogram(g, self.cfg.gap_bins)
            writer.log_histogram(epoch, split, name, edges, counts)
            logs[f"gap/{split}/{name}/mean"] = float(g.mean())
            logs[f"gap/{split}/{name}/std"] = float(g.std())
            post = None
            if self.cfg.gmm and len(g) >= GMM_MIN_SAMPLES:
                mix = fit_gap_mixture(g, seed=self.trainer.cfg.seed, backend="vector")
                writer.log_gmm(epoch, split, name, mix.weights, mix.means, mix.variances, mix.bic1, mix.bic2, mix.threshold, mix.balanced)
                post = mix.posterior_imbalanced(g)
                stats = {
                    "evidence": mix.evidence,
                    "frac_imbalanced": float((post > 0.5).mean()),
                    "mean_imbalanced": float(mix.means[mix.imbalanced]),
                    "mean_balanced": float(mix.means[mix.balanced]),
                }
                if corrupted is not None and corrupted.any():
                    flagged = post > 0.5
                    tp = float((flagged & corrupted).sum())
                    stats["corrupt_precision"] = tp / flagged.sum() if flagged.any() else 0.0
                    stats["corrupt_recall"] = tp / corrupted.sum()
                for k, v in stats.items():
                    logs[f"gmm/{split}/{name}/{k}"] = v
                    if name == main:
                        logs[f"gmm/{split}/{k}"] = v
            if self.cfg.samples and len(sel):
                writer.log_samples(
                    epoch, split, name, ev.idx[sel], g[sel], None if post is None else post[sel], np.asarray(ev.labels)[sel], correct[sel]
                )
        return logs

    def _snapshot_rows(self, split: str, n: int) -> np.ndarray:
        """The same (sorted) rows every epoch, so a sample can be followed through training."""
        k = min(n, self.cfg.samples_max)
        key = (split, n)
        if key not in self._snapshot:
            if k >= n:
                rows = np.arange(n)
            else:
                rows = np.sort(np.random.default_rng(SNAPSHOT_SEED).choice(n, size=k, replace=False))
            self._snapshot[key] = rows
        return self._snapshot[key]

    def _corruption_mask(self, split: str, idx: np.ndarray) -> np.ndarray | None:
        masks = self.trainer.full_bundle.info.get("corrupted") if isinstance(self.trainer.full_bundle.info, dict) else None
        if not isinstance(masks, dict) or split not in masks:
            return None
        mask = np.asarray(masks[split], dtype=bool)
        if mask.shape[0] <= int(np.max(idx, initial=0)):
            return None
        return mask[np.asarray(idx, dtype=np.int64)]

    # ------------------------------------------------------------------ contributions
    def contribution_batch(self) -> dict:
        """The fixed evaluation batches: the first ``contrib_batches`` batches of the test split."""
        if self._contrib_batch is None:
            from modalscope.data import BatchLoader, move_batch

            t = self.trainer
            parts = []
            for i, b in enumerate(BatchLoader(t.bundle.splits["test"], t.cfg.batch_size, shuffle=False)):
                if i >= self.cfg.contrib_batches:
                    break
                parts.append(b)
            batch = {k: torch.cat([torch.as_tensor(p[k]) for p in parts]) for k in parts[0]}
            self._contrib_batch = move_batch(batch, t.device)
        return self._contrib_batch

    def mean_fill(self) -> dict:
        """Training-set mean input per modality (the 'absent = mean' baseline)."""
        if self._mean_fill is None:
            from modalscope.data import BatchLoader

            t = self.trainer
            ds = t.bundle.splits["train"]
            sums: dict[str, torch.Tensor] = {}
            n = 0
            for b in BatchLoader(ds, 1024, shuffle=False):
                for m in t.bundle.modalities:
                    s = b[m].double().sum(0)
                    sums[m] = s if m not in sums else sums[m] + s
                n += len(b["label"])
            self._mean_fill = {m: (s / max(n, 1)).to(t.device, dtype=torch.float32) for m, s in sums.items()}
        return self._mean_fill

    def contributions(self, ctx: "StepContext") -> dict[str, float]:
        from modalscope.diagnostics.contribution import confidence, contribution_weights, shapley_values, subset_value_fn
        from modalscope.methods.base import task_loss

        t = self.trainer
        model = t.model
        mods = list(t.bundle.modalities)
        batch = self.contribution_batch()
        y = batch["label"]
        fill = self.mean_fill() if self.cfg.contrib_absent == "mean" else None
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                full = model(batch)
            logits = full.logits
            v_full = -float(task_loss(full.fused, y, ctx.task))
            value = subset_value_fn(model, batch, y, ctx.task, self.cfg.contrib_absent, fill)
            everyone = frozenset(mods)
            info = shapley_values(lambda s: v_full if s == everyone else value(s), mods)
            conf = {m: confidence(logits[m], y, ctx.task) if m in logits else float("nan") for m in mods}
            w = contribution_weights(info, {m: (0.0 if np.isnan(c) else c) for m, c in conf.items()}, self.cfg.contrib_temperature)
            cap: dict[str, float] = {}
            if self.cfg.captum:
                from modalscope.diagnostics.attribution import captum_contributions

                cap = captum_contributions(model, batch, y, ctx.task, self.cfg.captum_method, self.cfg.contrib_absent, fill)
        finally:
            model.train(was)
        logs: dict[str, float] = {}
        for m in mods:
            t.writer.log_contribution(ctx.epoch, m, info[m], conf[m], w[m], cap.get(m))
            logs[f"contrib/info/{m}"] = info[m]
            logs[f"contrib/conf/{m}"] = conf[m]
            logs[f"contrib/w/{m}"] = w[m]
            if m in cap:
                logs[f"contrib/captum/{m}"] = cap[m]
        return logs
