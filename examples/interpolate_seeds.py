"""Interpolate between two seeds without leaving the noise shell (Chen et al., arXiv 2305.19947, §3).

Initial latents z ~ N(0, I_d) lie near the sphere of radius sqrt(d); a straight mix of two of them sinks to
0.71 of that radius halfway, and the sampler then starts from noise it never saw in training. Spherical
interpolation (slerp) stays on the shell. This script draws the latents of two seeds, interpolates them
with slerp (and, for comparison, plain lerp), prints each frame's norm relative to the shell radius, runs the
pipeline from every frame and saves one PNG strip per method (one row each).

Offline by default (a tiny random-weight DDPMPipeline: the images are noise-like but the code path is the
real one). With ``--model`` it loads any pipeline from the Hub or a local folder, e.g.

    python examples/interpolate_seeds.py --model google/ddpm-cifar10-32 --steps 20
    python examples/interpolate_seeds.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 --prompt "a cat"
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

import diffusers_geo  # noqa: F401  (must be imported before loading a pipeline saved with our scheduler)
from diffusers_geo import SCHEDULERS, interpolate_latents, load_scheduler, shell_radius
from diffusers_geo.testing import tiny_ddpm_pipeline


def latent_shape(pipe) -> tuple[int, int, int]:
    """``(C, H, W)`` of one initial latent: the UNet's input (the VAE latent for latent pipelines)."""
    config = pipe.unet.config
    size = config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return (config.out_channels, height, width)


@torch.no_grad()
def generate(pipe, latents: torch.Tensor, steps: int, prompt: str | None) -> np.ndarray:
    """Images in [0, 1], ``(N, H, W, C)``, sampled from the given unit-variance initial ``latents``."""
    device = pipe.unet.device
    latents = latents.to(device=device, dtype=pipe.unet.dtype)
    parameters = inspect.signature(pipe.__call__).parameters
    if "latents" in parameters:  # Stable Diffusion and most pipelines
        kwargs = {"prompt": [prompt or ""] * len(latents)} if "prompt" in parameters else {}
        return pipe(latents=latents, num_inference_steps=steps, output_type="np", **kwargs).images
    # DDPMPipeline draws its own noise: run its loop from our latents (with the scaling every scheduler needs)
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps, device=device)
    x = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        output = pipe.unet(scheduler.scale_model_input(x, t), t).sample
        x = scheduler.step(output, t, x).prev_sample
    return (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()


def strip(rows: list[np.ndarray], min_side: int = 64) -> Image.Image:
    """Rows of images (each ``(N, H, W, C)`` in [0, 1]) pasted into one picture (upscaled when tiny)."""
    grid = np.concatenate([np.concatenate(list(images), axis=1) for images in rows], axis=0)
    image = Image.fromarray((grid * 255).round().astype(np.uint8).squeeze())
    height = rows[0].shape[1]
    if height < min_side:
        factor = -(-min_side // height)
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    return image


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="hub id or local path (default: tiny offline DDPM)")
    parser.add_argument("--scheduler", default="sigma-ddim", choices=sorted(SCHEDULERS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=8, help="frames including both seeds")
    parser.add_argument("--seeds", default="0,1", help="the two seeds, e.g. 0,1")
    parser.add_argument("--methods", default="slerp,lerp", help="rows: slerp, norm-lerp and/or lerp")
    parser.add_argument("--prompt", default=None, help="for text-to-image pipelines")
    parser.add_argument("--out", type=Path, default=Path("examples-out") / "interpolate_seeds.png")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if len(seeds) != 2:
        parser.error(f"--seeds needs exactly two seeds, got {args.seeds!r}")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = tiny_ddpm_pipeline() if args.model is None else DiffusionPipeline.from_pretrained(args.model)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = load_scheduler(args.scheduler, pipe.scheduler.config)

    shape = latent_shape(pipe)
    z0, z1 = (torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds)
    radius = shell_radius(shape)  # unit-variance latents: the scheduler's init_noise_sigma scales the shell
    rows = []
    for method in args.methods.split(","):
        frames = interpolate_latents(z0, z1, args.frames, method=method)
        norms = frames.flatten(1).norm(dim=1) / radius
        print(f"{method:>9}: |z| / sqrt(d) = " + " ".join(f"{float(n):.3f}" for n in norms))
        rows.append(generate(pipe, frames, args.steps, args.prompt))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    strip(rows).save(args.out)
    print(f"{args.frames} frames x {len(rows)} methods, {args.steps} steps of {args.scheduler} -> {args.out}")
    return args.out


if __name__ == "__main__":
    main()
