"""GITS: a time schedule searched for the user's own model (Chen et al., "On the Trajectory Regularity of
ODE-based Diffusion Sampling", ICML 2024, arXiv 2405.11326), usable by any diffusers scheduler.

    schedule = gits_schedule(pipe, 6, prompt="a photo of a cat", num_warmup=64)
    image = pipe("a photo of a cat", sigmas=schedule.sigmas).images[0]  # Euler, Heun, diffusers-geo, ...
    schedule.apply(pipe.scheduler)  # any scheduler, e.g. DPM-Solver++ / UniPC (timesteps or sigmas)
    schedule.save("gits-6.json"); GITSSchedule.load("gits-6.json")

    # next to the scheduler config (e.g. a pipeline's scheduler/ folder), on disk or on the Hub
    schedule.save_pretrained("my-pipeline/scheduler", scheduler=pipe.scheduler)
    schedule.push_to_hub("user/my-pipeline", scheduler=pipe.scheduler, subfolder="scheduler")
    schedule = GITSSchedule.from_pretrained("user/my-pipeline", subfolder="scheduler")

Several processes share the warm-up under 🤗 Accelerate (``gits_schedule(..., seed=0)``, or the command
``accelerate launch -m diffusers_geo.cli gits ...``, see :mod:`diffusers_geo.cli.gits`).

The search math (Euler-jump costs, dynamic program, analytic first step) is in
:mod:`diffusers_geo.solvers.gits`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import reduce
from diffusers.utils import PushToHubMixin, logging
from diffusers.utils import hub_utils as _hub_utils
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

from .parameterization import DiscreteVP
from .registry import serves_flow
from .schedulers.options import Bool, Choice, Int, Real
from .schedulers.scheduling_geometric_heun import GeometricHeunScheduler
from .schedules import karras_sigmas, training_schedule
from .schedules.flow import noise_fraction, whole_schedule_options
from .solvers.arguments import GENERATOR, MAPPING, PATH, Instance, Numbers, Shape, item
from .solvers.gits import COST_METRICS, JUMPS, afs_noise_scale, gits_dynamic_program, jump_costs

GRIDS = ("timesteps", "karras")
#: File name of a saved schedule (next to ``scheduler_config.json`` when saved with its scheduler).
GITS_SCHEDULE_NAME = "gits_schedule.json"
FORMAT = "diffusers_geo.GITSSchedule"
logger = logging.get_logger(__name__)


@dataclass
class GITSSchedule:
    """A searched schedule: ``sigmas`` (N + 1 values, the terminal 0 included, the k-diffusion/ComfyUI and
    diffusers-Euler convention; on a flow-matching model N unshifted noise fractions, see ``flow_matching``)
    and the N training ``timesteps`` of the model calls.

    Use it with any scheduler: ``pipe(..., sigmas=schedule.sigmas)`` (Euler, diffusers-geo schedulers),
    ``pipe(..., timesteps=schedule.timesteps)`` (DPM-Solver++: integer timesteps with the default
    ``grid="timesteps"``), or :meth:`apply` (picks the right one, and also serves UniPC and DEIS, whose
    ``set_timesteps`` takes neither).

    Attributes:
        sigmas, timesteps: the schedule.
        grid_indices: positions of the schedule points in the teacher grid.
        teacher_sigmas: the teacher grid (M + 1 values, ending in 0).
        coeff, metric, jump, grid, num_warmup: the search settings.
        analytic_first_step: AFS: the run starts at ``sigmas[0]`` from ``initial_noise_scale * N(0, I)`` VP
            noise, which is where the analytic first step from the teacher's largest sigma lands (a free step:
            diffusers pipelines start from ``N(0, I)``, and ``initial_noise_scale`` is within about 1 % of 1).
        initial_noise_scale: see ``analytic_first_step`` (1 otherwise).
        flow_matching: the schedule of a flow-matching model (SD3, Flux). Then ``sigmas`` are what a flow
            pipeline takes as ``sigmas=``: N noise fractions ``s`` *before* the shift and without the terminal
            0 (``FlowMatchEulerDiscreteScheduler``'s convention; the scheduler shifts them and appends 0), so
            ``pipe(prompt, sigmas=schedule.sigmas)`` runs it on SD3 and Flux pipelines alike;
            ``teacher_sigmas`` are the teacher grid's *shifted* noise fractions (M + 1, ending in 0) and
            ``timesteps`` the N training timesteps ``1000 s`` of the model calls.
        mu: the dynamic shift (Flux's ``calculate_shift``) the search ran with, ``None`` without dynamic
            shifting. :meth:`apply` passes it unless given another one (a flow pipeline passes its own mu
            for its resolution, which shifts the same unshifted fractions).
        model_calls: model evaluations the search spent (``teacher_steps * num_warmup``).
        cost: the minimal weighted cost of the dynamic program (per warm-up sample).
        info: free-form JSON-able notes: ``num_processes`` and ``seed`` of the search; the ``gits`` command
            adds ``model``, ``prompt`` and ``guidance_scale``.

    Storage: :meth:`save` / :meth:`load` (one JSON file), :meth:`save_pretrained` / :meth:`from_pretrained`
    (``gits_schedule.json`` in a folder, optionally next to the scheduler's ``scheduler_config.json``, local
    or on the Hub) and :meth:`push_to_hub`.
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
    jump: str = "euler"
    flow_matching: bool = False
    mu: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check the fields of a schedule built or edited by hand, so that a bad one fails here by name and not
        later inside a pipeline (the values themselves are kept as given)."""
        for name in ("sigmas", "teacher_sigmas"):
            Numbers(low=0.0)(name, getattr(self, name))
        Numbers()("timesteps", self.timesteps)
        Numbers(low=0, ints=True)("grid_indices", self.grid_indices)
        Real(0.0, low_open=True)("coeff", self.coeff)
        Choice(COST_METRICS)("metric", self.metric)
        Choice(GRIDS)("grid", self.grid)
        Choice(JUMPS)("jump", self.jump)
        Int(0)("num_warmup", self.num_warmup)
        Int(0)("model_calls", self.model_calls)
        Instance((int, float, np.floating, np.integer), "a number")("cost", self.cost)
        Bool()("analytic_first_step", self.analytic_first_step)
        Real(0.0, low_open=True)("initial_noise_scale", self.initial_noise_scale)
        Bool()("flow_matching", self.flow_matching)
        Real(optional=True)("mu", self.mu)
        Instance(dict, "a dict")("info", self.info)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "the data") -> GITSSchedule:
        """The schedule from :meth:`to_dict`'s output; ``ValueError`` naming ``source`` for anything else."""
        data = dict(data) if isinstance(data, Mapping) else {}
        if data.pop("format", None) != FORMAT:
            raise ValueError(
                f'{source} is not a GITS schedule saved by diffusers_geo (no "format": "{FORMAT}" entry).'
            )
        version = data.pop("version", None)
        if version != 1:
            raise ValueError(f"{source} has GITS schedule format version {version!r}; this release reads 1.")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        unknown, missing = sorted(set(data) - names), sorted(required - set(data))
        if unknown or missing:
            raise ValueError(f"{source} is not a valid GITS schedule: unknown {unknown}, missing {missing}.")
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        """Write the schedule (and how it was searched) as JSON."""
        path = Path(PATH("path", path))
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> GITSSchedule:
        """Read a schedule written by :meth:`save` (or a ``gits_schedule.json`` of :meth:`save_pretrained`)."""
        return cls.from_dict(_read_json(Path(PATH("path", path))), str(path))

    def save_pretrained(
        self, save_directory: str | os.PathLike, scheduler=None, push_to_hub: bool = False, **kwargs: Any
    ) -> Path:
        """Write ``gits_schedule.json`` into ``save_directory`` (created if needed); returns the file.

        With ``scheduler`` (e.g. ``pipe.scheduler``) its ``scheduler_config.json`` is written next to it, so
        the folder is a scheduler folder that also holds its schedule: a pipeline's ``scheduler/``
        subfolder still loads with ``DiffusionPipeline.from_pretrained`` (after ``import diffusers_geo`` for
        a diffusers-geo scheduler), and :meth:`from_pretrained` reads the schedule back.

        Args:
            save_directory: the folder.
            scheduler: a diffusers scheduler to save next to the schedule (optional).
            push_to_hub: then upload the folder (as diffusers' ``save_pretrained`` does), with
                ``repo_id`` (default: the folder's name), ``token``, ``private``, ``commit_message``,
                ``create_pr`` and ``subfolder`` from ``kwargs``. :meth:`push_to_hub` does the same from a
                temporary folder.
        """
        PATH("save_directory", save_directory)
        Bool()("push_to_hub", push_to_hub)
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory must be a folder, but {save_directory} is a file.")
        hub = {k: kwargs.pop(k) for k in _PUSH_KWARGS if k in kwargs}
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}; push_to_hub takes {list(_PUSH_KWARGS)}.")
        if hub and not push_to_hub:
            raise TypeError(f"{sorted(hub)} only apply with push_to_hub=True.")
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        if scheduler is not None:
            if not hasattr(scheduler, "save_pretrained"):
                raise TypeError(
                    f"scheduler must be a diffusers scheduler (with save_pretrained), got {type(scheduler).__name__}."
                )
            scheduler.save_pretrained(folder)
        path = self.save(folder / GITS_SCHEDULE_NAME)
        if push_to_hub:
            repo_id = hub.pop("repo_id", folder.resolve().name)
            repo_id = _hub_utils.create_repo(
                repo_id, exist_ok=True, private=hub.pop("private", None), token=hub.get("token")
            ).repo_id
            _ScheduleFolder(self, scheduler)._upload_folder(
                folder, repo_id, commit_message=hub.pop("commit_message", None) or _commit(scheduler), **hub
            )
        return path

    def push_to_hub(
        self,
        repo_id: str,
        scheduler=None,
        subfolder: str | None = None,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
    ) -> str:
        """Upload ``gits_schedule.json`` (and, with ``scheduler``, its ``scheduler_config.json``) to the Hub in
        one commit; returns the commit URL.

        Uses diffusers' :class:`~diffusers.utils.PushToHubMixin`: the repository is created if needed, and a
        model card is written when pushing to the repository root. Put the schedule into an existing
        pipeline repository with ``subfolder="scheduler"`` and ``scheduler=pipe.scheduler``: the pipeline
        then loads with that scheduler and ``GITSSchedule.from_pretrained(repo_id, subfolder="scheduler")``
        returns the schedule.
        """
        Instance(str, 'a Hub repository id ("user/name")')("repo_id", repo_id)
        Instance(str, "a str (a folder inside the repository)", optional=True)("subfolder", subfolder)
        Bool()("create_pr", create_pr)
        return _ScheduleFolder(self, scheduler).push_to_hub(
            repo_id,
            commit_message=commit_message or _commit(scheduler),
            private=private,
            token=token,
            create_pr=create_pr,
            subfolder=subfolder,
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        subfolder: str | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
    ) -> GITSSchedule:
        """Read ``gits_schedule.json`` from a local folder (or its ``subfolder``) or a Hub repository.

        ``pretrained_model_name_or_path`` may also be the JSON file itself. The other arguments are those of
        :func:`huggingface_hub.hf_hub_download` (Hub only).
        """
        name = os.fspath(PATH("pretrained_model_name_or_path", pretrained_model_name_or_path))
        Instance(str, "a str (a folder inside the repository)", optional=True)("subfolder", subfolder)
        Bool()("local_files_only", local_files_only)
        Bool()("force_download", force_download)
        where = f"{name}" + (f" (subfolder {subfolder!r})" if subfolder else "")
        hint = (
            f"expected a file {GITS_SCHEDULE_NAME!r} in {where}; write one with "
            "GITSSchedule.save_pretrained(folder, scheduler=pipe.scheduler) or "
            "`diffusers-geo gits --out folder`."
        )
        if os.path.isfile(name) and not subfolder:
            path = Path(name)
        elif os.path.isdir(name):
            path = Path(name, subfolder or "", GITS_SCHEDULE_NAME)
            if not path.is_file():
                raise FileNotFoundError(f"No GITS schedule: {hint}")
        else:
            try:
                path = Path(
                    hf_hub_download(
                        name,
                        GITS_SCHEDULE_NAME,
                        subfolder=subfolder or None,
                        cache_dir=cache_dir,
                        revision=revision,
                        token=token,
                        local_files_only=local_files_only,
                        force_download=force_download,
                    )
                )
            except EntryNotFoundError as err:
                raise FileNotFoundError(f"No GITS schedule on the Hub: {hint}") from err
        return cls.from_dict(_read_json(path), str(path))

    @property
    def num_inference_steps(self) -> int:
        return len(self.timesteps)

    def set_timesteps_kwargs(self, scheduler, mu: float | None = None) -> dict[str, Any]:
        """What ``scheduler.set_timesteps`` (and a pipeline call) takes to run this schedule: ``sigmas=`` where
        the scheduler accepts custom sigmas, else integer ``timesteps=``; ``{}`` where it takes neither.
        ``mu`` (flow models with dynamic shifting) is only used to try the sigmas; a pipeline passes its own."""
        if self.flow_matching != serves_flow(scheduler.config):
            kinds = ("a variance-preserving", "a flow-matching")
            raise ValueError(
                f"This GITS schedule was searched for {kinds[self.flow_matching]} model, but "
                f"{type(scheduler).__name__} serves {kinds[not self.flow_matching]} one: search a schedule "
                "for this model with gits_schedule."
            )
        params = inspect.signature(scheduler.set_timesteps).parameters
        if "sigmas" in params:
            extra = self._mu_kwargs(scheduler, mu)
            # flow schedulers take an array, as FluxPipeline passes it (UniPC's dynamic shift fails on a list)
            sigmas = np.array(self.sigmas) if self.flow_matching else list(self.sigmas)
            try:
                copy.deepcopy(scheduler).set_timesteps(sigmas=sigmas, **extra)
                return {"sigmas": sigmas}
            except ValueError:  # e.g. UniPC takes sigmas only for flow models
                pass
        if "timesteps" in params and not self.flow_matching:
            return {"timesteps": [int(round(t)) for t in self.timesteps]}
        return {}

    def _mu_kwargs(self, scheduler, mu: float | None) -> dict[str, Any]:
        """``{"mu": ...}`` (``mu``, else the search's) for a flow scheduler whose ``set_timesteps`` takes it."""
        if not self.flow_matching or "mu" not in inspect.signature(scheduler.set_timesteps).parameters:
            return {}
        return {"mu": self.mu if mu is None else mu}

    def apply(self, scheduler, device: str | torch.device | None = None, mu: float | None = None):
        """Set this schedule on ``scheduler`` (any diffusers or diffusers-geo scheduler); returns it.

        Uses ``set_timesteps(sigmas=...)`` where the scheduler takes custom sigmas, else
        ``set_timesteps(timesteps=...)`` (integer timesteps; the default grid gives exactly those), else
        runs ``set_timesteps(N)`` and replaces ``timesteps`` and ``sigmas`` (UniPC, DEIS, and DPM-Solver with
        flow sigmas: their steps read both by step index). Schedulers that derive their steps from timestep
        arithmetic (DDIM, DDPM) cannot take a custom schedule: ``TypeError``. On a flow model with dynamic
        shifting ``mu`` defaults to the search's (:attr:`mu`).
        """
        kwargs = self.set_timesteps_kwargs(scheduler, mu)
        extra = self._mu_kwargs(scheduler, mu)
        if kwargs:
            scheduler.set_timesteps(device=device, **kwargs, **extra)
            return scheduler
        n = self.num_inference_steps
        scheduler.set_timesteps(n, device=device, **extra)
        old_sigmas = getattr(scheduler, "sigmas", None)
        if old_sigmas is None or len(old_sigmas) != n + 1 or len(scheduler.timesteps) != n:
            raise TypeError(
                f"{type(scheduler).__name__} takes no custom schedule (no `sigmas=`/`timesteps=` in "
                "set_timesteps and no per-step sigma table); use a scheduler such as Euler, DPM-Solver++, "
                "UniPC or a diffusers-geo scheduler."
            )
        if self.flow_matching:  # flow schedulers keep the shifted noise fractions, ending in 0, by step index
            table = [self.teacher_sigmas[i] for i in self.grid_indices]
            timesteps = torch.tensor(self.timesteps, dtype=scheduler.timesteps.dtype)
        else:
            table = self.sigmas
            timesteps = torch.tensor([round(t) for t in self.timesteps], dtype=scheduler.timesteps.dtype)
        scheduler.timesteps = timesteps.to(scheduler.timesteps.device)
        scheduler.sigmas = torch.tensor(table, dtype=old_sigmas.dtype).to(old_sigmas.device)
        return scheduler


_PUSH_KWARGS = ("repo_id", "token", "private", "commit_message", "create_pr", "subfolder")


def _commit(scheduler) -> str:
    return "Upload GITS schedule" + ("" if scheduler is None else f" with {type(scheduler).__name__}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a GITS schedule (not JSON: {err}).") from err


class _ScheduleFolder(PushToHubMixin):
    """What :meth:`GITSSchedule.push_to_hub` uploads: the schedule and, optionally, its scheduler's config,
    saved into one folder (so diffusers' ``PushToHubMixin`` uploads both in one commit)."""

    def __init__(self, schedule: GITSSchedule, scheduler=None):
        self.schedule, self.scheduler = schedule, scheduler

    def save_pretrained(
        self, save_directory: str, **serialization: Any
    ) -> None:  # safe_serialization, variant
        self.schedule.save_pretrained(save_directory, scheduler=self.scheduler)


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
    jump: str = "euler",
    analytic_first_step: bool = False,
    batch_size: int = 32,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    mu: float | None = None,
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

    **Several processes** (🤗 Accelerate, e.g. ``accelerate launch --multi_gpu --num_processes K script.py``,
    or the ``diffusers-geo gits`` command): when a distributed :class:`accelerate.PartialState` is active,
    the model calls (batches of ``batch_size`` warm-up samples) are split over the processes
    (``split_between_processes``; use ``num_warmup >= batch_size x processes`` to keep all of them busy),
    the per-process cost sums are added up over processes (float64 all-reduce) and every process runs the
    same dynamic program, so all of them return the same schedule. Pass ``seed``: warm-up sample ``i`` is
    drawn from its own generator seeded ``seed + i`` and the batches are the same for any number of
    processes, so the schedule does not depend on it (the mean cost up to float64 rounding of the sums).

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
        jump: the one-step jump whose error the costs measure: ``"euler"`` (the paper's) or ``"heun"`` (the
            trapezoidal step of a second-order solver, from the teacher's denoiser outputs at both ends; no
            extra model call). On the exact-denoiser benchmark ``jump="heun", coeff=0.9`` gave the multistep
            :class:`~diffusers_geo.GeometricHeunScheduler` its lowest error (``docs/bench_geometric_heun.md``).
        analytic_first_step: AFS (AMED, arXiv 2312.00094): one free step from the largest sigma with the
            analytic direction; the schedule then starts lower, at ``sigmas[0]`` (see
            :class:`GITSSchedule`), with N model calls.
        batch_size: warm-up samples per model call (per process). With a list of ``prompt`` s, a call holds
            one warm-up sample per prompt for each of ``batch_size // len(prompt)`` noise groups, and
            ``num_warmup`` is rounded up to a multiple of the number of prompts.
        seed: warm-up sample ``i`` gets its noise from ``torch.Generator().manual_seed(seed + i)`` (the
            same for any number of processes or batch size); required with several processes.
        generator: one generator for all the warm-up noise, drawn batch by batch (single process only; not
            together with ``seed``). With neither, the global torch RNG is used.
        model_kwargs: extra keyword arguments for a UNet-like ``model`` (e.g. ``encoder_hidden_states``).
        progress: show a progress bar over the warm-up samples.
        mu: a flow-matching model with dynamic shifting (Flux) run without its pipeline: the shift of the
            resolution (``diffusers_geo.sampling.flux_mu``); a pipeline computes its own (pass ``height`` /
            ``width``), so it is refused there, and on variance-preserving models.

    On a flow-matching model (SD3, Flux) the teacher grid is the model's own schedule (unshifted fractions
    evenly spaced in the training timesteps from ``s = 1``, shifted as the scheduler shifts custom sigmas), the
    jumps from ``s = 1`` (``sigma = inf``) take their exact limit, and the result stores the unshifted fractions
    a flow pipeline takes as ``sigmas=`` (:class:`GITSSchedule`, ``flow_matching``). ``grid="karras"``,
    ``metric="dev"``, ``analytic_first_step`` and configs with ``shift_terminal`` or respaced flow sigmas are
    refused there (``docs/flow_matching.md``).
        **pipeline_kwargs: passed to every pipeline call (``prompt``, ``negative_prompt``,
            ``guidance_scale``, ``height``, ``width``, ...).

    Returns:
        a :class:`GITSSchedule`.
    """
    Int()("num_inference_steps", num_inference_steps)  # its range depends on teacher_steps: below
    MAPPING("scheduler_config", scheduler_config)
    Shape(optional=True)("sample_shape", sample_shape)
    Int(1)("num_warmup", num_warmup)
    Int(2)("teacher_steps", teacher_steps)
    Choice(GRIDS)("grid", grid)
    Real(0.0, low_open=True, hint="(GITS uses 1.15 to 1.2)")("coeff", coeff)
    Choice(COST_METRICS)("metric", metric)
    Choice(JUMPS)("jump", jump)
    Bool()("analytic_first_step", analytic_first_step)
    Int(1)("batch_size", batch_size)
    Int(optional=True)("seed", seed)
    GENERATOR("generator", generator)
    MAPPING("model_kwargs", model_kwargs)
    Bool()("progress", progress)
    Real(optional=True)("mu", item(mu))
    if seed is not None and generator is not None:
        raise ValueError(
            "Pass either seed= (warm-up sample i draws its noise from seed + i, the same on any number of "
            "processes) or generator= (one noise stream, single process), not both."
        )
    max_steps = teacher_steps - int(analytic_first_step)
    if not 1 <= num_inference_steps <= max_steps:
        raise ValueError(
            f"GITS cannot pick {num_inference_steps} steps from a teacher grid of {teacher_steps} steps"
            f"{' (one of them the analytic first step)' if analytic_first_step else ''}: ask for 1 to "
            f"{max_steps} steps or raise teacher_steps."
        )

    state = _distributed_state()
    if state is not None and seed is None:
        raise ValueError(
            f"GITS runs on {state.num_processes} processes: pass seed= (warm-up sample i then draws its noise "
            "from seed + i, so every process count gives the same schedule)"
            + ("; a generator= cannot be split between processes." if generator is not None else ".")
        )
    runner = _teacher_runner(model, scheduler_config, sample_shape, model_kwargs or {}, pipeline_kwargs)
    flow = serves_flow(runner.config)
    if flow:
        _check_flow_search(runner, grid, metric, analytic_first_step)
        teacher = GeometricHeunScheduler.from_config(_flow_schedule(runner.config), multistep=True)
        # the teacher grid in unshifted noise fractions, evenly spaced in the training timesteps from s = 1
        # (FlowMatchEuler's own spacing); the scheduler shifts them as it shifts any custom sigmas
        fractions = torch.linspace(
            1.0, 1.0 / runner.config.get("num_train_timesteps", 1000), teacher_steps, dtype=torch.float64
        )
        runner.schedule = {"sigmas": fractions.tolist()}
        mu = runner.prepare(teacher, mu)  # sets the teacher's schedule as the model's own call would
    else:
        if mu is not None:
            raise ValueError(
                f"mu={mu} is the dynamic shift of a flow-matching model's schedule, but this model is a "
                "variance-preserving one: do not pass mu."
            )
        teacher = GeometricHeunScheduler.from_config(
            training_schedule(runner.config, prediction_type=True), multistep=True
        )
        teacher.set_timesteps(sigmas=_teacher_grid(teacher.parameterization, teacher_steps, grid))
        runner.schedule = {"sigmas": teacher.sigmas.tolist()}
    grid_sigmas = teacher.sigmas.clone()  # float64, ending in 0 (inf first on a flow model)
    runner.grid = grid_sigmas

    from tqdm.auto import tqdm  # optional dependency, imported when used

    logger.info(
        f"GITS: {teacher_steps} teacher steps x {num_warmup} warm-up samples = {teacher_steps * num_warmup} "
        f"model calls (in batches of {batch_size})."
    )
    # sample i = g * group + k: noise group g, prompt k (group = number of prompts, 1 for a model). The
    # calls are formed before the split, so a sample meets the same batch neighbours (the same float
    # rounding in the model) and the per-call sums add up in the same order on any number of processes.
    group = runner.group
    groups = list(range(-(-num_warmup // group)))
    per_call = max(1, batch_size // group)
    calls = [groups[start : start + per_call] for start in range(0, len(groups), per_call)]
    mine = calls
    if state is not None:
        with state.split_between_processes(calls) as part:
            mine = list(part)
    main = state is None or state.is_main_process
    costs = torch.zeros(len(grid_sigmas), len(grid_sigmas), dtype=torch.float64)
    done = 0
    total = sum(len(call) for call in mine) * group
    with tqdm(total=total, desc="GITS warm-up", unit="sample", disable=not (progress and main)) as bar:
        for call in mine:
            samples = [g * group + k for g in call for k in range(group)]
            if seed is None:
                noise = torch.randn(len(samples), *runner.shape, generator=generator, dtype=torch.float32)
            else:
                noise = torch.stack([_seeded_noise(runner.shape, seed + i) for i in samples])
            states, denoised = runner.trajectories(teacher, noise)
            costs += jump_costs(states, denoised, grid_sigmas, metric, analytic_first_step, jump)
            done += len(samples)
            bar.update(len(samples))
    if state is not None:  # add up the cost sums of all processes: every process gets the same matrix
        count = torch.tensor([float(done)], dtype=torch.float64)
        totals = reduce({"costs": costs.to(state.device), "count": count.to(state.device)}, reduction="sum")
        costs, done = totals["costs"].cpu(), int(totals["count"].item())
    costs /= done

    path, total = gits_dynamic_program(costs, num_inference_steps, coeff, analytic_first_step)
    if analytic_first_step:
        path = path[1:]  # 0 -> path[1] is the free analytic step
    sigmas = grid_sigmas[path]
    timesteps = teacher.parameterization.timestep_of(sigmas[:-1])
    if grid == "timesteps" and not flow:
        timesteps = timesteps.round()
    scale = afs_noise_scale(float(grid_sigmas[0]), float(sigmas[0])) if analytic_first_step else 1.0
    teacher_levels = noise_fraction(grid_sigmas) if flow else grid_sigmas  # JSON has no inf
    return GITSSchedule(
        sigmas=[fractions[i].item() for i in path[:-1]] if flow else sigmas.tolist(),
        timesteps=timesteps.tolist(),
        grid_indices=path,
        teacher_sigmas=teacher_levels.tolist(),
        coeff=float(coeff),
        metric=metric,
        jump=jump,
        grid=grid,
        num_warmup=done,
        model_calls=done * teacher_steps,
        cost=total,
        analytic_first_step=analytic_first_step,
        initial_noise_scale=scale,
        flow_matching=flow,
        mu=None if mu is None else float(mu),
        info={"num_processes": 1 if state is None else state.num_processes, "seed": seed},
    )


def _seeded_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    """The warm-up noise of one sample: ``N(0, I)`` from its own CPU generator seeded ``seed``."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def _distributed_state():
    """The active :class:`accelerate.PartialState` when it spans several processes, else ``None``.

    Only a state someone already started counts (``accelerate launch`` scripts create one with
    ``PartialState()`` / ``Accelerator()``; ``torchrun`` scripts initialise ``torch.distributed``), so a
    plain single-process call neither starts accelerate nor picks a device.
    """

    started = bool(PartialState._shared_state)
    if not started and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    state = PartialState()
    return state if state.num_processes > 1 else None


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
    group: int = 1  # samples per noise group (one per prompt of a pipeline)
    schedule: dict[str, Any]  # the teacher's set_timesteps arguments
    grid: torch.Tensor  # the teacher's sigmas every run must use

    def prepare(self, teacher, mu: float | None) -> float | None:
        """Set the teacher's flow schedule as a run sets it; returns the dynamic shift it used."""
        raise NotImplementedError

    def trajectories(self, teacher, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        record: list[tuple[torch.Tensor, torch.Tensor]] = []

        def recording(y, denoised, sigma, sigma_next, y_next):
            record.append((y.detach(), denoised.detach()))

        teacher.on_step = recording
        try:
            final = self.run(teacher, noise)
        finally:
            teacher.on_step = None
        if not torch.equal(teacher.sigmas, self.grid):
            raise RuntimeError(
                "the teacher ran another schedule than the GITS grid (the pipeline changed the sigmas it was "
                "given, e.g. a different dynamic shift mu between calls)."
            )
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

    def prepare(self, teacher, mu: float | None) -> float | None:
        if not teacher.config.use_dynamic_shifting:
            mu = None
        elif mu is None:
            raise ValueError(
                "This flow-matching model's config has use_dynamic_shifting=True: its schedule depends on the "
                "resolution through mu (Flux: calculate_shift of the image sequence length, see "
                "diffusers_geo.sampling.flux_mu). Pass mu= to gits_schedule, or pass the pipeline, which "
                "computes its own."
            )
        self.schedule = {**self.schedule, "mu": mu}
        teacher.set_timesteps(**self.schedule)
        return mu

    def run(self, teacher, noise: torch.Tensor) -> torch.Tensor:
        teacher.set_timesteps(**self.schedule)
        x = noise.to(self.device, self.dtype)
        with torch.no_grad():
            for t in teacher.timesteps:
                out = self.model(x, t.to(self.device), **self.model_kwargs)
                out = out.sample if hasattr(out, "sample") else out[0] if isinstance(out, tuple) else out
                x = teacher.step(out, t, x).prev_sample
        return x


class _StopBeforeModel(Exception):
    """Raised by :meth:`_PipelineRunner.prepare` at the pipeline's first model call (which is not made)."""


class _PipelineRunner(_Runner):
    def __init__(self, pipe, shape, pipeline_kwargs: Mapping[str, Any]):
        self.pipe, self.config = pipe, dict(pipe.scheduler.config)
        self.shape = None if shape is None else tuple(shape)
        self.kwargs = dict(pipeline_kwargs)
        if "num_images_per_prompt" in self.kwargs or "latents" in self.kwargs:
            raise TypeError(
                "GITS sets latents= and num_images_per_prompt= itself (see num_warmup, batch_size)."
            )
        prompt = self.kwargs.get("prompt")
        embeds = self.kwargs.get("prompt_embeds")
        self.group = len(prompt) if isinstance(prompt, list) else len(embeds) if embeds is not None else 1

    def prepare(self, teacher, mu: float | None) -> float | None:
        """Run the pipeline up to its first model call, which is not made: the teacher's schedule is then set
        exactly as the pipeline sets it (Flux computes ``mu`` from the resolution), and the model input's
        shape is read (Flux packs its latents)."""
        if mu is not None:
            raise ValueError(
                f"mu={mu}: a pipeline computes its own dynamic shift from the resolution; pass height= and "
                "width= instead (mu= is for a model run without its pipeline)."
            )
        seen: dict[str, Any] = {}
        set_timesteps = teacher.set_timesteps

        @functools.wraps(set_timesteps)  # keeps the signature that pipelines inspect for `sigmas`
        def recording(*args, **kwargs):
            seen["mu"] = kwargs.get("mu")
            return set_timesteps(*args, **kwargs)

        def stop(module, args, kwargs):
            sample = kwargs.get("hidden_states", kwargs.get("sample", args[0] if args else None))
            seen["shape"] = tuple(sample.shape[1:])
            raise _StopBeforeModel

        handle = _denoiser(self.pipe).register_forward_pre_hook(stop, with_kwargs=True)
        teacher.set_timesteps = recording
        try:
            self._call(teacher, None, 1)
        except _StopBeforeModel:
            pass
        finally:
            handle.remove()
            del teacher.set_timesteps
        if "shape" not in seen:
            raise RuntimeError(f"{type(self.pipe).__name__} returned without calling its model.")
        if self.shape is not None and self.shape != seen["shape"]:
            raise ValueError(
                f"sample_shape={self.shape} but {type(self.pipe).__name__} feeds its model samples of shape "
                f"{seen['shape']}: leave sample_shape out for a pipeline (pass height= and width=)."
            )
        self.shape = seen["shape"]
        return seen.get("mu") if teacher.config.use_dynamic_shifting else None

    def run(self, teacher, noise: torch.Tensor) -> torch.Tensor:
        # noise comes group by group (sample g * P + p: group g, prompt p); pipelines order their batch
        # prompt by prompt (`num_images_per_prompt` copies of each), so each sample keeps its prompt
        noise = noise.unflatten(0, (-1, self.group)).transpose(0, 1).flatten(0, 1)
        out = self._call(teacher, noise, len(noise) // self.group)
        return out.images if hasattr(out, "images") else out[0]

    def _call(self, teacher, noise: torch.Tensor | None, per_prompt: int):
        pipe = self.pipe
        original, bar_config = pipe.scheduler, dict(getattr(pipe, "_progress_bar_config", {}))
        pipe.scheduler = teacher
        pipe.set_progress_bar_config(disable=True)
        try:
            latents = None if noise is None else noise.to(pipe.device, _denoiser(pipe).dtype)
            return pipe(
                **self.kwargs,
                sigmas=self.schedule["sigmas"],
                latents=latents,
                num_images_per_prompt=per_prompt,
                output_type="latent",
            )
        finally:
            pipe.scheduler = original
            pipe._progress_bar_config = bar_config


def _denoiser(pipe) -> torch.nn.Module:
    """The network a pipeline calls at every step (``unet``, or ``transformer`` in SD3, Flux, ...)."""
    net = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if net is None:
        raise TypeError(f"{type(pipe).__name__} has neither a unet nor a transformer to run.")
    return net


def _flow_schedule(config: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a flow-matching model's scheduler config that define its schedule (the shift, dynamic
    shifting, flow sigmas), with ``prediction_type="flow_prediction"``: the teacher's config."""
    keys = (
        "num_train_timesteps",
        "shift",
        "use_dynamic_shifting",
        "base_shift",
        "max_shift",
        "base_image_seq_len",
        "max_image_seq_len",
        "time_shift_type",
        "use_flow_sigmas",
        "flow_shift",
    )
    return {**{k: config[k] for k in keys if k in config}, "prediction_type": "flow_prediction"}


def _check_flow_search(runner: _Runner, grid: str, metric: str, analytic_first_step: bool) -> None:
    """What a GITS search on a flow-matching model (which starts at s = 1, sigma = inf) cannot do."""
    config = runner.config
    if grid != "timesteps":
        raise ValueError(
            f"grid={grid!r} spaces VE sigmas up to a finite sigma_max, but a flow-matching model starts at s = 1 "
            "(sigma = inf): use grid='timesteps' (the model's own shifted schedule)."
        )
    if metric != "l2":
        raise ValueError(
            f"metric={metric!r} measures the distance from the chord between the trajectory's ends, which "
            "starts at infinity on a flow-matching model (sigma = inf at s = 1): use metric='l2'."
        )
    if analytic_first_step:
        raise ValueError(
            "analytic_first_step=True starts the run lower from rescaled VP noise; a flow-matching pipeline "
            "starts from N(0, I) at s = 1 exactly and has no such step: leave it False."
        )
    moved = whole_schedule_options(config)
    if moved:
        raise ValueError(
            f"{', '.join(moved)} reshape a flow schedule as a whole, so a GITS subset of the teacher grid "
            "would not keep its noise levels: search and sample with a config without them."
        )


def _teacher_runner(model, scheduler_config, sample_shape, model_kwargs, pipeline_kwargs) -> _Runner:
    is_pipeline = hasattr(model, "components") and hasattr(model, "scheduler")
    if is_pipeline:
        call = inspect.signature(model.__call__).parameters
        if "sigmas" in call and "latents" in call:
            if sample_shape is None and not serves_flow(model.scheduler.config):
                sample_shape = _latent_shape(model, pipeline_kwargs)  # a flow pipeline's: read by `prepare`
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


__all__ = ["GITS_SCHEDULE_NAME", "GITSSchedule", "gits_schedule"]
