"""High-accuracy reference solution of the probability-flow ODE (the "exact" sampler to score others by).

In sigma coordinates the PF-ODE is ``dy/dsigma = (y - D(y, sigma)) / sigma`` (Karras et al. 2022,
eq. 3). With ``s = log sigma`` it becomes ``dy/ds = y - D(y, e^s)``, which is smooth down to small sigma;
we integrate it with the adaptive Dormand–Prince 5(4) pair (Dormand & Prince 1980; Hairer, Nørsett &
Wanner, *Solving ODEs I*, §II.5, Table 5.2) and finish with the exact limit ``y(0) = D(y, sigma_lo)``
from a tiny ``sigma_lo``, whose error is ``O(sigma_lo^2)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real

import torch

from .arguments import Tensor, item

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]

# Dormand–Prince 5(4) tableau.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


@dataclass
class ReferenceSolution:
    """Result of :func:`solve_probability_flow_ode`: the final sample, model calls and accepted steps."""

    sample: torch.Tensor
    nfe: int
    steps: int


def _number(name: str, value, positive: bool, kind: type = Real) -> None:
    """A finite real (``kind=Integral``: an int) that is > 0 (``positive``) or >= 0; 0-d tensors count."""
    value = item(value)
    what = "an int" if kind is Integral else "a finite number"
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {what} {'> 0' if positive else '>= 0'}, got {value}.")


def solve_probability_flow_ode(
    denoiser: Denoiser,
    y: torch.Tensor,
    sigma_start: float,
    sigma_end: float = 0.0,
    rtol: float = 1e-7,
    atol: float = 1e-7,
    sigma_lo: float = 1e-4,
    max_steps: int = 10_000,
) -> ReferenceSolution:
    """Integrate the PF-ODE from ``(y, sigma_start)`` down to ``sigma_end``.

    Args:
        denoiser: ``D(y, sigma)`` in sigma coordinates (e.g. :meth:`OptimalDenoiser.denoise`).
        y: initial sample ``x / alpha`` at ``sigma_start`` (batch first); float64 recommended.
        sigma_end: final noise level; 0 integrates to ``sigma_lo`` and returns ``D(y, sigma_lo)``.
        rtol, atol: tolerances of the step-size control (error norm: RMS per sample, worst sample).
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser must be a callable D(y, sigma), got {type(denoiser).__name__}.")
    Tensor(ndim=(2, None), hint="(batch first: y[None] for one sample)")("y", y)
    for name, value in (("sigma_start", sigma_start), ("rtol", rtol), ("atol", atol), ("sigma_lo", sigma_lo)):
        _number(name, value, positive=True)
    _number("sigma_end", sigma_end, positive=False)
    _number("max_steps", max_steps, positive=True, kind=Integral)
    if sigma_end >= sigma_start:
        raise ValueError(f"Need sigma_start > sigma_end >= 0, got {sigma_start} and {sigma_end}.")
    nfe = 0

    def f(state: torch.Tensor, s: float) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        return state - denoiser(state, math.exp(s))

    s, s_end = math.log(sigma_start), math.log(max(sigma_end, sigma_lo) if sigma_end == 0 else sigma_end)
    h = -min(0.05, s - s_end)
    steps = 0
    k1 = f(y, s)
    while s > s_end + 1e-12:
        if steps >= max_steps:
            raise RuntimeError(f"PF-ODE reference did not converge in {max_steps} steps.")
        h = max(h, s_end - s)  # do not step past the end (h < 0)
        ks = [k1]
        for i in range(1, 7):
            state = y + h * sum(a * k for a, k in zip(_A[i], ks, strict=False))
            ks.append(f(state, s + _C[i] * h))
        y5 = y + h * sum(b * k for b, k in zip(_B5, ks, strict=True))
        err = h * sum((b5 - b4) * k for b5, b4, k in zip(_B5, _B4, ks, strict=True))
        scale = atol + rtol * torch.maximum(y.abs(), y5.abs())
        err_norm = float((err / scale).pow(2).flatten(1).mean(1).sqrt().max())
        if err_norm <= 1.0:
            s, y, k1 = s + h, y5, ks[6]  # FSAL: last stage is f at the new point
            steps += 1
        factor = 0.9 * err_norm ** (-1 / 5) if err_norm > 0 else 5.0
        h *= min(5.0, max(0.2, factor))
    if sigma_end == 0:
        y = denoiser(y, math.exp(s))
        nfe += 1
    return ReferenceSolution(sample=y, nfe=nfe, steps=steps)
