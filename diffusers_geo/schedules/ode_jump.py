"""ODE-Jump (Chen et al., "A Geometric Perspective on Diffusion Models", arXiv 2305.19947, §3 and Prop. 1) as a
schedule: the denoising trajectory reaches the final sample long before the sampling trajectory does, so a
run may stop at a noise level ``sigma_k`` and return the denoiser output ``D(y, sigma_k)``. That is the Euler
step from ``sigma_k`` to 0 (``y_next = (0 / sigma_k) y + (1 - 0) D``), so the jump is the schedule cut at
``sigma_k`` and followed by the terminal 0: every solver's step to 0 returns its data prediction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OdeJump:
    """Where an ODE-Jump run ends (see ``jump_sigma`` / ``jump_step`` of the schedulers).

    Args:
        step: index of the solver step whose noise level the run jumps from (0-based).
        sigma: that noise level; the run returns the denoiser output ``D(y, sigma)`` there.
        nfe: model calls of the truncated run.
        nfe_saved: model calls saved versus the full schedule.
    """

    step: int
    sigma: float
    nfe: int
    nfe_saved: int


def ode_jump(
    sigmas: torch.Tensor,
    jump_sigma: float | None = None,
    jump_step: int | None = None,
    count_calls: Callable[[torch.Tensor], int] = lambda s: len(s) - 1,
) -> tuple[torch.Tensor, OdeJump | None]:
    """Cut the N + 1 step ``sigmas`` for ODE-Jump: keep the levels down to the jump step, then go to 0.

    ``jump_sigma`` picks the first level ``<= jump_sigma`` (it must lie between the smallest and the largest
    level at which the model is called), ``jump_step`` names the step; neither: ``(sigmas, None)``.
    ``count_calls`` gives the model calls of a schedule (one per step by default; a two-call Heun step
    counts two), for the saved-calls report.
    """
    if jump_sigma is None and jump_step is None:
        return sigmas, None
    levels = sigmas[:-1]  # where the model is called; sigmas[-1] is the terminal level
    if jump_step is not None:
        if jump_step >= len(levels):
            raise ValueError(
                f"jump_step={jump_step} is outside the schedule: it has {len(levels)} steps "
                f"(jump_step 0 to {len(levels) - 1})."
            )
        step = jump_step
    else:
        lo, hi = float(levels[-1]), float(levels[0])
        tol = 1e-9 * hi
        if not lo - tol <= jump_sigma <= hi + tol:
            raise ValueError(
                f"jump_sigma={jump_sigma:g} is outside the schedule: its noise levels run from {hi:.6g} "
                f"down to {lo:.6g}. Choose jump_sigma in that range (or jump_step)."
            )
        step = int((levels <= jump_sigma + tol).nonzero()[0])
    cut = torch.cat([sigmas[: step + 1], sigmas.new_zeros(1)])
    nfe, full = count_calls(cut), count_calls(sigmas)
    return cut, OdeJump(step=step, sigma=float(sigmas[step]), nfe=nfe, nfe_saved=full - nfe)
