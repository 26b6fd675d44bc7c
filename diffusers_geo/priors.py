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
analysers, closed-form KL, PFGM++ radii) lives in :mod:`diffusers_geo.solvers.priors`.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .parameterization import DiscreteVP
from .schedulers.base import GeoScheduler
from .schedules import SIGMA_SPACINGS, respace_sigmas, training_sigmas
from .solvers.priors import (
    FactorMixture,
    FitInfo,
    PFGMPPLaw,
    fit_factor_mixture,
    gaussian_kl,
    monte_carlo_kl,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
NOISE_PRIORS = ("vp", "ve")
START_RTOL = 0.02  # a schedule "starts at" a prior's sigma if within 2% (integer timesteps round sigma)


# ------------------------------------------------------------------------------------------------
# where a scheduler starts, and how its pipeline wants the initial latents
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleStart:
    """The first noise level of a scheduler's run and the scale of the ``latents=`` a pipeline takes.

    A pipeline multiplies ``latents`` by ``scheduler.init_noise_sigma`` and feeds the model
    ``scale_model_input(sample)``, which must be the VP sample ``alpha(sigma) * y``. So the latents for a
    sigma-space draw ``y`` are ``latent_scale * y`` with ``latent_scale = alpha / (c * init_noise_sigma)`` and
    ``c`` the factor of ``scale_model_input``: ``alpha`` for VP-interface schedulers (DDIM, DPM-Solver,
    UniPC, ours), ``1 / sigma`` for Euler/Heun-type (Karras) ones whose sample is ``y`` itself.
    """

    sigma: float
    latent_scale: float


def schedule_start(scheduler, **set_timesteps_kwargs: Any) -> ScheduleStart:
    """Where ``scheduler`` starts after ``set_timesteps(**set_timesteps_kwargs)`` (probed on a copy)."""
    if not set_timesteps_kwargs:
        raise ValueError(
            "Say how the pipeline will set the schedule: pass num_inference_steps=..., sigmas=... or "
            "timesteps=... (the arguments the pipeline receives), or a TruncatedSchedule."
        )
    if not hasattr(scheduler, "alphas_cumprod"):
        raise TypeError(
            f"{type(scheduler).__name__} is not a discrete VP (DDPM-family) scheduler; priors need one "
            "(Stable Diffusion 1.x/2.x/XL, DDPM/DDIM pixel models)."
        )
    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(**set_timesteps_kwargs)
    t0 = probe.timesteps[0]
    sigmas = getattr(probe, "sigmas", None)
    if isinstance(sigmas, torch.Tensor) and sigmas.numel() > 1:
        sigma = float(sigmas[0])
    else:
        vp = DiscreteVP(training_sigmas(torch.as_tensor(probe.alphas_cumprod)))
        sigma = float(vp.sigma_of(torch.as_tensor(t0, dtype=torch.float64).reshape(1).cpu()))
    c = float(probe.scale_model_input(torch.ones(1, dtype=torch.float64), t0).reshape(-1)[0])
    init = float(probe.init_noise_sigma)
    return ScheduleStart(sigma, DiscreteVP.alpha(sigma) / (c * init))


@dataclass
class TruncatedSchedule:
    """A schedule that starts at ``sigma_start`` (from :func:`truncated_schedule`).

    Attributes:
        scheduler: the scheduler to install (the one given, or a copy with ``sigma_max`` overridden for
            Karras/exponential/beta schedules of diffusers' built-ins).
        sigmas: the noise levels the run steps through, float64 (terminal value last when the scheduler
            stores one).
        pipeline_kwargs: what to pass to the pipeline (and ``set_timesteps``): ``{"sigmas": [...]}``,
            ``{"timesteps": [...]}`` or ``{"num_inference_steps": N}``.
        num_inference_steps: the number of steps asked for.
    """

    scheduler: Any
    sigmas: torch.Tensor
    pipeline_kwargs: dict[str, Any]
    num_inference_steps: int

    @property
    def sigma_start(self) -> float:
        """The first noise level (with integer ``timesteps`` it is the requested one rounded)."""
        return float(self.sigmas[0])


def truncated_schedule(scheduler, num_inference_steps: int, sigma_start: float) -> TruncatedSchedule:
    """The scheduler's own ``num_inference_steps``-step schedule, moved to start at ``sigma_start``.

    * Karras / exponential / beta spacing: the same spacing between the schedule's smallest sigma and
      ``sigma_start`` (for diffusers' built-ins through a ``sigma_max`` config override).
    * Timestep spacings (``linspace``, ``leading``, ``trailing``): the timesteps scaled by
      ``t(sigma_start) / t_0``, i.e. the same spacing on the shorter diffusion time ``[0, T']`` of paper B.

    Works with every diffusers-geo scheduler (``sigmas=`` takes N + 1 values with the terminal one), with
    diffusers' schedulers that take ``sigmas=`` (Euler) or ``timesteps=`` (DPM-Solver, Heun, DDPM; rounded
    to integers, so ``sigma_start`` moves to the nearest timestep), and with any built-in using Karras,
    exponential or beta sigmas. Raises a ``ValueError`` for the rest (DDIM, PNDM, UniPC, DEIS with
    timestep spacing take neither argument in diffusers 0.42).
    """
    if not isinstance(num_inference_steps, (int, np.integer)) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}.")
    sigma_start = float(sigma_start)
    if not (sigma_start > 0 and math.isfinite(sigma_start)):
        raise ValueError(f"sigma_start (sigma_T) must be a positive finite number, got {sigma_start}.")
    if not hasattr(scheduler, "alphas_cumprod"):
        raise TypeError(f"{type(scheduler).__name__} is not a discrete VP scheduler; cannot truncate it.")
    vp = DiscreteVP(training_sigmas(torch.as_tensor(scheduler.alphas_cumprod)))
    if sigma_start > vp.sigma_max * (1 + 1e-6):
        raise ValueError(
            f"sigma_start={sigma_start:.4g} is above the schedule's sigma_max={vp.sigma_max:.4g} (the noise level "
            "of the last training timestep); the model was never trained there. Pick sigma_start <= sigma_max."
        )
    n = int(num_inference_steps)
    full = copy.deepcopy(scheduler)
    full.set_timesteps(n)
    full_sigmas = torch.unique_consecutive(_schedule_sigmas(full, vp))  # Heun-type schedules repeat sigmas
    positive = full_sigmas[:n][full_sigmas[:n] > 0]
    sigma_low = float(positive.min())
    if sigma_start <= sigma_low:
        raise ValueError(
            f"sigma_start={sigma_start:.4g} is not above the schedule's smallest sigma {sigma_low:.4g}; "
            "nothing is left to sample."
        )
    kind = next((k for k in SIGMA_SPACINGS if getattr(scheduler.config, f"use_{k}_sigmas", False)), None)
    t_full = vp.timestep_of(full_sigmas[:n])
    t_trunc = t_full * (vp.timestep_of(torch.tensor([sigma_start]))[0] / t_full[0])
    if kind is not None:
        body = respace_sigmas(kind, sigma_low, sigma_start, n)
    else:
        body = vp.sigma_of(t_trunc)
    terminal = full_sigmas[n : n + 1] if len(full_sigmas) > n else torch.zeros(1, dtype=torch.float64)

    if isinstance(scheduler, GeoScheduler):
        candidates = [(scheduler, {"sigmas": torch.cat([body, terminal]).tolist()})]
    else:
        params = inspect.signature(scheduler.set_timesteps).parameters
        candidates = []
        if kind is not None:
            # diffusers re-defaults every key listed in _use_default_values: drop the list so sigma_max sticks
            config = {k: v for k, v in scheduler.config.items() if k != "_use_default_values"}
            override = type(scheduler).from_config({**config, "sigma_max": sigma_start})
            candidates.append((override, {"num_inference_steps": n}))
        if "sigmas" in params:
            candidates.append((scheduler, {"sigmas": torch.cat([body, terminal]).tolist()}))
        if "timesteps" in params and kind is None:
            ints = t_trunc.round().long()
            if len(ints.unique()) == len(ints):
                candidates.append((scheduler, {"timesteps": ints.tolist()}))
    for candidate, kwargs in candidates:
        try:
            probe = copy.deepcopy(candidate)
            probe.set_timesteps(**kwargs)
        except (ValueError, TypeError):
            continue
        sigmas = _schedule_sigmas(probe, vp)
        if abs(float(sigmas[0]) / sigma_start - 1) <= START_RTOL:
            return TruncatedSchedule(candidate, sigmas, kwargs, n)
    raise ValueError(
        f"{type(scheduler).__name__} with this config cannot start {n} steps at sigma={sigma_start:.4g}: it takes "
        "neither a usable `sigmas=` nor `timesteps=` (or the integer timesteps collide), and has no Karras/"
        "exponential/beta sigma_max. Use a diffusers_geo scheduler, EulerDiscreteScheduler, "
        "DPMSolverMultistepScheduler, or set use_karras_sigmas=True; with integer timesteps use fewer steps."
    )


def truncated_sigmas(scheduler_or_config, num_inference_steps: int, sigma_start: float) -> torch.Tensor:
    """The N + 1 sigmas (terminal included) of :func:`truncated_schedule` for a scheduler, or for a config
    (``pipe.scheduler.config``) read as a diffusers-geo scheduler: pass them as ``sigmas=``."""
    scheduler = scheduler_or_config
    if not hasattr(scheduler, "set_timesteps"):
        from .schedulers import SigmaDDIMScheduler

        scheduler = SigmaDDIMScheduler.from_config(dict(scheduler_or_config))
    schedule = truncated_schedule(scheduler, num_inference_steps, sigma_start)
    if "sigmas" not in schedule.pipeline_kwargs:
        raise ValueError(
            f"{type(scheduler).__name__} does not take `sigmas=`; use truncated_schedule(...).pipeline_kwargs."
        )
    return torch.tensor(schedule.pipeline_kwargs["sigmas"], dtype=torch.float64)


def _schedule_sigmas(scheduler, vp: DiscreteVP) -> torch.Tensor:
    sigmas = getattr(scheduler, "sigmas", None)
    if isinstance(sigmas, torch.Tensor) and sigmas.numel() > 1:
        return sigmas.detach().cpu().to(torch.float64)
    t = torch.as_tensor(scheduler.timesteps).detach().cpu().to(torch.float64)
    return torch.cat([vp.sigma_of(t), torch.zeros(1, dtype=torch.float64)])


class PipelineLatents:
    """``initial_latents`` for any prior: what a prior provides is ``sample_shape`` (or ``None``),
    ``_start_sigma`` (the ``sigma_T`` it insists on, or ``None``) and ``_draw(shape, sigma, generator)``
    (float64 draws in sigma units)."""

    sample_shape: tuple[int, ...] | None
    _start_sigma: float | None = None

    def _draw(self, shape: tuple[int, ...], sigma: float, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def initial_latents(
        self,
        scheduler,
        batch_size: int = 1,
        *,
        shape: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        **set_timesteps_kwargs: Any,
    ) -> torch.Tensor:
        """Initial ``latents=`` for a pipeline: prior draws at the schedule's first sigma, scaled as the
        scheduler expects (see :class:`ScheduleStart`).

        Args:
            scheduler: a :class:`TruncatedSchedule`, or the pipeline's scheduler together with the
                schedule arguments the pipeline will get (``num_inference_steps=``, ``sigmas=`` or
                ``timesteps=``).
            batch_size: number of latents, or ``shape`` (checked against the prior's sample shape). The
                pipeline's batch is ``len(prompts) * num_images_per_prompt``: make it match.
            generator: a CPU generator (draws are made on the CPU in float64).
            device, dtype: of the returned latents (the pipeline's).

        Raises ``ValueError`` if the schedule does not start at the prior's ``sigma_T`` (within 2%), or if
        ``shape`` does not match the prior's sample shape.
        """
        sample_shape = self.sample_shape
        if isinstance(scheduler, TruncatedSchedule):
            if set_timesteps_kwargs:
                raise ValueError("Pass either a TruncatedSchedule or set_timesteps arguments, not both.")
            scheduler, set_timesteps_kwargs = scheduler.scheduler, scheduler.pipeline_kwargs
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(
                "Pass a CPU torch.Generator: priors draw on the CPU in float64 (same latents on any device)."
            )
        if shape is not None:
            shape = tuple(int(s) for s in shape)
            if sample_shape is not None and shape[1:] != tuple(sample_shape):
                raise ValueError(
                    f"The pipeline's latents have shape {shape} but the prior's samples have shape "
                    f"{tuple(sample_shape)} (fitted on latents of that size). Fit the prior on latents at the "
                    "resolution you generate (height // vae_scale_factor, width // vae_scale_factor)."
                )
        else:
            if sample_shape is None:
                raise ValueError("This prior has no sample_shape: pass shape=(batch, C, H, W).")
            if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
            shape = (int(batch_size), *sample_shape)
        start = schedule_start(scheduler, **set_timesteps_kwargs)
        expected = self._start_sigma
        if expected is not None and abs(start.sigma / expected - 1) > START_RTOL:
            raise ValueError(
                f"The schedule starts at sigma={start.sigma:.4g} but the prior is for sigma_T={expected:.4g}. "
                "Build the schedule with prior.truncated_schedule(scheduler, num_inference_steps) and pass "
                "it here, or use prior.with_sigma(None) to start wherever the schedule starts."
            )
        y = self._draw(shape, start.sigma, generator)
        return (y * start.latent_scale).to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# the fitted prior
# ------------------------------------------------------------------------------------------------
class TruncatedPrior(PipelineLatents, ModelMixin, ConfigMixin):
    """An auxiliary prior for the start of sampling (Franzese et al., arXiv 2206.05173, §3), fitted to data.

    The data model is a mixture of factor analysers ``sum_k pi_k N(mu_k, W_k W_k^T + diag(psi_k))`` (one
    component: a Gaussian with mean and low-rank-plus-diagonal covariance; ``rank=0``: a diagonal Gaussian
    mixture), fitted by EM (:func:`~diffusers_geo.solvers.priors.fit_factor_mixture`) to clean samples. At
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
        if sigma is not None and not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma (sigma_T) must be a positive finite number or None, got {sigma}.")
        if num_components < 1 or rank < 0:
            raise ValueError(f"Need num_components >= 1 and rank >= 0, got {num_components} and {rank}.")
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
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a positive finite number, got {sigma}.")
        return float(sigma)

    def sample(
        self, num_samples: int, sigma: float | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``num_samples`` draws ``y`` (float64, ``(n, *sample_shape)``) of the prior at ``sigma`` (default
        ``config.sigma``), in sigma units: ``y ≈ x0 + sigma * n``, the pipeline's sample divided by alpha."""
        y, _ = self.mixture(self._sigma(sigma)).sample(num_samples, generator)
        return y.reshape(num_samples, *self.sample_shape)

    def log_prob(self, y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        """Log density of ``y`` ``(B, *sample_shape)`` under the prior at ``sigma``."""
        flat = y.reshape(y.shape[0], -1).to(self.means)
        if flat.shape[1] != self.dim:
            raise ValueError(f"y has {flat.shape[1]} values per sample, the prior {self.dim}.")
        return self.mixture(self._sigma(sigma)).log_prob(flat)

    # --------------------------------------------------------------------------------------------
    # pipelines
    # --------------------------------------------------------------------------------------------
    def truncated_schedule(self, scheduler, num_inference_steps: int) -> TruncatedSchedule:
        """:func:`truncated_schedule` at this prior's ``sigma_T``."""
        return truncated_schedule(scheduler, num_inference_steps, self._sigma(None))

    @property
    def _start_sigma(self) -> float | None:
        return self.config.sigma

    def _draw(self, shape, sigma, generator):
        return self.sample(shape[0], sigma, generator)


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


@torch.no_grad()
def encode_images(
    images: str | Path | torch.Tensor,
    vae,
    image_size: int | tuple[int, int] | None = None,
    batch_size: int = 8,
    max_images: int | None = None,
) -> torch.Tensor:
    """Latents of images as the UNet sees them: ``(vae.encode(x).latent_dist.mode() - shift) * scaling_factor``.

    Args:
        images: a folder of image files (png, jpg, webp, bmp; sorted by name), or a tensor ``(N, 3, H, W)``
            of pixels in [-1, 1].
        vae: the pipeline's ``AutoencoderKL`` (``pipe.vae``).
        image_size: resize files to this square size or ``(height, width)`` (default: the first image's size).
        batch_size: images per VAE call.
        max_images: encode at most this many.
    """
    if isinstance(images, (str, Path)):
        folder = Path(images)
        files = (
            sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if folder.is_dir()
            else []
        )
        if not files:
            raise ValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) found in folder {folder}.")
        pixels = _load_images(files[:max_images], image_size)
    else:
        pixels = torch.as_tensor(images)[:max_images]
    param = next(vae.parameters())
    scale = getattr(vae.config, "scaling_factor", 1.0) or 1.0
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    out = []
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size].to(device=param.device, dtype=param.dtype)
        latents = vae.encode(batch).latent_dist.mode()
        out.append(((latents - shift) * scale).cpu().to(torch.float64))
    return torch.cat(out)


def _load_images(files: list[Path], image_size) -> torch.Tensor:
    from PIL import Image

    images = []
    size = None
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    for path in files:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if size is None:
                size = (image.height, image.width)
            image = image.resize((size[1], size[0]), Image.BICUBIC)
            array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        images.append(torch.from_numpy(array).permute(2, 0, 1))
    return torch.stack(images)


# ------------------------------------------------------------------------------------------------
# the prior-mismatch diagnostic
# ------------------------------------------------------------------------------------------------
@dataclass
class PriorMismatch:
    """The diagnostic at one candidate ``sigma_T`` (nats; Monte Carlo values carry a standard error).

    Attributes:
        sigma: the candidate start.
        kl_noise: ``KL(prior_sigma || q_sigma)``: how far the fitted prior is from the noise prior (paper B's
            prior-mismatch term with the fit standing in for the truth). Near 0 the noise prior suffices.
        kl_remaining: ``KL(reference_sigma || prior_sigma)``: the mismatch the fitted prior leaves, against a
            richer reference model of the data (``None`` without one).
        kl_reference_noise: ``KL(reference_sigma || q_sigma)``: the noise prior's mismatch by the reference.
        *_stderr: standard errors (0 for closed forms).
    """

    sigma: float
    kl_noise: float
    kl_noise_stderr: float = 0.0
    kl_remaining: float | None = None
    kl_remaining_stderr: float = 0.0
    kl_reference_noise: float | None = None
    kl_reference_noise_stderr: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def noise_prior(dim: int, sigma: float, kind: str = "vp", dtype=torch.float64) -> FactorMixture:
    """The standard start at ``sigma`` in sigma units: ``"vp"``: ``x ~ N(0, I)`` i.e. ``y ~ N(0, (1 + sigma^2)
    I)`` (diffusers' DDPM-family pipelines); ``"ve"``: ``N(0, sigma^2 I)`` (EDM / Karras-style samplers)."""
    if kind not in NOISE_PRIORS:
        raise ValueError(f"noise_prior must be one of {NOISE_PRIORS}, got {kind!r}.")
    variance = sigma**2 + (1.0 if kind == "vp" else 0.0)
    return FactorMixture(
        torch.zeros(1, dtype=dtype),
        torch.zeros(1, dim, dtype=dtype),
        torch.zeros(1, dim, 0, dtype=dtype),
        torch.full((1, dim), variance, dtype=dtype),
    )


def as_mixture(model) -> FactorMixture:
    """A clean-data :class:`FactorMixture` from a :class:`TruncatedPrior`, an ``OptimalDenoiser`` (its exact
    mixture) or a ``FactorMixture``."""
    if isinstance(model, FactorMixture):
        return model
    if isinstance(model, TruncatedPrior):
        return model.mixture()
    if hasattr(model, "means") and hasattr(model, "variances") and hasattr(model, "log_weights"):
        k, d = model.means.shape
        means = model.means.to(torch.float64)
        variances = model.variances.to(torch.float64).expand(k, d)
        return FactorMixture(model.log_weights.to(torch.float64), means, means.new_zeros(k, d, 0), variances)
    raise TypeError(f"Cannot read a Gaussian mixture from {type(model).__name__}.")


def _kl(p: FactorMixture, q: FactorMixture, num_samples: int, generator) -> tuple[float, float]:
    if p.num_components == 1 and q.num_components == 1:
        args = (p.means[0], p.factors[0], p.variances[0], q.means[0], q.factors[0], q.variances[0])
        return gaussian_kl(*args), 0.0
    return monte_carlo_kl(p, q, num_samples, generator)


def prior_mismatch(
    prior,
    sigmas: Sequence[float],
    reference=None,
    noise_prior_kind: str = "vp",
    num_samples: int = 4096,
    generator: torch.Generator | None = None,
) -> list[PriorMismatch]:
    """Paper B's prior-mismatch term for candidate starts ``sigmas``, to choose ``sigma_T``.

    For each ``sigma``: ``KL(prior_sigma || q_sigma)`` (closed form for one Gaussian, else an unbiased Monte
    Carlo estimate with ``num_samples`` draws) and, given a ``reference`` model of the data (e.g. a larger
    ``TruncatedPrior`` mixture fitted to the same data, or an ``OptimalDenoiser``'s exact mixture), the
    remaining ``KL(reference_sigma || prior_sigma)`` and the noise prior's ``KL(reference_sigma || q_sigma)``.
    Convolution with the noise shrinks every term as ``sigma`` grows; start where the remaining term is
    negligible next to the sampler's discretisation error.
    """
    p0 = as_mixture(prior)
    r0 = as_mixture(reference) if reference is not None else None
    if r0 is not None and r0.dim != p0.dim:
        raise ValueError(f"The reference has dimension {r0.dim}, the prior {p0.dim}.")
    rows = []
    for sigma in sigmas:
        sigma = float(sigma)
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"Candidate sigmas must be positive and finite, got {sigma}.")
        p, q = p0.convolve(sigma), noise_prior(p0.dim, sigma, noise_prior_kind)
        row = PriorMismatch(sigma, *_kl(p, q, num_samples, generator))
        if r0 is not None:
            r = r0.convolve(sigma)
            row.kl_remaining, row.kl_remaining_stderr = _kl(r, p, num_samples, generator)
            row.kl_reference_noise, row.kl_reference_noise_stderr = _kl(r, q, num_samples, generator)
        rows.append(row)
    return rows


def plot_prior_mismatch(rows: Sequence[PriorMismatch], path: str | Path | None = None, ax=None):
    """KL versus candidate ``sigma_T`` (log-log) for :func:`prior_mismatch`; saves to ``path`` if given and
    returns the matplotlib figure (needs matplotlib)."""
    try:
        import matplotlib

        if ax is None and path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover
        raise ImportError("plot_prior_mismatch needs matplotlib: pip install matplotlib") from err
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
    else:
        fig = ax.figure
    rows = sorted(rows, key=lambda r: r.sigma)
    s = [r.sigma for r in rows]
    series = [
        ("fitted prior vs noise prior", [r.kl_noise for r in rows], [r.kl_noise_stderr for r in rows]),
        (
            "reference vs noise prior",
            [r.kl_reference_noise for r in rows],
            [r.kl_reference_noise_stderr for r in rows],
        ),
        (
            "reference vs fitted prior (remaining)",
            [r.kl_remaining for r in rows],
            [r.kl_remaining_stderr for r in rows],
        ),
    ]
    for label, values, errors in series:
        if all(v is not None for v in values):
            ax.errorbar(
                s, [max(v, 1e-6) for v in values], yerr=errors, marker="o", ms=3, capsize=2, label=label
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("start noise level sigma_T")
    ax.set_ylabel("KL (nats)")
    ax.set_title("prior mismatch (Franzese et al. 2022, §2)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


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
    :mod:`diffusers_geo.solvers.priors`). ``D = math.inf`` is the Gaussian ``N(0, sigma_max^2 I)``; for finite
    ``D`` the radius has heavier tails, so feeding this prior to an ordinary diffusion model is wrong unless
    ``D`` is large (say ``D >= 2048`` at ``N = 3072``).

    Args:
        augmented_dim: ``D`` (> 0; ``math.inf`` for the diffusion limit).
        sample_shape: the shape of one sample (optional; else pass ``shape=`` when drawing).
    """

    def __init__(self, augmented_dim: float, sample_shape: Sequence[int] | None = None):
        if not augmented_dim > 0:
            raise ValueError(
                f"augmented_dim D must be > 0 (math.inf for the Gaussian), got {augmented_dim!r}."
            )
        self.augmented_dim = float(augmented_dim)
        self.sample_shape = tuple(int(s) for s in sample_shape) if sample_shape is not None else None

    def __repr__(self) -> str:
        return f"PFGMPPPrior(augmented_dim={self.augmented_dim}, sample_shape={self.sample_shape})"

    def law(self, data_dim: int, sigma_max: float) -> PFGMPPLaw:
        """The prior's law for ``data_dim``-dimensional samples at ``sigma_max``."""
        return PFGMPPLaw(int(data_dim), self.augmented_dim, float(sigma_max))

    def radii(self, num_samples: int, data_dim: int, sigma_max: float, generator=None) -> torch.Tensor:
        """Radii of the prior at ``sigma_max`` for ``data_dim``-dimensional samples (float64)."""
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
        sample_shape = tuple(shape) if shape is not None else self.sample_shape
        if sample_shape is None:
            raise ValueError("Pass shape=(C, H, W) (this PFGMPPPrior has no sample_shape).")
        y = self.law(int(np.prod(sample_shape)), sigma_max).sample(num_samples, generator)
        return y.reshape(num_samples, *sample_shape)

    def _draw(self, shape, sigma, generator):
        return self.sample(shape[0], sigma, shape[1:], generator)
