"""Noise schedules as plain functions returning tensors (no diffusers import).

Everything here lives in the one coordinate system of the package: the VE noise level
``sigma = sqrt((1 - alphas_cumprod) / alphas_cumprod)`` of a trained discrete VP model. A sampler
schedule is a 1-D float64 tensor of sigmas, decreasing, whose last entry is the terminal sigma
(usually 0), i.e. the k-diffusion / ComfyUI ``SIGMAS`` convention.

References: DDPM betas (Ho et al. 2020), cosine schedule (Nichol & Dhariwal 2021, eq. 17),
zero terminal SNR (Lin et al., arXiv 2305.08891, Alg. 1), timestep spacings (ibid., Table 2),
Karras sigmas (Karras et al. 2022, eq. 5), beta sigmas (Lee et al., arXiv 2407.12173).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
#: the config keys that define a model's training noise schedule (what an exact denoiser or a teacher needs)
SCHEDULE_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "rescale_betas_zero_snr",
)


def training_schedule(config, prediction_type: bool = False) -> dict:
    """The entries of a scheduler config that define the model's training noise schedule
    (:data:`SCHEDULE_KEYS`), plus its ``prediction_type`` (default ``"epsilon"``) if asked for."""
    schedule = {k: config[k] for k in SCHEDULE_KEYS if k in config}
    if prediction_type:
        schedule["prediction_type"] = config.get("prediction_type", "epsilon")
    return schedule


TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
SIGMA_SPACINGS = ("karras", "exponential", "beta")


def make_betas(
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas: Sequence[float] | np.ndarray | None = None,
) -> torch.Tensor:
    """The training betas (float32, as diffusers builds them)."""
    if trained_betas is not None:
        return torch.tensor(np.asarray(trained_betas), dtype=torch.float32)
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    if beta_schedule == "squaredcos_cap_v2":

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [
            min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), 0.999)
            for i in range(num_train_timesteps)
        ]
        return torch.tensor(betas, dtype=torch.float32)
    raise ValueError(f"Unknown beta_schedule {beta_schedule!r}; choose one of {BETA_SCHEDULES}.")


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Rescale betas so that the last timestep has zero SNR (arXiv 2305.08891, Algorithm 1)."""
    alphas_bar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


def shift_snr(alphas_cumprod: torch.Tensor, snr_shift_scale: float) -> torch.Tensor:
    """CogVideoX's SNR shift (as ``CogVideoXDDIMScheduler`` applies it, "following SD3"): every training
    timestep's signal-to-noise ratio divided by ``snr_shift_scale``,
    ``abar' = abar / (scale + (1 - scale) abar)``, i.e. ``SNR' = SNR / scale`` and ``sigma' = sqrt(scale) sigma``.
    A scale of 1 returns ``alphas_cumprod`` itself."""
    if snr_shift_scale == 1:
        return alphas_cumprod
    return alphas_cumprod / (snr_shift_scale + (1 - snr_shift_scale) * alphas_cumprod)


def betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The betas of ``alphas_cumprod``: ``beta_t = 1 - abar_t / abar_{t-1}`` (``beta_0 = 1 - abar_0``)."""
    alphas = torch.cat([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    return 1 - alphas


#: diffusers' Euler clamp of a zero terminal SNR, ``abar_T = 2**-24`` (``sigma_T = 4096``)
ZERO_SNR_ALPHAS_CUMPROD = 2.0**-24


def clamp_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """A finite stand-in for the zero ``abar_T`` of :func:`rescale_zero_terminal_snr` (where ``sigma_T`` is
    infinite): diffusers' Euler clamp ``2**-24``, unless that is not below ``abar_{T-1}`` (betas such as
    DDPM's linear 1e-4 ... 0.02 rescale to ``abar_{T-1} < 2**-24``); then ``abar_{T-1}`` times the ratio of the
    last finite step, ``abar_{T-1}^2 / abar_{T-2}``, so the noise levels keep increasing with ``t`` (the map
    between noise level and timestep needs that)."""
    out = alphas_cumprod.clone()
    clamp = ZERO_SNR_ALPHAS_CUMPROD
    if len(out) >= 3 and not clamp < float(out[-2]):
        clamp = float(out[-2]) ** 2 / float(out[-3])
    out[-1] = clamp
    return out


def training_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma(t) = sqrt((1 - abar_t) / abar_t) for every training timestep, in float64."""
    abar = alphas_cumprod.to(torch.float64)
    return ((1 - abar) / abar).sqrt()


def spaced_timesteps(
    num_inference_steps: int, num_train_timesteps: int, spacing: str, steps_offset: int = 0
) -> np.ndarray:
    """Integer-valued training timesteps, decreasing, for a diffusers ``timestep_spacing``."""
    n, t_train = num_inference_steps, num_train_timesteps
    if spacing == "linspace":
        timesteps = np.linspace(0, t_train - 1, n).round()[::-1]
    elif spacing == "leading":
        timesteps = (np.arange(0, n) * (t_train // n)).round()[::-1] + steps_offset
    elif spacing == "trailing":
        timesteps = np.round(np.arange(t_train, 0, -t_train / n)) - 1
    else:
        raise ValueError(f"Unknown timestep_spacing {spacing!r}; choose one of {TIMESTEP_SPACINGS}.")
    return np.clip(timesteps, 0, t_train - 1).astype(np.float64).copy()


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: n sigmas interpolated linearly in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def exponential_sigmas(sigma_min: float, sigma_max: float, n: int) -> torch.Tensor:
    """n sigmas uniform in log sigma (log-linear schedule)."""
    return torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp()


def edm_sigmas(ramp: torch.Tensor, schedule: str, sigma_min: float, sigma_max: float, rho: float = 7.0):
    """An EDM model's call sigmas at the points ``ramp`` in [0, 1] (0: ``sigma_max``, 1: ``sigma_min``), as
    diffusers' ``EDMEulerScheduler`` builds them: "karras" is Karras et al. (2022) eq. 5 at each ramp value,
    ``(sigma_max^(1/rho) + ramp (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``; "exponential" (CosXL) is
    ``len(ramp)`` levels uniform in log sigma, whatever the ramp's values (as there)."""
    ramp = ramp.to(torch.float64)
    if schedule == "karras":
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        return (hi + ramp * (lo - hi)) ** rho
    if schedule == "exponential":
        return exponential_sigmas(sigma_min, sigma_max, len(ramp))
    raise ValueError(f"Unknown sigma_schedule {schedule!r}; choose 'karras' or 'exponential'.")


def beta_sigmas(sigma_min: float, sigma_max: float, n: int, a: float = 0.6, b: float = 0.6) -> torch.Tensor:
    """Beta-distribution spacing (arXiv 2407.12173); needs scipy."""
    try:
        from scipy.stats import beta as beta_dist  # optional dependency, imported when used
    except ImportError as err:  # pragma: no cover - exercised only without scipy
        raise ImportError("use_beta_sigmas needs scipy: pip install scipy") from err
    ppf = beta_dist.ppf(1 - np.linspace(0, 1, n), a, b)
    return torch.tensor(sigma_min + ppf * (sigma_max - sigma_min), dtype=torch.float64)


def respace_sigmas(kind: str, sigma_min: float, sigma_max: float, n: int) -> torch.Tensor:
    """Dispatch to :func:`karras_sigmas`, :func:`exponential_sigmas` or :func:`beta_sigmas`."""
    builders = {"karras": karras_sigmas, "exponential": exponential_sigmas, "beta": beta_sigmas}
    if kind not in builders:
        raise ValueError(f"Unknown sigma spacing {kind!r}; choose one of {SIGMA_SPACINGS}.")
    return builders[kind](sigma_min, sigma_max, n)


def sigma_to_timestep(sigmas: torch.Tensor, train_sigmas: torch.Tensor) -> torch.Tensor:
    """Fractional training timestep of each sigma: linear interpolation of log sigma between
    neighbouring integer timesteps, clamped to [0, T-1] (the inverse of :func:`timestep_to_sigma`)."""
    log_train = train_sigmas.to(torch.float64).log()
    log_sigma = sigmas.to(torch.float64).clamp_min(1e-10).log()
    # index of the last training sigma <= sigma (training sigmas increase with t)
    low = (torch.searchsorted(log_train, log_sigma, right=True) - 1).clamp(0, len(log_train) - 2)
    lo, hi = log_train[low], log_train[low + 1]
    w = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
    return low.to(torch.float64) + w


def timestep_to_sigma(timesteps: torch.Tensor, train_sigmas: torch.Tensor) -> torch.Tensor:
    """sigma at (possibly fractional) training timesteps: log sigma interpolated linearly."""
    t = timesteps.to(torch.float64).clamp(0, len(train_sigmas) - 1)
    log_train = train_sigmas.to(device=t.device, dtype=torch.float64).log()
    low = t.floor().long().clamp(max=len(log_train) - 2)
    w = t - low.to(torch.float64)
    return torch.exp((1 - w) * log_train[low] + w * log_train[low + 1])


def append_terminal(sigmas: torch.Tensor, terminal: float) -> torch.Tensor:
    """Append the terminal sigma (0 for "zero", sigma(t=0) for "sigma_min")."""
    return torch.cat([sigmas.to(torch.float64), sigmas.new_tensor([terminal], dtype=torch.float64)])
