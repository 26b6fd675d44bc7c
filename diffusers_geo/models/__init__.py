"""Models: the exact optimal denoiser (a test and benchmark oracle)."""

from .optimal_denoiser import OptimalDenoiser, OptimalDenoiserOutput

__all__ = ["OptimalDenoiser", "OptimalDenoiserOutput"]
