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
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import DiffusionPipeline

from ..bench import digits_mixture, load_config
from ..data import digits_images as _digits
from ..diagnostics.plots import (
    Decoder,
    pipeline_decoder,
    plot_curves,
    plot_denoised_grid,
    plot_trajectory_plane,
)
from ..diagnostics.trajectory import (
    Trajectory,
    TrajectoryRecorder,
    chord_deviation,
    distance_to_final,
    score_deviation,
    summarize,
)
from ..models import OptimalDenoiser
from ..models.default_model import load_default_pipeline
from ..registry import make_scheduler
from ..sampling import sample
from ..schedules import training_schedule
from ._common import settings as command_settings


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
    channels, height, width = shape
    return _digits((height, width), torch.float64).repeat(1, channels, 1, 1)


def exact_denoisers(config: dict[str, Any], size: int) -> dict[str, tuple[str, Any]]:
    """The exact problems: ``{key: (label, OptimalDenoiser)}`` on ``size`` x ``size`` digits, float64."""

    schedule = training_schedule(config, prediction_type=True)
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
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(num_samples, *model.sample_shape, generator=generator, dtype=torch.float64)
    recorder = TrajectoryRecorder()
    with recorder.watch(scheduler):
        sample(scheduler, model, noise, torch.Generator().manual_seed(seed + 1))
    return recorder.trajectory()


def load_model_pipeline(model: str, device: str) -> Any:
    """``"default"`` (the embedded model) or a hub id / path."""
    if model == "default":
        try:
            pipe = load_default_pipeline(device=device)
        except (ImportError, FileNotFoundError) as err:
            raise ValueError(
                "--model default: the embedded default model is not available in this install "
                f"({err}); pass --model <hub id or path> or --model none."
            ) from err
    else:
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


def run(args: argparse.Namespace) -> int:
    """Run ``diffusers-geo analyze``."""

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = load_config("ddpm")
    args.out.mkdir(parents=True, exist_ok=True)

    analyses: list[Analysis] = []
    problems = exact_denoisers(config, args.size)
    mean_shift = problems["mean-shift"][1]
    for key, (label, model) in problems.items():
        scheduler = make_scheduler(args.scheduler, config)
        trajectory = record_exact(model, scheduler, args.steps, args.samples, args.seed)
        # the mixture generalises; the mean-shift denoiser of the same digits memorises (paper A, §4.3)
        score = score_deviation(trajectory, mean_shift) if key == "mixture" else None
        analyses.append(Analysis(key, label, trajectory, summarize(trajectory, args.eps), score))
    if args.model != "none":
        pipe = load_model_pipeline(args.model, device)
        pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
        trajectory = record_pipeline(pipe, args.steps, args.samples, args.seed, args.prompt)
        score, label = None, f"{args.model} model"
        if args.model == "default" and len(trajectory.sample_shape) == 3:
            reference = OptimalDenoiser.from_images(
                digits_images(trajectory.sample_shape), **training_schedule(pipe.scheduler.config)
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
    settings = command_settings(args)
    (args.out / "results.json").write_text(json.dumps(to_json(analyses, settings), indent=1))
    print(f"\nwrote {args.out / 'results.json'}, curves.png and *_plane.png / *_denoised.png to {args.out}")
    return 0
