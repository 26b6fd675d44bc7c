"""A truncated start (Franzese et al., arXiv 2206.05173, §2–3): where a scheduler's run starts, the same
schedule moved to start at ``sigma_T``, and the initial latents a pipeline takes for a prior's draws there.

Sigma is the VE noise level of the package (``y = x / alpha = x0 + sigma * n``, ``sigma = sqrt((1 - abar) /
abar)``; about 14.6 at Stable Diffusion's last timestep). The standard start is ``x ~ N(0, I)``, i.e. ``y ~
N(0, (1 + sigma^2) I)``. Works on diffusers-geo schedulers and on diffusers' built-ins alike.

Flow-matching models (SD3, Flux): ``x_s = (1 - s) x0 + s eps``, so ``sigma = s / (1 - s)`` and ``alpha = 1 - s``;
their runs start at pure noise (``s = 1``, ``sigma = inf``), where the prior is exact. A truncated start moves
the first level to a finite ``sigma_T`` (``s_T < 1``): the run skips the levels above it and starts from a
prior's draws there, ``latents = (1 - s_T) y`` (flow pipelines feed their latents to the model unscaled).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..parameterization import DiscreteVP
from ..registry import serves_flow
from ..schedulers import SigmaDDIMScheduler
from ..schedulers.base import GeoScheduler
from ..schedulers.options import Int, Real
from ..schedules import SIGMA_SPACINGS, respace_sigmas, training_sigmas
from ..schedules.flow import flow_sigma, noise_fraction, unshift_flow_fractions, whole_schedule_options
from ..solvers.arguments import GENERATOR, Instance, Shape, item

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
    if serves_flow(scheduler.config):
        probe = copy.deepcopy(scheduler)
        probe.set_timesteps(**set_timesteps_kwargs)
        sigma = _flow_levels(probe)[0]
        return ScheduleStart(sigma, 1 / (1 + sigma))  # latents = alpha * y, alpha = 1 - s = 1 / (1 + sigma)
    if not hasattr(scheduler, "alphas_cumprod"):
        raise TypeError(
            f"{type(scheduler).__name__} is neither a discrete VP (DDPM-family) nor a flow-matching scheduler; "
            "priors need one (Stable Diffusion 1.x/2.x/XL, DDPM/DDIM pixel models, SD3, Flux)."
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
            ``{"timesteps": [...]}`` or ``{"num_inference_steps": N}``. On a flow model: ``{"sigmas": [...]}``,
            the N unshifted noise fractions flow pipelines take (the scheduler shifts them to start at
            ``s_T``).
        num_inference_steps: the number of steps asked for.
        mu: a flow model's dynamic shift the schedule is built for (``None`` without dynamic shifting).
    """

    scheduler: Any
    sigmas: torch.Tensor
    pipeline_kwargs: dict[str, Any]
    num_inference_steps: int
    mu: float | None = None

    @property
    def sigma_start(self) -> float:
        """The first noise level (with integer ``timesteps`` it is the requested one rounded)."""
        return float(self.sigmas[0])

    @property
    def set_timesteps_kwargs(self) -> dict[str, Any]:
        """``pipeline_kwargs`` plus, on a flow model with dynamic shifting, the ``mu`` the schedule was built for
        (a Flux pipeline computes that ``mu`` itself from the resolution, so it is not a pipeline argument)."""
        return {**self.pipeline_kwargs, **({"mu": self.mu} if self.mu is not None else {})}


def truncated_schedule(
    scheduler, num_inference_steps: int, sigma_start: float, mu: float | None = None
) -> TruncatedSchedule:
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

    Flow-matching models (SD3, Flux; ours and ``FlowMatchEulerDiscreteScheduler``, UniPC with flow sigmas): the
    pipeline's N unshifted noise fractions scaled by ``u_T / u_0``, the same spacing on the shorter time
    ``[0, u_T]``, where ``u_T`` is the unshifted fraction that the config's shift maps to ``s_T = sigma_start /
    (1 + sigma_start)``. ``mu`` is the dynamic shift (Flux: ``calculate_shift`` of the resolution, as the
    pipeline computes it), required with ``use_dynamic_shifting=True``.
    """
    _check_schedule(scheduler, num_inference_steps, sigma_start, mu)
    sigma_start = float(sigma_start)
    if serves_flow(scheduler.config):
        return _flow_truncated_schedule(scheduler, int(num_inference_steps), sigma_start, mu)
    if mu is not None:
        raise ValueError(f"mu={mu} is a flow-matching schedule's dynamic shift; this scheduler is a VP one.")
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
    (``pipe.scheduler.config``) read as a diffusers-geo scheduler: pass them as ``sigmas=``. On a flow model
    (no dynamic shifting; else use :func:`truncated_schedule` with ``mu``) the N unshifted noise fractions a
    flow pipeline takes as ``sigmas=``."""
    scheduler = scheduler_or_config
    if not hasattr(scheduler, "set_timesteps"):
        Instance(Mapping, "a scheduler or a scheduler config (pipe.scheduler.config)")(
            "scheduler_or_config", scheduler
        )
        _check_schedule(None, num_inference_steps, sigma_start)  # before building a scheduler
        scheduler = SigmaDDIMScheduler.from_config(dict(scheduler_or_config))
    schedule = truncated_schedule(scheduler, num_inference_steps, sigma_start)
    if "sigmas" not in schedule.pipeline_kwargs:
        raise ValueError(
            f"{type(scheduler).__name__} does not take `sigmas=`; use truncated_schedule(...).pipeline_kwargs."
        )
    return torch.tensor(schedule.pipeline_kwargs["sigmas"], dtype=torch.float64)


def _check_schedule(scheduler, num_inference_steps, sigma_start, mu=None) -> None:
    """The checks of :func:`truncated_schedule`'s arguments (``scheduler=None``: not yet built)."""
    if scheduler is not None and not (hasattr(scheduler, "config") and hasattr(scheduler, "set_timesteps")):
        raise TypeError(
            f"scheduler must be a diffusers scheduler (e.g. pipe.scheduler), got {type(scheduler).__name__}."
        )
    Int(1)("num_inference_steps", num_inference_steps)
    Real(0.0, low_open=True, hint="sigma_start (sigma_T) is a positive noise level.")(
        "sigma_start", item(sigma_start)
    )
    Real(optional=True)("mu", item(mu))


def _flow_truncated_schedule(scheduler, n: int, sigma_start: float, mu: float | None) -> TruncatedSchedule:
    cfg = scheduler.config
    reshaped = whole_schedule_options(cfg)
    if reshaped:
        raise ValueError(
            f"{', '.join(reshaped)} reshape a flow schedule as a whole, so it cannot be moved to start at "
            "sigma_T: truncate a config without them."
        )
    dynamic = bool(cfg.get("use_dynamic_shifting"))
    if dynamic and mu is None:
        raise ValueError(
            "This flow-matching config has use_dynamic_shifting=True: pass mu= (Flux: calculate_shift of the "
            "image sequence length, diffusers_geo.sampling.flux_mu), the shift the pipeline will use."
        )
    if not dynamic:
        mu = None
    elif not math.isfinite(float(mu)):
        raise ValueError(f"mu must be a finite number, got {mu!r}.")
    if "sigmas" not in inspect.signature(scheduler.set_timesteps).parameters:
        raise ValueError(
            f"{type(scheduler).__name__} takes no `sigmas=`, so its flow schedule cannot start at sigma_T: use a "
            "diffusers_geo scheduler, FlowMatchEulerDiscreteScheduler or UniPC with flow sigmas."
        )
    # DPM-Solver / UniPC with flow sigmas shift by flow_shift (dynamically: exponentially), FlowMatch by shift
    flow_sigmas = bool(cfg.get("use_flow_sigmas"))
    shift = cfg.get("flow_shift", 1.0) if flow_sigmas else cfg.get("shift", 1.0)
    kind = "exponential" if flow_sigmas else cfg.get("time_shift_type", "exponential")
    extra = {} if mu is None else {"mu": float(mu)}

    def unshift(s: torch.Tensor) -> torch.Tensor:
        return unshift_flow_fractions(s, shift, mu, kind)

    full = copy.deepcopy(scheduler)
    if dynamic and not flow_sigmas:
        full.set_timesteps(sigmas=np.linspace(1.0, 1 / n, n), **extra)  # FluxPipeline's own call
    else:
        full.set_timesteps(n, **extra)
    # the shifted fractions of the full run, ending in 0 (two-call Heun repeats its levels)
    levels = noise_fraction(torch.unique_consecutive(_flow_levels(full)))
    s_start = sigma_start / (1 + sigma_start)
    unshifted = unshift(levels[:n])
    fractions = unshifted * (unshift(torch.tensor(s_start, dtype=torch.float64)) / unshifted[0])
    kwargs = {"sigmas": fractions.numpy()}  # an array, as FluxPipeline passes it (UniPC fails on a list)
    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(**kwargs, **extra)
    sigmas = _flow_levels(probe)
    if abs(float(sigmas[0]) / sigma_start - 1) > START_RTOL:
        raise ValueError(
            f"{type(scheduler).__name__} did not start the moved schedule at sigma_T={sigma_start:.4g} (it starts "
            f"at {float(sigmas[0]):.4g}): its shift is not the one read from its config."
        )
    return TruncatedSchedule(scheduler, sigmas, kwargs, n, mu)


def _flow_levels(scheduler) -> torch.Tensor:
    """A flow scheduler's noise levels as VE sigmas (float64, ``inf`` at ``s = 1``): ours store them so,
    diffusers' store the noise fractions ``s``."""
    levels = scheduler.sigmas.detach().cpu().to(torch.float64)
    return levels if isinstance(scheduler, GeoScheduler) else flow_sigma(levels)


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
        if shape is None:
            Int(1)("batch_size", batch_size)
        shape = Shape(optional=True)("shape", shape)
        GENERATOR("generator", generator)
        Instance(torch.dtype, "a torch.dtype")("dtype", dtype)
        if isinstance(scheduler, TruncatedSchedule):
            if set_timesteps_kwargs:
                raise ValueError("Pass either a TruncatedSchedule or set_timesteps arguments, not both.")
            scheduler, set_timesteps_kwargs = scheduler.scheduler, scheduler.set_timesteps_kwargs
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(
                "Pass a CPU torch.Generator: priors draw on the CPU in float64 (same latents on any device)."
            )
        if shape is not None:
            if sample_shape is not None and shape[1:] != tuple(sample_shape):
                raise ValueError(
                    f"The pipeline's latents have shape {shape} but the prior's samples have shape "
                    f"{tuple(sample_shape)} (fitted on latents of that size). Fit the prior on latents at the "
                    "resolution you generate (height // vae_scale_factor, width // vae_scale_factor)."
                )
        else:
            if sample_shape is None:
                raise ValueError("This prior has no sample_shape: pass shape=(batch, C, H, W).")
            shape = (int(batch_size), *sample_shape)
        start = schedule_start(scheduler, **set_timesteps_kwargs)
        expected = self._start_sigma
        if expected is not None and abs(start.sigma / expected - 1) > START_RTOL:
            raise ValueError(
                f"The schedule starts at sigma={start.sigma:.4g} but the prior is for sigma_T={expected:.4g}. "
                "Build the schedule with prior.truncated_schedule(scheduler, num_inference_steps) and pass "
                "it here, or use prior.with_sigma(None) to start wherever the schedule starts."
            )
        if math.isinf(start.sigma):
            raise ValueError(
                "The schedule starts at pure noise (s = 1, a flow-matching model's exact prior): a prior's start "
                "needs a truncated schedule (prior.truncated_schedule(scheduler, num_inference_steps, mu=...))."
            )
        y = self._draw(shape, start.sigma, generator)
        return (y * start.latent_scale).to(device=device, dtype=dtype)
