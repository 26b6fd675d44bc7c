"""The reference first-order scheduler: deterministic DDIM as an Euler step in sigma."""

from __future__ import annotations

import torch

from ..solvers import euler_step
from .base import GeoScheduler, NoiseSource, scheduler_config


class SigmaDDIMScheduler(GeoScheduler):
    """Deterministic DDIM (Song et al. 2021, eq. 12 with eta = 0), written as the Euler step of the
    probability-flow ODE in sigma coordinates (Chen et al., arXiv 2305.19947, Prop. 1):
    ``y_next = (sigma_next / sigma) * y + (1 - sigma_next / sigma) * D``.

    It is the reference the other diffusers-geo schedulers reduce to (ER-SDE with phi(x)=x at order 1,
    gradient estimation with gamma=1), and matches diffusers' ``DDIMScheduler(timestep_spacing="trailing")``
    on the same schedule to float32 round-off. Takes every option of :class:`GeoScheduler`.
    """

    serves_per_token_timesteps = True  # the memoryless Euler step (LTXConditionPipeline's conditioning)

    @scheduler_config
    def __init__(self, **base_config):
        super().__init__(**base_config)

    def solver_step(
        self, y: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float, noise: NoiseSource
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return euler_step(y, denoised, sigma, sigma_next), denoised
