"""diffusers adapters: thin scheduler classes over the shared :class:`GeoScheduler` base."""

from .base import GeoScheduler, GeoSchedulerOutput, scheduler_config
from .scheduling_ddim_sigma import SigmaDDIMScheduler

__all__ = ["GeoScheduler", "GeoSchedulerOutput", "SigmaDDIMScheduler", "scheduler_config"]
