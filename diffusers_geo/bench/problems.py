"""Benchmark problems: scheduler configs and the exact denoiser of a Gaussian mixture fitted to real digits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..data import digits_images, digits_labels
from ..models import OptimalDenoiser
from ..schedules import SCHEDULE_KEYS

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
    "clip_sample": True,
    "variance_type": "fixed_small",
    "trained_betas": None,
}


def load_config(name_or_path: str, prediction_type: str = "epsilon") -> dict[str, Any]:
    """``"sd"``, ``"ddpm"`` or a path to a ``scheduler_config.json`` (or the folder holding one)."""
    if name_or_path == "sd":
        config = dict(SD_CONFIG)
    elif name_or_path == "ddpm":
        config = dict(DDPM_CONFIG)
    else:
        path = Path(name_or_path)
        if path.is_dir():
            path = path / "scheduler_config.json"
        if not path.is_file():
            raise ValueError(
                f"--config must be 'sd', 'ddpm' or a scheduler_config.json path; {path} not found."
            )
        config = json.loads(path.read_text())
    config["prediction_type"] = prediction_type
    return config


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
    schedule = {k: config[k] for k in SCHEDULE_KEYS if k in config}
    model = OptimalDenoiser.from_gaussian_mixture(
        means, variances, weights, prediction_type=config.get("prediction_type", "epsilon"), **schedule
    )
    # nn.Module's casts: ModelMixin.to(dtype) logs a spurious fp32-modules warning
    return (
        model.double()
        if dtype == torch.float64
        else model.to(dtype=dtype)
        if dtype != torch.float32
        else model
    )
