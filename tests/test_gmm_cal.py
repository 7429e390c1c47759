"""GMM-guided adaptive loss, purification, CAL and the robustness evaluation (hand-computed cases)."""

from __future__ import annotations

import math
import signal

import numpy as np
import pytest
import torch

from modalscope.diagnostics.gmm import GapMixture
from modalscope.diagnostics.robustness import corruption, evaluate_robustness
from modalscope.diagnostics.sample_store import SampleStore
from modalscope.engine import StopRequested, Trainer, train
from modalscope.methods.cal import Cal, InfoBottleneck, acceleration_factors, gaussian_kl, scale_gradients
from modalscope.methods.gap_groups import balanced_subset, mixture_from_state, mixture_state, posteriors
from modalscope.methods.gmm_adaptive import adaptive_loss
from modalscope.store import open_run
from tests.conftest import run_cli, tiny_cli_args
from tests.known_answers import cuda_run_matches_cpu

LN3, LN9 = math.log(3.0), math.log(9.0)


def mixture() -> GapMixture:
    """π = (½, ½), μ = (0, 0.5), σ² = 0.01, component 0 balanced: γ(x) = sigmoid(50·(x − 0.25))."""
    return GapMixture(weights=np.array([0.5, 0.5]), means=np.array([0.0, 0.5]), variances=np.array([0.01, 0.01]),
                      balanced=0, bic1=0.0, bic2=0.0, threshold=0.25)


def logit_pair(p: float) -> list[float]:
    """Two-class logits whose class-0 probability is p."""
    return [math.log(p / (1 - p)), 0.0]


# ---------------------------------------------------------------- sample store
def test_sample_store_ema_first_value_then_momentum_and_roundtrip():
    s = SampleStore(4, momentum=0.9)
    s.update_ema([1, 3], [2.0, -1.0])
    s.update_ema([1], [12.0])
    assert s.values.tolist() == pytest.approx([0.0, 0.9 * 2.0 + 0.1 * 12.0, 0.0, -1.0])
    assert s.seen.tolist() == [False, True, False, True]
    s.set([0], [5.0])
    t = SampleStore.from_state_dict(s.state_dict())
    assert t.values.tolist() == s.values.tolist() and t.seen.tolist() == [True, True, False, True] and t.momentum == 0.9
    assert all(isinstance(v, torch.Tensor) for v in s.state_dict().values())


# ---------------------------------------------------------------- GMM posterior and loss
def test_posterior_weights_are_the_bayes_posterior_of_the_imbalanced_component():
    gaps = np.array([[0.25], [0.25 + LN3 / 50], [0.25 - LN3 / 50], [0.25 + LN9 / 50]])
    g = posteriors([mixture()], gaps)[:, 0]
    assert g == pytest.approx([0.5, 0.75, 0.25, 0.9], abs=1e-9)
    back = mixture_from_state(mixture_state(mixture()))
    assert posteriors([back], gaps)[:, 0] == pytest.approx(g)


def test_adaptive_loss_value_on_a_four_sample_batch():
    pa = [0.8, 0.6, 0.5, 0.9]
    pv = [0.4, 0.6, 0.7, 0.3]
    gamma = [0.75, 0.5, 0.25, 0.9]
    y = torch.zeros(4, dtype=torch.long)
    za = torch.tensor([logit_pair(p) for p in pa], dtype=torch.float64)
    zv = torch.tensor([logit_pair(p) for p in pv], dtype=torch.float64)
    fused = torch.zeros(4, 2, dtype=torch.float64)
    per, parts = adaptive_loss(fused, {"audio": za, "visual": zv}, y, torch.tensor(gamma, dtype=torch.float64)[:, None],
                               [0.1], [("audio", "visual")], lambda_f=1.0, lambda_g=1.0, lambda_s=0.5)
    ln2 = math.log(2)
    expected = [
        (1 + 0.25) * ln2 - math.log(0.8) - math.log(0.4) + 1.75 * 0.4**2 + 0.5 * 0.75 * (0.4 - 0.1) ** 2,
        (1 + 0.5) * ln2 - math.log(0.6) - math.log(0.6) + 1.5 * 0.0**2 + 0.5 * 0.5 * (0.0 - 0.1) ** 2,
        (1 + 0.75) * ln2 - math.log(0.5) - math.log(0.7) + 1.25 * 0.2**2 + 0.5 * 0.25 * (-0.2 - 0.1) ** 2,
        (1 + 0.1) * ln2 - math.log(0.9) - math.log(0.3) + 1.9 * 0.6**2 + 0.5 * 0.9 * (0.6 - 0.1) ** 2,
    ]
    assert per.tolist() == pytest.approx(expected, abs=1e-9)
    assert float(parts["gap"]) == pytest.approx((1.75 * 0.16 + 0 + 1.25 * 0.04 + 1.9 * 0.36) / 4, abs=1e-9)


def test_detach_strong_sends_gap_gradient_only_to_the_weak_modality():
    y = torch.zeros(2, dtype=torch.long)
    za = torch.tensor([logit_pair(0.9), logit_pair(0.2)], requires_grad=True)
    zv = torch.tensor([logit_pair(0.3), logit_pair(0.7)], requires_grad=True)
    fused = torch.zeros(2, 2)
    per, _ = adaptive_loss(fused, {"audio": za, "visual": zv}, y, torch.tensor([[0.5], [0.5]]), [0.0],
                           [("audio", "visual")], detach_strong=True, unimodal=False)
    per.sum().backward()
    assert za.grad[0].abs().sum() == 0 and zv.grad[0].abs().sum() > 0
    assert zv.grad[1].abs().sum() == 0 and za.grad[1].abs().sum() > 0
    # the weak modality is pushed up: its true-class logit gets a negative gradient
    assert zv.grad[0, 0] < 0 and za.grad[1, 0] < 0


def test_default_alignment_never_pushes_the_strong_true_class_probability_down(tiny):
    """Default params: the gap terms' gradient on the strong modality is zero, on the weak one it raises p[y]."""
    from modalscope.methods.gmm_adaptive import GmmAdaptiveParams

    p = GmmAdaptiveParams()
    assert p.gap_source == "ema"
    y = torch.zeros(2, dtype=torch.long)
    za = torch.tensor([logit_pair(0.9), logit_pair(0.6)], requires_grad=True)
    zv = torch.tensor([logit_pair(0.2), logit_pair(0.3)], requires_grad=True)
    per, _ = adaptive_loss(torch.zeros(2, 2), {"audio": za, "visual": zv}, y, torch.tensor([[0.9], [0.9]]), [0.0],
                           [("audio", "visual")], p.lambda_f, p.lambda_g, p.lambda_s, p.use_abs, p.detach_strong, unimodal=False)
    per.sum().backward()
    # a gradient step moves z by −grad: the strong (audio) true-class logit must not go down
    assert (za.grad[:, 0] <= 0).all() and torch.equal(za.grad, torch.zeros_like(za.grad))
    assert (zv.grad[:, 0] < 0).all()
    # without detaching, the same terms lower the strong modality's true-class logit
    za.grad = zv.grad = None
    per, _ = adaptive_loss(torch.zeros(2, 2), {"audio": za, "visual": zv}, y, torch.tensor([[0.9], [0.9]]), [0.0],
                           [("audio", "visual")], p.lambda_f, p.lambda_g, p.lambda_s, p.use_abs, False, unimodal=False)
    per.sum().backward()
    assert (za.grad[:, 0] > 0).all()


def test_ema_gap_source_keeps_the_imbalance_that_memorisation_erases():
    """Per-sample EMA of training-batch gaps: early epochs' gaps survive after both branches fit the sample."""
    s = SampleStore(1, momentum=0.9)
    for g in [0.8, 0.8, 0.8, 0.0, 0.0]:  # imbalanced for three epochs, then memorised (gap 0)
        s.update_ema([0], [g])
    # 0.8 → 0.8 → 0.8 → 0.72 → 0.648: still in the imbalanced mode, where an eval pass would say 0
    assert float(s.values[0]) == pytest.approx(0.648)


def test_subset_filter_keeps_exactly_samples_with_balanced_posterior_above_threshold():
    gamma = np.array([0.1, 0.5, 0.49, 0.9, 0.51, 0.0])
    assert balanced_subset(gamma, 0.5).tolist() == [0, 1, 2, 5]
    assert balanced_subset(gamma, 0.9).tolist() == [0, 5]
    pairs = np.array([[0.1, 0.6], [0.2, 0.3], [0.7, 0.0]])
    assert balanced_subset(pairs, 0.5).tolist() == [1]


# ---------------------------------------------------------------- CAL
def test_acceleration_factors_never_shrink_and_follow_w_order():
    w = {"audio": 0.6, "visual": 0.1, "text": 0.3}
    a = acceleration_factors(w, kappa=2.0)
    assert a == pytest.approx({"audio": 2.2, "visual": 1.2, "text": 1.6})
    assert all(v >= 1.0 for v in a.values())
    assert sorted(a, key=a.get) == sorted(w, key=w.get)
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    p.grad, q.grad = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 4.0])
    scale_gradients({"audio": [p], "visual": [q]}, {"audio": 2.2, "visual": 1.2})
    assert p.grad.tolist() == pytest.approx([2.2, -4.4, 1.1]) and q.grad.tolist() == pytest.approx([3.6, 4.8])


def test_aib_kl_is_zero_for_standard_normal_output_and_matches_closed_form():
    assert float(gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)).abs().max()) == 0.0
    kl = gaussian_kl(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]]))
    assert float(kl) == pytest.approx(0.5 * (1.0 + (2.0 - 1.0 - math.log(2.0))))
    aib = InfoBottleneck(["audio", "visual"], 4)
    with torch.no_grad():
        for m in ("audio", "visual"):
            for lin in (aib.mu[m], aib.logvar[m]):
                lin.weight.zero_()
                lin.bias.zero_()
    _, kl = aib({"audio": torch.randn(8, 4), "visual": torch.randn(8, 4)}, sample=True)
    assert float(kl["audio"].detach()) == 0.0 and float(kl["visual"].detach()) == 0.0


def test_cal_scales_encoder_gradients_by_its_factors(tiny):
    t = Trainer(tiny(name="calgrad", set=["method.name=cal", "method.clip=0"]))
    batch = next(iter(t._train_loader(0)))
    method: Cal = t.method
    method.w = {"audio": 0.8, "visual": 0.2}
    out = method.forward(t.model, batch, None)
    loss = torch.nn.functional.cross_entropy(out.fused, batch["label"])
    loss.backward()
    before = {m: [p.grad.clone() for p in t.model.encoder_params(m)] for m in ("audio", "visual")}
    fusion = [p.grad.clone() for p in t.model.fusion.parameters()]

    class Ctx:
        model, trainer, logs = t.model, t, {}

        def log(self, k, v):
            self.logs[k] = v

    method.after_backward(Ctx())
    for m, a in (("audio", 1.8), ("visual", 1.2)):
        for g0, p in zip(before[m], t.model.encoder_params(m)):
            assert torch.allclose(p.grad, a * g0)
    for g0, p in zip(fusion, t.model.fusion.parameters()):
        assert torch.equal(p.grad, g0)
    t.writer.close("finished")
    t.log_file.close()


# ---------------------------------------------------------------- robustness
def test_robustness_with_zero_noise_equals_clean_accuracy(tiny):
    t = Trainer(tiny(epochs=1, name="rob", set=["diagnostics.robust=false"]))
    t.fit()
    clean = t.predict_split("test").metrics["acc/test/fused"]
    scalars, table = evaluate_robustness(t, [0.0, 3.0])
    assert scalars["robust/clean"] == clean
    assert scalars["robust/audio/noise/0"] == clean and scalars["robust/visual/noise/0"] == clean
    assert set(table["kind"]) == {"noise", "blank"} and len(table) == 2 * 3
    blank = t.predict_split("test", transform=corruption("audio", "blank", 1.0, None)).metrics["acc/test/fused"]
    assert scalars["robust/audio/blank/1"] == blank
    std = torch.ones(16)
    noisy = corruption("audio", "noise", 2.0, std, seed=1)({"audio": torch.zeros(2, 16), "visual": torch.ones(2, 3)})
    assert noisy["audio"].abs().sum() > 0 and torch.equal(noisy["visual"], torch.ones(2, 3))


def test_fit_stores_robustness_scalars_and_table(tiny):
    run_dir, _ = train(tiny(epochs=1, name="robtab", set=["diagnostics.robust=true", "diagnostics.robust_levels=[1.0]"]))
    r = open_run(run_dir)
    names = r.scalar_names()
    for n in ("robust/clean", "robust/audio/noise/1", "robust/visual/blank/1"):
        assert n in names
    assert r.table("robustness")["modality"].tolist() == ["audio", "audio", "visual", "visual"]


# ---------------------------------------------------------------- resume
def _interrupt_after(trainer: Trainer, epoch: int) -> None:
    orig = trainer.method.on_epoch_end

    def hook(ctx):
        orig(ctx)
        if ctx.epoch == epoch:
            ctx.trainer._stop_signal = signal.SIGTERM

    trainer.method.on_epoch_end = hook


@pytest.mark.parametrize("method,extra", [
    ("gmm_adaptive", ["method.warmup_epochs=1", "method.purify_epochs=1", "method.gap_source=ema"]),
    ("cal", []),
])
def test_resume_restores_method_state_and_matches_uninterrupted(tiny, method, extra):
    sets = [f"method.name={method}", *extra, "diagnostics.robust=false"]
    full = Trainer(tiny(epochs=4, name=f"{method}-full", set=sets))
    want = full.fit()
    part = Trainer(tiny(epochs=4, name=f"{method}-part", set=sets))
    _interrupt_after(part, 1)
    with pytest.raises(StopRequested):
        part.fit()
    t = Trainer(part.cfg, resume=True, run_dir=part.run_dir)
    if method == "gmm_adaptive":
        assert t.method.stage == "adaptive" and t.method.mixtures is not None
        assert bool(t.sample_store("gmm/gap").seen.all())
    else:
        assert t.method.w_init and t.method.w != {"audio": 0.5, "visual": 0.5}
    got = t.fit()
    assert got == want
    if method == "gmm_adaptive":
        assert t.method.stage == "purify"
        ev = open_run(t.run_dir).events()
        assert [m.split(":")[1].strip() for m in ev[ev["kind"] == "stage"]["message"]] == ["warmup", "adaptive", "purify"]


# ---------------------------------------------------------------- end to end (CLI)
def _cli(tmp_path, *extra):
    """The CLI in this process (same argument parsing and exit codes, no interpreter start-up)."""
    from modalscope.cli import main

    name = extra[extra.index("--name") + 1]
    assert main(["train", *tiny_cli_args(tmp_path), *extra]) == 0
    return open_run(tmp_path / "runs" / name)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["imbalanced", "three_modal"])
def test_cli_gmm_adaptive_and_cal_on_two_and_three_modalities(tmp_path, preset):
    dims = ["--set", "data.dims={audio: 16, visual: 24, text: 12}"] if preset == "three_modal" else []
    mods = ["audio", "visual", "text"] if preset == "three_modal" else ["audio", "visual"]
    r = _cli(tmp_path, "--preset", preset, *dims, "--method", "gmm_adaptive", "--epochs", "3",
             "--set", "method.warmup_epochs=1", "--set", "method.purify_epochs=1", "--name", f"g-{preset}")
    assert r.status() == "finished"
    assert r.scalars("gmm/stage")["value"].tolist() == [0.0, 1.0, 2.0]
    assert 0 < r.scalars("gmm/subset_size")["value"].iloc[-1] <= 256
    assert "gmm/frac_imbalanced" in r.scalar_names()
    r = _cli(tmp_path, "--preset", preset, *dims, "--method", "cal", "--name", f"c-{preset}")
    assert r.status() == "finished"
    names = set(r.scalar_names())
    for m in mods:
        for part in ("info", "conf", "w", "accel", "kl"):
            assert f"cal/{part}/{m}" in names
    w = r.scalars([f"cal/w/{m}" for m in mods]).groupby("step")["value"].sum()
    assert np.allclose(w.values, 1.0)
    assert (r.scalars(f"cal/accel/{mods[0]}")["value"] >= 1.0).all()


@pytest.mark.slow
def test_cli_purify_from_a_finished_run(tmp_path):
    base = _cli(tmp_path, "--preset", "noisy", "--name", "base")
    res = run_cli("train", *tiny_cli_args(tmp_path), "--preset", "noisy", "--init-from", str(base.dir), "--method", "purify", "--name", "pur")
    assert res.returncode == 0, res.stderr
    r = open_run(res.stdout.strip().splitlines()[-1])
    assert r.status() == "finished"
    ev = r.events()
    assert "init" in ev["kind"].tolist()
    msg = ev[ev["kind"] == "stage"]["message"].iloc[0]
    kept = int(msg.split("on ")[1].split(" of")[0])
    assert r.scalars("gmm/subset_size")["value"].tolist() == [kept, kept]
    assert 0 < kept < 256
    lr = r.scalars("lr")["value"].tolist()
    assert lr == pytest.approx([0.005, 0.005])


def test_trained_heads_exist_and_train_the_encoder(tiny):
    from modalscope.models import build_model

    cfg = tiny(model={"hidden": 8, "embed_dim": 4, "depth": 1, "heads": "trained"})
    from modalscope.engine import build_bundle

    model = build_model(cfg, build_bundle(cfg))
    assert model.heads is not None and set(model.heads) == {"audio", "visual"}
    batch = {"audio": torch.randn(3, 16), "visual": torch.randn(3, 24)}
    out = model(batch)
    out.logits["visual"].sum().backward()
    assert model.heads["visual"].weight.grad is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder_params("visual"))
    assert all(p.grad is None for p in model.fusion.parameters())


def test_purify_stage_removes_the_planted_corrupted_samples(tiny):
    """noisy preset at strength 3: the audio of ~30 % of the samples is missing; those are the imbalanced ones
    (strong clean signal, so no clean sample looks imbalanced)."""
    strong = {"audio": [3.0] * 3, "visual": [3.0] * 3}
    cfg = tiny(epochs=6, name="planted", data={"preset": "noisy", "dims": {"audio": 16, "visual": 16}, "n_train": 400, "strength": strong},
               set=["method.name=gmm_adaptive", "method.warmup_epochs=5", "method.purify_epochs=1", "diagnostics.robust=false"])
    t = Trainer(cfg)
    t.fit()
    mask = t.full_bundle.info["corrupted"]["train"]
    removed = np.ones(len(mask), dtype=bool)
    removed[t.method.subset] = False
    precision = (removed & mask).sum() / removed.sum()
    recall = (removed & mask).sum() / mask.sum()
    assert precision > 0.9 and recall > 0.9, (precision, recall)


# ---------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("sets", [
    ["method.name=gmm_adaptive", "method.warmup_epochs=1", "method.purify_epochs=1"],
    ["method.name=cal"],
], ids=["gmm_adaptive", "cal"])
def test_runs_on_cuda(tiny, sets):
    cuda_run_matches_cpu(tiny, sets, epochs=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_purify_runs_on_cuda(tiny):
    base = Trainer(tiny(name="base", set=["device=cpu"]))
    base.fit()
    cuda_run_matches_cpu(tiny, ["method.name=purify"], init_from=base.run_dir)
