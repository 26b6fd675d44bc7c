"""Where the benchmark's samplers start: ``--prior`` and ``--sigma-start`` of ``diffusers-geo bench``.

By default every sampler starts from the common ``N(0, I)`` noise at its schedule's first sigma. With
``--prior gaussian|gmm`` the start is a :class:`~diffusers_geo.priors.TruncatedPrior` fitted to samples of
the benchmark's own data (Franzese et al., arXiv 2206.05173, §3: an auxiliary model of the noised
marginal); with ``--sigma-start`` the schedule is truncated to start at ``sigma_T``
(:func:`~diffusers_geo.priors.truncated_schedule`), from the prior or, without one, from the noise prior
``N(0, (1 + sigma_T^2) I)``. ``rmse`` then measures the distance to the exact PF-ODE solution from the
*same* start (discretisation error only); the Fréchet distance ``fd`` to the data is what compares starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..models import OptimalDenoiser
from ..priors import TruncatedPrior, truncated_schedule
from ..sampling import dynamic_shift
from ..solvers.reference import solve_probability_flow_ode
from .quality import DistributionScorer, Run, Summary, common_noise, summarize

# --prior kind -> TruncatedPrior.fit settings: one Gaussian with a rank-16 + diagonal covariance, or a
# 10-component diagonal Gaussian mixture (the digits mixture's own family: the best case for a fitted prior)
PRIOR_KINDS: dict[str, dict[str, int]] = {
    "gaussian": {"num_components": 1, "rank": 16},
    "gmm": {"num_components": 10, "rank": 0},
}
FIT_SAMPLES = 4096
FIT_SEED = 30_000  # data samples for the fit: a seed no run or floor uses


@dataclass
class BenchStart:
    """The benchmark's starting distribution: ``prior`` (``None``: ``N(0, I)`` noise) at ``sigma_start``
    (``None``: the schedule's own first sigma)."""

    prior: TruncatedPrior | None = None
    sigma_start: float | None = None
    kind: str = "noise"
    mu: float | None = None  #: a flow config's dynamic shift (Flux), the one every run of the benchmark uses

    @property
    def label(self) -> str:
        where = f"sigma_T={self.sigma_start:g}" if self.sigma_start is not None else "sigma_max"
        return f"start={self.kind}@{where}"

    @property
    def is_default(self) -> bool:
        return self.prior is None and self.sigma_start is None

    def prepare(
        self, scheduler, steps: int, noise: torch.Tensor, seed: int, gits: bool = False
    ) -> tuple[object, torch.Tensor]:
        """Set ``scheduler``'s schedule for ``steps`` steps from this start; returns the scheduler to run
        (a truncated Karras schedule of a diffusers built-in is a reconfigured copy) and its ``latents``."""
        if self.is_default:
            return scheduler, noise
        if gits:
            raise ValueError("--prior/--sigma-start cannot be combined with a +gits schedule.")
        kwargs = {"num_inference_steps": steps}
        if self.sigma_start is not None:
            schedule = truncated_schedule(scheduler, steps, self.sigma_start, self.mu)
            scheduler, kwargs = schedule.scheduler, schedule.set_timesteps_kwargs
        scheduler.set_timesteps(**kwargs)
        if self.prior is None:
            return scheduler, noise
        generator = torch.Generator().manual_seed(40_000 + seed)  # the same draws for every sampler
        latents = self.prior.initial_latents(
            scheduler, len(noise), generator=generator, dtype=noise.dtype, **kwargs
        )
        return scheduler, latents

    def floors(self, model: OptimalDenoiser, seeds: Sequence[int], num_samples: int) -> list[Summary]:
        """The floor row of this start: the exact PF-ODE solved from it (its gap to the data is the mismatch
        the start leaves, however many steps a sampler takes); none for the default start (``floors`` has
        that one)."""
        if self.is_default:
            return []
        sigma = self.sigma_start or model.parameterization.sigma_max
        name = f"exact PF-ODE from {self.kind} at sigma={sigma:.3g}"
        scorer, runs = DistributionScorer(model), []
        for seed in seeds:
            if self.prior is None:  # the N(0, I) latents at sigma_T: y = x / alpha
                noise = common_noise(model, seed, num_samples)
                flow = model.config.prediction_type == "flow_prediction"
                y = noise * (1 + sigma) if flow else noise * math.sqrt(1 + sigma**2)
            else:
                generator = torch.Generator().manual_seed(40_000 + seed)
                y = self.prior.sample(num_samples, sigma, generator).to(model.means.dtype)
            x = solve_probability_flow_ode(model.denoise, y, sigma, 0.0, rtol=1e-7, atol=1e-7).sample
            runs.append(Run(name, 0, 0, seed, *scorer(x), None))
        return summarize(runs, {name: False})


def make_start(
    model: OptimalDenoiser,
    prior: str = "none",
    sigma_start: float | None = None,
    seed: int = FIT_SEED,
    config: dict | None = None,
) -> BenchStart:
    """Fit the ``--prior`` kind (``"none"``, ``"gaussian"``, ``"gmm"``) to ``FIT_SAMPLES`` exact data samples.
    ``config`` (the benchmark's scheduler config) gives a Flux config's dynamic shift."""
    if prior != "none" and prior not in PRIOR_KINDS:
        raise ValueError(f"--prior must be 'none' or one of {sorted(PRIOR_KINDS)}, got {prior!r}.")
    sigma_max = model.parameterization.sigma_max
    if sigma_start is not None and not (0 < sigma_start <= sigma_max and math.isfinite(sigma_start)):
        raise ValueError(f"--sigma-start must be in (0, sigma_max={sigma_max:.4g}], got {sigma_start}.")
    if prior != "none" and sigma_start is None and math.isinf(sigma_max):
        raise ValueError(
            "A prior on a flow-matching model needs a finite --sigma-start (its start s = 1 is exact)."
        )
    mu = None if config is None else dynamic_shift(config)
    if prior == "none":
        return BenchStart(None, sigma_start, "noise", mu)
    generator = torch.Generator().manual_seed(seed)
    data, _ = model.sample_data(FIT_SAMPLES, generator)
    settings = dict(PRIOR_KINDS[prior])
    settings["rank"] = min(settings["rank"], model.dim // 2)  # tiny test sizes (--size 4: d = 16)
    fitted = TruncatedPrior.fit(data, **settings, sigma=sigma_start, generator=generator)
    return BenchStart(fitted, sigma_start, prior, mu)
