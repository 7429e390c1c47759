import numpy as np
import pytest
import torch

from modalscope.data.synthetic import Synthetic, SyntheticParams, analytic_ceiling, bayes_ceilings, class_codes


def test_class_codes_are_bits():
    c = class_codes(8)
    assert c.shape == (8, 3)
    assert (c[5] == np.array([1, -1, 1])).all()


@pytest.mark.parametrize("preset", ["balanced", "imbalanced", "complementary", "three_modal"])
def test_monte_carlo_bayes_matches_closed_form(preset):
    p = SyntheticParams(preset=preset)
    mc = bayes_ceilings(p, n_mc=100_000)
    mods = p.ordered_modalities()
    exact_fused = analytic_ceiling([p.strength[m] for m in mods])
    assert mc["fused"] == pytest.approx(exact_fused, abs=0.006)
    for m in mods:
        assert mc[m] == pytest.approx(analytic_ceiling([p.strength[m]]), abs=0.006)


@pytest.mark.parametrize("preset", ["imbalanced", "complementary"])
def test_two_modal_presets_leave_room_for_fusion(preset):
    b = bayes_ceilings(SyntheticParams(preset=preset))
    assert b["fused"] - max(b["audio"], b["visual"]) >= 0.05


def test_imbalanced_is_redundant_and_complementary_is_not():
    """imbalanced: every modality sees every code bit; complementary: each is near-blind to some bit."""
    red, comp = SyntheticParams(preset="imbalanced"), SyntheticParams(preset="complementary")
    for m in ("audio", "visual"):
        assert min(red.strength[m]) >= 1.0
    assert min(comp.strength["audio"]) < 0.5 and comp.strength["visual"][2] > comp.strength["audio"][2]


def test_default_splits_give_a_valid_split_and_a_tight_test_estimate():
    p = SyntheticParams()
    assert p.preset == "imbalanced" and p.n_valid > 0
    assert (0.25 / p.n_test) ** 0.5 <= 0.008


def test_corruption_lowers_the_corrupted_modality_ceiling_and_mask_rate():
    noisy_p = SyntheticParams(preset="noisy")
    clean = bayes_ceilings(SyntheticParams(preset="noisy", corrupt_rate=0.0), n_mc=50_000)
    noisy = bayes_ceilings(noisy_p, n_mc=50_000)
    m = noisy_p.corrupt_modality
    assert noisy[m] < clean[m] - 0.03
    bundle = Synthetic.build(noisy_p.model_copy(update={"n_train": 4000}))
    mask = bundle.info["corrupted"]["train"]
    assert mask.mean() == pytest.approx(noisy_p.corrupt_rate, abs=0.03)


def test_missing_corruption_zeroes_the_input_and_has_the_mixture_ceiling():
    """``missing``: corrupted rows are all-zero; audio alone is Bayes on clean rows, chance (1/K) on the rest."""
    p = SyntheticParams(preset="noisy", n_train=2000, n_test=10)
    assert p.corrupt_kind == "missing" and p.corrupt_modality == "audio"
    bundle = Synthetic.build(p)
    x = bundle.splits["train"].tensors["audio"]
    mask = torch.from_numpy(bundle.info["corrupted"]["train"])
    assert (x[mask] == 0).all() and (x[~mask].abs().sum(1) > 0).all()
    assert (bundle.splits["train"].tensors["visual"][mask].abs().sum(1) > 0).all()
    r = p.corrupt_rate
    expected = (1 - r) * analytic_ceiling([p.strength["audio"]]) + r / p.n_classes
    assert bayes_ceilings(p, n_mc=50_000)["audio"] == pytest.approx(expected, abs=0.01)


def test_generation_is_deterministic_and_shaped():
    p = SyntheticParams(preset="three_modal", n_train=50, n_test=20)
    a, b = Synthetic.build(p), Synthetic.build(p)
    for m in ("audio", "visual", "text"):
        assert a.splits["train"].tensors[m].shape == (50, p.dims[m])
        assert (a.splits["train"].tensors[m] == b.splits["train"].tensors[m]).all()
    assert a.modalities == ["audio", "visual", "text"]
    item = a.splits["train"][3]
    assert item["idx"] == 3 and set(item) == {"audio", "visual", "text", "label", "idx"}


def test_scale_is_bayes_neutral_but_changes_inputs():
    p1 = SyntheticParams(preset="imbalanced", n_train=20, n_test=10)
    p2 = p1.model_copy(update={"scale": {"audio": 1.0, "visual": 1.0}})
    assert bayes_ceilings(p1, n_mc=20_000) == bayes_ceilings(p2, n_mc=20_000)
    x1 = Synthetic.build(p1).splits["train"].tensors["visual"]
    x2 = Synthetic.build(p2).splits["train"].tensors["visual"]
    assert np.allclose(x1.numpy() / p1.scale["visual"], x2.numpy(), atol=1e-4)
