"""Where sampling starts: fitted priors for a truncated start, the matching schedule, a prior-mismatch
diagnostic, and the PFGM++ prior.

Franzese et al., "How much is enough? A study on diffusion times in score-based generative models"
(arXiv 2206.05173, §2–3): a sampler started at noise level ``sigma`` from the noise prior pays the mismatch
``KL(p_sigma || q_sigma)`` between the true noised data ``p_sigma = p_data * N(0, sigma^2 I)`` and the
prior; an auxiliary model ``nu`` of ``p_sigma`` replaces it by ``KL(p_sigma || nu)``, which lets sampling
start at a smaller ``sigma_T`` (fewer steps) or, at ``sigma_max``, removes the error floor a deterministic
sampler inherits from the noise prior. For a pretrained model only the sampling half applies:

    prior = TruncatedPrior.fit(latents, num_components=8, rank=16, sigma=2.0)   # latents: (N, 4, 64, 64)
    schedule = prior.truncated_schedule(pipe.scheduler, num_inference_steps=10)  # starts at sigma_T = 2
    pipe.scheduler = schedule.scheduler
    latents = prior.initial_latents(schedule, batch_size=4, generator=torch.Generator().manual_seed(0))
    images = pipe([prompt] * 4, latents=latents, **schedule.pipeline_kwargs).images

Sigma is the VE noise level of the package (``y = x / alpha = x0 + sigma * n``, ``sigma = sqrt((1 - abar) /
abar)``; about 14.6 at Stable Diffusion's last timestep). The standard start is ``x ~ N(0, I)``, i.e. ``y ~ N(0,
(1 + sigma^2) I)``: a data distribution with mean 0 and unit variance. The math (EM for mixtures of factor
analysers, closed-form KL, PFGM++ radii) lives in :mod:`diffusers_geo.priors.fitting`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..data import encode_images
from ..schedulers.options import Int, Real
from ..solvers.arguments import GENERATOR, Shape, Tensor, item
from .fitting import (
    FactorMixture,
    FitInfo,
    PFGMPPLaw,
    fit_factor_mixture,
)
from .truncation import PipelineLatents, TruncatedSchedule, truncated_schedule

#: sigma_T: a positive noise level, or None (start wherever the schedule starts)
_SIGMA = Real(0.0, low_open=True, optional=True, hint="sigma_T is a positive noise level.")


# ------------------------------------------------------------------------------------------------
# the fitted prior
# ------------------------------------------------------------------------------------------------
class TruncatedPrior(PipelineLatents, ModelMixin, ConfigMixin):
    """An auxiliary prior for the start of sampling (Franzese et al., arXiv 2206.05173, §3), fitted to data.

    The data model is a mixture of factor analysers ``sum_k pi_k N(mu_k, W_k W_k^T + diag(psi_k))`` (one
    component: a Gaussian with mean and low-rank-plus-diagonal covariance; ``rank=0``: a diagonal Gaussian
    mixture), fitted by EM (:func:`~diffusers_geo.priors.fitting.fit_factor_mixture`) to clean samples. At
    noise level ``sigma`` the prior is the exact convolution with ``N(0, sigma^2 I)`` (``psi_k + sigma^2``),
    so one fit serves every ``sigma_T``. Build it with :meth:`fit`; it saves, loads and pushes like a
    diffusers model (``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``: safetensors + JSON).

    Args:
        sample_shape: the shape of one sample, e.g. ``(4, 64, 64)`` for SD 1.x latents at 512 px.
        num_components: mixture components ``K``.
        rank: rank ``r`` of each component's low-rank covariance part.
        sigma: the ``sigma_T`` the prior is meant to start from (``None``: wherever the schedule starts).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        sample_shape: Sequence[int] = (4, 64, 64),
        num_components: int = 1,
        rank: int = 8,
        sigma: float | None = None,
    ):
        super().__init__()
        _check_model(sample_shape=sample_shape, num_components=num_components, rank=rank, sigma=sigma)
        d = int(np.prod(sample_shape))
        f64 = torch.float64
        self.register_buffer(
            "log_weights", torch.full((num_components,), -math.log(num_components), dtype=f64)
        )
        self.register_buffer("means", torch.zeros(num_components, d, dtype=f64))
        self.register_buffer("factors", torch.zeros(num_components, d, rank, dtype=f64))
        self.register_buffer("variances", torch.ones(num_components, d, dtype=f64))
        self.fit_info: FitInfo | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.config.sample_shape)

    @property
    def dim(self) -> int:
        return int(np.prod(self.sample_shape))

    # --------------------------------------------------------------------------------------------
    # fitting
    # --------------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        data: torch.Tensor | Iterable | str | Path,
        num_components: int = 1,
        rank: int = 8,
        sigma: float | None = None,
        *,
        vae=None,
        image_size: int | tuple[int, int] | None = None,
        batch_size: int = 8,
        max_samples: int | None = None,
        max_iter: int = 100,
        tol: float = 1e-6,
        reg: float = 1e-6,
        generator: torch.Generator | None = None,
    ) -> TruncatedPrior:
        """Fit the prior to clean samples (pixels in [-1, 1], or VAE latents already scaled by
        ``vae.config.scaling_factor`` as the UNet sees them).

        Args:
            data: a tensor ``(N, *sample_shape)``; an iterable of such batches (a ``DataLoader``; tuples or
                lists use their first element); or an image folder, encoded with ``vae`` (the pipeline's
                ``pipe.vae``) by :func:`encode_images`.
            num_components, rank, sigma: see the class.
            vae, image_size, batch_size: for an image folder: the VAE, the square or ``(h, w)`` size images
                are resized to, and the encoding batch size.
            max_samples: use at most this many samples.
            max_iter, tol, reg, generator: EM settings (see ``fit_factor_mixture``); ``generator`` seeds
                the k-means++ initialisation.
        """
        _check_model(num_components=num_components, rank=rank, sigma=sigma)
        Shape(length=2, single=True, optional=True)("image_size", image_size)
        Int(1)("batch_size", batch_size)
        Int(1, optional=True)("max_samples", max_samples)
        Int(1)("max_iter", max_iter)
        Real(0.0)("tol", tol)
        Real(0.0)("reg", reg)
        GENERATOR("generator", generator)
        if isinstance(data, (str, Path)):
            if vae is None:
                raise ValueError("Fitting on an image folder needs the pipeline's VAE: pass vae=pipe.vae.")
            data = encode_images(
                data, vae, image_size=image_size, batch_size=batch_size, max_images=max_samples
            )
        samples = _collect(data, max_samples)
        prior = cls(list(samples.shape[1:]), num_components, rank, sigma)
        mixture, info = fit_factor_mixture(
            samples.flatten(1), num_components, rank, max_iter=max_iter, tol=tol, reg=reg, generator=generator
        )
        prior.log_weights.copy_(mixture.log_weights)
        prior.means.copy_(mixture.means)
        prior.factors.copy_(mixture.factors)
        prior.variances.copy_(mixture.variances)
        prior.fit_info = info
        return prior

    def with_sigma(self, sigma: float | None) -> TruncatedPrior:
        """A copy meant for another ``sigma_T`` (no refit: the noise is convolved analytically)."""
        other = type(self)(self.sample_shape, self.config.num_components, self.config.rank, sigma)
        other.load_state_dict(self.state_dict())
        other.fit_info = self.fit_info
        return other

    # --------------------------------------------------------------------------------------------
    # the distribution
    # --------------------------------------------------------------------------------------------
    def mixture(self, sigma: float = 0.0) -> FactorMixture:
        """The data model convolved with ``N(0, sigma^2 I)`` (``sigma = 0``: the clean-data fit)."""
        base = FactorMixture(self.log_weights, self.means, self.factors, self.variances)
        return base.convolve(float(sigma)) if sigma else base

    def _sigma(self, sigma: float | None) -> float:
        sigma = self.config.sigma if sigma is None else sigma
        if sigma is None:
            raise ValueError("This prior has no sigma_T: pass sigma=... (or fit it with sigma=...).")
        return _SIGMA("sigma", item(sigma))

    def sample(
        self, num_samples: int, sigma: float | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``num_samples`` draws ``y`` (float64, ``(n, *sample_shape)``) of the prior at ``sigma`` (default
        ``config.sigma``), in sigma units: ``y ≈ x0 + sigma * n``, the pipeline's sample divided by alpha."""
        Int(1)("num_samples", num_samples)
        GENERATOR("generator", generator)
        y, _ = self.mixture(self._sigma(sigma)).sample(num_samples, generator)
        return y.reshape(num_samples, *self.sample_shape)

    def log_prob(self, y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        """Log density of ``y`` ``(B, *sample_shape)`` under the prior at ``sigma``."""
        Tensor(ndim=(1, None))("y", y)
        flat = y.reshape(y.shape[0], -1).to(self.means)
        if flat.shape[1] != self.dim:
            raise ValueError(f"y has {flat.shape[1]} values per sample, the prior {self.dim}.")
        return self.mixture(self._sigma(sigma)).log_prob(flat)

    # --------------------------------------------------------------------------------------------
    # pipelines
    # --------------------------------------------------------------------------------------------
    def truncated_schedule(
        self, scheduler, num_inference_steps: int, mu: float | None = None
    ) -> TruncatedSchedule:
        """:func:`truncated_schedule` at this prior's ``sigma_T`` (``mu``: a flow model's dynamic shift)."""
        Int(1)("num_inference_steps", num_inference_steps)
        return truncated_schedule(scheduler, num_inference_steps, self._sigma(None), mu)

    @property
    def _start_sigma(self) -> float | None:
        return self.config.sigma

    def _draw(self, shape, sigma, generator):
        return self.sample(shape[0], sigma, generator)


def _check_model(**arguments: Any) -> None:
    """The checks of :class:`TruncatedPrior`'s arguments (the constructor's and :meth:`~TruncatedPrior.fit`'s,
    which checks them before it collects or encodes any data)."""
    checks = {
        "sample_shape": Shape(),
        "num_components": Int(1),
        "rank": Int(0, hint="(0: a diagonal Gaussian mixture)"),
        "sigma": _SIGMA,
    }
    for name, value in arguments.items():
        checks[name](name, item(value))


def _collect(data, max_samples: int | None) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        batches = [data]
    elif isinstance(data, np.ndarray):
        batches = [torch.from_numpy(data)]
    elif isinstance(data, Iterable):
        batches, count = [], 0
        for batch in data:
            if isinstance(batch, (tuple, list)):
                batch = batch[0]
            if not isinstance(batch, torch.Tensor):
                raise TypeError(
                    f"Batches must be tensors (or tuples starting with one), got {type(batch).__name__}."
                )
            batches.append(batch.detach().cpu())
            count += len(batch)
            if max_samples is not None and count >= max_samples:
                break
        if not batches:
            raise ValueError("The data iterable is empty.")
    else:
        raise TypeError(
            f"data must be a tensor, an iterable of tensors or an image folder, got {type(data).__name__}."
        )
    shapes = {tuple(b.shape[1:]) for b in batches}
    if len(shapes) != 1 or batches[0].ndim < 2:
        raise ValueError(
            f"Samples must be batched (N, ...) with one shape per sample, got shapes {sorted(shapes)}."
        )
    samples = torch.cat([b.detach().cpu().to(torch.float64) for b in batches])
    return samples[:max_samples] if max_samples is not None else samples


# ------------------------------------------------------------------------------------------------
# PFGM++
# ------------------------------------------------------------------------------------------------
class PFGMPPPrior(PipelineLatents):
    """The PFGM++ prior with ``D`` augmented dimensions (Xu et al., arXiv 2302.04265), for PFGM++-trained
    models only.

    PFGM++ aligns its augmented radius with EDM's noise level by ``r = sigma * sqrt(D)``; with the model
    conditioned on ``sigma = r / sqrt(D)`` its sampling ODE is EDM's ``dy/dsigma = (y - D(y, sigma)) / sigma``,
    so any Karras-sigma scheduler runs it unchanged: only the start differs. A draw is ``R * u`` with ``u``
    uniform on the sphere and ``(R / r)^2 ~ BetaPrime(N/2, D/2)`` (derivation in
    :mod:`diffusers_geo.priors.fitting`). ``D = math.inf`` is the Gaussian ``N(0, sigma_max^2 I)``; for finite
    ``D`` the radius has heavier tails, so feeding this prior to an ordinary diffusion model is wrong unless
    ``D`` is large (say ``D >= 2048`` at ``N = 3072``).

    Args:
        augmented_dim: ``D`` (> 0; ``math.inf`` for the diffusion limit).
        sample_shape: the shape of one sample (optional; else pass ``shape=`` when drawing).
    """

    def __init__(self, augmented_dim: float, sample_shape: Sequence[int] | None = None):
        if augmented_dim != math.inf:  # math.inf is the Gaussian limit, which Real (finite only) refuses
            Real(0.0, low_open=True, hint="Use math.inf for the Gaussian.")("augmented_dim", augmented_dim)
        self.augmented_dim = float(augmented_dim)
        self.sample_shape = Shape(optional=True)("sample_shape", sample_shape)

    def __repr__(self) -> str:
        return f"PFGMPPPrior(augmented_dim={self.augmented_dim}, sample_shape={self.sample_shape})"

    def law(self, data_dim: int, sigma_max: float) -> PFGMPPLaw:
        """The prior's law for ``data_dim``-dimensional samples at ``sigma_max``."""
        Int(1)("data_dim", data_dim)
        Real(0.0, low_open=True)("sigma_max", item(sigma_max))
        return PFGMPPLaw(int(data_dim), self.augmented_dim, float(sigma_max))

    def radii(self, num_samples: int, data_dim: int, sigma_max: float, generator=None) -> torch.Tensor:
        """Radii of the prior at ``sigma_max`` for ``data_dim``-dimensional samples (float64)."""
        Int(1)("num_samples", num_samples)
        GENERATOR("generator", generator)
        return self.law(data_dim, sigma_max).radii(num_samples, generator)

    def radius_cdf(self, radius, data_dim: int, sigma_max: float) -> np.ndarray:
        """CDF of the radius (see :meth:`PFGMPPLaw.radius_cdf`; needs scipy)."""
        return self.law(data_dim, sigma_max).radius_cdf(radius)

    def sample(
        self,
        num_samples: int,
        sigma_max: float,
        shape: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``num_samples`` draws at ``sigma_max`` in sigma units (float64), shaped ``(n, *sample_shape)``."""
        Int(1)("num_samples", num_samples)
        Real(0.0, low_open=True)("sigma_max", item(sigma_max))
        GENERATOR("generator", generator)
        shape = Shape(optional=True)("shape", shape)
        sample_shape = shape if shape is not None else self.sample_shape
        if sample_shape is None:
            raise ValueError("Pass shape=(C, H, W) (this PFGMPPPrior has no sample_shape).")
        y = self.law(int(np.prod(sample_shape)), sigma_max).sample(num_samples, generator)
        return y.reshape(num_samples, *sample_shape)

    def _draw(self, shape, sigma, generator):
        return self.sample(shape[0], sigma, shape[1:], generator)
