"""diffusers-geo: geometry-aware diffusion samplers as drop-in Hugging Face diffusers schedulers.

    pipe.scheduler = SigmaDDIMScheduler.from_config(pipe.scheduler.config)

The schedulers and the registry are imported with the package; every feature (the optimal denoiser, GITS,
priors, diagnostics, the packaged model) is imported when first used, so ``import diffusers_geo`` costs little
more than ``import diffusers``.

``SchedulerMixin`` and ``ModelMixin`` are re-exported on purpose: diffusers loads a third-party class named in
``model_index.json`` only if the named module exposes one of its loadable base classes. Public classes
report ``__module__ == "diffusers_geo"`` so saved pipelines record the stable top-level name.
Import ``diffusers_geo`` before ``DiffusionPipeline.from_pretrained`` on a pipeline saved with one of
our schedulers (diffusers >= 0.42.1 no longer imports modules named by a repository).
"""

from __future__ import annotations

import importlib
from typing import Any

from diffusers import SchedulerMixin as SchedulerMixin

from .registry import SCHEDULERS as SCHEDULERS
from .registry import load_scheduler as load_scheduler
from .schedulers import ERSDEScheduler as ERSDEScheduler
from .schedulers import GeometricHeunScheduler as GeometricHeunScheduler
from .schedulers import GeoScheduler as GeoScheduler
from .schedulers import GeoSchedulerOutput as GeoSchedulerOutput
from .schedulers import OdeJump as OdeJump
from .schedulers import ProjectionDDIMScheduler as ProjectionDDIMScheduler
from .schedulers import SigmaDDIMScheduler as SigmaDDIMScheduler
from .schedulers import __all__ as _SCHEDULER_NAMES
from .schedulers import scheduler_config as scheduler_config

__version__ = "0.1.0.dev0"

#: name -> module (relative to this package) of everything imported on first use
_LAZY = {
    "ModelMixin": "diffusers",
    "GITSSchedule": ".gits",
    "gits_schedule": ".gits",
    "OptimalDenoiser": ".models",
    "OptimalDenoiserOutput": ".models",
    "default_model_path": ".models.default_model",
    "load_default_pipeline": ".models.default_model",
    "PFGMPPPrior": ".priors",
    "PriorMismatch": ".priors",
    "TruncatedPrior": ".priors",
    "TruncatedSchedule": ".priors",
    "encode_images": ".priors",
    "plot_prior_mismatch": ".priors",
    "prior_mismatch": ".priors",
    "truncated_schedule": ".priors",
    "truncated_sigmas": ".priors",
    "ReferenceSolution": ".solvers.reference",
    "solve_probability_flow_ode": ".solvers.reference",
    "Trajectory": ".diagnostics.trajectory",
    "TrajectoryRecorder": ".diagnostics.trajectory",
    "interpolate_latents": ".diagnostics.interpolation",
    "norm_preserving_lerp": ".diagnostics.interpolation",
    "shell_radius": ".diagnostics.interpolation",
    "slerp": ".diagnostics.interpolation",
}
#: lazily imported classes that report this package as their module (like the schedulers below)
_STABLE_MODULE = ("OptimalDenoiser", "OptimalDenoiserOutput")

__all__ = ["SCHEDULERS", "SchedulerMixin", "load_scheduler", *_SCHEDULER_NAMES, *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    if name in _STABLE_MODULE:
        value.__module__ = __name__
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


for _cls in (GeoScheduler, GeoSchedulerOutput, *SCHEDULERS.values()):
    _cls.__module__ = __name__
del _cls
