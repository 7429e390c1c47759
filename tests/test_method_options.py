"""Options that are read somewhere: each one changes what its description says, checked on a
known answer (a hand formula over the run's own stored rows, or two runs that differ only in
that option and must differ exactly as the formula says).

Runs are tiny: 256 training samples in batches of 32, i.e. 8 logged steps per epoch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modalscope.engine import Trainer
from modalscope.store import open_run

QUIET = ["diagnostics.captum=false", "diagnostics.robust=false", "diagnostics.gap=false", "diagnostics.contrib=false",
         "diagnostics.conflict=false"]


def fit(tiny, name: str, sets: list[str], **over) -> Trainer:
    t = Trainer(tiny(name=name, set=[*QUIET, *sets], **over))
    t.fit()
    return t


def wide(t: Trainer, prefix: str):
    """Stored per-step rows (not the epoch-level ones) as a (step × name) table."""
    df = open_run(t.run_dir).scalars(prefix=prefix)
    steps = set(open_run(t.run_dir).scalars("loss/total")["step"])
    return df[df["step"].isin(steps)].pivot(index="step", columns="name", values="value")


def w_hand(info: dict[str, float], conf: dict[str, float], temperature: float) -> dict[str, float]:
    """``W = softmax(Î·D/T)`` with ``Î = I / Σ|I|`` (each modality's share of the information)."""
    total = sum(abs(v) for v in info.values())
    s = {m: (info[m] / total if total > 1e-12 else 0.0) * conf[m] / temperature for m in info}
    z = sum(math.exp(v) for v in s.values())
    return {m: math.exp(v) / z for m, v in s.items()}


MODS = ("audio", "visual")


# ------------------------------------------------------------------ cal
@pytest.mark.parametrize("mu", [0.0, 0.6])
def test_cal_w_momentum_is_the_ema_of_the_stored_contributions(tiny, mu):
    t = fit(tiny, f"m{mu}", ["method.name=cal", f"method.w_momentum={mu}"], epochs=1)
    w = wide(t, "cal/")
    assert len(w) == 8
    prev = None
    for _, row in w.iterrows():
        new = w_hand({m: row[f"cal/info/{m}"] for m in MODS}, {m: row[f"cal/conf/{m}"] for m in MODS}, 1.0)
        want = new if prev is None else {m: mu * prev[m] + (1 - mu) * new[m] for m in MODS}
        for m in MODS:
            assert row[f"cal/w/{m}"] == pytest.approx(want[m], rel=1e-9)
        prev = want


def test_cal_contrib_every_spaces_the_shapley_updates(tiny):
    t = fit(tiny, "ce3", ["method.name=cal", "method.contrib_every=3", "method.w_momentum=0"], epochs=1)
    w = wide(t, "cal/")
    updated = w.index[w["cal/info/audio"].notna()].tolist()
    assert updated == [0, 3, 6]
    for step in range(8):
        src = max(s for s in updated if s <= step)
        row = w.loc[src]
        want = w_hand({m: row[f"cal/info/{m}"] for m in MODS}, {m: row[f"cal/conf/{m}"] for m in MODS}, 1.0)
        for m in MODS:
            assert w.loc[step, f"cal/w/{m}"] == pytest.approx(want[m], rel=1e-9), (step, m)


def test_cal_potential_multiplies_confidence_by_the_loss_decrease(tiny):
    """κ = 0 and no bottleneck: W steers nothing, so both runs follow the same trajectory and
    D_on / D_off = 1 + ReLU(EMA_{t−1} − EMA_t) with EMA_t = 0.9·EMA_{t−1} + 0.1·L_m,t (EMA_{−1} = L_m,0)."""
    sets = ["method.name=cal", "method.kappa=0", "method.bottleneck=false"]
    off = wide(fit(tiny, "off", sets, epochs=1), "")
    on = wide(fit(tiny, "on", [*sets, "method.potential=true"], epochs=1), "")
    boosted = 0
    for m in MODS:
        np.testing.assert_array_equal(on[f"loss/{m}"].values, off[f"loss/{m}"].values)
        ema = None
        for step, loss in on[f"loss/{m}"].items():
            prev = loss if ema is None else ema
            ema = 0.9 * prev + 0.1 * loss
            factor = 1.0 + max(prev - ema, 0.0)
            assert on.loc[step, f"cal/conf/{m}"] == pytest.approx(off.loc[step, f"cal/conf/{m}"] * factor, rel=1e-9)
            boosted += factor > 1.0
    assert boosted > 0, "the unimodal losses fall in the first epoch, so the potential term is active"


@pytest.mark.parametrize("beta0", [0.0, 0.05])
def test_cal_beta0_scales_the_bottleneck_kl(tiny, beta0):
    w = wide(fit(tiny, f"b{beta0}", ["method.name=cal", f"method.beta0={beta0}"], epochs=1), "")
    for _, row in w.iterrows():
        want = sum(beta0 * (1 - row[f"cal/w/{m}"]) * row[f"cal/kl/{m}"] for m in MODS)
        assert row["loss/aib"] == pytest.approx(want, rel=1e-5, abs=1e-12)
    if beta0 > 0:
        assert (w["loss/aib"] > 0).all()


def test_cal_init_logvar_sets_the_initial_kl(tiny):
    """Step 0: μ(h) = h and log σ² = init_logvar exactly, so two runs differ in KL by ½·d·[f(a) − f(b)], f(v) = eᵛ − 1 − v."""
    a, b = -5.0, -2.0
    kl = {}
    for v in (a, b):
        w = wide(fit(tiny, f"lv{v}", ["method.name=cal", f"method.init_logvar={v}"], epochs=1), "cal/kl/")
        kl[v] = w.loc[0]
    f = lambda v: math.exp(v) - 1 - v  # noqa: E731
    d = 16  # tiny model.embed_dim
    for m in MODS:
        assert kl[a][f"cal/kl/{m}"] - kl[b][f"cal/kl/{m}"] == pytest.approx(0.5 * d * (f(a) - f(b)), rel=1e-4)


# ------------------------------------------------------------------ gmm_adaptive
@pytest.mark.parametrize("every,refits", [(1, [0, 1, 2, 3, 4]), (2, [0, 2, 4])])
def test_gmm_adaptive_refit_every_sets_the_refit_epochs(tiny, every, refits):
    t = fit(tiny, f"r{every}", ["method.name=gmm_adaptive", "method.warmup_epochs=1", f"method.refit_every={every}"], epochs=5)
    rows = open_run(t.run_dir).scalars("gmm/frac_imbalanced")
    assert rows["epoch"].tolist() == refits


def test_gmm_adaptive_ema_momentum_averages_the_batch_gaps(tiny):
    """gap_source=ema during warm-up (the store does not steer training): after two epochs the
    store holds μ·g₁ + (1 − μ)·g₂, where g_e is epoch e's gap, read off μ = 0 runs."""
    from modalscope.methods.purify import GAP_STORE

    def store(name, epochs, mu):
        t = fit(tiny, name, ["method.name=gmm_adaptive", "method.warmup_epochs=5", "method.gap_source=ema",
                             f"method.ema_momentum={mu}"], epochs=epochs)
        s = t.sample_stores[GAP_STORE]
        assert bool(s.seen.all())
        return s.values.double()

    g1, g2 = store("g1", 1, 0.0), store("g2", 2, 0.0)
    assert not torch.allclose(g1, g2)
    torch.testing.assert_close(store("mix", 2, 0.75), 0.75 * g1 + 0.25 * g2, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ mie
@pytest.mark.parametrize("fuse", ["mean_prob", "sum_logprob"])
def test_mie_fuse_combines_the_heads_as_described(tiny, fuse):
    t = Trainer(tiny(name=fuse, set=["method.name=mie", f"method.fuse={fuse}"]))
    split = t.bundle.splits["test"]
    batch = split.batch(torch.arange(16))
    from modalscope.engine import StepContext

    t.model.eval()
    with torch.no_grad():
        out = t.method.forward(t.model, batch, StepContext(t, epoch=0, step=0))
    zs = [out.logits[m] for m in MODS]
    if fuse == "mean_prob":
        want = torch.log((torch.softmax(zs[0], 1) + torch.softmax(zs[1], 1)) / 2)
    else:
        want = torch.log_softmax(zs[0], 1) + torch.log_softmax(zs[1], 1)
    torch.testing.assert_close(out.fused, want, rtol=1e-5, atol=1e-6)
    t.writer.close("finished")


@pytest.mark.parametrize("hidden", [0, 12])
def test_mie_head_hidden_sets_the_head_width(tiny, hidden):
    t = Trainer(tiny(name=f"h{hidden}", set=["method.name=mie", f"method.head_hidden={hidden}"]))
    d, k = 16, t.model.n_out
    per_head = d * k + k if hidden == 0 else (d * hidden + hidden) + (hidden * k + k)
    assert sum(p.numel() for p in t.method.heads.parameters()) == 2 * per_head
    widths = sorted({lin.out_features for lin in t.method.heads.modules() if isinstance(lin, torch.nn.Linear)})
    assert widths == ([k] if hidden == 0 else sorted({hidden, k}))
    t.writer.close("finished")


# ------------------------------------------------------------------ diagnostics
def _diag(tiny, name, sets, epochs=3):
    base = ["diagnostics.captum=false", "diagnostics.robust=false", "diagnostics.conflict=false"]
    t = Trainer(tiny(name=name, epochs=epochs, set=[*base, *sets]))
    t.fit()
    return open_run(t.run_dir)


def test_gap_every_sets_the_gap_epochs(tiny):
    r = _diag(tiny, "ge2", ["diagnostics.gap_every=2", "diagnostics.contrib=false"], epochs=4)
    h = r.histograms(split="train")
    assert sorted(set(h["epoch"])) == [0, 2]
    assert sorted(set(r.scalars("gap/train/audio-visual/mean")["epoch"])) == [0, 2]


def test_samples_max_caps_the_snapshot_with_the_same_rows_every_epoch(tiny):
    r = _diag(tiny, "sm", ["diagnostics.samples_max=50", "diagnostics.contrib=false"], epochs=2)
    s = r.samples()
    sizes = s.groupby(["epoch", "split", "name"]).size()
    assert set(sizes.values) == {50} and len(sizes) == 4  # 2 epochs × (train, test) × one gap series
    for split in ("train", "test"):
        ids = [sorted(g["sample_id"]) for _, g in s[s["split"] == split].groupby("epoch")]
        assert ids[0] == ids[1]
    full = _diag(tiny, "all", ["diagnostics.samples_max=1000", "diagnostics.contrib=false"], epochs=1).samples()
    assert full.groupby("split").size().to_dict() == {"test": 128, "train": 256}


@pytest.mark.parametrize("temperature", [0.25, 4.0])
def test_contrib_temperature_is_the_softmax_temperature_of_w(tiny, temperature):
    r = _diag(tiny, f"T{temperature}", [f"diagnostics.contrib_temperature={temperature}", "diagnostics.gap=false"], epochs=2)
    c = r.contributions()
    assert len(c) == 4
    for _, g in c.groupby("epoch"):
        g = g.set_index("modality")
        want = w_hand(g["info"].to_dict(), g["confidence"].to_dict(), temperature)
        for m in MODS:
            assert g.loc[m, "w"] == pytest.approx(want[m], rel=1e-9)


def test_conflict_tau_is_the_flag_threshold(tiny):
    """The flag is diagnostic only, so runs with different τ see the same ratios: flag = 1[ratio > τ]."""
    plain = _diag(tiny, "t2", ["diagnostics.gap=false", "diagnostics.contrib=false"], epochs=1).scalars("grad_ratio")
    tau = float(np.median(plain["value"]))
    r = _diag(tiny, "tm", [f"diagnostics.conflict_tau={tau}", "diagnostics.gap=false", "diagnostics.contrib=false"], epochs=1)
    ratio = r.scalars("grad_ratio").set_index("step")["value"]
    flag = r.scalars("conflict/flag").set_index("step")["value"]
    np.testing.assert_array_equal(ratio.values, plain["value"].values)
    np.testing.assert_array_equal(flag.values, (ratio.values > tau).astype(float))
    assert 0 < flag.sum() < len(flag)


# ------------------------------------------------------------------ optim / log
def test_step_schedule_decays_every_step_size_epochs(tiny):
    t = fit(tiny, "step", ["optim.lr=0.1", "optim.schedule=step", "optim.step_size=2", "optim.gamma=0.5"], epochs=5)
    lr = open_run(t.run_dir).scalars("lr")["value"].tolist()
    assert lr == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


@pytest.mark.parametrize("eval_train", [False, True])
def test_eval_train_adds_one_train_pass_per_epoch(tiny, eval_train):
    t = Trainer(tiny(name=f"et{eval_train}", epochs=2, set=[*QUIET, f"log.eval_train={str(eval_train).lower()}"]))
    calls: list[str] = []
    real = t.predict_split

    def spy(split, *a, **k):
        calls.append(split)
        return real(split, *a, **k)

    t.predict_split = spy
    t.fit()
    held_out = [s for s in ("valid", "test") if s in t.bundle.splits]
    assert calls == ((["train"] if eval_train else []) + held_out) * 2
