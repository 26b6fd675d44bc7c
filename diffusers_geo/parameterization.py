"""The one coordinate system of diffusers-geo and the conversions into it (no diffusers import).

Every solver works on ``y = x / alpha`` with the VE noise level ``sigma``, so that
``y = x0 + sigma * eps`` and the probability-flow ODE reads ``dy/dsigma = (y - D(y, sigma)) / sigma``
(Karras et al. 2022, eq. 1 with s(t)=1; Song et al. 2021, eq. 13 after the change of variables).

A *parameterisation* says how a pipeline's sample ``x`` relates to ``y``:

* :class:`DiscreteVP` (DDPM / Stable Diffusion): ``x = alpha * y`` with ``alpha = 1/sqrt(1 + sigma^2)``
  and ``sigma = sqrt((1 - abar) / abar)``; the model is called at a training timestep.
* :class:`FlowMatching` (SD3, Flux, every FlowMatch pipeline): ``x = (1 - s) x0 + s eps``, so ``alpha = 1 - s
  = 1 / (1 + sigma)`` and ``sigma = s / (1 - s)``; the model predicts the velocity ``v = eps - x0`` at
  timestep ``1000 s`` and ``D = x - s v``.
* :class:`EDM` (Karras et al. 2022, Playground v2.5, CosXL: ``EDMEulerScheduler`` / ``EDMDPMSolverMultistepScheduler``
  configs): the sample is ``y`` itself (``alpha = 1``); the network sees ``c_in x`` at ``c_noise = log(sigma) / 4``
  and its output ``F`` gives ``D = c_skip x + c_out F`` (Table 1 of the paper).

All three give ``to_y`` (the sample in solver coordinates) and ``denoised`` (the data prediction ``D``), so the
solvers never see which family they serve. A flow run starts at ``s = 1``, i.e. ``sigma = inf``, where ``y`` is
infinite: there ``to_y`` returns the finite limit ``y / sigma = x / s = x`` (the pure-noise sample), and every
solver takes its first step in its exact limit ``sigma -> inf`` with that convention (see
:func:`~diffusers_geo.solvers.euler.euler_step`).
"""

from __future__ import annotations

import math

import torch

from .schedules import sigma_to_timestep, timestep_to_sigma
from .schedules.flow import flow_sigma, noise_fraction

VP_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
#: ``flow_prediction``: the velocity ``v = eps - x0`` of a flow-matching model (diffusers' name)
PREDICTION_TYPES = (*VP_PREDICTION_TYPES, "flow_prediction")


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

    def to_y(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """The sample in solver coordinates, ``y = x / alpha``."""
        return x * (1.0 / self.alpha(sigma))

    def denoised(
        self, output: torch.Tensor, x: torch.Tensor, y: torch.Tensor, sigma: float, prediction_type: str
    ) -> torch.Tensor:
        """``D`` from the model output (:func:`denoised_from_y`)."""
        return denoised_from_y(output, y, self.alpha(sigma), sigma, prediction_type)


class EDM:
    """EDM preconditioning (Karras et al. 2022, arXiv 2206.00364, Table 1 and Sec. 5): ``x = y = x0 + sigma eps``
    (``alpha = 1``), the network ``F`` is called on ``c_in x`` at ``c_noise`` and
    ``D = c_skip x + c_out F`` with ``c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)``,
    ``c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)`` (negated for ``v_prediction``, as diffusers'
    ``EDMEulerScheduler.precondition_outputs``), ``c_in = 1 / sqrt(sigma^2 + sigma_data^2)`` and
    ``c_noise = log(sigma) / 4``. The trained range is ``[sigma_min, sigma_max]``.
    """

    prediction_types = ("epsilon", "v_prediction")

    def __init__(self, sigma_min: float, sigma_max: float, sigma_data: float, by_pipeline: bool = False):
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.sigma_data = float(sigma_data)
        #: the pipeline applies the preconditioning itself and hands ``step`` the noise ``eps = (x - D) / sigma``
        #: (Cosmos-Predict2), so ``D = x - sigma eps``
        self.by_pipeline = by_pipeline

    @staticmethod
    def alpha(sigma: float | torch.Tensor) -> float | torch.Tensor:
        """Signal scale 1: the pipeline's sample is already ``x0 + sigma eps``."""
        return torch.ones_like(sigma) if isinstance(sigma, torch.Tensor) else 1.0

    @staticmethod
    def timestep_of(sigmas: torch.Tensor) -> torch.Tensor:
        """``c_noise = log(sigma) / 4``, computed in float32 from float32 sigmas as diffusers' EDM schedulers do,
        so the timesteps equal theirs bit for bit."""
        return 0.25 * torch.log(sigmas.to(torch.float32))

    @staticmethod
    def sigma_of(timesteps: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`timestep_of`, ``sigma = exp(4 c_noise)``."""
        return torch.exp(4 * timesteps.to(torch.float64))

    def c_in(self, sigma: float | torch.Tensor) -> float | torch.Tensor:
        """Input scale ``1 / sqrt(sigma^2 + sigma_data^2)`` (unit variance network input)."""
        return (sigma**2 + self.sigma_data**2) ** -0.5

    def to_y(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """``y = x`` (``alpha = 1``)."""
        return x

    def denoised(
        self, output: torch.Tensor, x: torch.Tensor, y: torch.Tensor, sigma: float, prediction_type: str
    ) -> torch.Tensor:
        """``D = c_skip x + c_out F`` (``x - sigma eps`` when the pipeline preconditions itself)."""
        if self.by_pipeline:
            if prediction_type != "epsilon":
                raise ValueError(
                    f"A pipeline-preconditioned EDM model hands step epsilon, not {prediction_type!r}."
                )
            return torch.add(x, output, alpha=-sigma)
        if prediction_type not in self.prediction_types:
            raise ValueError(
                f"An EDM model needs prediction_type in {self.prediction_types}, got {prediction_type!r} "
                "(diffusers' EDM schedulers precondition only these two)."
            )
        var = sigma**2 + self.sigma_data**2
        c_skip = self.sigma_data**2 / var
        c_out = sigma * self.sigma_data / var**0.5
        if prediction_type == "v_prediction":
            c_out = -c_out
        return c_skip * x + c_out * output

    def model_output(self, denoised: torch.Tensor, x: torch.Tensor, sigma: float, prediction_type: str):
        """The inverse of :meth:`denoised`: the network output ``F = (D - c_skip x) / c_out`` for data
        prediction ``D`` at ``x`` (for exact denoisers in tests and benchmarks)."""
        if self.by_pipeline:
            return (x - denoised) / sigma
        var = sigma**2 + self.sigma_data**2
        c_out = sigma * self.sigma_data / var**0.5 * (-1 if prediction_type == "v_prediction" else 1)
        return (denoised - self.sigma_data**2 / var * x) / c_out


class FlowMatching:
    """Rectified flow / flow matching: ``x = (1 - s) x0 + s eps``, velocity model ``v = eps - x0`` at timestep
    ``num_train_timesteps * s`` (Esser et al., SD3, arXiv 2403.03206, Sec. 2; Lipman et al. 2023).

    In VE coordinates ``y = x / (1 - s) = x0 + sigma eps`` with ``sigma = s / (1 - s)``, the same picture as
    :class:`DiscreteVP` with ``alpha = 1 - s = 1 / (1 + sigma)``; the trained range is all of ``(0, inf]``.
    """

    def __init__(self, num_train_timesteps: int = 1000):
        self.num_train_timesteps = num_train_timesteps

    @staticmethod
    def alpha(sigma: float | torch.Tensor) -> float | torch.Tensor:
        """Signal scale ``alpha = 1 - s = 1 / (1 + sigma)`` (0 at ``sigma = inf``)."""
        return 1 / (1 + sigma)

    @staticmethod
    def noise_fraction(sigma: float) -> float:
        """``s = sigma / (1 + sigma)``, 1 at ``sigma = inf``."""
        return 1.0 if math.isinf(sigma) else sigma / (1 + sigma)

    def timestep_of(self, sigmas: torch.Tensor) -> torch.Tensor:
        """The model's timestep ``num_train_timesteps * s``."""
        return self.num_train_timesteps * noise_fraction(sigmas)

    def sigma_of(self, timesteps: torch.Tensor) -> torch.Tensor:
        """``sigma = s / (1 - s)`` with ``s = timestep / num_train_timesteps``."""
        return flow_sigma(timesteps.to(torch.float64) / self.num_train_timesteps)

    sigma_max = math.inf
    sigma_min = 0.0

    def to_y(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """``y = x / alpha = (1 + sigma) x``; at ``sigma = inf`` the finite limit ``y / sigma = x / s = x`` (the
        solvers' convention for a step from infinity)."""
        if math.isinf(sigma):
            return x.clone()
        return x * (1.0 + sigma)

    def denoised(
        self, output: torch.Tensor, x: torch.Tensor, y: torch.Tensor, sigma: float, prediction_type: str
    ) -> torch.Tensor:
        """``D = x - s v`` (finite at every ``s``, ``s = 1`` included)."""
        if prediction_type != "flow_prediction":
            raise ValueError(
                f"A flow-matching schedule needs prediction_type='flow_prediction', got {prediction_type!r}."
            )
        return torch.add(x, output, alpha=-self.noise_fraction(sigma))

    @staticmethod
    def velocity(denoised: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """The inverse of :meth:`denoised`: the velocity ``v = (x - D) / s`` a model returns for data
        prediction ``D`` at ``x``."""
        s = noise_fraction(torch.as_tensor(sigma, dtype=torch.float64)).to(x.dtype)
        return (x - denoised) / s


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
