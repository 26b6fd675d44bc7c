"""Data the package reads: scikit-learn's bundled digits (the packaged model's training set and the benchmark's
mixture) and image folders (for fitting a prior to VAE latents)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .schedulers.options import Int
from .solvers.arguments import Instance, Shape, Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@functools.lru_cache(maxsize=1)
def load_digits():
    """scikit-learn's 1,797 bundled 8×8 digits (``.images``, ``.target``); scikit-learn is optional."""
    try:
        from sklearn.datasets import (
            load_digits as sklearn_digits,  # optional: pip install "diffusers-geo[bench]"
        )
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            'The digits data set comes with scikit-learn: pip install "diffusers-geo[bench]"'
        ) from err
    return sklearn_digits()


def digits_images(size: int | tuple[int, int] = 8, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The digits as a ``(1797, 1, H, W)`` tensor in [-1, 1] (``size`` is ``H = W`` or ``(H, W)``).

    Pixel values 0..16 map linearly to [-1, 1]; another size than 8×8 resizes bilinearly
    (``align_corners=False``).
    """
    Shape(length=2, single=True)("size", size)
    Instance(torch.dtype, "a torch.dtype")("dtype", dtype)
    height, width = (size, size) if isinstance(size, int) else size
    images = torch.tensor(load_digits().images, dtype=torch.float64)[:, None] / 8.0 - 1.0
    if (height, width) != (8, 8):
        images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False)
    return images.to(dtype)


def digits_labels() -> torch.Tensor:
    """The class (0..9) of each digit, in the order of :func:`digits_images`."""
    return torch.tensor(load_digits().target)


@torch.no_grad()
def encode_images(
    images: str | Path | torch.Tensor,
    vae,
    image_size: int | tuple[int, int] | None = None,
    batch_size: int = 8,
    max_images: int | None = None,
) -> torch.Tensor:
    """Latents of images as the UNet sees them: ``(vae.encode(x).latent_dist.mode() - shift) * scaling_factor``.

    Args:
        images: a folder of image files (png, jpg, webp, bmp; sorted by name), or a tensor ``(N, 3, H, W)``
            of pixels in [-1, 1].
        vae: the pipeline's ``AutoencoderKL`` (``pipe.vae``).
        image_size: resize files to this square size or ``(height, width)`` (default: the first image's size).
        batch_size: images per VAE call.
        max_images: encode at most this many.
    """
    if not isinstance(images, (str, Path)):
        Tensor(ndim=4, arrays=True, hint="Pass pixels (N, 3, H, W) in [-1, 1], or an image folder.")(
            "images", images
        )
    Shape(length=2, single=True, optional=True)("image_size", image_size)
    Int(1)("batch_size", batch_size)
    Int(1, optional=True)("max_images", max_images)
    files = []
    if isinstance(images, (str, Path)):
        folder = Path(images)
        files = (
            sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if folder.is_dir()
            else []
        )
        if not files:
            raise ValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) found in folder {folder}.")
    if not (hasattr(vae, "encode") and hasattr(vae, "parameters")):
        raise TypeError(f"vae must be the pipeline's AutoencoderKL (pipe.vae), got {type(vae).__name__}.")
    if files:
        pixels = _load_images(files[:max_images], image_size)
    else:
        pixels = torch.as_tensor(images)[:max_images]
    param = next(vae.parameters())
    scale = getattr(vae.config, "scaling_factor", 1.0) or 1.0
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    out = []
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size].to(device=param.device, dtype=param.dtype)
        latents = vae.encode(batch).latent_dist.mode()
        out.append(((latents - shift) * scale).cpu().to(torch.float64))
    return torch.cat(out)


def _load_images(files: list[Path], image_size) -> torch.Tensor:
    images = []
    size = None
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    for path in files:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if size is None:
                size = (image.height, image.width)
            image = image.resize((size[1], size[0]), Image.BICUBIC)
            array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        images.append(torch.from_numpy(array).permute(2, 0, 1))
    return torch.stack(images)
