"""The GITS time-schedule search as pure functions (Chen et al., "On the Trajectory Regularity of ODE-based
Diffusion Sampling", ICML 2024, arXiv 2405.11326, §4).

Sampling trajectories of one model share almost the same shape, so a few teacher trajectories on a dense
grid ``sigma_0 > ... > sigma_M`` show where a coarse solver loses accuracy. The cost of jumping from grid
point ``i`` to ``j`` in one Euler step (no extra model call: the teacher already evaluated ``D`` at ``i``)

    C[i, j] = mean over samples of  || euler_step(y_i, D_i, sigma_i, sigma_j) - y_j ||_rms,

(or, with ``jump="heun"``, of the trapezoidal jump ``euler_step(y_i, (D_i + D_j) / 2, sigma_i, sigma_j)``, the
local error of a second-order solver such as the multistep GeometricHeunScheduler, still with no extra call:
the teacher evaluated ``D`` at ``j`` too)

and the dynamic program (paper eq. 9, with the geometric weight ``coeff`` on later steps)

    V[i, 1] = C[i, M],    V[i, k] = min_{i < l < M}  C[i, l] + coeff * V[l, k - 1],

choose the K + 1 grid points (from 0 to M) of the best K-step schedule.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .euler import euler_step

COST_METRICS = ("l2", "dev")
JUMPS = ("euler", "heun")


def jump_costs(
    states: torch.Tensor,
    denoised: torch.Tensor,
    sigmas: torch.Tensor,
    metric: str = "l2",
    analytic_first_step: bool = False,
    jump: str = "euler",
) -> torch.Tensor:
    """Summed (over the batch) cost of every one-step jump along teacher trajectories.

    Args:
        states: ``(M + 1, B, ...)`` teacher samples ``y_j`` at the grid levels (the last one at ``sigmas[-1]``).
        denoised: ``(M, B, ...)`` the denoiser outputs ``D(y_j, sigma_j)`` for ``j < M``.
        sigmas: ``(M + 1,)`` the decreasing grid (``sigmas[-1]`` may be 0: the jump then returns ``D_i``).
        metric: ``"l2"``: RMS distance of the jump's end to the teacher's ``y_j``; ``"dev"``: how much farther
            from the chord ``y_0 -> y_M`` the jump lands than the teacher does (GITS's deviation metric,
            signed).
        analytic_first_step: jumps from point 0 use the analytic direction ``y_0 / sqrt(1 + sigma_0^2)``
            instead of the model's (AFS; Zhou et al., AMED, arXiv 2312.00094, §3.3: at the largest noise
            level the direction is almost the noise itself, so the first step needs no model call).
        jump: ``"euler"`` (GITS, eq. 8: the Euler step with ``D_i``) or ``"heun"`` (the Euler step with the
            mean ``(D_i + D_j) / 2`` of the teacher's denoiser outputs at both ends: Heun's trapezoidal
            corrector, the step of a second-order solver; a jump to the last level, where the teacher has no
            ``D``, stays an Euler jump -- the solvers' final step to sigma = 0 returns ``D_i``).

    Returns:
        ``(M + 1, M + 1)`` float64 matrix, ``C[i, j]`` summed over the batch for ``i < j``, ``inf`` elsewhere.
    """
    if metric not in COST_METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {list(COST_METRICS)}.")
    if jump not in JUMPS:
        raise ValueError(f"Unknown jump {jump!r}; choose one of {list(JUMPS)}.")
    m = len(sigmas) - 1
    flat = states.flatten(2)
    dim = flat.shape[-1]
    if metric == "dev":
        chord = flat[-1] - flat[0]
        chord = chord / chord.norm(dim=-1, keepdim=True).clamp_min(1e-12)

        def deviation(points: torch.Tensor) -> torch.Tensor:  # (..., B, d) -> (..., B)
            rel = points - flat[0]
            return (rel - (rel * chord).sum(-1, keepdim=True) * chord).norm(dim=-1) / math.sqrt(dim)

        teacher_deviation = deviation(flat)
    costs = torch.full((m + 1, m + 1), math.inf, dtype=torch.float64)
    for i in range(m):
        sigma = float(sigmas[i])
        source = denoised[i].flatten(1)
        if analytic_first_step and i == 0:
            source = flat[0] * (1 - sigma / math.sqrt(1 + sigma**2))  # D = y - sigma * y / sqrt(1 + sigma^2)
        targets = sigmas[i + 1 :].tolist()
        if jump == "euler":
            jumps = torch.stack([euler_step(flat[i], source, sigma, s) for s in targets])
        else:
            ends = denoised[i + 1 :].flatten(2)  # D_j for j < M
            jumps = torch.stack(
                [euler_step(flat[i], 0.5 * (source + ends[k]), sigma, s) for k, s in enumerate(targets[:-1])]
                + [euler_step(flat[i], source, sigma, targets[-1])]
            )
        if metric == "l2":
            cost = (jumps - flat[i + 1 :]).norm(dim=-1) / math.sqrt(dim)
        else:
            cost = deviation(jumps) - teacher_deviation[i + 1 :]
        costs[i, i + 1 :] = cost.to(torch.float64).sum(-1).cpu()  # float64 sum: batching changes little
    return costs


def afs_noise_scale(sigma_max: float, sigma_start: float) -> float:
    """Scale ``c`` with which standard-normal VP noise at ``sigma_max``, moved by the analytic first step to
    ``sigma_start``, is again ``c * N(0, I)`` in VP coordinates: ``(sqrt(1 + s0^2) - s0 + s) / sqrt(1 + s^2)``."""
    return (math.sqrt(1 + sigma_max**2) - sigma_max + sigma_start) / math.sqrt(1 + sigma_start**2)


def gits_dynamic_program(
    costs: torch.Tensor | np.ndarray, num_steps: int, coeff: float = 1.2, analytic_first_step: bool = False
) -> tuple[list[int], float]:
    """Best ``num_steps``-step path from grid point 0 to ``M`` (GITS, eq. 9).

    Args:
        costs: ``(M + 1, M + 1)`` jump costs (``C[i, j]`` for ``i < j``).
        num_steps: K, the number of model-evaluated steps; ``1 <= K <= M`` (``K < M`` with AFS).
        coeff: weight of the remaining cost after each step (``> 1`` spends more care on later steps).
        analytic_first_step: row 0 of ``costs`` is a free analytic first step (AFS): the path makes one
            step from 0 to some ``a`` without a model call, then K model-evaluated steps from ``a`` to ``M``.

    Returns:
        (grid indices of the schedule points: K + 1, or K + 2 starting with 0 -> a with AFS; the minimal
        weighted cost).
    """
    c = np.asarray(costs, dtype=np.float64)
    m = c.shape[0] - 1
    steps = num_steps + int(analytic_first_step)
    if num_steps < 1 or steps > m:
        raise ValueError(
            f"GITS cannot pick {num_steps} steps{' after an analytic first step' if analytic_first_step else ''}"
            f" from a teacher grid of {m} steps: use 1 to {m - int(analytic_first_step)} steps or a denser "
            "teacher grid (teacher_steps)."
        )
    value = np.full((m + 1, steps + 1), np.inf)
    choice = np.zeros((m + 1, steps + 1), dtype=np.int64)
    value[:m, 1] = c[:m, m]
    choice[:m, 1] = m
    for k in range(2, steps + 1):
        for i in range(m - k + 1):
            candidates = c[i, i + 1 : m] + coeff * value[i + 1 : m, k - 1]
            best = int(np.argmin(candidates))
            value[i, k], choice[i, k] = candidates[best], i + 1 + best
    path = [0]
    for k in range(steps, 0, -1):
        path.append(int(choice[path[-1], k]))
    return path, float(value[0, steps])
