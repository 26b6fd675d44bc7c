"""Flow-matching schedules (SD3, Flux and the other FlowMatch pipelines) as plain functions (no diffusers import).

A flow-matching model sees ``x_s = (1 - s) x0 + s eps`` at the *noise fraction* ``s`` in [0, 1] and timestep
``1000 s``. In the package's one coordinate system (VE noise level ``sigma`` of ``y = x / alpha``) that is
``alpha = 1 - s`` and ``sigma = s / (1 - s)`` (:func:`flow_sigma`), so ``s = 1`` (pure noise, where every flow
pipeline starts) is ``sigma = inf``. The schedules here are written in ``s``, exactly as diffusers'
``FlowMatchEulerDiscreteScheduler`` (and DPM-Solver / UniPC with ``use_flow_sigmas=True``) build them, so that a
config handed over from those schedulers gives the same noise levels; :func:`flow_sigma` converts at the end.

References: the shift ``s -> shift s / (1 + (shift - 1) s)`` is the resolution-dependent timestep shift of
Esser et al. (SD3, arXiv 2403.03206, eq. 23); Flux's dynamic shift is the same map with ``shift = exp(mu)``
(``time_shift_type="exponential"``) or ``mu`` (``"linear"``); ``shift_terminal`` stretches the schedule to end
at a given ``s`` (LTX-Video).
"""

from __future__ import annotations

import math

import numpy as np
import torch

TIME_SHIFT_TYPES = ("exponential", "linear")

#: Stable Diffusion 3's scheduler config (``FlowMatchEulerDiscreteScheduler`` with ``shift=3.0``, as stabilityai
#: ships it), and Flux.1-dev's (a resolution-dependent dynamic shift: the pipeline passes ``mu``); the benchmark's
#: ``sd3`` / ``flux`` configs and the tiny test pipelines use them
SD3_SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0}
FLUX_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


def flow_sigma(s: torch.Tensor) -> torch.Tensor:
    """``sigma = s / (1 - s)`` (float64), with ``s = 1`` mapped to ``inf`` exactly."""
    s = s.to(torch.float64)
    return torch.where(s >= 1, torch.full_like(s, math.inf), s / (1 - s).clamp_min(1e-300))


def noise_fraction(sigma: torch.Tensor) -> torch.Tensor:
    """``s = sigma / (1 + sigma)``, the inverse of :func:`flow_sigma` (``inf -> 1``)."""
    sigma = sigma.to(torch.float64)
    return torch.where(torch.isinf(sigma), torch.ones_like(sigma), sigma / (1 + sigma))


def shift_fraction(s: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's timestep shift ``shift * s / (1 + (shift - 1) * s)`` (arXiv 2403.03206, eq. 23); 1 is the identity."""
    return shift * s / (1 + (shift - 1) * s)


def time_shift(s: torch.Tensor, mu: float, kind: str = "exponential") -> torch.Tensor:
    """Flux's dynamic shift: ``e^mu / (e^mu + (1 / s - 1))`` ("exponential", the shift map with ``shift =
    e^mu``) or ``mu / (mu + (1 / s - 1))`` ("linear")."""
    if kind not in TIME_SHIFT_TYPES:
        raise ValueError(f"Unknown time_shift_type {kind!r}; choose one of {list(TIME_SHIFT_TYPES)}.")
    m = torch.full_like(s, math.exp(mu) if kind == "exponential" else mu)
    return m / (m + (s.reciprocal() - 1))  # tensor / tensor: a number / tensor rounds twice in torch


def stretch_to_terminal(s: torch.Tensor, terminal: float) -> torch.Tensor:
    """Stretch ``1 - s`` so that the schedule ends at ``s = terminal`` (diffusers' ``shift_terminal``). A schedule
    that ends at ``s = 1`` (one step from pure noise) has nothing to stretch and is returned as is (diffusers
    divides 0 by 0 there)."""
    one_minus = 1 - s
    if float(one_minus[-1]) == 0.0:
        return s
    return 1 - one_minus / (one_minus[-1] / (1 - terminal))


def flow_match_fractions(num_inference_steps: int, num_train_timesteps: int, shift: float, dynamic: bool):
    """The noise fractions ``FlowMatchEulerDiscreteScheduler.set_timesteps(n)`` starts from before shifting:
    ``n`` values evenly spaced from its ``sigma_max`` to its ``sigma_min``, the ends of its training table
    (``s = t / T`` for ``t = 1..T``, shifted by ``shift`` unless the shift is dynamic), in float32 as it
    stores them. The shift is then applied (again) by :func:`shift_flow_fractions`, as diffusers does."""
    t = torch.linspace(1, num_train_timesteps, num_train_timesteps, dtype=torch.float32)
    table = t / num_train_timesteps
    if not dynamic:
        table = shift * table / (1 + (shift - 1) * table)
    hi, lo = table[-1].item(), table[0].item()
    return torch.from_numpy(
        np.linspace(hi * num_train_timesteps, lo * num_train_timesteps, num_inference_steps)
    ) / (num_train_timesteps)


def trailing_fractions(num_inference_steps: int) -> torch.Tensor:
    """``n`` noise fractions evenly spaced in ``t`` from ``s = 1`` down to ``1 / n`` (``linspace(1, 0, n + 1)``
    without its 0), before the shift: what FluxPipeline passes as ``sigmas`` and the flow analogue of
    ``timestep_spacing="trailing"`` (every step the same length in ``t``, the last one ending at 0)."""
    return torch.linspace(1, 0, num_inference_steps + 1, dtype=torch.float64)[:-1]


def dpm_flow_fractions(num_inference_steps: int, num_train_timesteps: int, shift: float) -> torch.Tensor:
    """DPM-Solver / UniPC's ``use_flow_sigmas=True`` schedule: ``1 - linspace(1, 1/T, n + 1)``, shifted, reversed,
    without its final 0 (it starts just below ``s = 1``)."""
    s = 1 - torch.from_numpy(np.linspace(1, 1 / num_train_timesteps, num_inference_steps + 1))
    return shift_fraction(s, shift).flip(0)[:-1]


def shift_flow_fractions(
    s: torch.Tensor,
    shift: float,
    mu: float | None = None,
    time_shift_type: str = "exponential",
    shift_terminal: float | None = None,
) -> torch.Tensor:
    """The shift step of ``FlowMatchEulerDiscreteScheduler.set_timesteps``: Flux's dynamic shift when ``mu`` is
    given, else SD3's static ``shift``; then the stretch to ``shift_terminal``."""
    s = time_shift(s, mu, time_shift_type) if mu is not None else shift_fraction(s, shift)
    if shift_terminal:
        s = stretch_to_terminal(s, shift_terminal)
    return s


def unshift_flow_fractions(
    s: torch.Tensor, shift: float, mu: float | None = None, time_shift_type: str = "exponential"
) -> torch.Tensor:
    """The inverse of :func:`shift_flow_fractions` without ``shift_terminal``: every shift is the map
    ``u -> k u / (1 + (k - 1) u)`` (``k = shift``, or ``e^mu`` / ``mu`` for Flux's exponential / linear dynamic
    shift), whose inverse is ``s -> s / (k - (k - 1) s)``."""
    if mu is not None:
        if time_shift_type not in TIME_SHIFT_TYPES:
            raise ValueError(
                f"Unknown time_shift_type {time_shift_type!r}; choose one of {list(TIME_SHIFT_TYPES)}."
            )
        shift = math.exp(mu) if time_shift_type == "exponential" else float(mu)
    return s / (shift - (shift - 1) * s)


def whole_schedule_options(config) -> list[str]:
    """The options of a flow config that reshape its schedule as a whole, as ``"name=value"``: ``shift_terminal``
    stretches every level by the last one, Karras / exponential / beta sigmas respace between the ends. A subset
    of such a schedule (GITS) or the same schedule moved to a lower start (a truncated start) would not keep its
    noise levels."""
    names = ("shift_terminal", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
    return [f"{name}={config[name]}" for name in names if config.get(name)]
