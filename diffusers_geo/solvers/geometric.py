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
* :func:`multistep_step`: the backward difference ``(D_n - D_{n-1}) / (sigma_n - sigma_{n-1})`` of the
  denoising trajectory, one model evaluation per step (an Adams–Bashforth-2-like step), integrated exactly
  for a denoiser linear in sigma.
"""

from __future__ import annotations

import math

import torch

from .euler import euler_step


def intermediate_sigma(sigma: float, sigma_next: float, r: float) -> float:
    """The evaluation point ``s = sigma^(1 - r) * sigma_next^r`` of a two-stage step (AMED, §3.2):
    ``r = 1`` gives ``sigma_next`` (Heun), ``r = 1/2`` the geometric midpoint (DPM-Solver-2)."""
    if r == 1.0:
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


def multistep_coefficient(sigma: float, sigma_next: float) -> float:
    """``c = sigma_next - sigma - sigma_next * log(sigma_next / sigma)`` (``= -sigma`` for ``sigma_next = 0``).

    From ``d(y / sigma)/dsigma = -D / sigma^2`` (the PF-ODE), a denoising trajectory that is linear in sigma
    over the step, ``D(tau) = D_n + (tau - sigma) D'``, integrates exactly to
    ``y_next = euler_step(y, D_n, sigma, sigma_next) + c * D'``. To leading order ``c = -h^2 / (2 sigma)``
    (``h = sigma_next - sigma``): the Taylor term ``h^2/2 * y''`` with ``y'' = -D'/sigma``.
    """
    if sigma_next == 0:
        return -sigma
    return sigma_next - sigma - sigma_next * math.log(sigma_next / sigma)


def multistep_weight(sigma_prev: float, sigma: float, sigma_next: float) -> float:
    """Weight ``w = c / (sigma - sigma_prev) >= 0`` of the backward difference ``D_n - D_{n-1}`` in
    :func:`multistep_step` (``c`` from :func:`multistep_coefficient`).

    About ``(|h| / sigma) * (h / h_prev) / 2``: the relative step times the ratio of consecutive steps. For a
    locally linear denoiser ``D = a * y`` (``0 <= a <= 1``, e.g. Gaussian data) the step is the recurrence
    ``y_{n+1} = b y_n + a w (y_n - y_{n-1})`` with ``0 <= b <= 1``, whose roots stay in the unit disc (Schur–Cohn)
    exactly while ``a w < 1``; so ``w < 1`` is stable for every such denoiser. Smooth schedules give small
    weights (a constant ratio ``q = sigma_next / sigma`` gives about ``q (1 - q) / 2 <= 1/8``); a step much
    longer than the previous one gives large ones.
    """
    return multistep_coefficient(sigma, sigma_next) / (sigma - sigma_prev)


def multistep_step(
    y: torch.Tensor,
    denoised: torch.Tensor,
    denoised_prev: torch.Tensor,
    sigma_prev: float,
    sigma: float,
    sigma_next: float,
) -> torch.Tensor:
    """One-evaluation second-order step, the "geometric Heun" of paper A read as a multistep method:

        y_next = euler_step(y, D_n, sigma, sigma_next) + c * (D_n - D_{n-1}) / (sigma - sigma_prev),

    the Euler step plus the curvature term, with the velocity ``D'`` of the denoising trajectory taken as the
    backward difference over the previous step (which reuses the previous model evaluation) and ``c`` the
    exact integral of a denoiser linear in sigma (:func:`multistep_coefficient`, ``~ -h^2 / (2 sigma)``).
    """
    slope = (denoised - denoised_prev) / (sigma - sigma_prev)
    return euler_step(y, denoised, sigma, sigma_next) + multistep_coefficient(sigma, sigma_next) * slope
