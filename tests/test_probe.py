"""Linear probes on frozen features: planted signals, chance on noise, utilisation arithmetic."""

import math

import numpy as np
import pytest

from modalscope.diagnostics.probe import linear_probe, probe_features, utilisation


def _planted(n, k=4, d=16, sep=6.0, seed=0):
    """Gaussian classes around orthogonal means ``sep·e_y`` (Bayes accuracy ≈ 1)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.standard_normal((n, d))
    x[np.arange(n), y] += sep
    return x, y


@pytest.mark.parametrize("method", ["ridge", "logistic"])
def test_probe_recovers_planted_linear_signal(method):
    x, y = _planted(1000)
    xv, yv = _planted(500, seed=1)
    # a random invertible mixing with very different column scales: standardisation must cope
    mix = np.random.default_rng(2).standard_normal((16, 16)) * np.logspace(-3, 3, 16)
    acc = linear_probe(x @ mix, y, {"valid": (xv @ mix, yv)}, n_classes=4, method=method)
    assert acc["valid"] >= 0.99


@pytest.mark.parametrize("method", ["ridge", "logistic"])
def test_probe_is_at_chance_on_noise_features(method):
    rng = np.random.default_rng(3)
    k = 5
    x, y = rng.standard_normal((3000, 16)), rng.integers(0, k, 3000)
    xt, yt = rng.standard_normal((4000, 16)), rng.integers(0, k, 4000)
    acc = linear_probe(x, y, {"test": (xt, yt)}, n_classes=k, method=method)["test"]
    # binomial standard error at p = 0.2, n = 4000 is 0.0063: 4 SE
    assert abs(acc - 1 / k) < 0.026


def test_bit_probes_separate_the_bits_an_encoder_keeps():
    """Features that carry only bit 0 of the class index: bit 0 is read, bit 1 is at chance."""
    rng = np.random.default_rng(4)

    def feats(n):
        y = rng.integers(0, 4, n)
        x = rng.standard_normal((n, 8))
        x[:, 0] += 5.0 * (2 * (y & 1) - 1)
        return x, y

    (x, y), (xt, yt) = feats(2000), feats(4000)
    acc, bits = probe_features(x, y, {"test": (xt, yt)}, n_classes=4, n_bits=2)
    assert bits["test"][0] > 0.99
    assert abs(bits["test"][1] - 0.5) < 0.03
    assert abs(acc["test"] - 0.5) < 0.03  # half the label (one bit of two) is known


def test_probe_is_deterministic_and_ignores_constant_features():
    x, y = _planted(400)
    x = np.concatenate([x, np.full((400, 3), 7.0)], axis=1)
    a = linear_probe(x, y, {"v": (x, y)}, 4)
    b = linear_probe(x.copy(), y.copy(), {"v": (x, y)}, 4)
    assert a == b and a["v"] > 0.99


def test_bad_probe_input_is_one_line():
    x, y = _planted(50)
    with pytest.raises(ValueError, match="labels outside"):
        linear_probe(x, y + 10, {}, 4)
    with pytest.raises(ValueError, match="has 40 labels for 50"):
        linear_probe(x, y[:40], {}, 4)
    with pytest.raises(ValueError, match="columns"):
        linear_probe(x, y, {"t": (x[:, :3], y)}, 4)
    with pytest.raises(ValueError, match="non-finite"):
        linear_probe(np.full_like(x, np.nan), y, {}, 4)


def test_utilisation_arithmetic():
    assert utilisation(0.30, 0.30, 0.70) == 0.0
    assert utilisation(0.70, 0.30, 0.70) == 1.0
    assert utilisation(0.40, 0.30, 0.70) == pytest.approx(0.25)
    assert math.isnan(utilisation(0.5, 0.4, 0.4))  # the reference gained nothing
