"""The prior-mismatch diagnostic (Franzese et al., arXiv 2206.05173, §2): ``KL(p_sigma || q)`` between the noised
data and a start distribution, in closed form for Gaussians and by Monte Carlo for mixtures, and its plot."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..schedulers.options import Choice, Int
from ..solvers.arguments import GENERATOR, Instance, Numbers
from .fitting import (
    FactorMixture,
    gaussian_kl,
    monte_carlo_kl,
)
from .prior import TruncatedPrior

NOISE_PRIORS = ("vp", "ve")


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
    sigmas = Numbers(low=0.0)("sigmas", sigmas)
    if min(sigmas) == 0:
        raise ValueError(f"sigmas are candidate starts sigma_T and must be positive, got {sigmas}.")
    Choice(NOISE_PRIORS, hint="(vp: diffusers' DDPM-family pipelines; ve: EDM-style samplers)")(
        "noise_prior_kind", noise_prior_kind
    )
    Int(1)("num_samples", num_samples)
    GENERATOR("generator", generator)
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
    _check_rows(rows, path)
    try:
        import matplotlib  # optional dependency, imported when used

        if ax is None and path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt  # optional dependency, imported when used
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


def _check_rows(rows, path) -> None:
    """:func:`plot_prior_mismatch`'s arguments, checked before matplotlib is loaded."""
    Instance((list, tuple), "a list of PriorMismatch rows (from prior_mismatch)")("rows", rows)
    bad = next((r for r in rows if not isinstance(r, PriorMismatch)), None)
    if bad is not None:
        raise TypeError(f"rows must hold PriorMismatch rows (from prior_mismatch), got an entry {bad!r}.")
    if not rows:
        raise ValueError("rows is empty; pass the rows prior_mismatch returns.")
    Instance((str, os.PathLike), "a path (str or os.PathLike)", optional=True)("path", path)
