"""Known-answer tests for the pure diagnostics (gap, GMM, conflict cosine, Shapley, captum)."""

import math
from itertools import combinations

import numpy as np
import pytest
import torch

from modalscope.diagnostics.conflict import conflict_cosines, cosine
from modalscope.diagnostics.contribution import confidence, contribution_weights, shapley_values, subset_value_fn
from modalscope.diagnostics.gap import GAP_EDGES, gap_histogram, gap_series, modality_gap, true_class_prob
from modalscope.diagnostics.gmm import fit_gap_mixture


# ---------------------------------------------------------------- gap
def test_true_class_prob_numpy_and_torch_agree_with_hand_softmax():
    z = np.array([[0.0, math.log(3.0)], [math.log(4.0), 0.0]])
    y = np.array([1, 1])
    np.testing.assert_allclose(true_class_prob(z, y), [0.75, 0.2])
    zt = torch.tensor(z, requires_grad=True)
    p = true_class_prob(zt, torch.tensor(y))
    assert isinstance(p, torch.Tensor)
    np.testing.assert_allclose(p.detach().numpy(), [0.75, 0.2])
    p.sum().backward()
    assert zt.grad is not None and float(zt.grad.abs().sum()) > 0


def test_modality_gap_and_series_names():
    y = np.array([0, 1])
    za = np.array([[10.0, -10.0], [0.0, 0.0]])
    zv = np.array([[0.0, 0.0], [-10.0, 10.0]])
    g = modality_gap(za, zv, y)
    np.testing.assert_allclose(g, [0.5, -0.5], atol=1e-6)
    s2 = gap_series({"audio": za, "visual": zv}, y, ["audio", "visual"])
    assert list(s2) == ["audio-visual"]
    zt = np.array([[-10.0, 10.0], [10.0, -10.0]])  # text always wrong -> weakest
    s3 = gap_series({"audio": za, "visual": zv, "text": zt}, y, ["audio", "visual", "text"])
    assert list(s3) == ["audio-visual", "audio-text", "visual-text", "strong-weak"]
    # audio mean tcp = (1 + .5)/2 = .75; visual = (.5 + 1)/2 = .75; text ~ 0: strong = audio (first max)
    np.testing.assert_allclose(s3["strong-weak"], s3["audio-text"])


def test_gap_edges_and_histogram():
    e = GAP_EDGES(4)
    np.testing.assert_allclose(e, [-1, -0.5, 0, 0.5, 1])
    edges, counts = gap_histogram(np.array([-2.0, -0.75, 0.1, 0.2, 1.0]), 4)
    np.testing.assert_allclose(counts, [2, 0, 2, 1])


# ---------------------------------------------------------------- GMM
def test_gmm_recovers_planted_two_gaussians_and_balanced_component():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.02, 0.08, 3000), rng.normal(0.6, 0.1, 1500)])
    mix = fit_gap_mixture(x, seed=0)
    b, u = mix.balanced, mix.imbalanced
    assert abs(mix.means[b] - 0.02) < 0.05
    assert abs(mix.means[u] - 0.6) < 0.05
    assert abs(mix.weights[u] - 1 / 3) < 0.05
    assert mix.evidence > 100
    assert 0.02 < mix.threshold < 0.6
    post = mix.posterior_imbalanced(np.array([0.0, mix.threshold, 0.7]))
    assert post[0] < 0.01 and abs(post[1] - 0.5) < 1e-6 and post[2] > 0.99


def test_gmm_one_gaussian_gives_evidence_against_two():
    x = np.random.default_rng(2).normal(0.1, 0.2, 4000)
    mix = fit_gap_mixture(x, seed=0)
    assert mix.evidence < 0


def test_gmm_negative_imbalanced_component_and_abs_option():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0.0, 0.05, 2000), rng.normal(-0.5, 0.1, 2000)])
    mix = fit_gap_mixture(x)
    assert mix.means[mix.imbalanced] < -0.4
    assert mix.posterior_imbalanced(np.array([-0.5]))[0] > 0.99
    mabs = fit_gap_mixture(x, use_abs=True)
    assert mabs.means[mabs.imbalanced] > 0.4
    assert mabs.posterior_imbalanced(np.array([-0.5]))[0] > 0.99


def test_gmm_rejects_too_few_values():
    with pytest.raises(ValueError):
        fit_gap_mixture(np.array([0.1]))


# ---------------------------------------------------------------- conflict
def test_cosine_known_answers():
    a = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    assert cosine(a, [t.clone() for t in a]) == pytest.approx(1.0)
    assert cosine(a, [-t for t in a]) == pytest.approx(-1.0)
    assert cosine([torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 5.0])]) == pytest.approx(0.0)
    assert cosine([torch.zeros(3)], [torch.ones(3)]) == 0.0
    assert cosine([None, torch.tensor([1.0])], [torch.tensor([2.0]), torch.tensor([1.0])]) == pytest.approx(1 / math.sqrt(5))


def test_conflict_cosines_on_hand_built_graph():
    """Encoder param w; fused loss = w·a, unimodal = w·b: the cosine is cos(a, b)."""
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    v = torch.nn.Parameter(torch.tensor([1.0]))
    phi = torch.nn.Parameter(torch.tensor([0.5, 0.5]))
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    fused = (w * a).sum() + (v * 2).sum()
    uni = {"audio": (w * b).sum() + (phi * torch.tensor([1.0, 0.0])).sum(),
           "visual": -(v * 3).sum() + (phi * torch.tensor([-1.0, 0.0])).sum()}
    out = conflict_cosines(fused, uni, {"audio": [w], "visual": [v]}, [phi])
    assert out["conflict/cos/audio"] == pytest.approx(1 / math.sqrt(2))
    assert out["conflict/cos/visual"] == pytest.approx(-1.0)
    assert out["conflict/cos_fusion"] == pytest.approx(-1.0)
    assert w.grad is None and phi.grad is None


# ---------------------------------------------------------------- contribution
class _TwoModal(torch.nn.Module):
    """fused = A·x_audio + B·x_visual (no bias): the visual term is scaled by ``bv``."""

    def __init__(self, ba: float, bv: float):
        super().__init__()
        self.modalities = ["audio", "visual"]
        self.ba, self.bv = ba, bv

    def forward(self, batch, drop=frozenset(), fill=None):
        from modalscope.models.multimodal import ModelOutput

        xs = {}
        for m in self.modalities:
            x = batch[m]
            if m in drop:
                x = fill[m].expand_as(x) if fill and m in fill else torch.zeros_like(x)
            xs[m] = x
        za, zv = self.ba * xs["audio"], self.bv * xs["visual"]
        return ModelOutput(fused=za + zv, logits={"audio": za, "visual": zv})


def _batch(n=64, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    onehot = torch.nn.functional.one_hot(y, k).float()
    return {"audio": onehot + 0.3 * torch.randn(n, k, generator=g),
            "visual": onehot + 0.3 * torch.randn(n, k, generator=g), "label": y}, y


def test_shapley_ignored_modality_gets_zero_and_efficiency_holds():
    batch, y = _batch()
    model = _TwoModal(2.0, 0.0)
    v = subset_value_fn(model, batch, y, "classification")
    phi = shapley_values(v, ["audio", "visual"])
    assert phi["visual"] == pytest.approx(0.0, abs=1e-9)
    assert phi["audio"] > 0
    full, none = v(frozenset(["audio", "visual"])), v(frozenset())
    assert sum(phi.values()) == pytest.approx(full - none)
    assert none == pytest.approx(-math.log(3))


def test_shapley_three_players_known_game():
    """v(S) = Σ_{m∈S} a_m + 6·[x, y ∈ S]: additive parts plus an interaction split evenly."""
    a = {"x": 1.0, "y": 2.0, "z": 4.0}

    def v(s):
        return sum(a[m] for m in s) + (6.0 if {"x", "y"} <= s else 0.0)

    phi = shapley_values(v, ["x", "y", "z"])
    assert phi == pytest.approx({"x": 4.0, "y": 5.0, "z": 4.0})


def test_contribution_weights_softmax_of_normalised_info_times_confidence():
    w = contribution_weights({"a": 3.0, "v": 1.0}, {"a": 0.8, "v": 0.5}, temperature=0.5)
    # Î = I/Σ|I| = (0.75, 0.25); scores = (0.75·0.8, 0.25·0.5)/0.5 = (1.2, 0.25) -> softmax
    assert w["a"] == pytest.approx(math.exp(1.2) / (math.exp(1.2) + math.exp(0.25)))
    assert sum(w.values()) == pytest.approx(1.0)
    w = contribution_weights({"a": 3.0, "v": 1.0}, {"a": 0.8, "v": 0.5}, temperature=0.5, norm="minmax")
    # Î = (1, 0); scores = (0.8/0.5, 0) -> softmax
    e = math.exp(1.6)
    assert w["a"] == pytest.approx(e / (e + 1))
    same = contribution_weights({"a": 2.0, "v": 2.0}, {"a": 0.5, "v": 0.5})
    assert same == pytest.approx({"a": 0.5, "v": 0.5})


def test_contribution_weights_keep_the_information_magnitude():
    conf = {"a": 1.0, "v": 1.0}
    # a nearly tie and a 3:1 split: min-max maps both to Î = (1, 0) and gives the same W
    tie = contribution_weights({"a": 0.30, "v": 0.29}, conf, norm="minmax")
    split = contribution_weights({"a": 0.30, "v": 0.10}, conf, norm="minmax")
    assert tie == pytest.approx(split)
    # I/Σ|I|: Î = (0.5085, 0.4915) vs (0.75, 0.25); W follows the ratio of the information
    tie = contribution_weights({"a": 0.30, "v": 0.29}, conf)
    split = contribution_weights({"a": 0.30, "v": 0.10}, conf)
    assert tie["a"] == pytest.approx(1 / (1 + math.exp(-(0.30 - 0.29) / 0.59)))
    assert split["a"] == pytest.approx(1 / (1 + math.exp(-0.5)))
    assert tie["a"] < split["a"]
    # a modality that hurts (negative Shapley value) gets a negative Î and the lower weight
    neg = contribution_weights({"a": 0.3, "v": -0.1}, conf)
    assert neg["a"] == pytest.approx(1 / (1 + math.exp(-(0.75 + 0.25))))


def test_confidence_is_mean_true_class_prob():
    z = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    assert confidence(z, torch.tensor([1, 0])) == pytest.approx((0.75 + 0.5) / 2)


def test_mean_fill_changes_absent_value():
    batch, y = _batch()
    model = _TwoModal(1.0, 1.0)
    vz = subset_value_fn(model, batch, y, "classification", absent="zero")(frozenset(["audio"]))
    vm = subset_value_fn(model, batch, y, "classification", absent="mean")(frozenset(["audio"]))
    mean_v = batch["visual"].mean(0)
    expect = -float(torch.nn.functional.cross_entropy(batch["audio"] + mean_v, y))
    assert vm == pytest.approx(expect)
    assert vm != pytest.approx(vz)


@pytest.mark.parametrize("method", ["feature_ablation", "shapley_sampling"])
def test_captum_agrees_with_exact_shapley_in_ranking(method):
    from modalscope.diagnostics.attribution import captum_contributions

    batch, y = _batch(n=128)
    model = _TwoModal(3.0, 0.7)
    exact = shapley_values(subset_value_fn(model, batch, y, "classification"), ["audio", "visual"])
    torch.manual_seed(0)
    cap = captum_contributions(model, batch, y, "classification", method=method)
    assert exact["audio"] > exact["visual"] > 0
    assert cap["audio"] > cap["visual"] > 0
    if method == "feature_ablation":
        v = subset_value_fn(model, batch, y, "classification")
        full = v(frozenset(["audio", "visual"]))
        assert cap["audio"] == pytest.approx(full - v(frozenset(["visual"])), rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_em_matches_sklearn_gaussian_mixture(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0.0, 0.1, 1500), rng.normal(-0.7, 0.15, 700)])
    a, b = fit_gap_mixture(x, backend="numpy"), fit_gap_mixture(x, backend="sklearn")
    oa, ob = np.argsort(a.means), np.argsort(b.means)
    np.testing.assert_allclose(a.means[oa], b.means[ob], atol=0.01)
    np.testing.assert_allclose(a.weights[oa], b.weights[ob], atol=0.01)
    np.testing.assert_allclose(a.variances[oa], b.variances[ob], rtol=0.05)
    assert a.bic2 == pytest.approx(b.bic2, abs=2.0)
    assert a.means[a.balanced] == pytest.approx(b.means[b.balanced], abs=0.01)


def _hand_bic(x, weights, means, variances):
    """BIC = −2 Σ log Σ_k π_k N(x; μ_k, σ_k²) + (3K − 1) log n, with scipy's normal density."""
    from scipy.stats import norm

    dens = sum(w * norm.pdf(x, m, math.sqrt(v)) for w, m, v in zip(weights, means, variances))
    return -2.0 * float(np.log(dens).sum()) + (3 * len(weights) - 1) * math.log(len(x))


@pytest.mark.parametrize("backend", ["numpy", "sklearn"])
def test_each_backend_bic_matches_hand_formula(backend):
    """Each backend's own BIC₁ and BIC₂ against −2 log L + k log n recomputed here (BIC₁: the ML Gaussian)."""
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(0.0, 0.1, 800), rng.normal(-0.7, 0.15, 400)])
    mix = fit_gap_mixture(x, backend=backend)
    bic1 = _hand_bic(x, [1.0], [x.mean()], [x.var() + 1e-6])
    assert mix.bic1 == pytest.approx(bic1, rel=1e-9)
    assert mix.bic2 == pytest.approx(_hand_bic(x, mix.weights, mix.means, mix.variances), rel=1e-6)
    # Two well-separated Gaussians: the one-Gaussian fit pays far more in likelihood than 3 extra parameters.
    assert mix.evidence > 500


def test_separable_shortcut_equals_per_modality_backward():
    """On a sliced concat model, one backward of Σ L_m gives the same cosines as M separate ones."""
    from modalscope.models.multimodal import MultimodalModel

    torch.manual_seed(0)
    model = MultimodalModel(["audio", "visual"], {"audio": "vector", "visual": "vector"}, {"audio": (6,), "visual": (5,)}, 3,
                            hidden=8, embed_dim=4, depth=1)
    batch = {"audio": torch.randn(16, 6), "visual": torch.randn(16, 5), "label": torch.randint(0, 3, (16,))}
    out = model(batch)
    ce = torch.nn.functional.cross_entropy
    fused = ce(out.fused, batch["label"])
    uni = {m: ce(z, batch["label"]) for m, z in out.logits.items()}
    enc = {m: model.encoder_params(m) for m in model.modalities}
    fus = model.param_groups()["fusion"]
    a = conflict_cosines(fused, uni, enc, fus, separable=False)
    b = conflict_cosines(fused, uni, enc, fus, separable=True)
    assert a.keys() == b.keys() == {"conflict/cos/audio", "conflict/cos/visual", "conflict/cos_fusion"}
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-6)


def test_confidence_regression_is_inverse_one_plus_mae():
    assert confidence(torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, 2.0]), task="regression") == pytest.approx(0.5)



@pytest.mark.parametrize("seed", range(4))
def test_vector_em_equals_the_default_em(seed):
    """The diagnostics' in-place EM (backend="vector") against the default the methods train with."""
    rng = np.random.default_rng(seed)
    n = [50, 600, 1400, 5000][seed]
    g = np.concatenate([rng.normal(0, 0.1, n // 3), rng.normal(0.4 - 0.3 * seed, 0.2, n - n // 3)]).clip(-1, 1)
    a, b = fit_gap_mixture(g, backend="vector"), fit_gap_mixture(g)
    for f in ("weights", "means", "variances"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-9, atol=1e-12)
    assert a.bic1 == b.bic1 and a.bic2 == pytest.approx(b.bic2, rel=1e-12) and a.balanced == b.balanced
    np.testing.assert_allclose(a.threshold, b.threshold, rtol=1e-9)
