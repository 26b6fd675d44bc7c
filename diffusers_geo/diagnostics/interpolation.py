"""Interpolating initial latents without leaving the noise shell.

Chen et al., "A Geometric Perspective on Diffusion Models" (arXiv 2305.19947), §3: a Gaussian latent
``z ~ N(0, sigma^2 I_d)`` lies, with overwhelming probability, near the sphere of radius ``sigma * sqrt(d)``
(``|z|^2 / d -> sigma^2``, relative spread ``1 / sqrt(2d)``), and every sampling trajectory starts there.
A straight mix ``(1 - t) z1 + t z2`` of two independent latents has norm about
``sigma sqrt(d) sqrt((1 - t)^2 + t^2)`` (0.71 of the radius at ``t = 1/2``): it starts *inside* the shell, where
the model saw no noise during training, and decodes to washed-out images. Spherical interpolation
(Shoemake 1985, "Animating rotation with quaternion curves", §3.3) follows the great circle between the
two directions instead and keeps the norm; a rescaled lerp is the cheap alternative.

The shell radius is ``sigma_max * sqrt(d)`` in the EDM/VE scaling and ``sqrt(d)`` for the unit-variance
latents diffusers pipelines draw (``init_noise_sigma = 1`` for DDPM/DDIM-type schedulers; Euler-type
schedulers multiply by ``init_noise_sigma`` afterwards, which scales the whole shell).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..schedulers.options import Choice, Int, Real
from ..solvers.arguments import Shape, Tensor

METHODS = ("slerp", "norm-lerp", "lerp")
#: the interpolation fraction t, from a (0) to b (1)
_FRACTION = Real(0.0, 1.0, hint="(t = 0 is a, t = 1 is b)")
#: a norm to rescale to (None: interpolate the two norms)
_RADIUS = Real(0.0, low_open=True, optional=True)


def shell_radius(dim: int | Sequence[int], sigma: float = 1.0) -> float:
    """``sigma * sqrt(d)``: the radius of the shell where ``N(0, sigma^2 I_d)`` concentrates.

    ``dim`` is ``d`` or a sample shape (e.g. ``(4, 64, 64)``: ``d = 16384``).
    """
    dim = Shape(single=True)("dim", dim)
    sigma = Real(0.0)("sigma", sigma)
    return sigma * math.sqrt(dim if isinstance(dim, int) else math.prod(dim))


def _check_pair(a: torch.Tensor, b: torch.Tensor, t: float) -> None:
    Tensor(finite=False)("a", a)
    Tensor(finite=False)("b", b)
    if a.shape != b.shape:
        raise ValueError(
            f"Cannot interpolate between latents of different shapes {tuple(a.shape)} and {tuple(b.shape)}; "
            "draw both with the same shape (batch size, channels, height, width)."
        )
    _FRACTION("t", t)


def _work_dtype(a: torch.Tensor) -> torch.dtype:
    return torch.float64 if a.dtype == torch.float64 else torch.float32


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, dot_threshold: float = 0.9995) -> torch.Tensor:
    """Spherical linear interpolation between ``a`` (``t = 0``) and ``b`` (``t = 1``).

    Each tensor is one vector (all its elements). With ``theta`` the angle between them,

        slerp(a, b, t) = sin((1 - t) theta) / sin(theta) * a + sin(t theta) / sin(theta) * b,

    so the result moves along the great circle at constant angular speed; for ``|a| = |b|`` its norm stays
    ``|a|`` for every ``t`` (the shell is kept). The endpoints are returned exactly. Nearly parallel inputs
    (cosine above ``dot_threshold``) fall back to a straight lerp; exactly opposite inputs have no unique
    great circle and raise ``ValueError``.
    """
    t = _FRACTION("t", t)
    Real(0.0, 1.0)("dot_threshold", dot_threshold)
    _check_pair(a, b, t)
    if t == 0.0:
        return a.clone()
    if t == 1.0:
        return b.clone()
    dtype = _work_dtype(a)
    u, v = a.to(dtype), b.to(device=a.device, dtype=dtype)
    norm_u, norm_v = u.norm(), v.norm()
    if norm_u == 0 or norm_v == 0:
        raise ValueError("slerp needs two non-zero vectors (the angle to a zero vector is undefined).")
    cos = float((u.flatten() @ v.flatten()) / (norm_u * norm_v))
    cos = max(-1.0, min(1.0, cos))
    if cos > dot_threshold:
        out = (1 - t) * u + t * v
    elif cos < -dot_threshold:
        raise ValueError(
            "slerp between (nearly) opposite vectors is undefined: every great circle joins them. "
            "Use a different pair of latents or norm_preserving_lerp."
        )
    else:
        theta = math.acos(cos)
        out = (math.sin((1 - t) * theta) * u + math.sin(t * theta) * v) / math.sin(theta)
    return out.to(a.dtype)


def norm_preserving_lerp(
    a: torch.Tensor, b: torch.Tensor, t: float, radius: float | None = None
) -> torch.Tensor:
    """Linear interpolation rescaled back onto the shell.

    Returns ``lerp(a, b, t)`` scaled to norm ``radius`` (default: ``(1 - t) |a| + t |b|``, which is the shell
    radius when both latents lie on it; pass :func:`shell_radius` to force it). The endpoints are exact
    when ``radius`` is None.
    """
    t = _FRACTION("t", t)
    _RADIUS("radius", radius)
    _check_pair(a, b, t)
    if radius is None and t in (0.0, 1.0):
        return (a if t == 0.0 else b).clone()
    dtype = _work_dtype(a)
    u, v = a.to(dtype), b.to(device=a.device, dtype=dtype)
    mix = (1 - t) * u + t * v
    norm = mix.norm()
    if norm == 0:
        raise ValueError(f"The straight mix of the two latents at t={t} is zero; its direction is undefined.")
    target = (1 - t) * u.norm() + t * v.norm() if radius is None else radius
    return (mix * (target / norm)).to(a.dtype)


def interpolate_latents(
    a: torch.Tensor, b: torch.Tensor, num: int, method: str = "slerp", radius: float | None = None
) -> torch.Tensor:
    """``num`` latents from ``a`` to ``b`` (both included), stacked on a new first axis: ``(num, *a.shape)``.

    Args:
        a, b: two latents of the same shape, e.g. one ``(C, H, W)`` latent per seed; the result is then a
            batch a pipeline takes as ``latents=``.
        num: number of frames (>= 2), at ``t = 0, 1/(num-1), ..., 1``.
        method: "slerp" (great circle), "norm-lerp" (:func:`norm_preserving_lerp`) or "lerp" (plain straight
            mix, which sinks into the shell: for comparison).
        radius: for "norm-lerp", the norm to rescale to (see :func:`norm_preserving_lerp`).
    """
    Choice(METHODS)("method", method)
    num = Int(2, hint="(the two endpoints included)")("num", num)
    _RADIUS("radius", radius)
    _check_pair(a, b, 0.0)
    fractions = [i / (num - 1) for i in range(num)]
    if method == "slerp":
        frames = [slerp(a, b, t) for t in fractions]
    elif method == "norm-lerp":
        frames = [norm_preserving_lerp(a, b, t, radius) for t in fractions]
    else:
        frames = [torch.lerp(a, b.to(a), t) for t in fractions]
    return torch.stack(frames)
