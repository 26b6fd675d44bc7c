"""The packaged default model: a tiny pixel-space DDPM of handwritten digits, usable fully offline.

``diffusers_geo/assets/tiny-digits`` is a regular diffusers ``DDPMPipeline`` folder (``model_index.json``,
``unet/`` with a safetensors ``UNet2DModel``, ``scheduler/`` with the standard DDPM config: 1000 steps,
linear β from 1e-4 to 0.02, ε-prediction). It was trained by ``examples/train_tiny_model.py`` on
scikit-learn's bundled 8×8 digits (at their native 8×8), and is what ``diffusers-geo demo`` samples from;
its ``README.md`` records the training command, time, loss and sample quality.

    pipe = load_default_pipeline("er-sde")           # any diffusers_geo or benchmark sampler name
    pipe = DDPMPipeline.from_pretrained(default_model_path())  # the same, with plain diffusers

Caveat of ``DDPMPipeline.__call__`` itself: it neither multiplies the initial noise by
``scheduler.init_noise_sigma`` nor calls ``scale_model_input``, and it always passes ``generator=`` to
``step``. Schedulers with the VP interface work in it (``DDPMScheduler``, ``DDIMScheduler``,
``DPMSolverMultistepScheduler`` and every diffusers_geo scheduler); Euler/Heun-type schedulers and
``UniPCMultistepScheduler`` need a loop that does both, such as :func:`diffusers_geo.cli.demo.generate`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, SchedulerMixin

from ..data import digits_images, load_digits
from ..registry import make_scheduler
from ..solvers.arguments import Instance

__all__ = ["DigitsScore", "default_model_path", "load_default_pipeline", "score_digits"]

#: Side of the packaged model's images: the digits' native 8×8.
DEFAULT_MODEL_SIZE = 8


def default_model_path() -> Path:
    """The folder of the packaged ``DDPMPipeline`` (inside the installed package; no download)."""
    return Path(__file__).resolve().parent.parent / "assets" / "tiny-digits"


def load_default_pipeline(
    scheduler: SchedulerMixin | type | str | Callable[[Mapping[str, Any]], SchedulerMixin] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> DDPMPipeline:
    """Load the packaged digits ``DDPMPipeline`` with ``DDPMPipeline.from_pretrained`` (offline).

    Args:
        scheduler: ``None`` keeps the packaged ``DDPMScheduler``; otherwise a scheduler instance, a
            scheduler class (built with ``from_config(pipe.scheduler.config)``), a callable
            ``config -> scheduler``, or a sampler name: one of :data:`diffusers_geo.SCHEDULERS` or a
            diffusers built-in as named by ``diffusers-geo bench --list`` (``"dpmpp-2m"``,
            ``"er-sde:solver_order=2"``).
        device: e.g. ``"cuda"``; default: stay on the CPU.
        dtype: e.g. ``torch.float16``; default: float32.
    """
    Instance((str, torch.device), 'a device ("cpu", "cuda", a torch.device)', optional=True)("device", device)
    Instance(torch.dtype, "a torch.dtype (e.g. torch.float16)", optional=True)("dtype", dtype)
    path = default_model_path()
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"The packaged default model is missing from {path}; reinstall diffusers-geo, or recreate it "
            "with `python examples/train_tiny_model.py`."
        )
    pipe = DDPMPipeline.from_pretrained(path, dtype=dtype or torch.float32)
    if scheduler is not None:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    if device is not None:
        pipe = pipe.to(device)
    return pipe


# --------------------------------------------------------------------------------------------------
# a recognisability score (needs scikit-learn: pip install "diffusers-geo[bench]")
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DigitsScore:
    """How digit-like a batch of images is (see :func:`score_digits`)."""

    confidence: float  #: mean top-class probability of a digits classifier
    num_classes: int  #: how many different digits the classifier sees in the batch
    nn_rms: float  #: median RMS distance (in [-1, 1] pixel units) to the nearest training image
    data_nn_rms: float  #: the same for real digits to their nearest *other* digit (the reference)


def _features(images: torch.Tensor) -> torch.Tensor:
    """8×8 features in the digits' 0..16 scale (average pooling undoes an upsampling to a multiple of 8)."""
    x = images.detach().to(torch.float64).cpu()
    if x.shape[-1] != 8:
        x = F.adaptive_avg_pool2d(x, 8)
    return ((x + 1.0) * 8.0).flatten(1)


@functools.lru_cache(maxsize=4)
def _classifier(size: int):
    """A logistic-regression digits classifier on the 8×8 features of the ``size``-pixel digits.

    Fitted on one BLAS thread: on a busy machine OpenBLAS's spinning threads make this small fit many times
    slower.
    """
    from sklearn.linear_model import LogisticRegression  # optional dependency, imported when used
    from threadpoolctl import threadpool_limits  # optional dependency, imported when used

    train = _features(digits_images(size, torch.float64)).numpy()
    with threadpool_limits(1):
        return LogisticRegression(max_iter=3000).fit(train, load_digits().target)


def score_digits(samples: torch.Tensor) -> DigitsScore:
    """Score samples ``(N, 1, H, W)`` in [-1, 1] against the digits they should look like.

    A logistic-regression classifier trained on the digits (features: the images resized to 8×8, so real
    digits upsampled to 16×16 and back score like the originals; fitted once per size) gives the mean top-class probability and
    the number of distinct predicted classes; ``nn_rms`` is the median distance to the nearest training
    image, compared with ``data_nn_rms``, the median leave-one-out distance among the real digits.
    """
    from threadpoolctl import threadpool_limits  # optional dependency, imported when used

    size = samples.shape[-1]
    data = digits_images(size, torch.float64)
    classifier = _classifier(size)
    with threadpool_limits(1):
        probabilities = classifier.predict_proba(_features(samples).numpy())

    flat_data = data.flatten(1)
    flat = samples.detach().to(torch.float64).cpu().flatten(1)
    pixels = flat.shape[1]
    nn = torch.cdist(flat, flat_data).min(1).values / pixels**0.5
    among_data = torch.cdist(flat_data, flat_data).fill_diagonal_(float("inf")).min(1).values / pixels**0.5
    return DigitsScore(
        confidence=float(probabilities.max(1).mean()),
        num_classes=len(set(probabilities.argmax(1).tolist())),
        nn_rms=float(nn.median()),
        data_nn_rms=float(among_data.median()),
    )
