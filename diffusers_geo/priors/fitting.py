"""Priors for the start of sampling: a fitted auxiliary prior and the PFGM++ prior (pure math, no diffusers).

**Truncated start with an auxiliary prior** (Franzese et al., "How much is enough? A study on diffusion
times in score-based generative models", arXiv 2206.05173, §2–3). A sampler started at ``sigma`` from the
noise prior ``q_sigma`` instead of the true noised marginal ``p_sigma = p_data * N(0, sigma^2 I)`` pays the
prior mismatch ``KL(p_sigma || q_sigma)`` (their ELBO decomposition, §2). Replacing ``q_sigma`` by a model
``nu`` of ``p_sigma`` changes that term into ``KL(p_sigma || nu)``, which is small even at a small ``sigma``, so
sampling can start lower (§3). Our ``nu`` is a *mixture of factor analysers* fitted to clean data and then
convolved with the noise, which keeps it in the family:

    p_data ~ sum_k pi_k N(mu_k, W_k W_k^T + diag(psi_k))
    p_sigma ~ sum_k pi_k N(mu_k, W_k W_k^T + diag(psi_k + sigma^2)).

One component is a Gaussian with a low-rank-plus-diagonal covariance (factor analysis); rank 0 is a
diagonal Gaussian mixture. The fit is the EM algorithm for mixtures of factor analysers (Ghahramani &
Hinton 1996, "The EM algorithm for mixtures of factor analyzers", eqs. 11–15; for one component Rubin &
Thayer 1982), in its expectation–conditional-maximisation form (means first, then one factor-analysis
update of ``W_k, psi_k``), which never decreases the likelihood. Densities use the Woodbury identity and
the matrix determinant lemma, so nothing of size ``d x d`` is formed (``d`` may be a 16k-dim latent).

**PFGM++ prior** (Xu et al., "PFGM++: unlocking the potential of physics-inspired generative models",
arXiv 2302.04265; see our spec §3.3). With ``D`` augmented dimensions the perturbation kernel on
``N``-dimensional data is ``p_r(x | y) ∝ (|x - y|^2 + r^2)^(-(N + D)/2)`` with ``r = sigma * sqrt(D)``. In polar
coordinates around ``y`` the distance ``R = |x - y|`` has density ``∝ R^(N-1) (R^2 + r^2)^(-(N+D)/2)``; with
``u = R^2 / r^2`` this is ``∝ u^(N/2 - 1) (1 + u)^(-(N/2 + D/2))``: ``u`` is **Beta-prime(N/2, D/2)**. A
Beta-prime variable is ``G_N / G_D`` with independent ``G_N ~ Gamma(N/2)``, ``G_D ~ Gamma(D/2)`` (equivalently
``B / (1 - B)`` with ``B ~ Beta(N/2, D/2)``), and the direction is uniform. As ``D -> inf``, ``2 G_D / D -> 1``
so ``R^2 = sigma^2 * 2 G_N * D / (2 G_D) -> sigma^2 chi^2_N``: the Gaussian ``N(0, sigma^2 I)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

LOG_2PI = math.log(2 * math.pi)


# ------------------------------------------------------------------------------------------------
# the model: a mixture of factor analysers
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FactorMixture:
    """``sum_k pi_k N(mu_k, W_k W_k^T + diag(psi_k))`` on flattened vectors of dimension ``d``.

    Attributes:
        log_weights: ``(K,)`` log mixture weights.
        means: ``(K, d)``.
        factors: ``(K, d, r)`` the low-rank factors ``W_k`` (``r = 0``: diagonal components).
        variances: ``(K, d)`` the diagonal ``psi_k`` (positive).
    """

    log_weights: torch.Tensor
    means: torch.Tensor
    factors: torch.Tensor
    variances: torch.Tensor

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def rank(self) -> int:
        return self.factors.shape[2]

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def convolve(self, sigma: float) -> FactorMixture:
        """The law of ``x + sigma * n``, ``n ~ N(0, I)``: every ``psi_k`` grows by ``sigma^2``."""
        return replace(self, variances=self.variances + sigma**2)

    def mean(self) -> torch.Tensor:
        """``sum_k pi_k mu_k``, ``(d,)``."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """The full ``(d, d)`` covariance (for small ``d``: tests and diagnostics)."""
        w, mu = self.weights, self.means
        mean = w @ mu
        cov = torch.einsum("k,kdr,ker->de", w, self.factors, self.factors)
        cov = cov + torch.diag(w @ self.variances) + (mu * w[:, None]).T @ mu - torch.outer(mean, mean)
        return cov

    def component_log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """``log pi_k + log N(y; mu_k, C_k)`` for each row of ``y`` ``(B, d)``: ``(B, K)``."""
        out = [
            _gaussian_log_prob(y, mu, w, psi)
            for mu, w, psi in zip(self.means, self.factors, self.variances, strict=True)
        ]
        return torch.stack(out, -1) + self.log_weights

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """Log density of each row of ``y`` ``(B, d)``."""
        return torch.logsumexp(self.component_log_prob(y), -1)

    def sample(
        self, num_samples: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``num_samples`` draws ``(n, d)`` and their component indices ``(n,)``.

        All random numbers are drawn up front on the CPU (component, factor and diagonal noise), so a
        seeded ``generator`` gives the same samples on every device.
        """
        dtype, device = self.means.dtype, self.means.device
        comp = torch.multinomial(self.weights.double().cpu(), num_samples, True, generator=generator)
        z_factor = torch.randn(num_samples, self.rank, generator=generator, dtype=dtype)
        z_diag = torch.randn(num_samples, self.dim, generator=generator, dtype=dtype)
        comp, z_factor, z_diag = comp.to(device), z_factor.to(device), z_diag.to(device)
        x = torch.empty(num_samples, self.dim, dtype=dtype, device=device)
        for k in range(self.num_components):
            rows = (comp == k).nonzero()[:, 0]
            if len(rows):
                x[rows] = (
                    self.means[k]
                    + z_factor[rows] @ self.factors[k].T
                    + self.variances[k].sqrt() * z_diag[rows]
                )
        return x, comp


def _capacitance(factors: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of ``I + W^T diag(psi)^-1 W`` (the Woodbury "capacitance" matrix), ``(r, r)``."""
    r = factors.shape[1]
    cap = torch.eye(r, dtype=factors.dtype, device=factors.device) + factors.T @ (
        factors / variances[:, None]
    )
    return torch.linalg.cholesky(cap)


def gaussian_log_det(factors: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
    """``log det(W W^T + diag(psi)) = sum log psi + log det(I + W^T psi^-1 W)`` (determinant lemma)."""
    out = variances.log().sum()
    if factors.shape[1]:
        out = out + 2 * _capacitance(factors, variances).diagonal().log().sum()
    return out


def gaussian_solve(factors: torch.Tensor, variances: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``(W W^T + diag(psi))^-1 rhs`` for ``rhs`` ``(d, m)`` by the Woodbury identity, in ``O(d r^2 + d r m)``."""
    scaled = rhs / variances[:, None]
    if factors.shape[1] == 0:
        return scaled
    chol = _capacitance(factors, variances)
    inner = torch.cholesky_solve(factors.T @ scaled, chol)
    return scaled - (factors / variances[:, None]) @ inner


def _gaussian_log_prob(
    y: torch.Tensor, mean: torch.Tensor, factors: torch.Tensor, variances: torch.Tensor
) -> torch.Tensor:
    e = y - mean
    scaled = e / variances
    maha = (e * scaled).sum(-1)
    if factors.shape[1]:
        chol = _capacitance(factors, variances)
        v = torch.linalg.solve_triangular(chol, (scaled @ factors).T, upper=False)
        maha = maha - (v * v).sum(0)
    return -0.5 * (y.shape[-1] * LOG_2PI + gaussian_log_det(factors, variances) + maha)


def gaussian_kl(
    mean_p: torch.Tensor,
    factors_p: torch.Tensor,
    variances_p: torch.Tensor,
    mean_q: torch.Tensor,
    factors_q: torch.Tensor,
    variances_q: torch.Tensor,
) -> float:
    """Closed-form ``KL(N_p || N_q)`` for two low-rank-plus-diagonal Gaussians (nats):

    ``1/2 [ tr(C_q^-1 C_p) + (m_q - m_p)^T C_q^-1 (m_q - m_p) - d + log det C_q - log det C_p ]``,
    with every inverse and determinant through :func:`gaussian_solve` and :func:`gaussian_log_det`.
    """
    d = mean_p.shape[-1]
    delta = (mean_q - mean_p)[:, None]
    maha = float((delta * gaussian_solve(factors_q, variances_q, delta)).sum())
    # tr(C_q^-1 C_p) = tr(C_q^-1 W_p W_p^T) + tr(C_q^-1 diag psi_p); the second by Woodbury
    trace = float((factors_p * gaussian_solve(factors_q, variances_q, factors_p)).sum())
    trace += float((variances_p / variances_q).sum())
    if factors_q.shape[1]:
        chol = _capacitance(factors_q, variances_q)
        middle = factors_q.T @ (factors_q * (variances_p / variances_q**2)[:, None])
        trace -= float(torch.cholesky_solve(middle, chol).diagonal().sum())
    log_det = gaussian_log_det(factors_q, variances_q) - gaussian_log_det(factors_p, variances_p)
    return 0.5 * (trace + maha - d + float(log_det))


def monte_carlo_kl(
    p: FactorMixture, q: FactorMixture, num_samples: int = 4096, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """Unbiased estimate of ``KL(p || q) = E_p[log p - log q]`` and its standard error (mixtures have no
    closed form). Batches of 1024 keep the memory at ``1024 x d``."""
    values = []
    remaining = num_samples
    while remaining > 0:
        n = min(1024, remaining)
        x, _ = p.sample(n, generator)
        values.append(p.log_prob(x) - q.log_prob(x))
        remaining -= n
    diff = torch.cat(values)
    return float(diff.mean()), float(diff.std() / math.sqrt(len(diff)))


# ------------------------------------------------------------------------------------------------
# fitting: EM for mixtures of factor analysers
# ------------------------------------------------------------------------------------------------
@dataclass
class FitInfo:
    """How the EM run went: mean log-likelihood per sample after each iteration, and whether it converged."""

    log_likelihood: list[float] = field(default_factory=list)
    converged: bool = False

    @property
    def iterations(self) -> int:
        return len(self.log_likelihood)


def fit_factor_mixture(
    x: torch.Tensor,
    num_components: int = 1,
    rank: int = 8,
    max_iter: int = 100,
    tol: float = 1e-6,
    reg: float = 1e-6,
    generator: torch.Generator | None = None,
) -> tuple[FactorMixture, FitInfo]:
    """Maximum-likelihood mixture of factor analysers for the rows of ``x`` ``(N, d)``.

    Initialisation: k-means++ (Arthur & Vassilvitskii 2007) and Lloyd iterations for ``K > 1``, then per
    cluster the probabilistic-PCA solution (Tipping & Bishop 1999, eqs. 7–8) as the starting factors.
    Iterations: E-step responsibilities, then per component the weighted mean and one factor-analysis
    update (Ghahramani & Hinton 1996, eqs. 13–15, with the component's weighted scatter ``S_k``):

        beta = W^T (W W^T + psi)^-1,   W <- S beta^T (I - beta W + beta S beta^T)^-1,
        psi <- diag(S - W beta S)

    floored at ``reg`` times the mean data variance. Stops when the mean log-likelihood per sample and
    dimension improves by less than ``tol``.
    """
    x = _check_data(x)
    n, d = x.shape
    k = num_components
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"num_components must be a positive int, got {k!r}.")
    if not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank must be a non-negative int, got {rank!r}.")
    if rank >= d:
        raise ValueError(f"rank must be smaller than the data dimension {d}, got {rank}.")
    if n < k * (rank + 1) or n < 2 * k:
        raise ValueError(
            f"Too few samples to fit {k} component(s) of rank {rank}: got {n}, need at least "
            f"{max(k * (rank + 1), 2 * k)} (num_components * (rank + 1)). Provide more data or lower the rank."
        )
    floor = reg * float(x.var(0).mean().clamp_min(1e-30))
    labels = _kmeans(x, k, generator) if k > 1 else torch.zeros(n, dtype=torch.long, device=x.device)
    resp = torch.nn.functional.one_hot(labels, k).to(x.dtype)
    model = _m_step(x, resp, None, rank, floor, generator)
    info = FitInfo()
    for _ in range(max_iter):
        joint = model.component_log_prob(x)
        ll = float(torch.logsumexp(joint, -1).mean())
        if info.log_likelihood and abs(ll - info.log_likelihood[-1]) < tol * d:
            info.log_likelihood.append(ll)
            info.converged = True
            break
        info.log_likelihood.append(ll)
        resp = torch.softmax(joint, -1)
        model = _m_step(x, resp, model, rank, floor, generator)
    return model, info


def _check_data(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"Expected a tensor of samples, got {type(x).__name__}.")
    if x.ndim != 2:
        raise ValueError(f"Expected samples as an (N, d) tensor, got shape {tuple(x.shape)}.")
    if not torch.isfinite(x).all():
        raise ValueError("The samples contain NaN or inf.")
    return x.to(torch.float64)


def _kmeans(x: torch.Tensor, k: int, generator: torch.Generator | None, iters: int = 20) -> torch.Tensor:
    """k-means++ seeding and Lloyd iterations; returns a label per row."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centers = [x[first]]
    dist = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        probs = dist.cpu() / dist.sum().cpu() if float(dist.sum()) > 0 else torch.full((n,), 1.0 / n)
        pick = int(torch.multinomial(probs.double(), 1, generator=generator))
        centers.append(x[pick])
        dist = torch.minimum(dist, ((x - x[pick]) ** 2).sum(1))
    centers = torch.stack(centers)
    labels = torch.cdist(x, centers).argmin(1)
    for _ in range(iters):
        for j in range(k):
            members = labels == j
            if members.any():
                centers[j] = x[members].mean(0)
        new = torch.cdist(x, centers).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def _m_step(
    x: torch.Tensor,
    resp: torch.Tensor,
    previous: FactorMixture | None,
    rank: int,
    floor: float,
    generator: torch.Generator | None,
) -> FactorMixture:
    n, d = x.shape
    counts = resp.sum(0).clamp_min(1e-10 * n)
    means, factors, variances = [], [], []
    for j in range(resp.shape[1]):
        mean = resp[:, j] @ x / counts[j]
        scatter_root = (x - mean) * (resp[:, j] / counts[j]).sqrt()[:, None]  # S_k = root^T root
        diag_s = (scatter_root**2).sum(0)
        if rank == 0:
            w, psi = x.new_zeros(d, 0), diag_s
        elif previous is None:
            w = _ppca_factors(scatter_root, diag_s, rank, floor, generator)
            psi = diag_s - (w * w).sum(1)
        else:
            w, psi = _factor_analysis_update(scatter_root, diag_s, previous.factors[j], previous.variances[j])
        psi = psi.clamp_min(floor)
        means.append(mean)
        factors.append(w)
        variances.append(psi)
    return FactorMixture(
        (counts / counts.sum()).log(), torch.stack(means), torch.stack(factors), torch.stack(variances)
    )


def _beta(factors: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
    """``beta = W^T (W W^T + psi)^-1 = (I + W^T psi^-1 W)^-1 W^T psi^-1``, ``(r, d)``."""
    return torch.cholesky_solve((factors / variances[:, None]).T, _capacitance(factors, variances))


def _factor_analysis_update(
    root: torch.Tensor, diag_s: torch.Tensor, factors: torch.Tensor, variances: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One factor-analysis EM update from ``S = root^T root`` (Ghahramani & Hinton 1996, eqs. 13 and 15):
    ``W = S beta^T (I - beta W + beta S beta^T)^-1`` and ``psi = diag(S - W_new beta S)``."""
    beta = _beta(factors, variances)
    projected = root @ beta.T  # (N, r)
    s_beta = root.T @ projected  # S beta^T, (d, r)
    r = factors.shape[1]
    second_moment = (
        torch.eye(r, dtype=root.dtype, device=root.device) - beta @ factors + projected.T @ projected
    )
    new = torch.linalg.solve(second_moment, s_beta.T).T
    return new, diag_s - (new * s_beta).sum(1)


def _ppca_factors(
    root: torch.Tensor, diag_s: torch.Tensor, rank: int, floor: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Probabilistic-PCA factors ``U (Lambda - s^2)^1/2`` with ``s^2`` the mean discarded eigenvalue."""
    evals, evecs = top_eigenpairs(root, rank, generator)
    d = root.shape[1]
    s2 = max(float((diag_s.sum() - evals.sum()) / (d - rank)), floor)
    return evecs * (evals - s2).clamp_min(0).sqrt()


def top_eigenpairs(
    root: torch.Tensor, rank: int, generator: torch.Generator | None = None, power_iters: int = 6
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``rank`` leading eigenpairs of ``S = root^T root`` without forming a large ``S``.

    Exact (``eigh`` of the smaller Gram matrix) when ``min(N, d) <= 2048``; otherwise a randomized range
    finder with power iterations (Halko, Martinsson & Tropp 2011, Alg. 4.4) seeded by ``generator``.
    """
    n, d = root.shape
    if d <= 2048:
        evals, evecs = torch.linalg.eigh(root.T @ root)
        return evals[-rank:].flip(0).clamp_min(0), evecs[:, -rank:].flip(1)
    if n <= 2048:
        evals, u = torch.linalg.eigh(root @ root.T)
        evals, u = evals[-rank:].flip(0).clamp_min(0), u[:, -rank:].flip(1)
        vecs = root.T @ u
        return evals, vecs / vecs.norm(dim=0).clamp_min(1e-300)
    probe = torch.randn(d, rank + 10, generator=generator, dtype=root.dtype).to(root.device)
    q, _ = torch.linalg.qr(root.T @ (root @ probe))
    for _ in range(power_iters):
        q, _ = torch.linalg.qr(root.T @ (root @ q))
    small = root @ q
    evals, v = torch.linalg.eigh(small.T @ small)
    return evals[-rank:].flip(0).clamp_min(0), (q @ v)[:, -rank:].flip(1)


# ------------------------------------------------------------------------------------------------
# PFGM++ prior
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PFGMPPLaw:
    """The PFGM++ prior at ``sigma_max`` for ``data_dim = N`` and ``augmented_dim = D`` (module docstring).

    ``(R / r)^2 ~ BetaPrime(N/2, D/2)`` with ``r = sigma_max * sqrt(D)``, direction uniform; ``D = math.inf``
    is the Gaussian ``N(0, sigma_max^2 I_N)``.
    """

    data_dim: int
    augmented_dim: float
    sigma_max: float

    def __post_init__(self) -> None:
        if not isinstance(self.data_dim, (int, np.integer)) or self.data_dim < 1:
            raise ValueError(f"data_dim must be a positive int, got {self.data_dim!r}.")
        if not self.augmented_dim > 0:
            raise ValueError(
                f"augmented_dim D must be > 0 (math.inf for the Gaussian), got {self.augmented_dim!r}."
            )
        if not (self.sigma_max > 0 and math.isfinite(self.sigma_max)):
            raise ValueError(f"sigma_max must be a positive finite number, got {self.sigma_max!r}.")

    @property
    def gaussian(self) -> bool:
        return math.isinf(self.augmented_dim)

    def radii(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Radii ``R`` (float64, ``(n,)``): ``(R / r)^2 = G_N / G_D`` from two Gamma variables
        (``D = inf``: ``R = sigma_max * chi_N``). The Gamma draws use NumPy (torch's Gamma sampler takes no
        generator), seeded from ``generator`` so a seeded run is reproducible."""
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        g_n = rng.standard_gamma(self.data_dim / 2, size=num_samples)
        if self.gaussian:
            radius_sq = self.sigma_max**2 * 2 * g_n
        else:
            g_d = rng.standard_gamma(self.augmented_dim / 2, size=num_samples)
            radius_sq = self.sigma_max**2 * self.augmented_dim * g_n / g_d  # r^2 * G_N / G_D
        return torch.from_numpy(np.sqrt(radius_sq))

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws ``(n, N)``: radius from :meth:`radii`, uniform direction ``g / |g|`` with ``g ~ N(0, I_N)``.
        ``D = inf`` returns ``sigma_max * g`` exactly (the Gaussian)."""
        g = torch.randn(num_samples, self.data_dim, generator=generator, dtype=torch.float64)
        if self.gaussian:
            return self.sigma_max * g
        return g / g.norm(dim=1, keepdim=True) * self.radii(num_samples, generator)[:, None]

    def radius_cdf(self, radius) -> np.ndarray:
        """CDF of the radius: ``BetaPrime(N/2, D/2).cdf((R / r)^2)``, ``chi_N(scale=sigma_max)`` for
        ``D = inf`` (needs scipy)."""
        from scipy import stats  # optional dependency, imported when used

        radius = np.asarray(radius, dtype=np.float64)
        if self.gaussian:
            return stats.chi(self.data_dim, scale=self.sigma_max).cdf(radius)
        r = self.sigma_max * math.sqrt(self.augmented_dim)
        return stats.betaprime(self.data_dim / 2, self.augmented_dim / 2).cdf((radius / r) ** 2)
