"""The ``diffusers-geo bench`` benchmark: quality vs NFE on the exact denoiser, and step overhead."""

from .overhead import run_overhead
from .problems import digits_mixture, load_config
from .quality import frechet_distance, run_quality

__all__ = [
    "digits_mixture",
    "frechet_distance",
    "load_config",
    "run_overhead",
    "run_quality",
]
