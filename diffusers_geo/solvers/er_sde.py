"""ER-SDE-Solver: the extended reverse-time SDE and its multistep solvers of orders 1-3.

Cui, Zhang, Lu, Bao, Liao, "Elucidating the Solution Space of Extended Reverse-Time SDE for Diffusion
Models", arXiv 2309.06169 (WACV 2025). Notation: ``lam`` is the VE noise level sigma/alpha (our ``sigma``);
``phi`` is the paper's *noise scale function*; ``D`` the data prediction.

The ER SDE ``dx = [f x - (g^2 + h^2)/2 * score] dt + h dw`` keeps the marginals for every ``h >= 0``. The paper
trades ``h`` for ``phi`` through ``d log phi / dt = (g^2 + h^2) / (2 alpha^2 lam^2)``, i.e.
``h^2 = g^2 (lam phi'(lam) / phi(lam) - 1)`` (Sec. 3.1), so ``phi`` is admissible iff its *elasticity*
``d log phi / d log lam >= 1``. In ``y = x / alpha`` coordinates the exact solution from ``lam_s`` to ``lam_t``
(Sec. 3.2, eq. 10/11) is

    y_t = r y_s + phi(lam_t) * Int_{lam_t}^{lam_s} phi'(l) / phi(l)^2 * D(l) dl + sqrt(lam_t^2 - r^2 lam_s^2) z,

with ``r = phi(lam_t) / phi(lam_s)``. Expanding ``D`` in a Taylor series in ``lam`` gives the
ER-SDE-Solver-k update (Sec. 3.3, Alg. 1-3; our derivation of the coefficients by parts)

    y_t = r y_s + C0 D_s + C1 D'_s + C2 D''_s + noise,
    C0 = 1 - r,
    C1 = (lam_t - lam_s) + phi(lam_t) I1,          I1 = Int_{lam_t}^{lam_s} 1 / phi(l) dl,
    C2 = (lam_t - lam_s)^2 / 2 + phi(lam_t) I2,    I2 = Int_{lam_t}^{lam_s} (l - lam_s) / phi(l) dl,

with the derivatives estimated by backward differences of the denoiser outputs on the ``lam`` grid (one
model evaluation per step). The VP solver (eq. 11) is the same algorithm in ``x = alpha * y`` (Sec. 3.2).

Everything here is plain functions: noise-scale functions (as ``log phi``), the admissibility check,
three quadrature rules for ``I1``/``I2`` and the update itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

LogPhi = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------------
# noise scale functions, as log(phi(lam)) for numerical range (exp(lam^0.3) overflows nothing this way)
# --------------------------------------------------------------------------------------------------
def _log_exp_power(lam: np.ndarray) -> np.ndarray:
    """``log(lam * (exp(lam^0.3) + 10))`` computed without overflow: ``log lam + u + log1p(10 e^-u)``."""
    u = lam**0.3
    return np.log(lam) + u + np.log1p(10.0 * np.exp(-u))


NOISE_SCALES: dict[str, LogPhi] = {
    # name: log phi(lam)                                      official func_type, paper/ComfyUI name
    "ode": np.log,  # 1: phi = lam, h = 0: the probability-flow ODE
    "reverse-sde": lambda lam: 2.0 * np.log(lam),  # 2: phi = lam^2, h = g: Anderson's reverse SDE
    "exp-inverse": lambda lam: np.log(lam) + np.log(np.exp(-1.0 / lam) + 10.0),  # 3: lam(e^{-1/lam}+10)
    "power-1.5": lambda lam: 1.5 * np.log(lam),  # 4: phi = lam^1.5, h^2 = g^2 / 2
    "power-2.5": lambda lam: 2.5 * np.log(lam),  # 5: phi = lam^2.5, h^2 = 1.5 g^2
    "log-power": lambda lam: 0.9 * np.log(lam) + np.log(np.log10(1.0 + 100.0 * lam**1.5)),  # 6
    "exp-power": _log_exp_power,  # 7, the paper's default "ER SDE 5": phi = lam (e^{lam^0.3} + 10)
}
DEFAULT_NOISE_SCALE = "exp-power"
QUADRATURES = ("gauss-legendre", "riemann-100", "riemann-200")


def log_phi_from_callable(phi: Callable) -> LogPhi:
    """Wrap a user ``phi(lam) -> phi`` (numpy or torch in, same out) as a ``log phi`` function."""
    if not callable(phi):
        raise TypeError(f"noise_scale must be a name or a callable phi(sigma), got {type(phi).__name__}.")

    def log_phi(lam: np.ndarray) -> np.ndarray:
        value = phi(torch.as_tensor(lam, dtype=torch.float64))
        value = np.asarray(
            value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64
        )
        if value.shape != np.shape(lam) or not np.all(np.isfinite(value)) or np.any(value <= 0):
            raise ValueError(
                "A noise_scale callable must map a tensor of sigmas to finite positive values of the same "
                f"shape; got shape {value.shape} for input {np.shape(lam)} (min {np.min(value):.3g})."
            )
        return np.log(value)

    return log_phi


def with_eta(log_phi: LogPhi, eta: float) -> LogPhi:
    """``psi(lam) = lam^(1 - eta) * phi(lam)^eta``, which scales the injected noise: ``h_psi^2 = eta h_phi^2``.

    ``eta = 0`` is the ODE, ``eta = 1`` leaves ``phi`` unchanged; with ``phi = lam^2`` this is ComfyUI's
    "reverse-time SDE" ``lam^(1 + eta)`` (AYS, arXiv 2404.14507, eq. 32). Admissible whenever ``phi`` is.
    """
    if eta == 1.0:
        return log_phi
    return lambda lam: (1.0 - eta) * np.log(lam) + eta * log_phi(lam)


def elasticity(log_phi: LogPhi, lam: np.ndarray, rel_step: float = 1e-5) -> np.ndarray:
    """``d log phi / d log lam`` by a central difference in ``log lam`` (must be >= 1: Sec. 3.1)."""
    lam = np.asarray(lam, dtype=np.float64)
    up, down = lam * math.exp(rel_step), lam * math.exp(-rel_step)
    return (log_phi(up) - log_phi(down)) / (2.0 * rel_step)


def inadmissible_range(
    log_phi: LogPhi, sigma_lo: float, sigma_hi: float, points: int = 2000, tol: float = 1e-4
) -> tuple[float, float, float] | None:
    """Where on ``[sigma_lo, sigma_hi]`` the elasticity of ``phi`` drops below 1.

    Returns ``(first sigma, last sigma, minimum elasticity)`` over a dense log grid, or ``None`` if ``phi``
    is admissible there (then every step's noise variance ``lam_t^2 - r^2 lam_s^2`` is >= 0).
    """
    lam = np.geomspace(sigma_lo, sigma_hi, points)
    e = elasticity(log_phi, lam)
    bad = ~(e >= 1.0 - tol)
    if not bad.any():
        return None
    return float(lam[bad].min()), float(lam[bad].max()), float(np.nanmin(e[bad]))


#: a schedule that starts at sigma = inf is checked for admissibility up to here (log-power, the one built-in
#: scale that turns inadmissible, does so above sigma ~ 1022)
INFINITE_CHECK_SIGMA = 1e12


def ratio_at_infinity(log_phi: LogPhi) -> float:
    """``L = lim_{lam -> inf} lam / phi(lam)``, which the first step of a flow-matching run (from ``lam = inf``)
    needs: there ``r y_s = (phi(lam_t) / phi(lam_s)) lam_s u -> phi(lam_t) L u`` with ``u = y_s / lam_s``.

    For an admissible ``phi`` (elasticity >= 1) ``log(lam / phi)`` is non-increasing, so the limit exists in
    ``[0, inf)``. It is read off ``g = log lam - log phi`` at ``lam = 1e64`` and ``1e128``: equal there (to 1e-12)
    means converged (``"ode"``: 1, ``"exp-inverse"``: 1/11, to round-off), falling means ``g -> -inf``
    and ``L = 0`` (``"exp-power"``, the powers, ``"reverse-sde"``: every other built-in scale), rising means the
    scale is inadmissible at large ``lam`` (``"log-power"``) and ``inf`` is returned.
    """
    lam = np.array([1e64, 1e128])
    with np.errstate(over="ignore"):
        g = np.log(lam) - log_phi(lam)
    if not np.isfinite(g[1]):
        return 0.0 if g[1] < 0 else math.inf
    if abs(g[1] - g[0]) <= 1e-12 * max(1.0, abs(g[1])):
        return math.exp(g[1])
    return 0.0 if g[1] < g[0] else math.inf


# --------------------------------------------------------------------------------------------------
# quadrature for I1, I2 (official: left Riemann sum; accurate: Gauss-Legendre in log lam)
# --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [-1, 1] (cached: ``leggauss`` costs milliseconds)."""
    u, w = np.polynomial.legendre.leggauss(n)
    u.flags.writeable = w.flags.writeable = False
    return u, w


def quadrature_nodes(lam_t: float, lam_s: float, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of ``Int_{lam_t}^{lam_s} f(l) dl`` (``0 < lam_t < lam_s``).

    * ``"riemann-100"`` / ``"riemann-200"``: the left Riemann sums of the official code (100 points) and
      ComfyUI (200 points): nodes ``lam_t + k/n (lam_s - lam_t)``, ``k = 0..n-1``. They are first-order
      accurate (their errors on the paper's 20-step Karras grid: ``docs/er_sde.md``).
    * ``"gauss-legendre"``: 32-point Gauss-Legendre in ``u = log l`` (``dl = l du``), where the integrands
      ``l / phi(l)`` are smooth; exact to round-off for every built-in ``phi`` on the grids we use.
    """
    if rule.startswith("riemann-"):
        n = int(rule.split("-")[1])
        width = (lam_s - lam_t) / n
        return lam_t + width * np.arange(n), np.full(n, width)
    if rule == "gauss-legendre":
        u, w = _gauss_legendre(32)
        a, b = math.log(lam_t), math.log(lam_s)
        log_l = 0.5 * (b - a) * u + 0.5 * (a + b)
        nodes = np.exp(log_l)
        return nodes, 0.5 * (b - a) * w * nodes
    raise ValueError(f"Unknown quadrature {rule!r}; choose one of {list(QUADRATURES)}.")


# --------------------------------------------------------------------------------------------------
# per-step coefficients (schedule-only: computed once in set_timesteps)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ERSDECoefficients:
    """Coefficients of one step ``lam_s -> lam_t`` (python floats, float64 precision).

    ``y_t = r y_s + c0 D + c1 D' + c2 D'' + noise_std * z``; ``to_zero`` marks the final step to
    ``lam_t = 0``, which returns ``D`` (Sec. 3.3; the limit ``r = phi(0) / phi(lam_s) = 0``). A step from
    ``lam_s = inf`` (a flow model's first) holds the limits: ``r`` multiplies ``u = y_s / lam_s`` (see
    :func:`ratio_at_infinity`), ``c0 = 1``. Later steps may keep ``(inf, D)`` in their history: the backward
    differences through it are 0 in the limit, and :func:`history_weights` gives exactly 0 for it.
    """

    r: float
    c0: float
    c1: float
    c2: float
    noise_std: float
    to_zero: bool = False


def step_coefficients(log_phi: LogPhi, lam_s: float, lam_t: float, quadrature: str) -> ERSDECoefficients:
    """``r``, ``C0``, ``C1``, ``C2`` and the noise std ``sqrt(lam_t^2 - r^2 lam_s^2)`` of one step.

    ``phi(lam_t) * Int g(l) / phi(l) dl`` is evaluated as ``Int g(l) exp(log phi(lam_t) - log phi(l)) dl``
    so nothing overflows for large ``lam``. The noise variance is formed as ``(lam_t - r lam_s)(lam_t + r
    lam_s)`` in float64 and clamped at 0 (it is exactly 0 for the ODE; round-off must not make it NaN).
    """
    if lam_t == 0.0:
        return ERSDECoefficients(r=0.0, c0=1.0, c1=0.0, c2=0.0, noise_std=0.0, to_zero=True)
    if math.isinf(lam_s):
        # the first step of a flow-matching run: y holds u = y / lam_s, so ``r`` is the weight on u,
        # lim r lam_s = phi(lam_t) L; C0 = 1 - r -> 1; no derivative terms (no history before it)
        r_u = math.exp(float(log_phi(np.array([lam_t]))[0])) * ratio_at_infinity(log_phi)
        variance = (lam_t - r_u) * (lam_t + r_u)
        return ERSDECoefficients(r=r_u, c0=1.0, c1=0.0, c2=0.0, noise_std=math.sqrt(max(variance, 0.0)))
    log_phi_t, log_phi_s = log_phi(np.array([lam_t, lam_s], dtype=np.float64))
    r = math.exp(log_phi_t - log_phi_s)
    nodes, weights = quadrature_nodes(lam_t, lam_s, quadrature)
    ratio = np.exp(log_phi_t - log_phi(nodes)) * weights  # phi(lam_t) / phi(l) dl
    phi_i1 = float(ratio.sum())
    phi_i2 = float((ratio * (nodes - lam_s)).sum())
    h = lam_t - lam_s
    variance = (lam_t - r * lam_s) * (lam_t + r * lam_s)
    return ERSDECoefficients(
        r=r,
        c0=1.0 - r,
        c1=h + phi_i1,
        c2=0.5 * h * h + phi_i2,
        noise_std=math.sqrt(max(variance, 0.0)),
    )


def schedule_coefficients(
    log_phi: LogPhi, sigmas: Sequence[float], quadrature: str
) -> list[ERSDECoefficients]:
    """:func:`step_coefficients` for every step of a decreasing schedule (N + 1 values)."""
    return [
        step_coefficients(log_phi, float(s), float(t), quadrature)
        for s, t in zip(sigmas[:-1], sigmas[1:], strict=True)
    ]


# --------------------------------------------------------------------------------------------------
# the update
# --------------------------------------------------------------------------------------------------
def backward_differences(
    history: Sequence[tuple[float, torch.Tensor]], order: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Estimates of ``D'`` and ``D''`` on the ``lam`` grid from the last ``order`` denoiser outputs
    (Sec. 3.3, Alg. 2-3): with ``history = [..., (lam_{i-2}, D_{i-2}), (lam_{i-1}, D_{i-1}), (lam_i, D_i)]``,

        D1_i = (D_i - D_{i-1}) / (lam_i - lam_{i-1}),    D2_i = 2 (D1_i - D1_{i-1}) / (lam_i - lam_{i-2}).

    ``D2`` is the second derivative (the 1/2 of the Taylor term sits in ``C2``). ``D1`` is a chord slope
    used as the derivative at ``lam_i`` (as in the paper's code), so order 3 is not exact for quadratic ``D``.
    """
    if order < 2:
        return None, None
    (lam_1, den_1), (lam_0, den_0) = history[-2], history[-1]
    d1 = (den_0 - den_1) / (lam_0 - lam_1)
    if order < 3:
        return d1, None
    lam_2, den_2 = history[-3]
    d1_prev = (den_1 - den_2) / (lam_1 - lam_2)
    return d1, 2.0 * (d1 - d1_prev) / (lam_0 - lam_2)


def history_weights(coeffs: ERSDECoefficients, lams: Sequence[float]) -> list[float]:
    """The update's data terms ``C0 D + C1 D1 + C2 D2`` as weights on the raw outputs ``D_i, D_{i-1}, ...``.

    ``lams = [lam_i, lam_{i-1}, lam_{i-2}][:order]``. Expanding :func:`backward_differences` with
    ``h1 = lam_i - lam_{i-1}``, ``h2 = lam_{i-1} - lam_{i-2}``, ``H = lam_i - lam_{i-2}``:

        C0 D_i + C1 (D_i - D_{i-1}) / h1 + C2 * 2/H * ((D_i - D_{i-1}) / h1 - (D_{i-1} - D_{i-2}) / h2).

    Same update, one fused multiply-add per history entry (what the scheduler runs each step).
    """
    weights = [coeffs.c0]
    if len(lams) >= 2:
        h1 = lams[0] - lams[1]
        weights[0] += coeffs.c1 / h1
        weights.append(-coeffs.c1 / h1)
    if len(lams) >= 3:
        h2, big_h = lams[1] - lams[2], lams[0] - lams[2]
        k = 2.0 * coeffs.c2 / big_h
        weights[0] += k / h1
        weights[1] -= k * (1.0 / h1 + 1.0 / h2)
        weights.append(k / h2)
    return weights


def er_sde_step(
    y: torch.Tensor,
    denoised: torch.Tensor,
    coeffs: ERSDECoefficients,
    d1: torch.Tensor | None = None,
    d2: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """ER-SDE-Solver-k step in VE coordinates (Alg. 1-3): ``y_t = r y + C0 D + C1 D' + C2 D'' + std z``.

    ``d1``/``d2`` select the order (``None`` drops the term); ``noise`` is standard normal (``None`` or a
    zero ``noise_std`` adds none). The final step to ``lam = 0`` returns ``D`` with no noise.
    """
    if coeffs.to_zero:
        return denoised
    y_next = coeffs.r * y + coeffs.c0 * denoised
    if d1 is not None:
        y_next = y_next + coeffs.c1 * d1
    if d2 is not None:
        y_next = y_next + coeffs.c2 * d2
    if noise is not None and coeffs.noise_std > 0.0 and s_noise != 0.0:
        y_next = y_next + (s_noise * coeffs.noise_std) * noise
    return y_next


def er_sde_multistep(
    y: torch.Tensor,
    history: Sequence[tuple[float, torch.Tensor]],
    coeffs: ERSDECoefficients,
    noise: Callable[[], torch.Tensor] | None = None,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """:func:`er_sde_step` with ``D'``, ``D''`` from the stored outputs ``history = [(lam_i, D_i), (lam_{i-1},
    D_{i-1}), ...]`` (newest first; its length is the order), computed as :func:`history_weights` on the raw
    outputs: the same update (``tests/test_er_sde.py`` checks them equal), one fused multiply-add per stored
    output and no temporaries, which is what the scheduler runs. ``noise()`` draws standard normal noise
    (``None``: none). The final step to ``lam = 0`` returns ``D_i``."""
    if coeffs.to_zero:
        return history[0][1]
    weights = history_weights(coeffs, [lam for lam, _ in history])
    y_next = y * coeffs.r  # a fresh tensor: the in-place adds below never touch the caller's sample
    for w, (_, d) in zip(weights, history, strict=True):
        y_next.add_(d, alpha=w)
    if noise is not None and coeffs.noise_std > 0.0 and s_noise != 0.0:
        y_next.add_(noise(), alpha=s_noise * coeffs.noise_std)
    return y_next
