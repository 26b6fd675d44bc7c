"""Sample-quality metrics: per image against a reference image (RMSE, PSNR, SSIM) and between two sets of
feature vectors (Fréchet distance, kernel distance). No model weights here: features come from the caller."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PSNR_CAP = 100.0


# --------------------------------------------------------------------------------------------------
def rmse(samples: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image root-mean-square distance, in float64."""
    diff = samples.detach().double().cpu() - reference.detach().double().cpu()
    return diff.flatten(1).pow(2).mean(1).sqrt()


def psnr(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of images in [0, 1] (``(N, H, W, C)``), capped at ``PSNR_CAP`` (identical images)."""
    mse = ((images.astype(np.float64) - reference.astype(np.float64)) ** 2).reshape(len(images), -1).mean(1)
    return np.minimum(10.0 * np.log10(1.0 / np.maximum(mse, 1e-300)), PSNR_CAP)


def ssim(images: np.ndarray, reference: np.ndarray, window: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004, eq. 13) of images in [0, 1] (``(N, H, W, C)``): local means, variances
    and covariance under a Gaussian window (11 pixels, sigma 1.5, shrunk to fit small images; valid region
    only), ``C1 = 0.01^2``, ``C2 = 0.03^2``, averaged over pixels and channels."""
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
    evals, evecs = torch.linalg.eigh(cov)
    root = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(root @ ref_cov @ root).clamp_min(0).sqrt().sum()
    return float((mean - ref_mean).pow(2).sum() + cov.trace() + ref_cov.trace() - 2 * cross)


def feature_frechet_distance(features: torch.Tensor, reference: torch.Tensor) -> float:
    """FID's formula on two sets of feature vectors ``(N, k)`` (float64): :func:`frechet_distance` of their
    means and covariances."""
    x, y = features.double(), reference.double()
    return frechet_distance(
        x.mean(0), torch.cov(x.T).reshape(x.shape[1], -1), y.mean(0), torch.cov(y.T).reshape(y.shape[1], -1)
    )


def kernel_distance(features: torch.Tensor, reference: torch.Tensor) -> float:
    """KID (Bińkowski et al. 2018, eq. 6): the unbiased squared MMD of two feature sets ``(N, k)`` with the
    polynomial kernel ``k(x, y) = (x . y / k + 1)^3``."""
    x, y = features.double(), reference.double()
    dim = x.shape[1]

    def kernel(a, b):
        return (a @ b.T / dim + 1) ** 3

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = len(x), len(y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within_x + within_y - 2 * kxy.mean())
