"""Two-component Gaussian mixture on the modality gap: balanced vs imbalanced samples.

Following Liu, Yu, Liu (arXiv 2510.21797), the gaps g_i of the training set are modelled as

    p(g) = π_b N(g; μ_b, σ_b²) + π_u N(g; μ_u, σ_u²)

fitted by EM (a vectorised numpy EM by default; scikit-learn ``GaussianMixture`` with
``backend="sklearn"`` — same model, same answer to EM tolerance). The **balanced** component b is the one
whose mean is closer to zero (smaller |μ|); the other, u, is **imbalanced**. A sample's
soft membership is the Bayes posterior

    γ_i = π_u N(g_i; μ_u, σ_u²) / Σ_k π_k N(g_i; μ_k, σ_k²).

Bimodality evidence compares a one-component fit by BIC: ``evidence = BIC₁ − BIC₂``
(BIC = −2 log L + k log n, k = 2 free parameters for one Gaussian, 5 for two). Positive
evidence favours two components; negative means a single Gaussian explains the gaps as
well once the extra parameters are paid for. ``threshold`` is the gap between the two
means at which γ crosses 0.5 (NaN when the posterior never crosses there).

Cost: EM on N scalars — O(N log N) for the exact 2-means start plus O(N) per EM
iteration; see ``benchmarks/diagnostics_cost.py`` for the 100 000-sample figure.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np


@dataclass
class GapMixture:
    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    balanced: int
    bic1: float
    bic2: float
    threshold: float
    use_abs: bool = field(default=False)

    @property
    def imbalanced(self) -> int:
        return 1 - self.balanced

    @property
    def evidence(self) -> float:
        """``BIC₁ − BIC₂``: > 0 favours two components (bimodal gaps), < 0 one."""
        return float(self.bic1 - self.bic2)

    def log_joint(self, x: np.ndarray) -> np.ndarray:
        """(n, 2) ``log π_k + log N(x; μ_k, σ_k²)``."""
        g = np.asarray(x, dtype=np.float64).reshape(-1)
        if self.use_abs:
            g = np.abs(g)
        w = np.asarray(self.weights, dtype=np.float64)
        mu = np.asarray(self.means, dtype=np.float64)
        var = np.asarray(self.variances, dtype=np.float64)
        with np.errstate(divide="ignore"):
            logw = np.log(w)
        return logw[None, :] - 0.5 * np.log(2 * math.pi * var)[None, :] - (g[:, None] - mu[None, :]) ** 2 / (2 * var[None, :])

    def posterior_imbalanced(self, x: np.ndarray) -> np.ndarray:
        """γ(x): posterior probability of the imbalanced component for each gap value."""
        lj = self.log_joint(x)
        u, b = lj[:, self.imbalanced], lj[:, self.balanced]
        return 1.0 / (1.0 + np.exp(np.clip(b - u, -700, 700)))


def _crossing(w, mu, var, u: int, b: int) -> float:
    """The x between μ_b and μ_u where π_u N(x; μ_u) = π_b N(x; μ_b), or NaN."""
    if w[u] <= 0 or w[b] <= 0:
        return float("nan")
    a = 1.0 / (2 * var[b]) - 1.0 / (2 * var[u])
    bb = mu[u] / var[u] - mu[b] / var[b]
    c = (
        mu[b] ** 2 / (2 * var[b]) - mu[u] ** 2 / (2 * var[u])
        + math.log(w[u]) - math.log(w[b]) + 0.5 * math.log(var[b]) - 0.5 * math.log(var[u])
    )
    if abs(a) < 1e-12 * max(abs(bb), 1.0):
        roots = [-c / bb] if bb != 0 else []
    else:
        disc = bb * bb - 4 * a * c
        if disc < 0:
            roots = []
        else:
            s = math.sqrt(disc)
            roots = [(-bb - s) / (2 * a), (-bb + s) / (2 * a)]
    lo, hi = min(mu), max(mu)
    inside = [r for r in roots if lo <= r <= hi]
    return float(inside[0]) if inside else float("nan")


def _two_means_split(sorted_g: np.ndarray) -> int:
    """Size of the left cluster of the exact (globally optimal) 1-D 2-means partition."""
    n = len(sorted_g)
    c, c2 = np.cumsum(sorted_g), np.cumsum(sorted_g * sorted_g)
    k = np.arange(1, n)
    left = c2[k - 1] - c[k - 1] ** 2 / k
    rs, rq = c[-1] - c[k - 1], c2[-1] - c2[k - 1]
    right = rq - rs**2 / (n - k)
    return int(np.argmin(left + right)) + 1


def _em_two(g: np.ndarray, max_iter: int = 100, tol: float = 1e-3, reg: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """EM for a 1-D two-component Gaussian mixture, started from the exact 2-means split.

    Same model, convergence rule (change of mean log-likelihood < ``tol``) and variance
    floor (``reg``) as scikit-learn's ``GaussianMixture``; vectorised numpy without its
    per-call validation overhead, so an epoch-level refit costs about a millisecond.
    """
    n = len(g)
    s = np.sort(g)
    k = _two_means_split(s)
    parts = (s[:k], s[k:])
    w = np.array([len(p) / n for p in parts])
    mu = np.array([p.mean() for p in parts])
    var = np.array([p.var() for p in parts]) + reg
    prev = -np.inf
    x = g[:, None]
    for _ in range(max_iter):
        lj = np.log(w)[None, :] - 0.5 * np.log(2 * math.pi * var)[None, :] - (x - mu[None, :]) ** 2 / (2 * var[None, :])
        lse = np.logaddexp(lj[:, 0], lj[:, 1])
        ll = float(lse.mean())
        r = np.exp(lj - lse[:, None])
        nk = r.sum(0) + 10 * np.finfo(float).eps
        w = nk / n
        mu = (r * x).sum(0) / nk
        var = (r * (x - mu[None, :]) ** 2).sum(0) / nk + reg
        if abs(ll - prev) < tol:
            break
        prev = ll
    lj = np.log(w)[None, :] - 0.5 * np.log(2 * math.pi * var)[None, :] - (x - mu[None, :]) ** 2 / (2 * var[None, :])
    loglik = float(np.logaddexp(lj[:, 0], lj[:, 1]).sum())
    return w, mu, var, loglik


def _em_two_vector(g: np.ndarray, max_iter: int = 100, tol: float = 1e-3, reg: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """EM for a 1-D two-component Gaussian mixture, started from the exact 2-means split.

    Same model, convergence rule (change of mean log-likelihood < ``tol``) and variance
    floor (``reg``) as scikit-learn's ``GaussianMixture``; vectorised numpy without its
    per-call validation overhead. :func:`_em_two` on two length-n vectors in place (E-step:
    ``log π_k + log N(g; μ_k, σ_k²)``, log-sum-exp, responsibilities; M-step as dot
    products): about half the time, the same fit to float rounding
    (``tests/test_diagnostics_units.py``). The per-epoch diagnostics use it; the gap-guided
    methods keep :func:`_em_two`, so their training trajectories stay bit-identical.
    """
    n = len(g)
    s = np.sort(g)
    k = _two_means_split(s)
    w0, w1 = k / n, (n - k) / n
    mu0, mu1 = float(s[:k].mean()), float(s[k:].mean())
    v0, v1 = float(s[:k].var()) + reg, float(s[k:].var()) + reg
    eps = 10 * np.finfo(float).eps
    log2pi = math.log(2 * math.pi)
    prev = -np.inf
    for _ in range(max_iter):
        l0 = g - mu0
        l0 *= l0
        l0 *= -0.5 / v0
        l0 += math.log(w0) - 0.5 * (log2pi + math.log(v0))
        l1 = g - mu1
        l1 *= l1
        l1 *= -0.5 / v1
        l1 += math.log(w1) - 0.5 * (log2pi + math.log(v1))
        lse = np.logaddexp(l0, l1)
        ll = float(lse.mean())
        l0 -= lse
        r0 = np.exp(l0, out=l0)
        l1 -= lse
        r1 = np.exp(l1, out=l1)
        n0, n1 = float(r0.sum()) + eps, float(r1.sum()) + eps
        w0, w1 = n0 / n, n1 / n
        mu0, mu1 = float(r0 @ g) / n0, float(r1 @ g) / n1
        d = g - mu0
        v0 = float(r0 @ (d * d)) / n0 + reg
        d = g - mu1
        v1 = float(r1 @ (d * d)) / n1 + reg
        if abs(ll - prev) < tol:
            break
        prev = ll
    w, mu, var = np.array([w0, w1]), np.array([mu0, mu1]), np.array([v0, v1])
    lj = np.log(w)[None, :] - 0.5 * np.log(2 * math.pi * var)[None, :] - (g[:, None] - mu[None, :]) ** 2 / (2 * var[None, :])
    loglik = float(np.logaddexp(lj[:, 0], lj[:, 1]).sum())
    return w, mu, var, loglik


def fit_gap_mixture(x: np.ndarray, seed: int = 0, use_abs: bool = False, backend: str = "numpy") -> GapMixture:
    """Fit one- and two-component Gaussian mixtures to gaps ``x`` (1-D); see module docstring.

    ``backend="numpy"`` (default) runs the vectorised EM of :func:`_em_two`; ``"vector"`` the
    same EM in place on vectors (:func:`_em_two_vector`, the per-epoch diagnostics);
    ``backend="sklearn"`` runs ``sklearn.mixture.GaussianMixture(2)`` (k-means start,
    ``random_state=seed``) and ``GaussianMixture(1)`` for BIC₁. Each backend computes both
    BICs itself; they fit the same model and agree to EM tolerance.
    """
    g = np.asarray(x, dtype=np.float64).reshape(-1)
    g = g[np.isfinite(g)]
    if use_abs:
        g = np.abs(g)
    if len(g) < 2:
        raise ValueError(f"a gap mixture needs at least 2 finite values, got {len(g)}")
    n = len(g)
    if backend in ("numpy", "vector"):
        var1 = float(g.var()) + 1e-6
        loglik1 = float(np.sum(-0.5 * np.log(2 * math.pi * var1) - (g - g.mean()) ** 2 / (2 * var1)))
        bic1 = -2.0 * loglik1 + 2 * math.log(n)
        w, mu, var, loglik2 = (_em_two if backend == "numpy" else _em_two_vector)(g)
        bic2 = -2.0 * loglik2 + 5 * math.log(n)
    elif backend == "sklearn":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture

        X = g[:, None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm = GaussianMixture(2, covariance_type="full", random_state=seed, reg_covar=1e-6).fit(X)
            gm1 = GaussianMixture(1, covariance_type="full", random_state=seed, reg_covar=1e-6).fit(X)
        bic1 = float(gm1.bic(X))
        bic2 = float(gm.bic(X))
        w = gm.weights_.astype(np.float64)
        mu = gm.means_.reshape(-1).astype(np.float64)
        var = gm.covariances_.reshape(-1).astype(np.float64)
    else:
        raise ValueError(f"backend must be 'numpy', 'vector' or 'sklearn', got {backend!r}")
    balanced = int(np.argmin(np.abs(mu)))
    thr = _crossing(w, mu, var, 1 - balanced, balanced)
    return GapMixture(weights=w, means=mu, variances=var, balanced=balanced, bic1=bic1, bic2=bic2, threshold=thr, use_abs=use_abs)
