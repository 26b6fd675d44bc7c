"""The one coordinate system of diffusers-geo and the conversions into it (no diffusers import).

Every solver works on ``y = x / alpha`` with the VE noise level ``sigma``, so that
``y = x0 + sigma * eps`` and the probability-flow ODE reads ``dy/dsigma = (y - D(y, sigma)) / sigma``
(Karras et al. 2022, eq. 1 with s(t)=1; Song et al. 2021, eq. 13 after the change of variables).

A *parameterisation* says how a pipeline's sample ``x`` relates to ``y``:

* :class:`DiscreteVP` (DDPM / Stable Diffusion): ``x = alpha * y`` with ``alpha = 1/sqrt(1 + sigma^2)``
  and ``sigma = sqrt((1 - abar) / abar)``; the model is called at a training timestep.
* A flow-matching model (SD3 / Flux, ``x = (1 - s) x0 + s eps``) is the same picture with
  ``alpha = 1 - s = 1 / (1 + sigma)``, ``sigma = s / (1 - s)``: one more class with ``alpha``,
  ``timestep_of`` and ``sigma_of``, and one more prediction type in :func:`to_denoised`.
"""

from __future__ import annotations

import torch

from .schedules import sigma_to_timestep, timestep_to_sigma

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class DiscreteVP:
    """Variance-preserving discrete-time model: ``x = sqrt(abar) * x0 + sqrt(1 - abar) * eps``."""

    def __init__(self, train_sigmas: torch.Tensor):
        self.train_sigmas = train_sigmas.to(torch.float64)

    @staticmethod
    def alpha(sigma: float | torch.Tensor) -> float | torch.Tensor:
        """Signal scale ``alpha = sqrt(abar) = 1 / sqrt(1 + sigma^2)``."""
        return (1 + sigma**2) ** -0.5

    def timestep_of(self, sigmas: torch.Tensor) -> torch.Tensor:
        """(Fractional) training timestep at which the model sees noise level ``sigma``."""
        return sigma_to_timestep(sigmas, self.train_sigmas)

    def sigma_of(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Noise level of (fractional) training timesteps."""
        return timestep_to_sigma(timesteps, self.train_sigmas)

    @property
    def sigma_max(self) -> float:
        return float(self.train_sigmas[-1])

    @property
    def sigma_min(self) -> float:
        return float(self.train_sigmas[0])


def to_denoised(output: torch.Tensor, x: torch.Tensor, alpha, sigma, prediction_type: str) -> torch.Tensor:
    """Data prediction ``D = E[x0 | x]`` from a model output in VP coordinates.

    ``alpha`` is the signal scale and ``sigma`` the VE noise level of ``x`` (so the VP noise std is
    ``alpha * sigma``). epsilon: ``x0 = x / alpha - sigma * eps``; v (Salimans & Ho 2022, eq. 4):
    ``x0 = alpha * x - alpha * sigma * v``; sample: ``x0 = output``.
    """
    return denoised_from_y(output, x / alpha, alpha, sigma, prediction_type)


def denoised_from_y(
    output: torch.Tensor, y: torch.Tensor, alpha, sigma, prediction_type: str
) -> torch.Tensor:
    """:func:`to_denoised` given ``y = x / alpha`` (what ``step`` already holds): the same formulas,
    epsilon ``y - sigma * eps``, v ``alpha^2 y - alpha sigma v``, in as few passes over the tensors as
    possible (one fused multiply-add for epsilon when ``sigma`` is a number)."""
    if prediction_type == "epsilon":
        if isinstance(sigma, (int, float)):
            return torch.add(y, output, alpha=-sigma)
        return y - sigma * output
    if prediction_type == "v_prediction":
        return (alpha * alpha) * y - (alpha * sigma) * output
    if prediction_type == "sample":
        return output
    raise ValueError(f"Unknown prediction_type {prediction_type!r}; choose one of {PREDICTION_TYPES}.")


def to_epsilon(y: torch.Tensor, denoised: torch.Tensor, sigma) -> torch.Tensor:
    """Noise prediction in sigma coordinates: ``eps = (y - D) / sigma`` (sigma > 0)."""
    return (y - denoised) / sigma


def to_model_output(
    denoised: torch.Tensor, y: torch.Tensor, alpha, sigma, prediction_type: str
) -> torch.Tensor:
    """Inverse of :func:`to_denoised`: what a model predicting ``prediction_type`` returns."""
    if prediction_type == "sample":
        return denoised
    eps = to_epsilon(y, denoised, sigma)
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        return alpha * eps - (alpha * sigma) * denoised
    raise ValueError(f"Unknown prediction_type {prediction_type!r}; choose one of {PREDICTION_TYPES}.")
