"""GITS: a time schedule searched for the user's own model (Chen et al., "On the Trajectory Regularity of
ODE-based Diffusion Sampling", ICML 2024, arXiv 2405.11326), usable by any diffusers scheduler.

    schedule = gits_schedule(pipe, 6, prompt="a photo of a cat", num_warmup=64)
    image = pipe("a photo of a cat", sigmas=schedule.sigmas).images[0]  # Euler, Heun, diffusers-geo, ...
    schedule.apply(pipe.scheduler)  # any scheduler, e.g. DPM-Solver++ / UniPC (timesteps or sigmas)
    schedule.save("gits-6.json"); GITSSchedule.load("gits-6.json")

The search math (Euler-jump costs, dynamic program, analytic first step) is in
:mod:`diffusers_geo.solvers.gits`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.utils import logging

from .parameterization import DiscreteVP
from .schedulers.scheduling_geometric_heun import GeometricHeunScheduler
from .schedules import karras_sigmas
from .solvers.gits import COST_METRICS, afs_noise_scale, euler_jump_costs, gits_dynamic_program

GRIDS = ("timesteps", "karras")
logger = logging.get_logger(__name__)


@dataclass
class GITSSchedule:
    """A searched schedule: ``sigmas`` (N + 1 values, the terminal 0 included, the k-diffusion/ComfyUI and
    diffusers-Euler convention) and the N training ``timesteps`` of the model calls.

    Use it with any scheduler: ``pipe(..., sigmas=schedule.sigmas)`` (Euler, diffusers-geo schedulers),
    ``pipe(..., timesteps=schedule.timesteps)`` (DPM-Solver++: integer timesteps with the default
    ``grid="timesteps"``), or :meth:`apply` (picks the right one, and also serves UniPC and DEIS, whose
    ``set_timesteps`` takes neither).

    Attributes:
        sigmas, timesteps: the schedule.
        grid_indices: positions of the schedule points in the teacher grid.
        teacher_sigmas: the teacher grid (M + 1 values, ending in 0).
        coeff, metric, grid, num_warmup: the search settings.
        analytic_first_step: AFS: the run starts at ``sigmas[0]`` from ``initial_noise_scale * N(0, I)`` VP
            noise, which is where the analytic first step from the teacher's largest sigma lands (a free step:
            diffusers pipelines start from ``N(0, I)``, and ``initial_noise_scale`` is within about 1 % of 1).
        initial_noise_scale: see ``analytic_first_step`` (1 otherwise).
        model_calls: model evaluations the search spent (``teacher_steps * num_warmup``).
        cost: the minimal weighted cost of the dynamic program (per warm-up sample).
    """

    sigmas: list[float]
    timesteps: list[float]
    grid_indices: list[int]
    teacher_sigmas: list[float]
    coeff: float
    metric: str
    grid: str
    num_warmup: int
    model_calls: int
    cost: float
    analytic_first_step: bool = False
    initial_noise_scale: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_inference_steps(self) -> int:
        return len(self.sigmas) - 1

    def to_dict(self) -> dict[str, Any]:
        return {"format": "diffusers_geo.GITSSchedule", "version": 1, **asdict(self)}

    def save(self, path: str | Path) -> Path:
        """Write the schedule (and how it was searched) as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> GITSSchedule:
        """Read a schedule written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        if data.pop("format", None) != "diffusers_geo.GITSSchedule":
            raise ValueError(f"{path} is not a GITS schedule saved by diffusers_geo.")
        data.pop("version", None)
        return cls(**data)

    def apply(self, scheduler, device: str | torch.device | None = None):
        """Set this schedule on ``scheduler`` (any diffusers or diffusers-geo scheduler); returns it.

        Uses ``set_timesteps(sigmas=...)`` where the scheduler takes custom sigmas, else
        ``set_timesteps(timesteps=...)`` (integer timesteps; the default grid gives exactly those), else
        runs ``set_timesteps(N)`` and replaces ``timesteps`` and ``sigmas`` (UniPC, DEIS: their steps read
        both by step index). Schedulers that derive their steps from timestep arithmetic (DDIM, DDPM)
        cannot take a custom schedule: ``TypeError``.
        """
        params = inspect.signature(scheduler.set_timesteps).parameters
        if "sigmas" in params:
            try:
                scheduler.set_timesteps(sigmas=list(self.sigmas), device=device)
                return scheduler
            except ValueError:  # e.g. UniPC takes sigmas only for flow models
                pass
        n = self.num_inference_steps
        if "timesteps" in params:
            scheduler.set_timesteps(timesteps=[int(round(t)) for t in self.timesteps], device=device)
            return scheduler
        scheduler.set_timesteps(n, device=device)
        old_sigmas = getattr(scheduler, "sigmas", None)
        if old_sigmas is None or len(old_sigmas) != n + 1 or len(scheduler.timesteps) != n:
            raise TypeError(
                f"{type(scheduler).__name__} takes no custom schedule (no `sigmas=`/`timesteps=` in "
                "set_timesteps and no per-step sigma table); use a scheduler such as Euler, DPM-Solver++, "
                "UniPC or a diffusers-geo scheduler."
            )
        timesteps = torch.tensor([round(t) for t in self.timesteps], dtype=scheduler.timesteps.dtype)
        scheduler.timesteps = timesteps.to(scheduler.timesteps.device)
        scheduler.sigmas = torch.tensor(self.sigmas, dtype=old_sigmas.dtype).to(old_sigmas.device)
        return scheduler


def gits_schedule(
    model,
    num_inference_steps: int,
    *,
    scheduler_config: Mapping[str, Any] | None = None,
    sample_shape: Sequence[int] | None = None,
    num_warmup: int = 256,
    teacher_steps: int = 60,
    grid: str = "timesteps",
    coeff: float = 1.2,
    metric: str = "l2",
    analytic_first_step: bool = False,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    **pipeline_kwargs: Any,
) -> GITSSchedule:
    """Search a GITS time schedule with ``num_inference_steps`` steps for ``model``.

    1. Teacher: from ``num_warmup`` standard-normal noises, run the second-order multistep
       :class:`~diffusers_geo.GeometricHeunScheduler` over a dense grid of ``teacher_steps`` model calls
       (``grid="timesteps"``: integer training timesteps evenly spaced from T-1 to 0, the GITS choice for
       latent models, exactly representable by every scheduler; ``"karras"``: Karras rho = 7 sigmas, the
       choice for pixel EDM models), ending with the step to sigma = 0.
    2. Cost of every one-step Euler jump between grid points, measured against the teacher (no extra model
       calls); ``metric="l2"`` (distance) or ``"dev"`` (deviation from the start-end chord).
    3. Dynamic program over the costs with ``coeff`` (GITS eq. 9; the paper uses 1.15 for pixel models and
       1.20 for Stable Diffusion); optionally with a free analytic first step (AFS).

    **Cost, bounded and stated:** exactly ``teacher_steps x num_warmup`` model calls (default 60 x 256 =
    15,360: the cost of sampling 256 images with 60 steps; with classifier-free guidance each call is one
    guided UNet batch), run in batches of ``batch_size``. The Euler jumps (O(M^2 B d) arithmetic) and the
    dynamic program (O(N M^2)) are negligible. Compute it once, save it, reuse it for every sample and any
    solver.

    Args:
        model: one of
            * a diffusers pipeline whose ``__call__`` takes ``sigmas=`` and ``latents=`` (Stable Diffusion,
              SDXL, ...): it is run as is, with ``pipeline_kwargs`` (prompt, guidance_scale, height, ...), so
              the schedule fits the user's conditioning;
            * another pipeline with a ``unet`` and a ``scheduler`` (e.g. ``DDPMPipeline``): its UNet is used;
            * a UNet-like model or plain callable ``model(x, t, **model_kwargs)`` returning a tensor, a tuple
              or an object with ``.sample`` (epsilon, v or x0 as ``prediction_type`` says), on VP samples ``x``
              at (fractional) training timesteps ``t``.
        num_inference_steps: N, the model calls of the schedule (N steps).
        scheduler_config: the training schedule and ``prediction_type`` (e.g. ``pipe.scheduler.config``);
            taken from the pipeline, or from ``model.config`` when it has ``beta_schedule`` (e.g.
            :class:`~diffusers_geo.OptimalDenoiser`); required otherwise.
        sample_shape: ``(C, H, W)`` of one sample; taken from the pipeline / ``model.config`` if omitted.
        num_warmup: B, the warm-up samples (GITS: 256).
        teacher_steps: M, the model calls of a teacher trajectory (GITS: 60); N <= M.
        grid: ``"timesteps"`` or ``"karras"`` (see step 1).
        coeff: weight of later steps in the dynamic program (> 0). The default is the paper's value for
            Stable Diffusion (1.15 for pixel models); on the exact-denoiser benchmark ``coeff=1.0`` gave
            lower error for every solver (``docs/bench_geometric_heun.md``): try both on your model.
        metric: ``"l2"`` or ``"dev"`` (see step 2).
        analytic_first_step: AFS (AMED, arXiv 2312.00094): one free step from the largest sigma with the
            analytic direction; the schedule then starts lower, at ``sigmas[0]`` (see
            :class:`GITSSchedule`), with N model calls.
        batch_size: warm-up samples per model call.
        generator: for the warm-up noise.
        model_kwargs: extra keyword arguments for a UNet-like ``model`` (e.g. ``encoder_hidden_states``).
        progress: show a progress bar over the warm-up samples.
        **pipeline_kwargs: passed to every pipeline call (``prompt``, ``negative_prompt``,
            ``guidance_scale``, ``height``, ``width``, ...).

    Returns:
        a :class:`GITSSchedule`.
    """
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
        raise TypeError(f"num_inference_steps must be an int, got {num_inference_steps!r}.")
    if grid not in GRIDS:
        raise ValueError(f"Unknown grid {grid!r}; choose one of {list(GRIDS)}.")
    if metric not in COST_METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {list(COST_METRICS)}.")
    if not coeff > 0:
        raise ValueError(f"coeff must be > 0, got {coeff}.")
    if num_warmup < 1 or batch_size < 1:
        raise ValueError(f"num_warmup and batch_size must be >= 1, got {num_warmup} and {batch_size}.")
    if teacher_steps < 2:
        raise ValueError(f"teacher_steps must be >= 2, got {teacher_steps}.")
    max_steps = teacher_steps - int(analytic_first_step)
    if not 1 <= num_inference_steps <= max_steps:
        raise ValueError(
            f"GITS cannot pick {num_inference_steps} steps from a teacher grid of {teacher_steps} steps"
            f"{' (one of them the analytic first step)' if analytic_first_step else ''}: ask for 1 to "
            f"{max_steps} steps or raise teacher_steps."
        )

    from .bench.problems import SCHEDULE_KEYS  # the training-schedule config keys

    runner = _teacher_runner(model, scheduler_config, sample_shape, model_kwargs or {}, pipeline_kwargs)
    keys = (*SCHEDULE_KEYS, "prediction_type")
    teacher = GeometricHeunScheduler.from_config(
        {k: runner.config[k] for k in keys if k in runner.config}, multistep=True
    )
    grid_sigmas = _teacher_grid(teacher.parameterization, teacher_steps, grid)
    teacher.set_timesteps(sigmas=grid_sigmas)
    grid_sigmas = teacher.sigmas  # float64, ending in 0

    from tqdm.auto import tqdm

    logger.info(
        f"GITS: {teacher_steps} teacher steps x {num_warmup} warm-up samples = {teacher_steps * num_warmup} "
        f"model calls (in batches of {batch_size})."
    )
    costs = torch.zeros(len(grid_sigmas), len(grid_sigmas), dtype=torch.float64)
    with tqdm(total=num_warmup, desc="GITS warm-up", unit="sample", disable=not progress) as bar:
        done = 0
        while done < num_warmup:
            size = runner.batch(min(batch_size, num_warmup - done))
            noise = torch.randn(size, *runner.shape, generator=generator, dtype=torch.float32)
            states, denoised = runner.trajectories(teacher, noise)
            costs += euler_jump_costs(states, denoised, grid_sigmas, metric, analytic_first_step)
            done += size
            bar.update(size)
    costs /= done

    path, total = gits_dynamic_program(costs, num_inference_steps, coeff, analytic_first_step)
    if analytic_first_step:
        path = path[1:]  # 0 -> path[1] is the free analytic step
    sigmas = grid_sigmas[path]
    timesteps = teacher.parameterization.timestep_of(sigmas[:-1])
    if grid == "timesteps":
        timesteps = timesteps.round()
    scale = afs_noise_scale(float(grid_sigmas[0]), float(sigmas[0])) if analytic_first_step else 1.0
    return GITSSchedule(
        sigmas=sigmas.tolist(),
        timesteps=timesteps.tolist(),
        grid_indices=path,
        teacher_sigmas=grid_sigmas.tolist(),
        coeff=float(coeff),
        metric=metric,
        grid=grid,
        num_warmup=done,
        model_calls=done * teacher_steps,
        cost=total,
        analytic_first_step=analytic_first_step,
        initial_noise_scale=scale,
    )


def _teacher_grid(parameterization: DiscreteVP, teacher_steps: int, grid: str) -> list[float]:
    train = parameterization.train_sigmas
    if grid == "timesteps":
        if teacher_steps > len(train):
            raise ValueError(
                f"teacher_steps={teacher_steps} exceeds the {len(train)} training timesteps; use grid='karras'."
            )
        t = np.unique(np.linspace(len(train) - 1, 0, teacher_steps).round().astype(np.int64))[::-1].copy()
        levels = train[torch.from_numpy(t)]
    else:
        levels = karras_sigmas(float(train[0]), float(train[-1]), teacher_steps)
    return [*levels.tolist(), 0.0]


# -------------------------------------------------------------------------------------------------
# running the teacher on a pipeline or a model
# -------------------------------------------------------------------------------------------------
class _Runner:
    """Runs teacher trajectories and records ``(y_j, D_j)`` at every grid level."""

    config: Mapping[str, Any]
    shape: tuple[int, ...]

    def batch(self, size: int) -> int:
        return size

    def trajectories(self, teacher, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        record: list[tuple[torch.Tensor, torch.Tensor]] = []
        solver_step = teacher.solver_step

        def recording(y, denoised, sigma, sigma_next, noise_source):
            record.append((y.detach(), denoised.detach()))
            return solver_step(y, denoised, sigma, sigma_next, noise_source)

        teacher.solver_step = recording
        try:
            final = self.run(teacher, noise)
        finally:
            del teacher.solver_step
        if len(record) != len(teacher.timesteps):
            raise RuntimeError(f"the teacher made {len(record)} steps, expected {len(teacher.timesteps)}")
        states = torch.stack([y for y, _ in record] + [final.to(record[0][0])])
        return states, torch.stack([d for _, d in record])

    def run(self, teacher, noise: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _ModelRunner(_Runner):
    def __init__(self, model: Callable, config: Mapping[str, Any], shape, model_kwargs: Mapping[str, Any]):
        self.model, self.config, self.shape, self.model_kwargs = model, config, tuple(shape), model_kwargs
        params = list(getattr(model, "parameters", lambda: iter(()))())
        self.dtype = params[0].dtype if params else torch.float32
        self.device = params[0].device if params else torch.device("cpu")

    def run(self, teacher, noise: torch.Tensor) -> torch.Tensor:
        teacher.set_timesteps(sigmas=teacher.sigmas.clone())
        x = noise.to(self.device, self.dtype)
        with torch.no_grad():
            for t in teacher.timesteps:
                out = self.model(x, t.to(self.device), **self.model_kwargs)
                out = out.sample if hasattr(out, "sample") else out[0] if isinstance(out, tuple) else out
                x = teacher.step(out, t, x).prev_sample
        return x


class _PipelineRunner(_Runner):
    def __init__(self, pipe, shape, pipeline_kwargs: Mapping[str, Any]):
        self.pipe, self.config, self.shape = pipe, dict(pipe.scheduler.config), tuple(shape)
        self.kwargs = dict(pipeline_kwargs)
        if "num_images_per_prompt" in self.kwargs or "latents" in self.kwargs:
            raise TypeError(
                "GITS sets latents= and num_images_per_prompt= itself (see num_warmup, batch_size)."
            )
        prompt = self.kwargs.get("prompt")
        embeds = self.kwargs.get("prompt_embeds")
        self.prompts = len(prompt) if isinstance(prompt, list) else len(embeds) if embeds is not None else 1

    def batch(self, size: int) -> int:
        return max(self.prompts, size // self.prompts * self.prompts)

    def run(self, teacher, noise: torch.Tensor) -> torch.Tensor:
        pipe = self.pipe
        original, bar_config = pipe.scheduler, dict(getattr(pipe, "_progress_bar_config", {}))
        pipe.scheduler = teacher
        pipe.set_progress_bar_config(disable=True)
        try:
            unet_dtype = getattr(getattr(pipe, "unet", None), "dtype", noise.dtype)
            out = pipe(
                **self.kwargs,
                sigmas=teacher.sigmas.tolist(),
                latents=noise.to(pipe.device, unet_dtype),
                num_images_per_prompt=len(noise) // self.prompts,
                output_type="latent",
            )
        finally:
            pipe.scheduler = original
            pipe._progress_bar_config = bar_config
        images = out.images if hasattr(out, "images") else out[0]
        return images


def _teacher_runner(model, scheduler_config, sample_shape, model_kwargs, pipeline_kwargs) -> _Runner:
    is_pipeline = hasattr(model, "components") and hasattr(model, "scheduler")
    if is_pipeline:
        call = inspect.signature(model.__call__).parameters
        if "sigmas" in call and "latents" in call:
            if sample_shape is None:
                sample_shape = _latent_shape(model, pipeline_kwargs)
            return _PipelineRunner(model, sample_shape, pipeline_kwargs)
        if pipeline_kwargs:
            raise TypeError(
                f"{type(model).__name__} takes no custom sigmas/latents, so GITS runs its UNet directly and "
                f"cannot pass {sorted(pipeline_kwargs)}; pass model_kwargs for the UNet instead."
            )
        config = dict(scheduler_config or model.scheduler.config)
        model = model.unet
    else:
        if pipeline_kwargs:
            raise TypeError(f"Unexpected arguments {sorted(pipeline_kwargs)} for a model (not a pipeline).")
        own = dict(getattr(model, "config", None) or {})
        if scheduler_config is None and not {"beta_schedule", "prediction_type"} <= set(own):
            raise TypeError(
                "Pass scheduler_config= (e.g. pipe.scheduler.config): the training schedule and "
                "prediction_type of the model are needed to run it."
            )
        config = dict(scheduler_config or own)
    if sample_shape is None:
        model_config = getattr(model, "config", None) or {}
        size = model_config.get("sample_size")
        channels = model_config.get("in_channels")
        if size is None or channels is None:
            raise TypeError("Pass sample_shape=(C, H, W): it cannot be read from the model's config.")
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        sample_shape = (channels, h, w)
    return _ModelRunner(model, config, sample_shape, model_kwargs)


def _latent_shape(pipe, kwargs: Mapping[str, Any]) -> tuple[int, int, int]:
    unet = getattr(pipe, "unet", None)
    vae = getattr(pipe, "vae", None)
    if unet is None:
        raise TypeError(f"Pass sample_shape=(C, H, W) for {type(pipe).__name__} (no unet to read it from).")
    factor = getattr(pipe, "vae_scale_factor", 8)
    channels = vae.config.latent_channels if vae is not None else unet.config.in_channels
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    height = kwargs.get("height") or size[0] * factor
    width = kwargs.get("width") or size[1] * factor
    return (channels, int(height) // factor, int(width) // factor)


__all__ = ["GITSSchedule", "gits_schedule"]
