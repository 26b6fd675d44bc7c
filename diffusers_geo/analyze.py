"""``diffusers-geo analyze``: paper A's trajectory observations, measured, and the plots that show them.

Chen et al., "A Geometric Perspective on Diffusion Models" (arXiv 2305.19947) observe, for deterministic
samplers (§3–4):

1. the sampling trajectory is quasi-linear: its distance to the chord start -> end is tiny (Fig. 3);
2. the denoising trajectory (the denoiser outputs along the way) reaches the final sample much earlier
   than the sampling trajectory does (Fig. 4, the basis of "ODE-Jump");
3. the optimal denoiser of the training set is one mean-shift step, and a trained network departs from
   it at intermediate noise levels (the score deviation, §4.3).

This module runs the same scheduler on exact denoisers (a single Gaussian, where the trajectory is exactly
straight; the digits Gaussian mixture of the benchmark; the mean-shift denoiser of the digits themselves)
and on a real pipeline (the embedded default model, or ``--model``), prints a Markdown table of the chord
deviation and of the step at which each trajectory comes within ``eps`` of its end, and writes the plots:
both trajectories on their 2-D PCA plane, the deviation / convergence / score-deviation curves against
sigma, and a grid of decoded denoiser outputs (through the pipeline's VAE for latent pipelines).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .trajectory import (
    Trajectory,
    TrajectoryRecorder,
    chord_deviation,
    distance_to_final,
    score_deviation,
    summarize,
)

Decoder = Callable[[torch.Tensor], torch.Tensor]


# -------------------------------------------------------------------------------------------------
# plots
# -------------------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover
        raise ImportError("The plots need matplotlib: pip install matplotlib") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# -------------------------------------------------------------------------------------------------
# the problems
# -------------------------------------------------------------------------------------------------
@dataclass
class Analysis:
    """One analysed trajectory batch: its table row, its recording and (optionally) its score deviation."""

    key: str
    label: str
    trajectory: Trajectory
    summary: dict[str, float]
    score: torch.Tensor | None = None
    decode: Decoder | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def digits_images(shape: tuple[int, int, int]) -> torch.Tensor:
    """scikit-learn's 1,797 digits in [-1, 1], resized (bilinear) to ``(C, H, W)`` (channels repeated)."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    channels, height, width = shape
    images = torch.tensor(load_digits().images, dtype=torch.float64)[:, None] / 8.0 - 1.0
    images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False)
    return images.repeat(1, channels, 1, 1)


def exact_denoisers(config: dict[str, Any], size: int) -> dict[str, tuple[str, Any]]:
    """The exact problems: ``{key: (label, OptimalDenoiser)}`` on ``size`` x ``size`` digits, float64."""
    from .bench import digits_mixture
    from .bench.problems import SCHEDULE_KEYS
    from .models import OptimalDenoiser

    schedule = {k: config[k] for k in SCHEDULE_KEYS if k in config}
    schedule["prediction_type"] = config.get("prediction_type", "epsilon")
    images = digits_images((1, size, size))
    flat = images.flatten(1)
    gaussian = OptimalDenoiser.from_gaussian_mixture(
        flat.mean(0).reshape(1, 1, size, size), float(flat.var(0).mean()), **schedule
    )
    return {
        "gaussian": ("Gaussian fit of the digits (exact)", gaussian.double()),
        "mixture": ("digits Gaussian mixture (exact)", digits_mixture(config, size=size)),
        "mean-shift": (
            "digits images, mean shift (exact)",
            OptimalDenoiser.from_images(images, **schedule).double(),
        ),
    }


def record_exact(model: Any, scheduler: Any, steps: int, num_samples: int, seed: int) -> Trajectory:
    """Run ``scheduler`` with the exact ``model`` (pipeline-style loop, float64) and record it."""
    from .bench.quality import sample

    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(num_samples, *model.sample_shape, generator=generator, dtype=torch.float64)
    recorder = TrajectoryRecorder()
    with recorder.watch(scheduler):
        sample(scheduler, model, noise, torch.Generator().manual_seed(seed + 1))
    return recorder.trajectory()


def load_model_pipeline(model: str, device: str) -> Any:
    """``"default"`` (the embedded model), ``"tiny"`` (random tiny DDPM, for tests) or a hub id / path."""
    if model == "default":
        try:
            from .default_model import load_default_pipeline

            pipe = load_default_pipeline(device=device)
        except (ImportError, FileNotFoundError) as err:
            raise SystemExit(
                "diffusers-geo analyze: the embedded default model is not available in this install "
                f"({err}); pass --model <hub id or path>, --model tiny or --model none."
            ) from err
    elif model == "tiny":
        from .testing import tiny_ddpm_pipeline

        pipe = tiny_ddpm_pipeline()
    else:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(model)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def record_pipeline(pipe: Any, steps: int, num_samples: int, seed: int, prompt: str | None) -> Trajectory:
    """Run ``pipe`` once (``num_samples`` images) and record it (unreduced, on the CPU)."""
    kwargs: dict[str, Any] = {"num_inference_steps": steps, "output_type": "np"}
    kwargs["generator"] = torch.Generator(device="cpu").manual_seed(seed)
    if prompt is not None:
        kwargs.update(prompt=[prompt] * num_samples)
    else:
        kwargs["batch_size"] = num_samples
    recorder = TrajectoryRecorder()
    recorder.run(pipe, **kwargs)
    return recorder.trajectory()


# -------------------------------------------------------------------------------------------------
# report
# -------------------------------------------------------------------------------------------------
def markdown_table(analyses: list[Analysis], eps: float) -> str:
    header = (
        "| trajectory | d | steps | chord deviation (max, relative) | length / chord | "
        f"denoising traj. within {eps} RMS from step (σ) | sampling traj. within {eps} RMS from step (σ) | "
        "max score deviation vs mean shift, RMS (at σ) |"
    )
    lines = [header, "|" + "---|" * 8]
    for a in analyses:
        s = a.summary
        score = "–"
        if a.score is not None:
            curve = a.score.median(1).values
            i = int(curve.argmax())
            score = f"{float(curve[i]):.3g} ({float(a.trajectory.sigmas[i]):.3g})"
        lines.append(
            f"| {a.label} | {a.trajectory.dim} | {s['num_steps']} | {s['chord_deviation']:.3g} | "
            f"{s['length_ratio']:.6f} | {s['denoised_step']} ({s['denoised_sigma']:.3g}) | "
            f"{s['samples_step']} ({s['samples_sigma']:.3g}) | {score} |"
        )
    return "\n".join(lines)


def to_json(analyses: list[Analysis], settings: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for a in analyses:
        t = a.trajectory
        row = {"key": a.key, "label": a.label, "dim": t.dim, **a.summary}
        row["curves"] = {
            "sigma": t.sigmas.tolist(),
            "chord_deviation": chord_deviation(t).median(1).values[:-1].tolist(),
            "denoised_distance": distance_to_final(t, "denoised").median(1).values.tolist(),
            "samples_distance": distance_to_final(t, "samples").median(1).values.tolist(),
        }
        if a.score is not None:
            row["curves"]["score_deviation"] = a.score.median(1).values.tolist()
        rows.append(row)
    return {"settings": settings, "rows": rows}


def add_analyze_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``diffusers-geo analyze`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "analyze",
        help="trajectory geometry (paper A): chord deviation, denoising-trajectory convergence, plots",
        description="Record sampling and denoising trajectories on exact denoisers (Gaussian, digits "
        "mixture, mean shift over the digits) and on a pipeline; print a Markdown table and write "
        "results.json and PNG plots to --out.",
    )
    parser.add_argument(
        "--model",
        default="default",
        help="'default' (the embedded model), 'tiny' (random tiny DDPM), 'none' (exact denoisers only), "
        "or a hub id / local path",
    )
    parser.add_argument("--scheduler", default="sigma-ddim", help="a sampler name as in `bench --list`")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps")
    parser.add_argument("--samples", type=int, default=16, help="trajectories per problem")
    parser.add_argument("--eps", type=float, default=0.05, help="convergence threshold, RMS in data units")
    parser.add_argument("--size", type=int, default=16, help="image side of the exact digits problems")
    parser.add_argument("--prompt", default=None, help="prompt for text-to-image --model pipelines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="device for the pipeline (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("analyze-out"), help="folder for results and plots")
    return parser


def run_analyze(args: argparse.Namespace) -> int:
    """Run ``diffusers-geo analyze``."""
    from .bench import load_config
    from .bench.samplers import make_sampler

    if args.steps < 2 or args.samples < 1 or args.eps <= 0 or args.size < 2:
        raise SystemExit("diffusers-geo analyze: need --steps >= 2, --samples >= 1, --eps > 0, --size >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = load_config("ddpm")
    try:
        make_sampler(args.scheduler, config)
    except ValueError as err:
        raise SystemExit(f"diffusers-geo analyze: {err}") from err
    args.out.mkdir(parents=True, exist_ok=True)

    analyses: list[Analysis] = []
    problems = exact_denoisers(config, args.size)
    mean_shift = problems["mean-shift"][1]
    for key, (label, model) in problems.items():
        scheduler = make_sampler(args.scheduler, config)[0]
        trajectory = record_exact(model, scheduler, args.steps, args.samples, args.seed)
        # the mixture generalises; the mean-shift denoiser of the same digits memorises (paper A, §4.3)
        score = score_deviation(trajectory, mean_shift) if key == "mixture" else None
        analyses.append(Analysis(key, label, trajectory, summarize(trajectory, args.eps), score))
    if args.model != "none":
        pipe = load_model_pipeline(args.model, device)
        pipe.scheduler = make_sampler(args.scheduler, dict(pipe.scheduler.config))[0]
        trajectory = record_pipeline(pipe, args.steps, args.samples, args.seed, args.prompt)
        score, label = None, f"{args.model} model"
        if args.model in ("default", "tiny") and len(trajectory.sample_shape) == 3:
            from .models import OptimalDenoiser

            reference = OptimalDenoiser.from_images(
                digits_images(trajectory.sample_shape), **_schedule_of(pipe.scheduler.config)
            ).double()
            score = score_deviation(trajectory, reference)
            label += ", vs mean shift over the digits"
        analyses.append(
            Analysis(
                "model", label, trajectory, summarize(trajectory, args.eps), score, pipeline_decoder(pipe)
            )
        )

    print(
        f"# diffusers-geo analyze (scheduler={args.scheduler}, steps={args.steps}, samples={args.samples})\n"
    )
    print(markdown_table(analyses, args.eps))
    print()
    for a in analyses:
        s = a.summary
        earlier = s["samples_step"] - s["denoised_step"]
        print(
            f"- {a.label}: sampling trajectory {'straight' if s['chord_deviation'] < 1e-8 else 'quasi-linear'} "
            f"(max {s['chord_deviation']:.2g} of its chord off the chord); denoising trajectory within "
            f"{args.eps} of the end {earlier} step(s) earlier (σ {s['denoised_sigma']:.3g} vs {s['samples_sigma']:.3g})"
        )
    for a in analyses:
        plot_trajectory_plane(a.trajectory, args.out / f"{a.key}_plane.png", title=a.label)
        plot_denoised_grid(a.trajectory, args.out / f"{a.key}_denoised.png", a.decode, title=a.label)
    scores = {a.label: a.score for a in analyses if a.score is not None}
    plot_curves({a.label: a.trajectory for a in analyses}, args.out / "curves.png", args.eps, scores)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    (args.out / "results.json").write_text(json.dumps(to_json(analyses, settings), indent=1))
    print(f"\nwrote {args.out / 'results.json'}, curves.png and *_plane.png / *_denoised.png to {args.out}")
    return 0


def _schedule_of(config: Mapping[str, Any]) -> dict[str, Any]:
    from .bench.problems import SCHEDULE_KEYS

    return {k: config[k] for k in SCHEDULE_KEYS if k in config}
