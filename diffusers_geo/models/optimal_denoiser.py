"""The exact optimal denoiser as a diffusers model (Chen et al., arXiv 2305.19947, §3 and eq. 7).

For data distributed as a Gaussian mixture ``sum_k pi_k N(mu_k, diag(v_k))`` and ``y = x0 + sigma * n``,
the posterior mean is available in closed form (Bishop, *PRML*, eqs. 2.116 and 9.13):

    r_k(y)    = softmax_k( log pi_k - 1/2 * sum_j [ (y_j - mu_kj)^2 / (v_kj + sigma^2) + log(v_kj + sigma^2) ] )
    D(y, sigma) = sum_k r_k(y) * ( mu_k + v_k / (v_k + sigma^2) * (y - mu_k) ).

A finite image set is the special case ``v_k = 0`` with uniform ``pi_k``: then ``r`` is the softmax of
``-|y - x_i|^2 / (2 sigma^2)`` and ``D`` is one Gaussian-kernel mean-shift step of bandwidth ``sigma``
(the "mean shift" view of paper A). One formula serves both.

:class:`OptimalDenoiser` is called like ``UNet2DModel`` (``model(sample, timestep).sample``) on VP samples
at (fractional) training timesteps of any discrete beta schedule, and returns an epsilon, v or sample
prediction as configured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from ..parameterization import PREDICTION_TYPES, DiscreteVP, FlowMatching, to_model_output
from ..schedulers.options import Betas, Bool, Choice, Int, Real
from ..schedules import BETA_SCHEDULES, make_betas, rescale_zero_terminal_snr, training_sigmas
from ..solvers.arguments import GENERATOR, Numbers, Shape, Tensor

COVARIANCE_TYPES = ("none", "isotropic", "diagonal")


@dataclass
class OptimalDenoiserOutput(BaseOutput):
    """``sample``: the model prediction (epsilon, v or x0, per ``prediction_type``)."""

    sample: torch.Tensor


class OptimalDenoiser(ModelMixin, ConfigMixin):
    """Exact posterior-mean model of a Gaussian mixture or a finite image set.

    Build it with :meth:`from_images` or :meth:`from_gaussian_mixture`; the schedule keys mirror
    ``DDPMScheduler`` so ``OptimalDenoiser.from_images(x, **scheduler.config)`` matches a scheduler.
    Runs in the dtype of its buffers (``.to(torch.float64)`` for reference computations) on any device,
    and round-trips through ``save_pretrained`` / ``from_pretrained`` (safetensors).

    Args:
        sample_size: image side (int) or ``(height, width)``.
        in_channels: channels (``out_channels`` equals it).
        num_components: number of mixture components (data points for an image set).
        covariance_type: "none" (image set / point masses), "isotropic" (one variance per component)
            or "diagonal" (one variance per component and pixel).
        num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr:
            the discrete VP schedule mapping timesteps to noise levels.
        prediction_type: "epsilon", "v_prediction" or "sample"; or "flow_prediction": a flow-matching
            (velocity) model, ``x = (1 - s) x0 + s eps`` at timestep ``num_train_timesteps * s``, returning
            ``v = (x - D) / s`` (the beta keys are then unused), as SD3 and Flux are called.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        sample_size: int | Sequence[int] = 8,
        in_channels: int = 1,
        num_components: int = 1,
        covariance_type: str = "isotropic",
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Sequence[float] | None = None,
        rescale_betas_zero_snr: bool = False,
        prediction_type: str = "epsilon",
    ):
        super().__init__()
        Shape(length=2, single=True)("sample_size", sample_size)
        Int(1)("in_channels", in_channels)
        Int(1)("num_components", num_components)
        Choice(COVARIANCE_TYPES)("covariance_type", covariance_type)
        Int(1)("num_train_timesteps", num_train_timesteps)
        Real(0.0, 1.0, low_open=True, high_open=True)("beta_start", beta_start)
        Real(0.0, 1.0, low_open=True, high_open=True)("beta_end", beta_end)
        Choice(BETA_SCHEDULES)("beta_schedule", beta_schedule)
        Betas()("trained_betas", trained_betas)
        Bool()("rescale_betas_zero_snr", rescale_betas_zero_snr)
        Choice(PREDICTION_TYPES)("prediction_type", prediction_type)
        dim = self.dim
        var_dim = dim if covariance_type == "diagonal" else 1
        self.register_buffer("means", torch.zeros(num_components, dim))
        self.register_buffer("variances", torch.zeros(num_components, var_dim))
        self.register_buffer("log_weights", torch.full((num_components,), -math.log(num_components)))
        betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        alphas_cumprod = torch.cumprod(1 - betas, 0)
        if rescale_betas_zero_snr:
            alphas_cumprod[-1] = 2**-24
        if prediction_type == "flow_prediction":
            self.parameterization = FlowMatching(num_train_timesteps)
        else:
            self.parameterization = DiscreteVP(training_sigmas(alphas_cumprod))

    # ---------------------------------------------------------------------------------------------
    # construction
    # ---------------------------------------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, int, int]:
        size = self.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (self.config.in_channels, h, w)

    @property
    def dim(self) -> int:
        return int(np.prod(self.sample_shape))

    @classmethod
    def from_images(cls, images: torch.Tensor, **config) -> OptimalDenoiser:
        """The mean-shift denoiser of a finite image set ``images`` of shape ``(N, C, H, W)``."""
        images = _as_batch(images, "images")
        model = cls(
            sample_size=list(images.shape[2:]),
            in_channels=images.shape[1],
            num_components=images.shape[0],
            covariance_type="none",
            **config,
        )
        model.means.copy_(images.flatten(1))
        return model

    @classmethod
    def from_gaussian_mixture(
        cls,
        means: torch.Tensor,
        variances: torch.Tensor | float,
        weights: torch.Tensor | None = None,
        **config,
    ) -> OptimalDenoiser:
        """Gaussian mixture with component ``means`` ``(K, C, H, W)``, ``variances`` of shape ``(K,)`` or a
        float (isotropic) or ``(K, C, H, W)`` (diagonal), and mixture ``weights`` ``(K,)`` (uniform if None)."""
        means = _as_batch(means, "means")
        k = means.shape[0]
        _check_parameter("variances", variances, Real(0.0, hint="Variances are non-negative."))
        if weights is not None:
            _check_parameter("weights", weights)
        variances = torch.as_tensor(variances, dtype=torch.float64)
        if variances.ndim <= 1:
            variances = variances.expand(k).reshape(k, 1)
            covariance_type = "isotropic"
        elif variances.shape == means.shape:
            variances = variances.reshape(k, -1)
            covariance_type = "diagonal"
        else:
            raise ValueError(
                f"variances must be a float, shape ({k},) or {tuple(means.shape)}, got "
                f"{tuple(variances.shape)}."
            )
        if (variances < 0).any() or not torch.isfinite(variances).all():
            raise ValueError("variances must be finite and non-negative.")
        weights = (
            torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights)
        )
        weights = weights.to(torch.float64)
        if weights.shape != (k,) or (weights <= 0).any():
            raise ValueError(f"weights must be {k} positive numbers.")
        model = cls(
            sample_size=list(means.shape[2:]),
            in_channels=means.shape[1],
            num_components=k,
            covariance_type=covariance_type,
            **config,
        )
        model.means.copy_(means.flatten(1))
        model.variances.copy_(variances)
        model.log_weights.copy_((weights / weights.sum()).log())
        return model

    # ---------------------------------------------------------------------------------------------
    # the closed form, in sigma coordinates
    # ---------------------------------------------------------------------------------------------
    def log_responsibilities(self, y: torch.Tensor, sigma: float) -> torch.Tensor:
        """``log r_k(y)`` of each component given ``y = x0 + sigma * n`` (flattened ``(B, d)``)."""
        var = self.variances + sigma**2  # (K, 1) or (K, d)
        if self.config.covariance_type == "diagonal":
            precision = 1.0 / var  # multiply, never divide, in the loop: float64 division is slow
            sq = torch.stack(
                [((y - mu) ** 2 * p).sum(-1) for mu, p in zip(self.means, precision, strict=True)], -1
            )
            log_det = var.log().sum(-1)
        else:
            dist = torch.cdist(y[None], self.means[None], compute_mode="donot_use_mm_for_euclid_dist")[0]
            sq = dist**2 / var[:, 0]
            log_det = self.dim * var[:, 0].log()
        return torch.log_softmax(self.log_weights - 0.5 * (sq + log_det), dim=-1)

    @torch.no_grad()
    def denoise(self, y: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """``D(y, sigma) = E[x0 | x0 + sigma * n = y]``; ``y`` is ``(B, C, H, W)``, ``sigma`` a float or ``(B,)``."""
        flat = y.reshape(y.shape[0], -1).to(self.means.dtype)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
        if len(sigma) == 1:
            out = self._posterior_mean(flat, float(sigma))
        else:
            out = torch.empty_like(flat)
            for s in sigma.unique():
                rows = (sigma == s).nonzero()[:, 0].to(flat.device)
                out[rows] = self._posterior_mean(flat[rows], float(s))
        return out.reshape(y.shape).to(y.dtype)

    def _posterior_mean(self, y: torch.Tensor, sigma: float) -> torch.Tensor:
        # sum_k r_k (mu_k + s_k (y - mu_k)) with the shrinkage s_k = v_k / (v_k + sigma^2) in [0, 1]:
        # bounded terms, so no cancellation at small sigma, and exactly sum_k r_k mu_k for point masses.
        r = self.log_responsibilities(y, sigma).exp()  # (B, K)
        shrink = self.variances / (self.variances + sigma**2)  # (K, 1) or (K, d)
        return r @ self.means + y * (r @ shrink) - r @ (shrink * self.means)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        *args,
        return_dict: bool = True,
        **kwargs,
    ) -> OptimalDenoiserOutput | tuple:
        """Called like ``UNet2DModel``: ``sample`` in VP coordinates at training ``timestep`` (scalar or
        per sample, fractional allowed); extra conditioning arguments are accepted and ignored."""
        timestep = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1).cpu()
        sigma = self.parameterization.sigma_of(timestep).expand(sample.shape[0])
        shape = (-1,) + (1,) * (sample.ndim - 1)
        if self.config.prediction_type == "flow_prediction":
            out = self._velocity(sample, sigma, shape)
            return OptimalDenoiserOutput(sample=out) if return_dict else (out,)
        alpha = self.parameterization.alpha(sigma).to(sample.device).reshape(shape)
        y = sample.to(self.means.dtype) / alpha.to(self.means.dtype)
        denoised = self.denoise(y, sigma)
        s = sigma.to(device=sample.device, dtype=self.means.dtype).reshape(shape)
        out = to_model_output(denoised, y, alpha.to(s.dtype), s, self.config.prediction_type).to(sample.dtype)
        return OptimalDenoiserOutput(sample=out) if return_dict else (out,)

    def _velocity(self, sample: torch.Tensor, sigma: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The flow model's output ``v = (x - D) / s``; at ``s = 1`` (``sigma = inf``) ``D`` is the data mean."""
        x = sample.to(self.means.dtype)
        denoised = torch.empty_like(x)
        pure = torch.isinf(sigma).to(x.device)
        if pure.any():
            denoised[pure] = self.data_mean().reshape(self.sample_shape).to(x.dtype)
        if not pure.all():
            rest = ~pure
            s = sigma[rest.cpu()]
            y = x[rest] * (1 + s).to(device=x.device, dtype=x.dtype).reshape(shape)
            denoised[rest] = self.denoise(y, s)
        fraction = torch.where(torch.isinf(sigma), torch.ones_like(sigma), sigma / (1 + sigma))
        fraction = fraction.to(device=x.device, dtype=x.dtype).reshape(shape)
        return ((x - denoised) / fraction).to(sample.dtype)

    # ---------------------------------------------------------------------------------------------
    # the data distribution
    # ---------------------------------------------------------------------------------------------
    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def data_mean(self) -> torch.Tensor:
        """Exact mean of the data distribution, flattened ``(d,)``."""
        return self.weights @ self.means

    def data_covariance(self) -> torch.Tensor:
        """Exact covariance ``sum_k pi_k (diag(v_k) + mu_k mu_k^T) - mu mu^T``, ``(d, d)``."""
        w, mu = self.weights, self.means
        mean = w @ mu
        cov = (mu * w[:, None]).T @ mu - torch.outer(mean, mean)
        return cov + torch.diag((w[:, None] * self.variances.expand(-1, self.dim)).sum(0))

    def sample_data(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` exact samples of the data distribution and their component indices."""
        Int(1)("n", n)
        GENERATOR("generator", generator)
        dev = self.means.device
        comp = torch.multinomial(self.weights.cpu().float(), n, replacement=True, generator=generator).to(dev)
        noise = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype).to(dev)
        x = self.means[comp] + self.variances[comp].sqrt() * noise
        return x.reshape(n, *self.sample_shape), comp


def _check_parameter(name: str, value, scalar: Real | None = None) -> None:
    """A mixture parameter: a tensor or array, a list of numbers >= 0, or (given ``scalar``) one number."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        Tensor(arrays=True)(name, value)
    elif scalar is None or isinstance(value, (list, tuple)):
        Numbers(low=0.0)(name, value)
    else:
        scalar(name, value)


def _as_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(Tensor(arrays=True, finite=False)(name, x))  # NaN: refused below, with its message
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W) or (N, H, W), got {tuple(x.shape)}.")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf.")
    return x
