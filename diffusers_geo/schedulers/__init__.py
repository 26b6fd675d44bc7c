"""diffusers adapters: thin scheduler classes over the shared :class:`GeoScheduler` base."""

from .base import GeoScheduler, GeoSchedulerOutput, OdeJump, scheduler_config
from .scheduling_ddim_sigma import SigmaDDIMScheduler
from .scheduling_er_sde import ERSDEScheduler
from .scheduling_geometric_heun import GeometricHeunScheduler
from .scheduling_projection_ddim import ProjectionDDIMScheduler

__all__ = [
    "ERSDEScheduler",
    "GeoScheduler",
    "GeoSchedulerOutput",
    "GeometricHeunScheduler",
    "OdeJump",
    "ProjectionDDIMScheduler",
    "SigmaDDIMScheduler",
    "scheduler_config",
]
