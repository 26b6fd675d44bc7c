"""diffusers-geo: geometry-aware diffusion samplers as drop-in Hugging Face diffusers schedulers.

    pipe.scheduler = SigmaDDIMScheduler.from_config(pipe.scheduler.config)

Every name is imported when first used (the schedulers and the registry together, so their classes report the
stable module below), so ``import diffusers_geo`` imports neither torch nor diffusers: ``diffusers-geo --help``
and ``--version`` stay instant.

``SchedulerMixin`` and ``ModelMixin`` are re-exported on purpose: diffusers loads a third-party class named in
``model_index.json`` only if the named module exposes one of its loadable base classes. Public classes
report ``__module__ == "diffusers_geo"`` so saved pipelines record the stable top-level name.
Import ``diffusers_geo`` before ``DiffusionPipeline.from_pretrained`` on a pipeline saved with one of
our schedulers (diffusers >= 0.42.1 no longer imports modules named by a repository).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

#: ``diffusers_geo.schedulers.__all__``, written out so that importing the package imports no scheduler
#: (``tests/test_cli_errors.py`` checks the two lists agree)
_SCHEDULER_NAMES = (
    "ERSDEScheduler",
    "GeoScheduler",
    "GeoSchedulerOutput",
    "GeometricHeunScheduler",
    "OdeJump",
    "ProjectionDDIMScheduler",
    "SigmaDDIMScheduler",
    "scheduler_config",
)

#: name -> module (relative to this package) of everything imported on first use
_LAZY = {
    "SchedulerMixin": "diffusers",
    "ModelMixin": "diffusers",
    "SCHEDULERS": ".registry",
    "load_scheduler": ".registry",
    **dict.fromkeys(_SCHEDULER_NAMES, ".schedulers"),
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
    if _LAZY[name] in (".registry", ".schedulers"):
        _load_schedulers()
        return globals()[name]
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    if name in _STABLE_MODULE:
        value.__module__ = __name__
    globals()[name] = value
    return value


def _load_schedulers() -> None:
    """The schedulers and the registry, bound here at once; their classes report this package as module."""
    registry = importlib.import_module(".registry", __name__)
    schedulers = importlib.import_module(".schedulers", __name__)
    for cls in (schedulers.GeoScheduler, schedulers.GeoSchedulerOutput, *registry.SCHEDULERS.values()):
        cls.__module__ = __name__
    globals().update({n: getattr(schedulers, n) for n in _SCHEDULER_NAMES})
    globals().update(SCHEDULERS=registry.SCHEDULERS, load_scheduler=registry.load_scheduler)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
