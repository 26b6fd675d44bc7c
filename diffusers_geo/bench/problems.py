"""Benchmark problems: scheduler configs and exact denoisers built from real digits, from benign to hard.

A default chosen on one problem is tuned to it, so the benchmark is a suite (``--problem``):

* ``mixture``: 10 Gaussians, one per digit class, with the class's mean and per-pixel variance. Close to a
  single Gaussian: nearly straight trajectories, little prior mismatch (the benign case).
* ``images``: one narrow Gaussian per digit image (512 images, standard deviation 0.1 in [-1, 1] pixel units)
  with unequal weights: many sharp modes, the regime of real image sets, where the denoiser turns from the
  mean towards single images late in the run (Chen et al., arXiv 2305.19947, §4: mean shift).
* ``manifold``: 128 very narrow Gaussians (standard deviation 0.02) spaced along a closed curve through the
  plane of two class means: data on a one-dimensional manifold, strongly anisotropic at every noise level
  below its extent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from ..data import digits_images, digits_labels
from ..models import OptimalDenoiser
from ..registry import serves_flow
from ..schedules import training_schedule
from ..schedules.flow import FLUX_SCHEDULER_CONFIG, SD3_SCHEDULER_CONFIG

# Stable Diffusion 1.x scheduler config (PNDMScheduler in the checkpoints) and the DDPM pixel config.
SD_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "clip_sample": False,
    "trained_betas": None,
}
DDPM_CONFIG: dict[str, Any] = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    # DDPMScheduler's default is True; the exact-denoiser problems are not images in [-1, 1], so clipping D
    # would measure the clip, not the solver (tables made before 2026-12-08 ran DDIM / DDPM clipped here)
    "clip_sample": False,
    "variance_type": "fixed_small",
    "trained_betas": None,
}

# Flow matching: Stable Diffusion 3's scheduler config (shift 3) and Flux.1-dev's (dynamic shift; the benchmark
# runs it at a 1024 x 1024 image's shift, mu = max_shift: diffusers_geo.sampling.FLUX_IMAGE_SEQ_LEN)
SD3_CONFIG: dict[str, Any] = {"_class_name": "FlowMatchEulerDiscreteScheduler", **SD3_SCHEDULER_CONFIG}
FLUX_CONFIG: dict[str, Any] = {"_class_name": "FlowMatchEulerDiscreteScheduler", **FLUX_SCHEDULER_CONFIG}
CONFIGS = {"sd": SD_CONFIG, "ddpm": DDPM_CONFIG, "sd3": SD3_CONFIG, "flux": FLUX_CONFIG}


def load_config(name_or_path: str, prediction_type: str = "epsilon") -> dict[str, Any]:
    """``"sd"``, ``"ddpm"``, ``"sd3"``, ``"flux"`` or a path to a ``scheduler_config.json`` (or the folder
    holding one). Flow-matching configs always predict velocity (``prediction_type`` must stay "epsilon",
    the default, or be "flow_prediction")."""
    if name_or_path in CONFIGS:
        config = dict(CONFIGS[name_or_path])
    else:
        path = Path(name_or_path)
        if path.is_dir():
            path = path / "scheduler_config.json"
        if not path.is_file():
            raise ValueError(
                f"--config must be one of {list(CONFIGS)} or a scheduler_config.json path; {path} not found."
            )
        config = json.loads(path.read_text())
    if serves_flow(config):
        if prediction_type not in ("epsilon", "flow_prediction"):
            raise ValueError(
                f"--prediction {prediction_type} does not apply to the flow-matching config {name_or_path!r}: "
                "flow models predict velocity (leave --prediction out)."
            )
        prediction_type = "flow_prediction"
    config["prediction_type"] = prediction_type
    return config


PROBLEMS = ("mixture", "images", "manifold")


def make_problem(
    name: str, config: dict[str, Any], size: int = 16, dtype: torch.dtype = torch.float64
) -> OptimalDenoiser:
    """The exact denoiser of benchmark problem ``name`` (see the module docstring) at ``size`` x ``size``."""
    if name == "mixture":
        return digits_mixture(config, size, dtype)
    schedule = training_schedule(config, prediction_type=True)
    images = digits_images(size, torch.float64)
    generator = torch.Generator().manual_seed(0)
    if name == "images":
        means = images[torch.randperm(len(images), generator=generator)[:512]]
        weights = 0.2 + torch.rand(
            len(means), generator=generator, dtype=torch.float64
        )  # unequal, 0.2 .. 1.2
        model = OptimalDenoiser.from_gaussian_mixture(means, 0.1**2, weights, **schedule)
    elif name == "manifold":
        labels = digits_labels()
        a, b = images[labels == 0].mean(0), images[labels == 1].mean(0)
        center = 0.5 * (a + b)
        u = (a - center) / (a - center).flatten().norm() * math.sqrt(a.numel())
        v = images[labels == 7].mean(0) - center
        v = v - (v * u).sum() / (u * u).sum() * u  # orthogonal to u
        v = v / v.flatten().norm() * math.sqrt(v.numel())
        theta = torch.linspace(0, 2 * math.pi, 129, dtype=torch.float64)[:-1]
        means = center + 0.5 * (theta.cos()[:, None, None, None] * u + theta.sin()[:, None, None, None] * v)
        model = OptimalDenoiser.from_gaussian_mixture(means, 0.02**2, None, **schedule)
    else:
        raise ValueError(f"Unknown benchmark problem {name!r}; choose from {list(PROBLEMS)}.")
    return _cast(model, dtype)


def digits_mixture(
    config: dict[str, Any], size: int = 16, dtype: torch.dtype = torch.float64
) -> OptimalDenoiser:
    """Exact denoiser of a 10-component Gaussian mixture fitted to scikit-learn's bundled digits.

    The 1,797 8x8 digits are scaled to [-1, 1] and upsampled (bilinear) to ``size`` x ``size``; each class
    becomes one component with its mean, its per-pixel variance (floored at 1e-4) and its frequency as weight.
    """
    images, labels = digits_images(size, torch.float64), digits_labels()
    means = torch.stack([images[labels == c].mean(0) for c in range(10)])
    variances = torch.stack([images[labels == c].var(0) for c in range(10)]).clamp_min(1e-4)
    weights = torch.bincount(labels, minlength=10).double()
    model = OptimalDenoiser.from_gaussian_mixture(
        means, variances, weights, **training_schedule(config, prediction_type=True)
    )
    return _cast(model, dtype)


def _cast(model: OptimalDenoiser, dtype: torch.dtype) -> OptimalDenoiser:
    # nn.Module's casts: ModelMixin.to(dtype) logs a spurious fp32-modules warning
    if dtype == torch.float64:
        return model.double()
    return model if dtype == torch.float32 else model.to(dtype=dtype)
