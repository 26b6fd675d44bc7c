"""Sample-quality metrics: per image against a reference image (RMSE, PSNR, SSIM) and between two sets of
feature vectors (Fréchet distance, kernel distance). No model weights here: features come from the caller."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .schedulers.options import Int, Real
from .solvers.arguments import Tensor

PSNR_CAP = 100.0


#: images in [0, 1], (N, H, W, C), as numpy arrays
_IMAGES = Tensor(ndim=4, arrays=True, finite=False, hint="(images in [0, 1], (N, H, W, C))")
#: feature vectors, one row per image
_FEATURES = Tensor(ndim=2)


def _check_pair(names: tuple[str, str], a, b, check: Tensor, same: str = "shape") -> None:
    """Both arguments pass ``check``; they have the same shape (``same="features"``: the same number of
    features and at least 2 rows each, which a covariance and an unbiased kernel estimate need)."""
    check(names[0], a)
    check(names[1], b)
    if same == "shape" and a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    if same == "features" and (a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2):
        raise ValueError(
            f"{names[0]} and {names[1]} must be (N, k) feature sets with the same k and N >= 2, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}."
        )


# --------------------------------------------------------------------------------------------------
def rmse(samples: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image root-mean-square distance, in float64."""
    _check_pair(("samples", "reference"), samples, reference, Tensor(ndim=(2, None), finite=False))
    diff = samples.detach().double().cpu() - reference.detach().double().cpu()
    return diff.flatten(1).pow(2).mean(1).sqrt()


def psnr(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of images in [0, 1] (``(N, H, W, C)``), capped at ``PSNR_CAP`` (identical images)."""
    _check_pair(("images", "reference"), images, reference, _IMAGES)
    mse = ((images.astype(np.float64) - reference.astype(np.float64)) ** 2).reshape(len(images), -1).mean(1)
    return np.minimum(10.0 * np.log10(1.0 / np.maximum(mse, 1e-300)), PSNR_CAP)


def ssim(images: np.ndarray, reference: np.ndarray, window: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004, eq. 13) of images in [0, 1] (``(N, H, W, C)``): local means, variances
    and covariance under a Gaussian window (11 pixels, sigma 1.5, shrunk to fit small images; valid region
    only), ``C1 = 0.01^2``, ``C2 = 0.03^2``, averaged over pixels and channels."""
    _check_pair(("images", "reference"), images, reference, _IMAGES)
    Int(1)("window", window)
    Real(0.0, low_open=True)("sigma", sigma)
    x = torch.from_numpy(np.asarray(images, dtype=np.float64)).permute(0, 3, 1, 2)
    y = torch.from_numpy(np.asarray(reference, dtype=np.float64)).permute(0, 3, 1, 2)
    size = min(window, x.shape[-2], x.shape[-1])
    size -= 1 - size % 2  # odd
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(x.shape[1], 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=x.shape[1])

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return value.flatten(1).mean(1).numpy()


def frechet_distance(
    mean: torch.Tensor, cov: torch.Tensor, ref_mean: torch.Tensor, ref_cov: torch.Tensor
) -> float:
    """``|m1 - m2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2)`` (Dowson & Landau 1982)."""
    _check_pair(("mean", "ref_mean"), mean, ref_mean, Tensor(ndim=1))
    _check_pair(("cov", "ref_cov"), cov, ref_cov, Tensor(ndim=2))
    evals, evecs = torch.linalg.eigh(cov)
    root = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(root @ ref_cov @ root).clamp_min(0).sqrt().sum()
    return float((mean - ref_mean).pow(2).sum() + cov.trace() + ref_cov.trace() - 2 * cross)


def feature_frechet_distance(features: torch.Tensor, reference: torch.Tensor) -> float:
    """FID's formula on two sets of feature vectors ``(N, k)`` (float64): :func:`frechet_distance` of their
    means and covariances."""
    _check_pair(("features", "reference"), features, reference, _FEATURES, same="features")
    x, y = features.double(), reference.double()
    return frechet_distance(
        x.mean(0), torch.cov(x.T).reshape(x.shape[1], -1), y.mean(0), torch.cov(y.T).reshape(y.shape[1], -1)
    )


def kernel_distance(features: torch.Tensor, reference: torch.Tensor) -> float:
    """KID (Bińkowski et al. 2018, eq. 6): the unbiased squared MMD of two feature sets ``(N, k)`` with the
    polynomial kernel ``k(x, y) = (x . y / k + 1)^3``."""
    _check_pair(("features", "reference"), features, reference, _FEATURES, same="features")
    x, y = features.double(), reference.double()
    dim = x.shape[1]

    def kernel(a, b):
        return (a @ b.T / dim + 1) ** 3

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = len(x), len(y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within_x + within_y - 2 * kxy.mean())
