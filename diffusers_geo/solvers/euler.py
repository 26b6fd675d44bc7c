"""First-order probability-flow step: Euler in sigma = deterministic DDIM.

Chen et al., "A Geometric Perspective on Diffusion Models" (arXiv 2305.19947), Prop. 1: the Euler step of
``dy/dsigma = (y - D) / sigma`` is a convex combination of the current sample and the denoiser output,

    y_next = (sigma_next / sigma) * y + (1 - sigma_next / sigma) * D,

which is exactly DDIM with eta = 0 (Song et al. 2021, eq. 12) after ``x = alpha * y``.
With ``sigma_next = 0`` it returns ``D`` (the "ODE-Jump").

From ``sigma = inf`` (a flow-matching model's pure noise, ``s = 1``) ``y`` is infinite; there the caller passes
the finite limit ``u = y / sigma`` (the noise sample itself) and the step is the limit of the formula,
``(sigma_next / sigma) * y -> sigma_next * u``: ``y_next = sigma_next * u + D``.
"""

from __future__ import annotations

import math

import torch


def euler_step(y: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One Euler/DDIM step from ``sigma`` to ``sigma_next`` as the convex combination above (from
    ``sigma = inf``: ``sigma_next * y + D`` with ``y`` holding ``y / sigma``)."""
    if math.isinf(sigma):
        return sigma_next * y + denoised
    ratio = sigma_next / sigma
    return ratio * y + (1 - ratio) * denoised
