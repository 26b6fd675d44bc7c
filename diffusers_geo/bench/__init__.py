"""The ``diffusers-geo bench`` benchmark: quality vs NFE on the exact denoiser, and step overhead."""

from .overhead import run_overhead
from .problems import PROBLEMS, digits_mixture, load_config, make_problem
from .quality import frechet_distance, run_quality

__all__ = [
    "PROBLEMS",
    "digits_mixture",
    "make_problem",
    "frechet_distance",
    "load_config",
    "run_overhead",
    "run_quality",
]
