"""Second-order steps read off the denoising trajectory (Chen et al., "A Geometric Perspective on Diffusion
Models", arXiv 2305.19947; AMED, Zhou et al., arXiv 2312.00094).

In sigma coordinates the probability-flow ODE is ``dy/dsigma = d = (y - D) / sigma``. Differentiating once
more, ``y'' = (y' - D') / sigma - (y - D) / sigma^2 = -D' / sigma``: the curvature of the sampling trajectory
is minus the velocity of the *denoising trajectory* ``sigma -> D(y(sigma), sigma)`` divided by sigma (paper A,
v2/v3 abstract). Every second-order step is therefore the Euler step (a convex combination of ``y`` and ``D``,
:func:`~diffusers_geo.solvers.euler.euler_step`) plus ``h^2 / 2 * y''`` with some finite difference for
``D'``, ``h = sigma_next - sigma``:

* :func:`heun_step`: a forward difference at an Euler-predicted point ``s`` (Heun, Karras et al. 2022,
  Alg. 1, for ``r = 1``; the generalised DPM-Solver-2 direction of AMED, Table 1, for ``r < 1``);
* :func:`multistep_step`: the backward difference of the denoising trajectory over the previous step,
  extrapolated to the step's geometric midpoint; one model evaluation per step (an Adams–Bashforth-2-like
  predictor, which coincides with DPM-Solver++(2M), Lu et al., arXiv 2211.01095, Alg. 2);
* :func:`heun_corrector`: Heun's corrector (the trapezoidal mean of the denoiser at both ends of a step)
  with the *next* step's evaluation, so the one-evaluation variant is Heun's method whose predictor
  evaluation is shared with the next step (predict–evaluate–correct), and
  :func:`transfer_correction`, which moves that evaluation to the corrected point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .euler import euler_step


def intermediate_sigma(sigma: float, sigma_next: float, r: float) -> float:
    """The evaluation point ``s = sigma^(1 - r) * sigma_next^r`` of a two-stage step (AMED, §3.2):
    ``r = 1`` gives ``sigma_next`` (Heun), ``r = 1/2`` the geometric midpoint (DPM-Solver-2). From
    ``sigma = inf`` every such point is infinite: the step evaluates at ``sigma_next``."""
    if r == 1.0 or math.isinf(sigma):
        return sigma_next
    return sigma ** (1.0 - r) * sigma_next**r


def heun_step(
    y: torch.Tensor,
    denoised: torch.Tensor,
    denoised_mid: torch.Tensor,
    sigma: float,
    sigma_next: float,
    sigma_mid: float,
    r: float,
) -> torch.Tensor:
    """Second stage of a two-evaluation step, in denoiser form.

    The first stage is the Euler predictor ``y_s = euler_step(y, D, sigma, s)``; ``denoised_mid = D(y_s, s)``.
    The step direction ``(1/(2r)) d(y_s, s) + (1 - 1/(2r)) d(y, sigma)`` (AMED, Table 1) equals
    ``d(y, sigma) - (D_s - D) / (2 r s)``, because ``y_s - s * d(y, sigma) = y - sigma * d(y, sigma) = D``. So

        y_next = euler_step(y, D, sigma, sigma_next) - h / (2 r s) * (D_s - D),

    the Euler step plus the change of the denoiser over the predictor step (a forward difference for ``D'``).
    """
    h = sigma_next - sigma
    return euler_step(y, denoised, sigma, sigma_next) - (h / (2 * r * sigma_mid)) * (denoised_mid - denoised)


def _log_steps(sigma_prev: float, sigma: float, sigma_next: float) -> tuple[float, float]:
    """``h = log(sigma / sigma_next)`` and ``h_prev = log(sigma_prev / sigma)`` (steps in ``lambda = -log sigma``)."""
    return math.log(sigma / sigma_next), math.log(sigma_prev / sigma)


def multistep_weight(sigma_prev: float, sigma: float, sigma_next: float) -> float:
    """Weight ``w = (1 - sigma_next / sigma) * h / (2 h_prev) >= 0`` of the backward difference
    ``D_n - D_{n-1}`` in :func:`multistep_step` (steps ``h``, ``h_prev`` in log sigma).

    For a locally linear denoiser ``D = a * y`` (``0 <= a <= 1``, e.g. Gaussian data) the step is the
    recurrence ``y_{n+1} = (q + (1 - q) a (1 + rho)) y_n - a w y_{n-1}`` (``q = sigma_next / sigma``,
    ``rho = h / (2 h_prev)``), whose roots stay in the unit disc (Schur–Cohn) exactly while ``a w < 1``; so
    ``w < 1`` is stable for every such denoiser. Smooth schedules give small weights (a constant ratio
    ``q`` gives ``(1 - q) / 2 <= 1/2``); a step much longer than the previous one gives large ones.
    """
    if sigma_next == 0:
        return math.inf
    h, h_prev = _log_steps(sigma_prev, sigma, sigma_next)
    return (1.0 - sigma_next / sigma) * h / (2.0 * h_prev)


def multistep_step(
    y: torch.Tensor,
    denoised: torch.Tensor,
    denoised_prev: torch.Tensor,
    sigma_prev: float,
    sigma: float,
    sigma_next: float,
) -> torch.Tensor:
    """One-evaluation second-order step (the predictor of the "geometric Heun" read as a multistep method):
    the Euler step -- a convex combination of ``y`` and a denoiser output -- taken with the denoising
    trajectory extrapolated linearly in ``log sigma`` from its last two points to the step's geometric
    midpoint ``sqrt(sigma * sigma_next)`` (AMED's intermediate point r = 1/2) instead of a new evaluation:

        D_mid  = D_n + h / (2 h_prev) * (D_n - D_{n-1}),   h = log(sigma_n / sigma_{n+1}),
                                                             h_prev = log(sigma_{n-1} / sigma_n),
        y_next = sigma_next / sigma * y + (1 - sigma_next / sigma) * D_mid.

    Second order: the Euler step is exact for a constant denoiser, and the midpoint value of a denoiser
    linear in log sigma matches its weighted mean over the step up to ``O(h^2)``. This is DPM-Solver++(2M)
    (Lu et al., arXiv 2211.01095, Alg. 2) in sigma coordinates; the tests check that they coincide.
    """
    h, h_prev = _log_steps(sigma_prev, sigma, sigma_next)
    denoised_mid = denoised + (h / (2.0 * h_prev)) * (denoised - denoised_prev)
    return euler_step(y, denoised_mid, sigma, sigma_next)


def heun_corrector(
    y_prev: torch.Tensor,
    denoised_prev: torch.Tensor,
    denoised: torch.Tensor,
    sigma_prev: float,
    sigma: float,
) -> torch.Tensor:
    """Heun's corrector for the step ``sigma_prev -> sigma`` in denoiser form: the Euler step from ``y_prev``
    with the trapezoidal mean ``(D_{n-1} + D_n) / 2`` of the denoiser at both ends,

        y_n = sigma / sigma_prev * y_prev + (1 - sigma / sigma_prev) * (D_{n-1} + D_n) / 2,

    where ``D_n`` is the model's output at the *predicted* ``y_n`` (the call the next step makes anyway):
    a predict–evaluate–correct step that costs no extra evaluation (Heun's method with its predictor
    evaluation shared with the next step; cf. Chen et al., arXiv 2305.19947, on second-order steps as
    finite differences of the denoising trajectory).
    """
    return euler_step(y_prev, 0.5 * (denoised_prev + denoised), sigma_prev, sigma)


def transfer_correction(
    denoised: torch.Tensor, correction: torch.Tensor, sigma: float, sigma_data: float
) -> torch.Tensor:
    """The denoiser output at the corrected point ``y + correction`` from the one at the predicted point
    ``y``, to first order: ``D + J * correction`` with the Jacobian ``J = sigma_data^2 / (sigma_data^2 +
    sigma^2)`` of the optimal denoiser of data with per-dimension variance ``sigma_data^2`` (EDM's
    ``c_skip``, Karras et al. 2022, Table 1). ``J -> 1`` as ``sigma -> 0`` (the correction passes through
    unchanged), ``J -> 0`` for large sigma (the denoiser barely depends on ``y``)."""
    return denoised + (sigma_data**2 / (sigma_data**2 + sigma**2)) * correction


# --------------------------------------------------------------------------------------------------
# the scheduler's two modes, one call at a time (the state is what a call leaves for the next one)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeunState:
    """What one call leaves for the next: its noise level, the sample and denoiser output it used, and (the
    one-evaluation mode) the sample it predicted for the next call, which that call corrects."""

    sigma: float
    y: torch.Tensor
    denoised: torch.Tensor
    y_predicted: torch.Tensor | None = None


def heun_call(
    y: torch.Tensor,
    denoised: torch.Tensor,
    sigma: float,
    sigma_next: float,
    first_stage: HeunState | None,
    r: float = 1.0,
    infinite_sigma: float = math.inf,
) -> tuple[torch.Tensor, HeunState | None]:
    """One call of the two-evaluation step (Heun for ``r = 1``, AMED's intermediate point otherwise).

    Without ``first_stage`` this is the first stage: the Euler predictor to the evaluation point
    ``sigma_next`` (:func:`intermediate_sigma`), returning the state the second stage needs. With it, the
    second stage: :func:`heun_step` from the first stage's point to ``sigma_next``. A final step to 0 is a
    single Euler call (it returns ``D``).

    A step from ``sigma = inf`` (a flow model's first, from pure noise) has no Heun limit: the forward
    difference of :func:`heun_step` is weighted by ``h = -inf``. Its second stage is the trapezoidal rule in
    denoiser form instead, :func:`heun_corrector` (``sigma_next * u + (D_inf + D_next) / 2``), which has one,
    so the step keeps its two calls and diffusers' order-2 layout (img2img slicing) holds. A step from
    ``sigma >= infinite_sigma`` is taken the same way: the finite stand-in of a zero terminal SNR (``sigma_T =
    4096``), where the forward difference would be weighted by ``h / (2 sigma_next)``, some hundreds."""
    if first_stage is None:
        return euler_step(y, denoised, sigma, sigma_next), HeunState(sigma, y, denoised)
    start = first_stage
    if start.sigma >= infinite_sigma:
        return heun_corrector(start.y, start.denoised, denoised, start.sigma, sigma_next), None
    return heun_step(start.y, start.denoised, denoised, start.sigma, sigma_next, sigma, r), None


def multistep_call(
    y: torch.Tensor,
    denoised: torch.Tensor,
    sigma: float,
    sigma_next: float,
    previous: HeunState | None,
    corrector: bool = True,
    sigma_data: float = 0.5,
    max_weight: float | None = 2.0,
) -> tuple[torch.Tensor, torch.Tensor, HeunState]:
    """One call of the one-evaluation variant: Heun's method with its predictor evaluation shared with the
    next step. Returns ``(y_next, D, state)`` with ``D`` the denoiser output the step used.

    1. *Correct* the previous step (``previous``: the state of the call just before, or ``None``) with
       :func:`heun_corrector`, and move this call's output to the corrected point
       (:func:`transfer_correction`); ``corrector=False`` skips it. The correction is applied to the sample
       as given, so edits between calls (inpainting's blend) are kept.
    2. *Predict* with :func:`multistep_step` (DPM-Solver++(2M) on its own), or with the Euler step on a run's
       first call, on the final step to 0 (which then returns the corrected ``D``), and where the
       backward-difference weight :func:`multistep_weight` reaches ``max_weight`` (``None``: no guard).
    """
    if previous is not None and corrector:
        correction = heun_corrector(previous.y, previous.denoised, denoised, previous.sigma, sigma)
        correction = correction - previous.y_predicted
        y, denoised = y + correction, transfer_correction(denoised, correction, sigma, sigma_data)
    if (
        previous is None
        or sigma_next == 0
        or (max_weight is not None and multistep_weight(previous.sigma, sigma, sigma_next) >= max_weight)
    ):
        y_next = euler_step(y, denoised, sigma, sigma_next)
    else:
        y_next = multistep_step(y, denoised, previous.denoised, previous.sigma, sigma, sigma_next)
    return y_next, denoised, HeunState(sigma, y, denoised, y_next)
