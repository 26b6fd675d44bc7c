"""Quality versus NFE on the exact denoiser, every sampler on common noise.

For each sampler, NFE and seed: draw the same initial noise for everyone, run the sampler's own loop
(``init_noise_sigma``, ``scale_model_input``, ``step``) with counted model calls, and score

* ``rmse``: distance to the exact PF-ODE solution from the same starting point (deterministic samplers);
* ``fd``: Fréchet distance of the samples' mean/covariance to the mixture's exact mean/covariance
  (in the leading principal subspace, see :class:`DistributionScorer`);
* ``mode_error``: total-variation distance between the frequencies of the mixture components the
  samples land in and the mixture weights.

Repeating over seeds gives the spread (the noise band): a difference smaller than it is not a win.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..gits import gits_schedule
from ..metrics import frechet_distance
from ..models import OptimalDenoiser
from ..registry import is_stochastic, make_scheduler, split_gits
from ..sampling import dynamic_shift, sample, set_timesteps, steps_for_nfe
from ..solvers.reference import solve_probability_flow_ode


@dataclass
class Run:
    sampler: str
    nfe_target: int
    nfe: int
    seed: int
    fd: float
    mode_error: float
    rmse: float | None


@dataclass
class Summary:
    sampler: str
    nfe_target: int
    nfe: int
    stochastic: bool
    # name -> (mean, std over seeds; None from a single seed, where no spread was measured)
    metrics: dict[str, tuple[float, float | None]] = field(default_factory=dict)


class DistributionScorer:
    """``(fd, mode_error)`` of samples against the exact mixture.

    The Fréchet distance is taken in the span of the ``dims`` leading principal directions of the exact
    data covariance (as FID works in a feature space): in the full pixel space a few hundred samples
    cannot estimate a covariance, and the finite-sample bias would swamp the differences between samplers.
    """

    def __init__(self, model: OptimalDenoiser, dims: int = 32):
        self.model = model
        cov = model.data_covariance()
        evals, evecs = torch.linalg.eigh(cov)
        self.basis = evecs[:, -min(dims, len(evals)) :]  # (d, k)
        self.mean = model.data_mean() @ self.basis
        self.cov = self.basis.T @ cov @ self.basis

    def __call__(self, samples: torch.Tensor) -> tuple[float, float]:
        flat = samples.reshape(len(samples), -1).to(self.basis.dtype)
        feats = flat @ self.basis
        fd = frechet_distance(feats.mean(0), torch.cov(feats.T), self.mean, self.cov)
        weights = self.model.weights
        comp = self.model.log_responsibilities(flat, 1e-3).argmax(-1)
        freq = torch.bincount(comp, minlength=len(weights)).to(flat.dtype) / len(flat)
        return fd, 0.5 * float((freq - weights).abs().sum())


def common_noise(model: OptimalDenoiser, seed: int, num_samples: int) -> torch.Tensor:
    """The initial N(0, I) noise every sampler (and the floors) starts from for ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_samples, *model.sample_shape, generator=generator, dtype=model.means.dtype)


#: where the reference PF-ODE of a flow model starts (its schedules start at sigma = inf)
INFINITE_START = 1e5


class ReferenceCache:
    """Exact PF-ODE solutions, keyed by seed and starting point (schedulers start at different sigmas)."""

    def __init__(self, model: OptimalDenoiser, rtol: float = 1e-5):
        self.model, self.rtol, self.cache = model, rtol, {}

    def solve(self, seed: int, model_input: torch.Tensor, timestep) -> torch.Tensor:
        param = self.model.parameterization
        sigma = float(param.sigma_of(torch.as_tensor(timestep, dtype=torch.float64).reshape(1).cpu()))
        y0 = param.to_y(model_input.to(self.model.means.dtype), sigma)
        if math.isinf(sigma):
            # a flow model's pure noise (s = 1): y holds y / sigma; start the ODE at INFINITE_START from the
            # exact limit y = sigma * u + E[x0] (its error is O(Var(x0) / sigma), below 1e-5 here)
            sigma = INFINITE_START
            y0 = sigma * y0 + self.model.data_mean().reshape(self.model.sample_shape)
        key = (seed, round(sigma, 6), round(float(y0.flatten()[:8].abs().sum()), 6))
        if key not in self.cache:
            self.cache[key] = solve_probability_flow_ode(
                self.model.denoise, y0, sigma, 0.0, rtol=self.rtol, atol=self.rtol
            ).sample
        return self.cache[key]


class GITSCache:
    """GITS schedules searched on the benchmark's own model (warm-up noise from seeds no run uses), one per
    step count and option set, reused across samplers and seeds."""

    def __init__(self, model: OptimalDenoiser, config: dict[str, Any], progress: bool = False):
        self.model, self.config, self.progress, self.cache = model, config, progress, {}

    def schedule(self, num_steps: int, options: dict[str, Any]):
        key = (num_steps, tuple(sorted(options.items())))
        if key not in self.cache:
            self.cache[key] = gits_schedule(
                self.model,
                num_steps,
                scheduler_config=self.config,
                mu=dynamic_shift(self.config),  # Flux: the benchmark's resolution, as every run here uses
                generator=torch.Generator().manual_seed(99_999),
                progress=self.progress,
                **{"num_warmup": 256, "batch_size": 256, **options},
            )
        return self.cache[key]


def run_quality(
    model: OptimalDenoiser,
    config: dict[str, Any],
    samplers: Sequence[str],
    nfes: Sequence[int],
    seeds: Sequence[int] = (0, 1, 2),
    num_samples: int = 256,
    progress: bool = True,
    start=None,
) -> tuple[list[Run], list[Summary]]:
    """Score every sampler at every NFE on every seed; returns the runs and their mean/std summaries.
    ``start`` (a :class:`~diffusers_geo.bench.start.BenchStart`) replaces the ``N(0, I)`` start."""
    from tqdm.auto import tqdm  # optional dependency, imported when used

    references, scores = ReferenceCache(model), DistributionScorer(model)
    gits = GITSCache(model, config)
    runs: list[Run] = []
    stochastic: dict[str, bool] = {}
    jobs = [(name, nfe, seed) for name in samplers for nfe in nfes for seed in seeds]
    for name, nfe_target, seed in tqdm(jobs, desc="bench", disable=not progress):
        scheduler = make_scheduler(name, config)
        stochastic[name] = is_stochastic(scheduler)
        steps = steps_for_nfe(scheduler, nfe_target)
        if steps is None:
            continue
        gits_options = split_gits(name)[1]
        if gits_options is None:
            set_timesteps(scheduler, steps)
        else:
            gits.schedule(steps, gits_options).apply(scheduler)
        noise = common_noise(model, seed, num_samples)
        if start is not None:
            scheduler, noise = start.prepare(scheduler, steps, noise, seed, gits=gits_options is not None)
        generator = torch.Generator().manual_seed(10_000 + seed)
        x, calls, (model_input, t0) = sample(scheduler, model, noise, generator)
        if calls != len(scheduler.timesteps):
            raise RuntimeError(
                f"{name}: counted {calls} model calls for {len(scheduler.timesteps)} timesteps"
            )
        fd, mode_error = scores(x)
        rmse = None
        if not stochastic[name]:
            ref = references.solve(seed, model_input, t0)
            rmse = float((x.to(ref.dtype) - ref).pow(2).mean().sqrt())
        runs.append(Run(name, nfe_target, calls, seed, fd, mode_error, rmse))
    return runs, summarize(runs, stochastic)


def floors(
    model: OptimalDenoiser, config: dict[str, Any], seeds: Sequence[int], num_samples: int
) -> list[Summary]:
    """The scores no sampler can beat with this many samples: exact data samples, and the exact PF-ODE
    started from N(0, I) at the schedule's largest sigma (its gap to the data is the prior mismatch)."""
    scores, references = DistributionScorer(model), ReferenceCache(model, rtol=1e-7)
    # sigma_max: the last training timestep of a VP model; s = 1 (sigma = inf) of a flow model
    flow = model.config.prediction_type == "flow_prediction"
    last_timestep = model.config.num_train_timesteps - (0 if flow else 1)
    data, ode = [], []
    for seed in seeds:
        x, _ = model.sample_data(num_samples, torch.Generator().manual_seed(20_000 + seed))
        data.append(scores(x))
        noise = common_noise(model, seed, num_samples)
        ode.append(scores(references.solve(seed, noise, last_timestep)))
    rows = []
    for name, scores in (("exact data samples", data), ("exact PF-ODE from sigma_max", ode)):
        runs = [Run(name, 0, 0, s, fd, me, None) for s, (fd, me) in zip(seeds, scores, strict=True)]
        rows += summarize(runs, {name: False})
    return rows


def summarize(runs: list[Run], stochastic: dict[str, bool]) -> list[Summary]:
    groups: dict[tuple[str, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.sampler, run.nfe_target), []).append(run)
    out = []
    for (name, nfe_target), group in groups.items():
        summary = Summary(name, nfe_target, group[0].nfe, stochastic[name])
        for metric in ("rmse", "fd", "mode_error"):
            values = [getattr(r, metric) for r in group if getattr(r, metric) is not None]
            if values:
                spread = statistics.stdev(values) if len(values) > 1 else None
                summary.metrics[metric] = (statistics.fmean(values), spread)
        out.append(summary)
    return out


def to_json(runs: list[Run], summaries: list[Summary], settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "settings": settings,
        "runs": [asdict(r) for r in runs],
        "summary": [asdict(s) for s in summaries],
    }
