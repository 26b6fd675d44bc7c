"""diffusers-geo: geometry-aware diffusion samplers as drop-in Hugging Face diffusers schedulers.

    pipe.scheduler = SigmaDDIMScheduler.from_config(pipe.scheduler.config)

``SchedulerMixin`` is re-exported on purpose: diffusers loads a third-party class named in
``model_index.json`` only if the named module exposes one of its loadable base classes. Public classes
report ``__module__ == "diffusers_geo"`` so saved pipelines record the stable top-level name.
Import ``diffusers_geo`` before ``DiffusionPipeline.from_pretrained`` on a pipeline saved with one of
our schedulers (diffusers >= 0.42.1 no longer imports modules named by a repository).
"""

from diffusers import ModelMixin, SchedulerMixin

from .default_model import default_model_path, load_default_pipeline
from .gits import GITSSchedule, gits_schedule
from .interpolation import interpolate_latents, norm_preserving_lerp, shell_radius, slerp
from .models import OptimalDenoiser, OptimalDenoiserOutput
from .priors import (
    PFGMPPPrior,
    PriorMismatch,
    TruncatedPrior,
    TruncatedSchedule,
    encode_images,
    plot_prior_mismatch,
    prior_mismatch,
    truncated_schedule,
    truncated_sigmas,
)
from .registry import SCHEDULERS, load_scheduler
from .schedulers import (
    ERSDEScheduler,
    GeometricHeunScheduler,
    GeoScheduler,
    GeoSchedulerOutput,
    OdeJump,
    ProjectionDDIMScheduler,
    SigmaDDIMScheduler,
    scheduler_config,
)
from .solvers.reference import ReferenceSolution, solve_probability_flow_ode
from .trajectory import Trajectory, TrajectoryRecorder

__version__ = "0.1.0.dev0"

__all__ = [
    "ERSDEScheduler",
    "GeoScheduler",
    "GITSSchedule",
    "GeoSchedulerOutput",
    "GeometricHeunScheduler",
    "ModelMixin",
    "OdeJump",
    "OptimalDenoiser",
    "OptimalDenoiserOutput",
    "PFGMPPPrior",
    "PriorMismatch",
    "ProjectionDDIMScheduler",
    "ReferenceSolution",
    "SCHEDULERS",
    "SchedulerMixin",
    "SigmaDDIMScheduler",
    "Trajectory",
    "TrajectoryRecorder",
    "TruncatedPrior",
    "TruncatedSchedule",
    "default_model_path",
    "encode_images",
    "interpolate_latents",
    "load_default_pipeline",
    "gits_schedule",
    "load_scheduler",
    "norm_preserving_lerp",
    "plot_prior_mismatch",
    "prior_mismatch",
    "scheduler_config",
    "shell_radius",
    "slerp",
    "solve_probability_flow_ode",
    "truncated_schedule",
    "truncated_sigmas",
]

for _cls in (GeoScheduler, GeoSchedulerOutput, OptimalDenoiser, OptimalDenoiserOutput, *SCHEDULERS.values()):
    _cls.__module__ = __name__
del _cls
