"""Gradient estimation: projection-corrected DDIM (Permenter & Yuan, ICML 2024, arXiv 2306.04848).

The paper reads DDIM as gradient descent on ``f(y) = 1/2 dist_K(y)^2`` with step size
``1 - sigma_next / sigma``, where the noise prediction ``sigma * eps(y, sigma)`` estimates the gradient
``y - proj_K(y)``. Because that gradient is (nearly) constant along the segment from ``y`` to its
projection, two successive predictions estimate the *same* vector, and the paper combines them to cancel the
error of the older one (eq. (12), Algorithm 2):

    eps_bar_k = gamma * eps_k + (1 - gamma) * eps_{k+1},          (eq. 12; gamma = 2 by default)
    y_{k-1}   = y_k + (sigma_{k-1} - sigma_k) * eps_bar_k,         (DDIM step with the corrected eps)

``eps_{k+1}`` being the *raw* prediction of the previous step (no recursion), and ``eps_bar_N = eps_N`` on
the first step. ``gamma = 1`` is DDIM. The blend is in eps (equivalently ``d = (y - D) / sigma``) space;
blending the two x0 predictions instead is a different algorithm (see :func:`corrected_denoised`).

The noise-injecting generalisation (paper, Appendix A; the authors' ``smalldiffusion``) splits the step at
``sigma_hat`` with ``sigma_next = sigma^mu * sigma_hat^(1 - mu)`` and adds back ``eta = sqrt(sigma_next^2 -
sigma_hat^2)`` of fresh noise: ``mu = 0`` is deterministic, ``mu = 1/2`` is DDPM (Euler-ancestral, eta = 1).

The schedule of the paper (its "second modification" of DDIM) is log-linear in sigma, i.e. a constant
gradient-descent step size, from a start sigma below the model's maximum, with every sigma snapped *up* to a
trained timestep: :func:`diffusers_geo.schedules.log_linear.log_linear_timesteps`.

Everything here is in sigma coordinates (``y = x / alpha = x0 + sigma * eps``); no diffusers import.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


# --------------------------------------------------------------------------------------------------
# the update (Algorithm 2 with eq. (12); Appendix A for mu > 0)
# --------------------------------------------------------------------------------------------------
def noise_prediction(y: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
    """``eps = (y - D) / sigma``; at ``sigma = inf``, where ``y`` holds ``y / sigma`` (a flow model's pure noise),
    its limit ``y``."""
    if math.isinf(sigma):
        return y
    return (y - denoised) / sigma


def corrected_epsilon(eps: torch.Tensor, eps_prev: torch.Tensor | None, gamma: float) -> torch.Tensor:
    """``eps_bar = gamma * eps + (1 - gamma) * eps_prev`` (eq. 12); ``eps`` itself on the first step."""
    if eps_prev is None:
        return eps
    return gamma * eps + (1 - gamma) * eps_prev


def velocity_corrected_epsilon(
    eps: torch.Tensor,
    velocity: torch.Tensor,
    velocity_prev: torch.Tensor | None,
    sigma: float,
    gamma: float,
) -> torch.Tensor:
    """Eq. 12 applied to a flow model's velocity instead of its noise prediction (ComfyUI's
    ``gradient_estimation`` on flow models, which blends its ``d = (x - D) / s`` in the model's own coordinates).

    A flow model samples ``x = y / (1 + sigma)`` at ``s = sigma / (1 + sigma)``, where the ODE's velocity is
    ``v = dx/ds = eps - D``. Correcting it, ``x_next = x + (s_next - s) * (gamma * v + (1 - gamma) * v_prev)``,
    is in sigma coordinates the DDIM step ``y_next = y + (sigma_next - sigma) * eps_bar`` with

        eps_bar = eps + (gamma - 1) * (v - v_prev) / (1 + sigma),   v = eps - D,

    since ``(1 + sigma_next) * (s_next - s) = (sigma_next - sigma) / (1 + sigma)``. After an uncorrected step
    (a run's second step) ``D - D_prev = -sigma * (eps - eps_prev)``, and this equals the paper's correction
    (:func:`corrected_epsilon`); from the third step on they differ. ``gamma = 1`` is DDIM for both. ``eps``
    itself on the first step (``velocity_prev`` is ``None``)."""
    if velocity_prev is None:
        return eps
    return eps + ((gamma - 1) / (1 + sigma)) * (velocity - velocity_prev)


def corrected_denoised(y: torch.Tensor, eps_bar: torch.Tensor, sigma: float) -> torch.Tensor:
    """The corrected projection estimate ``x0_bar = y - sigma * eps_bar`` (what ``pred_original_sample`` is).

    In x0 terms ``x0_bar = gamma * D_k + (1 - gamma) * (y_k - sigma_k * eps_{k+1})``: the previous *noise*
    estimate re-anchored at the current point, not the previous x0 prediction."""
    return y - sigma * eps_bar


def noise_split(sigma: float, sigma_next: float, mu: float) -> tuple[float, float]:
    """``(sigma_hat, eta)`` of the stochastic step (Appendix A): ``sigma_next = sigma^mu sigma_hat^(1-mu)``
    and ``eta = sqrt(sigma_next^2 - sigma_hat^2)``. ``mu = 0`` gives ``(sigma_next, 0)``; a final step to
    ``sigma_next = 0`` is always deterministic."""
    if mu == 0 or sigma_next == 0:
        return sigma_next, 0.0
    sigma_hat = (sigma_next / sigma**mu) ** (1 / (1 - mu))
    return sigma_hat, math.sqrt(max(sigma_next**2 - sigma_hat**2, 0.0))


def gradient_estimation_step(
    y: torch.Tensor,
    eps_bar: torch.Tensor,
    sigma: float,
    sigma_next: float,
    mu: float = 0.0,
    noise: Callable[[], torch.Tensor] | None = None,
    denoised: torch.Tensor | None = None,
) -> torch.Tensor:
    """``y_next = y + (sigma_hat - sigma) * eps_bar + eta * w`` (Algorithm 2; Appendix A for ``mu > 0``).

    With ``mu = 0`` this is ``y + (sigma_next - sigma) * eps_bar``: DDIM driven by the corrected eps.
    ``noise`` draws ``w ~ N(0, I)`` and is called only when ``eta > 0``. From ``sigma = inf`` (a flow model's
    first step, uncorrected: ``eps_bar = eps``) the limit ``D + sigma_hat * eps_bar`` is taken, since
    ``y - sigma * eps = D``; it needs ``denoised``. There ``sigma_hat = 0`` for ``mu > 0``: the step lands on
    ``D`` and adds ``eta = sigma_next`` of fresh noise.
    """
    sigma_hat, eta = noise_split(sigma, sigma_next, mu)
    if math.isinf(sigma):
        if denoised is None:
            raise ValueError("A step from sigma = inf needs the denoiser output (y - sigma * eps = D).")
        y_next = denoised + sigma_hat * eps_bar
    else:
        y_next = y + (sigma_hat - sigma) * eps_bar
    if eta > 0:
        if noise is None:
            raise ValueError("mu > 0 needs a noise source.")
        y_next = y_next + eta * noise()
    return y_next


@dataclass(frozen=True)
class GEState:
    """What a step leaves for the next: its raw ``eps`` and, with noise injection (``mu > 0``), the level
    ``sigma_hat`` its drift reached and the noise ``eta * w`` it added."""

    eps: torch.Tensor
    sigma_hat: float
    injected: torch.Tensor | None = None
    velocity: torch.Tensor | None = None  # v = eps - D, kept for correction="velocity"

    def eps_at(self, sigma: float) -> torch.Tensor:
        """The eps this step implies at the next point (level ``sigma``) if the denoiser did not change:
        ``(sigma_hat * eps + eta * w) / sigma``. Deterministic steps (no noise) give ``eps`` itself, so
        ``mu = 0`` is the paper's correction exactly."""
        if self.injected is None:
            return self.eps
        return (self.sigma_hat * self.eps + self.injected) / sigma


def gradient_estimation_call(
    y: torch.Tensor,
    denoised: torch.Tensor,
    sigma: float,
    sigma_next: float,
    previous: GEState | None,
    gamma: float = 2.0,
    mu: float = 0.0,
    noise: Callable[[], torch.Tensor] | None = None,
    correction: str = "noise",
) -> tuple[torch.Tensor, torch.Tensor, GEState]:
    """One step of the sampler the scheduler runs: ``(y_next, x0_bar, state)`` with ``x0_bar`` the corrected
    projection (:func:`corrected_denoised`; ``D`` itself on a step from ``sigma = inf``).

    ``eps = (y - D) / sigma`` (:func:`noise_prediction`), ``eps_bar = gamma * eps + (1 - gamma) * eps_ref`` (eq. 12) with ``eps_ref`` what the previous step implies
    at this point (:meth:`GEState.eps_at`), then :func:`gradient_estimation_step`. For ``mu = 0``
    ``eps_ref = eps_{k+1}``, the paper's correction. With noise injection the previous raw eps is *not* an
    estimate of the same vector: the step moved ``y`` to ``sigma_hat`` and added ``eta * w``, so even an
    unchanged denoiser gives ``eps_k = (sigma_hat eps_{k+1} + eta w) / sigma_k``; correcting against the raw
    ``eps_{k+1}`` extrapolates the injected noise with ``gamma`` and diverges at few steps (the FD against
    the fixed correction: ``docs/projection_ddim.md``). Against ``eps_ref`` the correction
    measures only the change of the denoiser, as in the deterministic case (``docs/projection_ddim.md``).

    ``correction="velocity"`` (deterministic only) blends a flow model's velocity ``v = eps - D`` instead
    (:func:`velocity_corrected_epsilon`, ComfyUI's variant); the state then keeps ``v``.
    """
    eps = noise_prediction(y, denoised, sigma)
    velocity = eps - denoised if correction == "velocity" else None
    if velocity is not None:
        velocity_prev = None if previous is None else previous.velocity
        eps_bar = velocity_corrected_epsilon(eps, velocity, velocity_prev, sigma, gamma)
    else:
        eps_ref = None if previous is None else previous.eps_at(sigma)
        eps_bar = corrected_epsilon(eps, eps_ref, gamma)
    sigma_hat, eta = noise_split(sigma, sigma_next, mu)
    w = noise() if eta > 0 and noise is not None else None  # drawn here: the next step's eps_at needs it
    y_next = gradient_estimation_step(
        y, eps_bar, sigma, sigma_next, mu, noise if w is None else lambda: w, denoised
    )
    injected = None if w is None else eta * w
    x0_bar = denoised if math.isinf(sigma) else corrected_denoised(y, eps_bar, sigma)
    return y_next, x0_bar, GEState(eps, sigma_hat, injected, velocity)


def gradient_estimation_step_d(
    y: torch.Tensor,
    denoised: torch.Tensor,
    d_prev: torch.Tensor | None,
    sigma: float,
    sigma_next: float,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same deterministic step in the k-diffusion "d" form: ``d = (y - D) / sigma``, an Euler step
    ``y + d * dt`` and then the correction ``(gamma - 1) * (d - d_prev) * dt`` (``dt = sigma_next - sigma``).

    Algebraically identical to :func:`gradient_estimation_step` with ``mu = 0`` (``d`` is ``eps``).
    Returns ``(y_next, d)``; pass ``d`` as ``d_prev`` to the next step.
    """
    d = (y - denoised) / sigma
    dt = sigma_next - sigma
    y_next = y + d * dt
    if d_prev is not None:
        y_next = y_next + (gamma - 1) * (d - d_prev) * dt
    return y_next, d
