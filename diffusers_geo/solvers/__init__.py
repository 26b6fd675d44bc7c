"""Pure solver math in sigma coordinates (``y = x0 + sigma * eps``, denoiser ``D``); no diffusers import.

One module per paper. Each update is a few lines that cite the equation it implements.
"""

from .euler import euler_step
from .geometric import heun_step, intermediate_sigma, multistep_step

__all__ = ["euler_step", "heun_step", "intermediate_sigma", "multistep_step"]
