"""Sampling and denoising trajectories: a recorder for pipelines and manual loops, and their geometry.

Chen et al., "A Geometric Perspective on Diffusion Models" (arXiv 2305.19947), §3–4: a deterministic sampler
traces two coupled trajectories in sigma coordinates (``y = x / alpha``, ``y = x0 + sigma * n``),

* the **sampling trajectory** ``y_0, y_1, ..., y_N`` (from the noise shell down to the sample), which is
  *quasi-linear*: its distance to the chord ``y_0 -> y_N`` stays tiny;
* the **denoising trajectory** ``D(y_0, sigma_0), D(y_1, sigma_1), ...`` of the denoiser outputs, which bends
  but reaches the final sample much earlier (so a sampler could "jump" to it: ODE-Jump).

The paper also compares a network's denoiser with the optimal one (the *score deviation*, §4.3). This
module records both trajectories (:class:`TrajectoryRecorder`) and measures these facts
(:func:`chord_deviation`, :func:`trajectory_length`, :func:`distance_to_final`,
:func:`convergence_step`, :func:`score_deviation`, :func:`summarize`). Distances are Euclidean norms of
the flattened samples in data units; ``rms = norm / sqrt(d)`` is the per-coordinate (pixel) scale.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..parameterization import DiscreteVP, to_denoised
from ..schedulers import GeoScheduler
from ..schedulers.options import Bool, Choice, Int, Real
from ..schedules import training_sigmas
from ..solvers import euler_step
from ..solvers.arguments import Tensor

REDUCTIONS = ("projection", "subsample")
Denoiser = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass
class Trajectory:
    """A recorded run in sigma coordinates; every tensor lives on the CPU.

    Attributes:
        sigmas: ``(N,)`` float64 noise levels of the recorded steps.
        samples: ``(N, B, k)`` the samples ``y_n = x_n / alpha_n`` at those steps (flattened, maybe reduced).
        denoised: ``(N, B, k)`` the denoiser outputs ``D(y_n, sigma_n)``.
        final_sample: ``(B, k)`` the sample the run ended with, at ``final_sigma`` (0 for most schedules).
        final_sigma: noise level of ``final_sample``.
        steps: ``(N,)`` the step index of each record (``0, 1, ..., N-1`` unless thinned by ``max_records``).
        num_steps: the number of steps the run took (the final sample sits at index ``num_steps``).
        dim: the original dimension ``d`` of one sample.
        sample_shape: the original shape of one sample, e.g. ``(C, H, W)``.
        reduction: None, or how samples were reduced to ``k < d`` coordinates ("projection"/"subsample").
    """

    sigmas: torch.Tensor
    samples: torch.Tensor
    denoised: torch.Tensor
    final_sample: torch.Tensor
    final_sigma: float
    steps: torch.Tensor
    num_steps: int
    dim: int
    sample_shape: tuple[int, ...]
    reduction: str | None = None

    @property
    def batch_size(self) -> int:
        return self.samples.shape[1]

    @property
    def points(self) -> torch.Tensor:
        """The sampling trajectory with its end point: ``(N + 1, B, k)``."""
        return torch.cat([self.samples, self.final_sample[None]])

    @property
    def point_sigmas(self) -> torch.Tensor:
        """Noise levels of :attr:`points`: ``(N + 1,)``."""
        return torch.cat([self.sigmas, self.sigmas.new_tensor([self.final_sigma])])

    def images(self, which: str = "denoised") -> torch.Tensor:
        """``samples`` or ``denoised`` reshaped to ``(N, B, *sample_shape)`` (needs an unreduced recording)."""
        if self.reduction is not None:
            raise ValueError(
                f"This trajectory was recorded with reduction={self.reduction!r}; record with max_dim=None "
                "to get images back."
            )
        data = _pick(self, which)
        return data.reshape(data.shape[0], data.shape[1], *self.sample_shape)


# -------------------------------------------------------------------------------------------------
# the recorder
# -------------------------------------------------------------------------------------------------
class TrajectoryRecorder:
    """Record ``(sigma, y, D)`` at every step of a run, on the CPU, optionally reduced to bound memory.

    Three ways to feed it:

    * a manual loop in sigma coordinates: ``recorder.record(sigma=s, sample=y, denoised=D)`` at each step
      and ``recorder.record_final(y_end, sigma=0.0)`` at the end;
    * any diffusers pipeline or scheduler loop: ``with recorder.watch(pipe): pipe(...)``, or
      ``recorder.run(pipe, ...)``. While watching, ``pipe.scheduler.step`` is wrapped (and restored on
      exit): each call records the noise level, the sample ``y = x / alpha`` and the denoiser output
      computed from the model output, so it works with every pipeline, including ``DDPMPipeline`` whose
      ``__call__`` has no ``callback_on_step_end``;
    * additionally, as the ``callback_on_step_end`` of pipelines that take one
      (``pipe(..., callback_on_step_end=recorder)`` inside ``watch``; :meth:`run` passes it for you): the
      callback then takes the final sample from the pipeline's ``latents``, i.e. after any change the
      pipeline makes after the step (inpainting re-noises the kept region there).

    A diffusers-geo scheduler is not wrapped: it reports ``(y, D, sigma, sigma_next, y_next)`` to its
    ``on_step`` observer, which the recorder sets while watching (exact, in the scheduler's own sigma
    coordinates).

    Why wrap ``step`` instead of reading the callback alone: the callback sees the latents *after* a step
    but not the denoiser output of that step (pipelines do not pass ``pred_original_sample``), and
    inverting the step to recover it only works for first-order deterministic solvers. The wrapper sees
    the model output of every step of every scheduler.

    The denoiser output is the *model's* data prediction ``D`` (from the model output and the scheduler's
    ``prediction_type``, after classifier-free guidance): it equals the ``pred_original_sample`` of
    schedulers that report one, except that it is never clipped or thresholded (``clip_sample``).
    ``y`` and ``sigma`` are the EDM/VE coordinates of paper A for every VP scheduler: diffusers' Euler-type
    schedulers (sample already ``x0 + sigma n``) and DDIM/DDPM/DPM-Solver-type and diffusers-geo ones
    (sample ``alpha y``) alike. Flow-matching and EDM-preconditioned schedulers (no ``alphas_cumprod``) are
    not supported by ``watch``; record those with :meth:`record`.

    Args:
        max_dim: keep at most this many coordinates per sample (None: all). Reduction is fixed for the
            whole run, so linear structure (chords, straight lines) is preserved exactly and distances
            approximately (Johnson–Lindenstrauss).
        reduction: "projection" (a seeded Gaussian random projection scaled by ``1/sqrt(max_dim)``) or
            "subsample" (a seeded random subset of coordinates scaled by ``sqrt(d / max_dim)``); both
            keep norms in data units on average.
        max_records: keep at most this many steps (None: all). When full, every second record is dropped
            and only every ``2^j``-th step is kept from then on; the first step and the final sample
            are always kept.
        seed: seed of the projection / subset.
    """

    def __init__(
        self,
        max_dim: int | None = None,
        reduction: str = "projection",
        max_records: int | None = None,
        seed: int = 0,
    ):
        Int(2, optional=True, hint="(None keeps every coordinate)")("max_dim", max_dim)
        Choice(REDUCTIONS)("reduction", reduction)
        Int(2, optional=True, hint="(None keeps every step)")("max_records", max_records)
        Int()("seed", seed)
        self.max_dim = max_dim
        self.reduction = reduction
        self.max_records = max_records
        self.seed = seed
        self._watched: Any = None
        self.reset()

    # ---------------------------------------------------------------------------------------------
    # manual recording
    # ---------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything recorded (the reduction is drawn again at the next record)."""
        self._records: list[tuple[int, float, torch.Tensor, torch.Tensor]] = []
        self._count = 0
        self._stride = 1
        self._final: tuple[torch.Tensor, float] | None = None
        self._shape: tuple[int, ...] | None = None
        self._reducer: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._last_scale: float | None = None  # latents -> y factor of the last watched step's output

    @torch.no_grad()
    def record(self, sigma: float | torch.Tensor, sample: torch.Tensor, denoised: torch.Tensor) -> None:
        """Record one step in sigma coordinates.

        Args:
            sigma: the noise level of ``sample`` (a float or a one-element tensor).
            sample: ``y = x / alpha`` of shape ``(B, ...)`` (batch first).
            denoised: the denoiser output ``D(y, sigma)``, same shape.
        """
        sigma = _as_sigma(sigma)
        Tensor(finite=False)("sample", sample)  # a diagnostic records NaN too: it shows where a run broke
        Tensor(finite=False)("denoised", denoised)
        if sample.shape != denoised.shape:
            raise ValueError(
                f"sample and denoised must have the same shape, got {tuple(sample.shape)} and "
                f"{tuple(denoised.shape)}."
            )
        step = self._count
        self._count += 1
        if step % self._stride:
            return
        self._records.append((step, sigma, self._store(sample), self._store(denoised)))
        if self.max_records is not None and len(self._records) > self.max_records:
            self._stride *= 2
            self._records = [r for r in self._records if r[0] % self._stride == 0]

    @torch.no_grad()
    def record_final(self, sample: torch.Tensor, sigma: float | torch.Tensor = 0.0) -> None:
        """Record the sample the run ends with (``y`` at noise level ``sigma``, usually 0)."""
        sigma = _as_sigma(sigma)
        self._final = (self._store(Tensor(finite=False)("sample", sample)), sigma)

    def _store(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2:
            raise ValueError(
                f"Samples must be batch first, shape (B, ...), got {tuple(x.shape)}; use x[None] for one sample."
            )
        shape = tuple(x.shape[1:])
        if self._shape is None:
            self._shape = shape
            self._reducer = self._make_reducer(math.prod(shape))
        elif shape != self._shape:
            raise ValueError(
                f"Sample shape changed from {self._shape} to {shape} during a recording; call reset() between runs."
            )
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        flat = x.detach().to(device="cpu", dtype=dtype).reshape(x.shape[0], -1)
        return self._reducer(flat)

    def _make_reducer(self, dim: int) -> Callable[[torch.Tensor], torch.Tensor]:
        k = self.max_dim
        if k is None or k >= dim:
            return lambda flat: flat.clone()
        generator = torch.Generator().manual_seed(self.seed)
        if self.reduction == "subsample":
            index = torch.randperm(dim, generator=generator)[:k].sort().values
            scale = math.sqrt(dim / k)
            return lambda flat: flat[:, index] * scale
        matrix = torch.randn(dim, k, generator=generator, dtype=torch.float64) / math.sqrt(k)
        return lambda flat: flat @ matrix.to(flat.dtype)

    # ---------------------------------------------------------------------------------------------
    # results
    # ---------------------------------------------------------------------------------------------
    @property
    def num_records(self) -> int:
        """Number of steps currently stored."""
        return len(self._records)

    @property
    def nbytes(self) -> int:
        """Memory held by the stored tensors (samples, denoiser outputs and the final sample)."""
        total = sum(s.nbytes + d.nbytes for _, _, s, d in self._records)
        return total + (self._final[0].nbytes if self._final is not None else 0)

    def trajectory(self) -> Trajectory:
        """The recorded run as a :class:`Trajectory`."""
        if not self._records:
            raise ValueError("Nothing recorded yet: run a pipeline inside watch() or call record().")
        if self._final is None:
            raise ValueError(
                "The run has no final sample: call record_final(y_end) after a manual loop (a watched "
                "pipeline records it by itself at its last step)."
            )
        steps, sigmas, samples, denoised = zip(*self._records, strict=True)
        dim = math.prod(self._shape)
        reduced = self.max_dim is not None and self.max_dim < dim
        return Trajectory(
            sigmas=torch.tensor(sigmas, dtype=torch.float64),
            samples=torch.stack(samples),
            denoised=torch.stack(denoised),
            final_sample=self._final[0],
            final_sigma=self._final[1],
            steps=torch.tensor(steps, dtype=torch.long),
            num_steps=self._count,
            dim=dim,
            sample_shape=self._shape,
            reduction=self.reduction if reduced else None,
        )

    # ---------------------------------------------------------------------------------------------
    # pipelines and schedulers
    # ---------------------------------------------------------------------------------------------
    @contextmanager
    def watch(self, target: Any, reset: bool = True) -> Iterator[TrajectoryRecorder]:
        """Record every ``step`` of ``target.scheduler`` (a pipeline) or ``target`` (a scheduler).

        ``scheduler.step`` is wrapped for the duration of the block and restored afterwards; the
        recorder is reset on entry (one run per block) unless ``reset=False``.
        """
        Bool()("reset", reset)
        scheduler = getattr(target, "scheduler", target)
        if not callable(getattr(scheduler, "step", None)):
            raise TypeError(
                f"watch() needs a diffusers pipeline (with .scheduler) or a scheduler with .step(), got "
                f"{type(target).__name__}."
            )
        if self._watched is not None:
            raise RuntimeError("This recorder is already watching a scheduler; use one recorder per run.")
        if getattr(scheduler.step, "_trajectory_recorder", None) is not None:
            raise RuntimeError(
                f"{type(scheduler).__name__}.step is already being recorded by another recorder."
            )
        if isinstance(scheduler, GeoScheduler):
            with self._observe(scheduler, reset):
                yield self
            return
        probe = _SchedulerProbe(scheduler)
        if reset:
            self.reset()
        had_own = "step" in vars(scheduler)
        original = scheduler.step

        signature = inspect.signature(original)

        @functools.wraps(original)  # keeps the signature: pipelines inspect it for `eta` and `generator`
        def step(*args, **kwargs):
            bound = signature.bind(*args, **kwargs).arguments
            model_output, timestep, sample = bound["model_output"], bound["timestep"], bound["sample"]
            with torch.no_grad():
                model_input = scheduler.scale_model_input(sample, timestep)
            output = original(*args, **kwargs)
            self._record_step(probe, model_output, timestep, sample, model_input, output)
            return output

        step._trajectory_recorder = self
        scheduler.step = step
        self._watched = scheduler
        try:
            yield self
        finally:
            if had_own:
                scheduler.step = original
            else:
                del scheduler.step
            self._watched = None

    @contextmanager
    def _observe(self, scheduler: GeoScheduler, reset: bool) -> Iterator[TrajectoryRecorder]:
        """A diffusers-geo scheduler reports ``(y, D, sigma, sigma_next, y_next)`` itself (its ``on_step``
        observer): recorded exactly, in its own sigma coordinates."""
        if scheduler.on_step is not None:
            raise RuntimeError(
                f"{type(scheduler).__name__} already has an on_step observer (another recorder?)."
            )

        param = scheduler.parameterization

        def observe(y, denoised, sigma, sigma_next, y_next):
            # a flow model's run starts at sigma = inf, where y is infinite (the step holds y / sigma): the
            # trajectory starts at the first finite noise level
            if math.isfinite(sigma):
                self.record(sigma, y, denoised)
            self._last_scale = 1.0 / param.alpha(sigma_next)  # the pipeline's latents are alpha * y
            self.record_final(y_next, sigma_next)

        if reset:
            self.reset()
        scheduler.on_step = observe
        self._watched = scheduler
        try:
            yield self
        finally:
            scheduler.on_step = None
            self._watched = None

    def run(self, pipe: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``pipe(*args, **kwargs)`` while recording; returns the pipeline's output.

        Pipelines whose ``__call__`` takes ``callback_on_step_end`` get this recorder as that callback
        (a callback you pass runs after it); others (``DDPMPipeline``) are recorded through the step alone.
        """
        user_callback = kwargs.pop("callback_on_step_end", None)
        if supports_step_end_callback(pipe):
            kwargs["callback_on_step_end"] = self if user_callback is None else _chain(self, user_callback)
        elif user_callback is not None:
            raise ValueError(
                f"{type(pipe).__name__}.__call__ does not accept callback_on_step_end, so the callback you "
                "passed cannot run. The recorder does not need it (it records through scheduler.step): "
                "drop the argument, or run the scheduler loop yourself inside recorder.watch(scheduler)."
            )
        with self.watch(pipe):
            return pipe(*args, **kwargs)

    def __call__(self, pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        """``callback_on_step_end`` hook: takes the pipeline's ``latents`` after the step as the current
        end of the sampling trajectory. Needs :meth:`watch` (or :meth:`run`) around the pipeline call."""
        if self._watched is None or getattr(pipe, "scheduler", None) is not self._watched:
            raise RuntimeError(
                "TrajectoryRecorder used as callback_on_step_end outside watch(): the denoiser output of "
                "a step is read from scheduler.step, which must be wrapped before the run starts. Use "
                "`recorder.run(pipe, ...)` or `with recorder.watch(pipe): pipe(..., callback_on_step_end=recorder)`."
            )
        latents = callback_kwargs.get("latents")
        if latents is not None and self._last_scale is not None and self._final is not None:
            dtype = torch.float64 if latents.dtype == torch.float64 else torch.float32
            self.record_final(latents.to(dtype) * self._last_scale, self._final[1])
        return callback_kwargs

    def _record_step(self, probe, model_output, timestep, sample, model_input, output) -> None:
        sigma, sigma_next = probe.sigmas(timestep)
        alpha = DiscreteVP.alpha(sigma)
        dtype = torch.float64 if sample.dtype == torch.float64 else torch.float32
        x = model_input.to(dtype)
        y = x / alpha
        denoised = to_denoised(model_output.to(dtype), x, alpha, sigma, probe.prediction_type)
        self.record(sigma, y, denoised)
        # Units of the scheduler's sample: VE (Euler-type: scale_model_input divides by sqrt(1 + sigma^2))
        # or VP (identity). The next sample is in the same units.
        ratio = float(x.flatten().norm() / sample.to(dtype).flatten().norm().clamp_min(1e-30))
        ve_units = abs(ratio - alpha) < abs(ratio - 1.0)
        self._last_scale = 1.0 if ve_units else 1.0 / DiscreteVP.alpha(sigma_next)
        prev = output.prev_sample if hasattr(output, "prev_sample") else output[0]
        self.record_final(prev.to(dtype) * self._last_scale, sigma_next)


class _SchedulerProbe:
    """Reads the noise level of the current and the next step from any VP diffusers scheduler."""

    def __init__(self, scheduler: Any):
        alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
        config = getattr(scheduler, "config", {})
        if alphas_cumprod is None or config.get("use_flow_sigmas", False):
            raise TypeError(
                f"{type(scheduler).__name__} is not a discrete VP scheduler (no alphas_cumprod, or flow "
                "sigmas); watch() supports DDPM/DDIM/Euler/DPM-Solver/UniPC-type and diffusers-geo "
                "schedulers. Record other samplers with recorder.record(sigma, y, denoised)."
            )
        self.scheduler = scheduler
        self.prediction_type = config.get("prediction_type", "epsilon")
        self.parameterization = DiscreteVP(training_sigmas(torch.as_tensor(alphas_cumprod).cpu()))

    def sigmas(self, timestep: Any) -> tuple[float, float]:
        """``(sigma, sigma_next)`` of the step that just ran (called right after ``step``)."""
        s = self.scheduler
        index, sigmas = getattr(s, "step_index", None), getattr(s, "sigmas", None)
        if index is not None and isinstance(sigmas, torch.Tensor) and 1 <= index <= len(sigmas):
            nxt = float(sigmas[index]) if index < len(sigmas) else 0.0
            return float(sigmas[index - 1]), nxt
        # DDPM/DDIM/PNDM-type: no sigma table; go through the (training) timestep.
        t = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1)[:1].cpu()
        sigma = float(self.parameterization.sigma_of(t))
        timesteps = torch.as_tensor(s.timesteps).cpu().to(torch.float64)
        later = (timesteps == t).nonzero()
        pos = int(later[-1]) + 1 if len(later) else len(timesteps)
        if pos < len(timesteps):
            return sigma, float(self.parameterization.sigma_of(timesteps[pos : pos + 1]))
        final = getattr(s, "final_alpha_cumprod", None)
        if final is None:
            return sigma, 0.0
        final = float(final)
        return sigma, math.sqrt(max(1.0 - final, 0.0) / final)


def supports_step_end_callback(pipe: Any) -> bool:
    """Whether ``pipe.__call__`` takes ``callback_on_step_end`` (``DDPMPipeline`` does not)."""
    try:
        return "callback_on_step_end" in inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def _chain(first: Callable, second: Callable) -> Callable:
    def callback(pipe, step_index, timestep, callback_kwargs):
        callback_kwargs = first(pipe, step_index, timestep, callback_kwargs)
        return second(pipe, step_index, timestep, callback_kwargs)

    return callback


def _as_sigma(sigma: float | torch.Tensor) -> float:
    if not isinstance(sigma, (torch.Tensor, np.ndarray)):
        Real(0.0)("sigma", sigma)
    value = torch.as_tensor(sigma, dtype=torch.float64)
    if value.numel() != 1:
        raise ValueError(f"sigma must be one number per step, got shape {tuple(value.shape)}.")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"sigma must be finite and >= 0, got {value}.")
    return value


# -------------------------------------------------------------------------------------------------
# a trajectory of the exact probability-flow ODE
# -------------------------------------------------------------------------------------------------
@torch.no_grad()
def euler_trajectory(
    denoiser: Denoiser | Any,
    noise: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    recorder: TrajectoryRecorder | None = None,
) -> Trajectory:
    """Run the Euler/DDIM sampler ``y_next = (s'/s) y + (1 - s'/s) D`` (paper A, Prop. 1) from
    ``y_0 = sigmas[0] * noise`` and record it.

    Args:
        denoiser: ``D(y, sigma)`` in sigma coordinates, or an :class:`~diffusers_geo.OptimalDenoiser`.
        noise: standard normal noise ``(B, ...)``.
        sigmas: decreasing noise levels including the terminal one (e.g. ``scheduler.sigmas``).
        recorder: where to record (a fresh unreduced one by default); it is reset first.
    """
    denoise = getattr(denoiser, "denoise", denoiser)
    sigmas = [float(s) for s in torch.as_tensor(sigmas, dtype=torch.float64)]
    if len(sigmas) < 2 or any(b >= a for a, b in zip(sigmas, sigmas[1:], strict=False)):
        raise ValueError(f"sigmas must be decreasing with at least 2 values, got {sigmas}.")
    recorder = TrajectoryRecorder() if recorder is None else recorder
    recorder.reset()
    y = sigmas[0] * noise
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        denoised = denoise(y, sigma)
        recorder.record(sigma, y, denoised)
        y = euler_step(y, denoised, sigma, sigma_next)
    recorder.record_final(y, sigmas[-1])
    return recorder.trajectory()


# -------------------------------------------------------------------------------------------------
# geometry of a recorded trajectory
# -------------------------------------------------------------------------------------------------
def _pick(trajectory: Trajectory, which: str) -> torch.Tensor:
    if which == "samples":
        return trajectory.samples
    if which == "denoised":
        return trajectory.denoised
    raise ValueError(f"which must be 'samples' or 'denoised', got {which!r}.")


def chord_length(trajectory: Trajectory) -> torch.Tensor:
    """``|y_N - y_0|`` per sample: ``(B,)``."""
    return (trajectory.final_sample - trajectory.samples[0]).norm(dim=-1)


def chord_deviation(trajectory: Trajectory, relative: bool = True) -> torch.Tensor:
    """Perpendicular distance of every point of the sampling trajectory to its chord ``y_0 -> y_N``.

    Returns ``(N + 1, B)``; divided by the chord length if ``relative`` (scale-free: 0 for a straight
    line, and about 1e-2 for the "quasi-linear" trajectories of paper A, Fig. 3).
    """
    points = trajectory.points
    start = points[0]
    chord = trajectory.final_sample - start
    length = chord.norm(dim=-1)
    unit = chord / length.clamp_min(torch.finfo(chord.dtype).tiny)[:, None]
    offset = points - start
    along = (offset * unit).sum(-1, keepdim=True)
    deviation = (offset - along * unit).norm(dim=-1)
    return deviation / length if relative else deviation


def trajectory_length(trajectory: Trajectory) -> torch.Tensor:
    """Length of the sampling trajectory as a polyline through the recorded points: ``(B,)``.

    Thinned recordings (``max_records``) see a shorter polyline; the ratio to :func:`chord_length`
    is 1 for a straight trajectory whatever the thinning.
    """
    return trajectory.points.diff(dim=0).norm(dim=-1).sum(0)


def distance_to_final(trajectory: Trajectory, which: str = "denoised", rms: bool = True) -> torch.Tensor:
    """``|D_n - y_N|`` (``which="denoised"``) or ``|y_n - y_N|`` (``"samples"``) per step: ``(N, B)``.

    With ``rms`` the norm is divided by ``sqrt(d)`` (a per-pixel distance in data units).
    """
    distance = (_pick(trajectory, which) - trajectory.final_sample).norm(dim=-1)
    return distance / math.sqrt(trajectory.dim) if rms else distance


def convergence_step(trajectory: Trajectory, eps: float = 0.05, which: str = "denoised") -> torch.Tensor:
    """The first step from which the trajectory stays within ``eps`` (RMS per coordinate) of the final sample.

    For ``which="denoised"`` this is "when could ODE-Jump have stopped": returning ``D_n`` at that step
    gives the final sample to within ``eps``. Returns ``(B,)`` step indices (``trajectory.steps`` values);
    ``trajectory.num_steps`` means "only at the end".
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}.")
    close = distance_to_final(trajectory, which) <= eps  # (N, B)
    # stays close from n on  <=>  every later record is close (reverse cumulative AND)
    stays = close.flip(0).to(torch.int64).cumprod(0).flip(0).bool()
    steps = torch.cat([trajectory.steps, trajectory.steps.new_tensor([trajectory.num_steps])])
    stays = torch.cat([stays, stays.new_ones(1, stays.shape[1])])
    first = stays.to(torch.int64).argmax(0)
    return steps[first]


def sigma_at_step(trajectory: Trajectory, steps: torch.Tensor) -> torch.Tensor:
    """Noise levels at step indices as returned by :func:`convergence_step`."""
    lookup = dict(zip(trajectory.steps.tolist(), trajectory.sigmas.tolist(), strict=True))
    lookup[trajectory.num_steps] = trajectory.final_sigma
    return torch.tensor([lookup[int(s)] for s in steps], dtype=torch.float64)


@torch.no_grad()
def score_deviation(trajectory: Trajectory, optimal: Denoiser | Any, rms: bool = True) -> torch.Tensor:
    """Distance between the recorded denoiser outputs and the optimal ones along the same samples.

    ``|D(y_n, sigma_n) - D*(y_n, sigma_n)|`` per step, ``(N, B)`` (RMS per coordinate if ``rms``), where
    ``D*`` is e.g. an :class:`~diffusers_geo.OptimalDenoiser` of the training set (paper A, §4.3: the
    learned denoiser matches the optimal one at large sigma and departs from it at intermediate sigma).
    The score deviation is this distance divided by ``sigma_n^2``, since ``score = (D - y) / sigma^2``.
    Needs an unreduced recording.
    """
    if trajectory.reduction is not None:
        raise ValueError(
            "score_deviation needs the full samples, but this trajectory was reduced "
            f"({trajectory.reduction}); record with max_dim=None."
        )
    denoise = getattr(optimal, "denoise", optimal)
    dim = getattr(optimal, "dim", trajectory.dim)
    if dim != trajectory.dim:
        raise ValueError(f"The optimal denoiser has dimension {dim} but the trajectory {trajectory.dim}.")
    out = []
    for sigma, y, denoised in zip(
        trajectory.sigmas.tolist(), trajectory.samples, trajectory.denoised, strict=True
    ):
        reference = denoise(y.reshape(-1, *trajectory.sample_shape), sigma).reshape(y.shape[0], -1)
        out.append((denoised - reference.to(denoised.dtype)).norm(dim=-1))
    distance = torch.stack(out)
    return distance / math.sqrt(trajectory.dim) if rms else distance


def summarize(trajectory: Trajectory, eps: float = 0.05) -> dict[str, float]:
    """The numbers of paper A's observations for one recording, averaged over the batch.

    Keys: ``chord_deviation`` (max over the run of the relative distance to the chord),
    ``length_ratio`` (trajectory length / chord length), ``denoised_step`` / ``samples_step`` (median
    :func:`convergence_step` of the denoising and the sampling trajectory) with their noise levels
    ``denoised_sigma`` / ``samples_sigma``, ``num_steps`` and ``eps``.
    """
    denoised = convergence_step(trajectory, eps, "denoised")
    samples = convergence_step(trajectory, eps, "samples")
    med_d, med_s = denoised.median().reshape(1), samples.median().reshape(1)
    return {
        "chord_deviation": float(chord_deviation(trajectory).amax(0).mean()),
        "length_ratio": float((trajectory_length(trajectory) / chord_length(trajectory)).mean()),
        "denoised_step": int(med_d),
        "denoised_sigma": float(sigma_at_step(trajectory, med_d)[0]),
        "samples_step": int(med_s),
        "samples_sigma": float(sigma_at_step(trajectory, med_s)[0]),
        "num_steps": trajectory.num_steps,
        "eps": eps,
    }
