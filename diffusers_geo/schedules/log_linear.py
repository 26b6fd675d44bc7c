"""The gradient-estimation sampler's schedule (Permenter & Yuan, arXiv 2306.04848, its "second modification" of
DDIM): sigmas log-linear from a start sigma below the model's maximum (a constant gradient-descent step size
``1 - sigma_next / sigma``), every sigma snapped *up* to a trained timestep; on a flow-matching model the same
log-linear stretch after the first step from pure noise (:func:`flow_log_linear_sigmas`)."""

from __future__ import annotations

import math

import torch

from . import exponential_sigmas

LOG_LINEAR_ENDS = ("geometric-mean", "ddim")


def snap_up(sigmas: torch.Tensor, train_sigmas: torch.Tensor, rtol: float = 1e-9) -> torch.Tensor:
    """For each sigma the smallest training timestep ``t`` with ``sigma(t) >= sigma`` (clamped to T - 1).

    ``rtol`` keeps a sigma that *is* a training sigma up to round-off on its own timestep."""
    train = train_sigmas.to(torch.float64)
    t = torch.searchsorted(train, sigmas.to(torch.float64) * (1 - rtol))
    return t.clamp(max=len(train) - 1)


def log_linear_end_sigma(num_steps: int, train_sigmas: torch.Tensor, end: str = "geometric-mean") -> float:
    """The last sigma at which the model is called.

    ``"ddim"``: ``sigma(T // N)``, DDIM's last non-zero noise level (the authors' diffusers ``GEScheduler``,
    used for Stable Diffusion); ``"geometric-mean"``: ``sqrt(sigma(T // N) * sigma(0))`` (the schedule of the
    paper's CIFAR-10 / CelebA experiments).
    """
    if end not in LOG_LINEAR_ENDS:
        raise ValueError(f"Unknown log_linear_end {end!r}; choose one of {list(LOG_LINEAR_ENDS)}.")
    ddim_end = float(train_sigmas[min(len(train_sigmas) // num_steps, len(train_sigmas) - 1)])
    return ddim_end if end == "ddim" else math.sqrt(ddim_end * float(train_sigmas[0]))


def log_linear_timesteps(
    num_steps: int, train_sigmas: torch.Tensor, start_sigma: float, end: str = "geometric-mean"
) -> torch.Tensor:
    """The paper's N model timesteps (decreasing, int64), without the terminal one.

    ``N`` sigmas log-uniformly spaced from ``start_sigma`` down to :func:`log_linear_end_sigma`, each snapped
    up to a trained timestep (:func:`snap_up`); the update then uses the snapped ``sigma(t)``. The paper's
    schedule for Stable Diffusion (start 8.35, ``end="ddim"``) gives ``[901, 830, 751, ..., 166, 100]`` at
    N = 10, and for the CIFAR-10 model (start 40, ``end="geometric-mean"``) ``[853, 765, ..., 33, 14]``.

    Where snapping would repeat a timestep (many steps, near t = 0, where sigma(t) is coarse), the later one
    moves up to the next free timestep, so there are always ``N`` distinct model calls.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    start_t = int(snap_up(torch.tensor([start_sigma], dtype=torch.float64), train_sigmas)[0])
    if num_steps > start_t + 1:
        raise ValueError(
            f"{num_steps} steps do not fit below start sigma {start_sigma} (timestep {start_t}); "
            "use fewer steps or a larger start sigma."
        )
    if num_steps == 1:
        return torch.tensor([start_t], dtype=torch.int64)
    end_sigma = min(log_linear_end_sigma(num_steps, train_sigmas, end), start_sigma)
    t = snap_up(exponential_sigmas(end_sigma, start_sigma, num_steps), train_sigmas)
    for k in range(num_steps - 2, -1, -1):  # from the data end upwards: keep the timesteps distinct
        t[k] = max(int(t[k]), int(t[k + 1]) + 1)
    t[0] = start_t
    for k in range(1, num_steps):  # and none above the start (they fit: num_steps <= start_t + 1)
        t[k] = min(int(t[k]), int(t[k - 1]) - 1)
    return t


def flow_log_linear_sigmas(
    sigmas: torch.Tensor, sigma_min: float, end: str = "geometric-mean"
) -> torch.Tensor:
    """The schedule on a flow-matching model, from its spacing's ``N + 1`` sigmas (first ``inf``, last 0).

    A flow run starts from pure noise at ``sigma = inf``, where the prior is exact, so no start below the
    maximum is needed: the first call stays there and lands at the spacing's second level ``sigma_1``. The
    ``N - 1`` calls after it are log-uniform (a constant step size ``1 - sigma_next / sigma``) from ``sigma_1``
    down to the end, as in :func:`log_linear_end_sigma` with the spacing's last level for ``sigma(T // N)`` and
    ``sigma_min`` (the model's smallest level) for ``sigma(0)``: ``"ddim"`` the last level itself,
    ``"geometric-mean"`` ``sqrt(last * sigma_min)``. Nothing to snap: a flow model takes any timestep.
    Schedules of fewer than 3 steps are returned as they are.
    """
    if end not in LOG_LINEAR_ENDS:
        raise ValueError(f"Unknown log_linear_end {end!r}; choose one of {list(LOG_LINEAR_ENDS)}.")
    n = len(sigmas) - 1
    if n < 3:
        return sigmas
    start, last = float(sigmas[1]), float(sigmas[-2])
    end_sigma = min(last if end == "ddim" else math.sqrt(last * sigma_min), start)
    middle = exponential_sigmas(end_sigma, start, n - 1)
    middle[0], middle[-1] = start, end_sigma  # exactly, not through exp(log(.))
    return torch.cat([sigmas[:1], middle, sigmas[-1:]])
