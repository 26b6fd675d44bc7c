"""Geometry diagnostics (Chen et al., arXiv 2305.19947): record a run's sampling and denoising trajectories
(:mod:`.trajectory`), plot them (:mod:`.plots`), and interpolate initial latents on the noise shell
(:mod:`.interpolation`)."""

from .interpolation import interpolate_latents, norm_preserving_lerp, shell_radius, slerp
from .trajectory import Trajectory, TrajectoryRecorder

__all__ = [
    "Trajectory",
    "TrajectoryRecorder",
    "interpolate_latents",
    "norm_preserving_lerp",
    "shell_radius",
    "slerp",
]
