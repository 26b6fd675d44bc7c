"""Plots of recorded trajectories (Chen et al., arXiv 2305.19947, Figs. 3-4): both trajectories on their 2-D
PCA plane, deviation / convergence / score-deviation curves against sigma, and a grid of decoded denoiser
outputs (through a pipeline's VAE for latent pipelines). matplotlib is optional and imported when plotting."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .trajectory import Trajectory, chord_deviation, distance_to_final

Decoder = Callable[[torch.Tensor], torch.Tensor]


# -------------------------------------------------------------------------------------------------
# plots
# -------------------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib  # optional dependency, imported when used
    except ImportError as err:  # pragma: no cover
        raise ImportError("The plots need matplotlib: pip install matplotlib") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional dependency, imported when used

    return plt


def pca_plane(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Project ``(M, k)`` points on their 2-D principal plane.

    Returns ``(coords (M, 2), center (k,), explained)``, ``explained`` being the fraction of the squared
    spread the plane keeps (AMED, arXiv 2312.00094, §3: a trajectory keeps about 0.9 or more).
    """
    points = points.to(torch.float64)
    center = points.mean(0)
    _, s, vh = torch.linalg.svd(points - center, full_matrices=False)
    total = float((s**2).sum())
    explained = float((s[:2] ** 2).sum()) / total if total > 0 else 1.0
    basis = vh[:2]
    if basis.shape[0] < 2:  # a single direction: pad with zeros
        basis = torch.cat([basis, torch.zeros_like(points[:1])])
    return (points - center) @ basis.T, center, explained


def plot_trajectory_plane(trajectory: Trajectory, path: str | Path, sample: int = 0, title: str = "") -> Path:
    """Both trajectories of one sample on their common 2-D PCA plane (left) and zoomed on the
    denoising trajectory (right, where the sampling trajectory ends)."""
    plt = _pyplot()
    points, denoised = trajectory.points[:, sample], trajectory.denoised[:, sample]
    coords, _, explained = pca_plane(torch.cat([points, denoised]))
    p, d = coords[: len(points)].numpy(), coords[len(points) :].numpy()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, zoom in zip(axes, (False, True), strict=True):
        ax.plot(p[:, 0], p[:, 1], ".-", color="tab:blue", label="sampling trajectory $y_n$", lw=1.2)
        ax.plot(
            d[:, 0],
            d[:, 1],
            ".-",
            color="tab:orange",
            label="denoising trajectory $D(y_n,\\sigma_n)$",
            lw=1.2,
        )
        ax.plot(*p[0], "o", color="tab:blue", ms=8, mfc="none", label="start (noise shell)")
        ax.plot(*p[-1], "*", color="black", ms=12, label="final sample")
        if zoom:
            lo, hi = d.min(0), d.max(0)
            pad = 0.1 * max(float((hi - lo).max()), 1e-12)
            ax.set_xlim(lo[0] - pad, hi[0] + pad)
            ax.set_ylim(lo[1] - pad, hi[1] + pad)
            ax.set_title("zoom on the denoising trajectory")
        else:
            ax.set_title(f"PCA plane ({100 * explained:.1f}% of the spread)")
            ax.legend(fontsize=8, loc="best")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"sample {sample}: {trajectory.num_steps} steps")
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.86, wspace=0.28)  # tight_layout is slow
    return _save(fig, path)


def plot_curves(
    trajectories: Mapping[str, Trajectory],
    path: str | Path,
    eps: float = 0.05,
    score_deviations: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Against sigma (noise on the left, data on the right), medians over the batch: the relative chord
    deviation of the sampling trajectory, the RMS distance of both trajectories to the final sample
    (with the ``eps`` line), and, if given, the score deviation ``|D - D*|`` RMS per step."""
    plt = _pyplot()
    score_deviations = dict(score_deviations or {})
    panels = 3 if score_deviations else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.6 * panels, 4.6))
    colors = plt.get_cmap("tab10")
    for i, (name, traj) in enumerate(trajectories.items()):
        color = colors(i % 10)
        sig = traj.point_sigmas
        dev = chord_deviation(traj).median(1).values
        keep = (sig > 0) & (dev > 0)  # log axes; the end points lie on the chord
        axes[0].plot(sig[keep], dev[keep], ".-", color=color, label=name, ms=3)
        for which, style, label in (("denoised", "-", "denoising"), ("samples", "--", "sampling")):
            dist = distance_to_final(traj, which).median(1).values
            axes[1].plot(traj.sigmas, dist, style, color=color, label=f"{name}: {label}")
        if name in score_deviations:
            axes[2].plot(
                traj.sigmas, score_deviations[name].median(1).values, ".-", color=color, label=name, ms=3
            )
    axes[0].set_title("distance to the chord / chord length")
    axes[0].set_yscale("log")
    axes[1].set_title("RMS distance to the final sample")
    axes[1].axhline(eps, color="gray", lw=0.8, ls=":", label=f"eps = {eps}")
    axes[1].set_yscale("log")
    if panels == 3:
        axes[2].set_title("score deviation: RMS |D - D*| (optimal)")
        axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("sigma (noise -> data)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.13, top=0.92, wspace=0.25)
    return _save(fig, path)


def plot_denoised_grid(
    trajectory: Trajectory,
    path: str | Path,
    decode: Decoder | None = None,
    columns: int = 8,
    rows: int = 4,
    title: str = "",
) -> Path:
    """A grid of decoded denoiser outputs: one row per sample, ``columns`` steps from noise to data, and the
    final sample in the last column. ``decode`` maps ``(B, *sample_shape)`` data (latents for latent
    pipelines, see :func:`pipeline_decoder`) to images in [0, 1]; the default assumes pixels in [-1, 1]."""
    plt = _pyplot()
    decode = decode or _pixels
    denoised = trajectory.images("denoised")
    final = trajectory.final_sample.reshape(-1, *trajectory.sample_shape)
    rows = min(rows, trajectory.batch_size)
    picks = (
        torch.linspace(0, len(trajectory.sigmas) - 1, min(columns, len(trajectory.sigmas)))
        .round()
        .long()
        .unique()
    )
    cells = [decode(denoised[i, :rows]) for i in picks.tolist()] + [decode(final[:rows])]
    labels = [f"σ={float(trajectory.sigmas[i]):.3g}" for i in picks.tolist()] + ["final"]
    # one mosaic image in a single axes: far cheaper to draw than one axes per cell
    height, width = _to_hwc(cells[0][0]).shape[:2]
    gap = max(1, height // 8)
    channels = 1 if cells[0].shape[1] == 1 else 3
    mosaic = np.ones((rows * (height + gap) - gap, len(cells) * (width + gap) - gap, channels))
    for c, images in enumerate(cells):
        for r in range(rows):
            tile = _to_hwc(images[r])
            mosaic[
                r * (height + gap) : r * (height + gap) + height,
                c * (width + gap) : c * (width + gap) + width,
            ] = tile.reshape(height, width, -1)
    fig, ax = plt.subplots(figsize=(1.0 + 1.1 * len(cells), 0.9 + 1.1 * rows))
    ax.imshow(
        mosaic[..., 0] if channels == 1 else mosaic, cmap="gray" if channels == 1 else None, vmin=0, vmax=1
    )
    ax.set_xticks([c * (width + gap) + width / 2 for c in range(len(cells))], labels, fontsize=7, rotation=30)
    ax.set_yticks([])
    ax.set_title(title or "denoising trajectory: decoded denoiser outputs (rows: samples)", fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.2, top=0.85)
    return _save(fig, path)


def pipeline_decoder(pipe: Any) -> Decoder:
    """Decoder for :func:`plot_denoised_grid`: through ``pipe.vae`` for latent pipelines (latents divided by
    ``vae.config.scaling_factor``), else pixels in [-1, 1] mapped to [0, 1]."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        return _pixels
    scale = getattr(vae.config, "scaling_factor", 1.0)

    @torch.no_grad()
    def decode(latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(device=vae.device, dtype=vae.dtype) / scale
        return _pixels(vae.decode(z, return_dict=False)[0].float().cpu())

    return decode


def _pixels(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 2 + 0.5).clamp(0, 1)


def _to_hwc(image: torch.Tensor):
    image = image.float()
    if image.shape[0] not in (1, 3):
        image = image[:3] if image.shape[0] > 3 else image.mean(0, keepdim=True)
    array = image.permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    fig.clf()
    import matplotlib.pyplot as plt  # optional dependency, imported when used

    plt.close(fig)
    return path
