"""Swap a diffusers-geo scheduler into an existing pipeline: one line.

Offline by default (a tiny random-weight DDPMPipeline, so the image is noise-like but the code path is
the real one). With ``--model`` it loads any pipeline from the Hub or a local folder, e.g.

    python examples/swap_scheduler.py --model google/ddpm-cifar10-32 --steps 10
    python examples/swap_scheduler.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 --prompt "a cat"
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

import diffusers_geo  # noqa: F401  (must be imported before loading a pipeline saved with our scheduler)
from diffusers_geo import SCHEDULERS, load_scheduler
from diffusers_geo.testing import tiny_ddpm_pipeline


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="hub id or local path (default: tiny offline DDPM)")
    parser.add_argument("--scheduler", default="sigma-ddim", choices=sorted(SCHEDULERS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--prompt", default=None, help="for text-to-image pipelines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("examples-out") / "swap_scheduler.png")
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = tiny_ddpm_pipeline() if args.model is None else DiffusionPipeline.from_pretrained(args.model)
    pipe = pipe.to(device)
    pipe.scheduler = load_scheduler(args.scheduler, pipe.scheduler.config)  # <- the one line

    kwargs = {"prompt": args.prompt} if args.prompt else {}
    generator = torch.Generator(device).manual_seed(args.seed)
    image = pipe(num_inference_steps=args.steps, generator=generator, **kwargs).images[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out)
    print(f"{type(pipe.scheduler).__name__}, {args.steps} steps -> {args.out}")
    return args.out


if __name__ == "__main__":
    main()
