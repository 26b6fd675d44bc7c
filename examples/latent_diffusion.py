"""Latent diffusion with a diffusers-geo scheduler: Stable Diffusion 1.5 / 2.1, img2img, inpainting, SDXL
base + refiner, classifier-free guidance, float16 on a GPU.

Every mode swaps the scheduler with one line, ``pipe.scheduler = load_scheduler(name, pipe.scheduler.config)``,
and keeps the checkpoint's own schedule settings (SD 2.1's v-prediction and "trailing" spacing come from its
config). Offline by default: tiny random-weight pipelines (the images are noise-like but every code path is the
real one). With ``--model`` (and ``--refiner`` for SDXL) it loads checkpoints from the Hub or local folders::

    python examples/latent_diffusion.py txt2img --model stable-diffusion-v1-5/stable-diffusion-v1-5 --prompt "a red fox"
    python examples/latent_diffusion.py txt2img --model stabilityai/stable-diffusion-2-1 --scheduler projection-ddim
    python examples/latent_diffusion.py img2img --model stable-diffusion-v1-5/stable-diffusion-v1-5 --image in.png --strength 0.6
    python examples/latent_diffusion.py inpaint --model stable-diffusion-v1-5/stable-diffusion-inpainting --image in.png --mask mask.png
    python examples/latent_diffusion.py sdxl --model stabilityai/stable-diffusion-xl-base-1.0 \
        --refiner stabilityai/stable-diffusion-xl-refiner-1.0 --denoising-end 0.8

On a CUDA device the pipelines run in float16 (``--dtype`` overrides). ``import diffusers_geo`` comes before
loading, so a pipeline saved with one of our schedulers loads too.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image
from PIL import Image

import diffusers_geo  # noqa: F401  (must be imported before loading a pipeline saved with our scheduler)
from diffusers_geo import SCHEDULERS, load_scheduler
from diffusers_geo.testing import tiny_image, tiny_mask, tiny_sd_pipeline, tiny_sdxl_pipelines

LOADERS = {"txt2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image}
LOADERS["inpaint"] = AutoPipelineForInpainting


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["txt2img", "img2img", "inpaint", "sdxl"])
    parser.add_argument(
        "--model", default=None, help="hub id or local folder (default: tiny offline pipeline)"
    )
    parser.add_argument("--refiner", default=None, help="sdxl: refiner hub id or folder (default: --model's)")
    parser.add_argument("--scheduler", default="er-sde", choices=sorted(SCHEDULERS))
    parser.add_argument("--prompt", default="a photo of a red fox in the snow")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--guidance", type=float, default=7.5, help="classifier-free guidance scale (1 = off)"
    )
    parser.add_argument("--strength", type=float, default=0.6, help="img2img / inpaint")
    parser.add_argument("--image", type=Path, default=None, help="img2img / inpaint input (default: random)")
    parser.add_argument("--mask", type=Path, default=None, help="inpaint mask, white = repaint")
    parser.add_argument("--denoising-end", type=float, default=0.8, help="sdxl: where the base hands off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None)
    parser.add_argument("--out", type=Path, default=Path("examples-out") / "latent_diffusion.png")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    return args


def _load(kind: str, model: str | None, dtype: torch.dtype):
    """A pipeline of ``kind`` from ``model`` (hub id or folder), or the tiny offline one."""
    if model is None:
        return tiny_sd_pipeline(kind)
    return LOADERS[kind].from_pretrained(model, torch_dtype=dtype)


def _counting(counter: dict[str, int], key: str):
    def callback(pipe, step_index, timestep, callback_kwargs):
        counter[key] = counter.get(key, 0) + 1
        return callback_kwargs

    return callback


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run one mode; returns the settings, the steps each pipeline ran and the output path."""
    args = parse_args(argv)
    dtype = getattr(torch, args.dtype or ("float16" if args.device.startswith("cuda") else "float32"))
    steps: dict[str, int] = {}
    common = dict(prompt=args.prompt, negative_prompt=args.negative_prompt, guidance_scale=args.guidance)
    common["generator"] = torch.Generator("cpu").manual_seed(args.seed)

    if args.mode == "sdxl":
        if args.model is None:
            base, refiner = tiny_sdxl_pipelines()
        else:
            base = AutoPipelineForText2Image.from_pretrained(args.model, torch_dtype=dtype)
            refiner = AutoPipelineForImage2Image.from_pretrained(
                args.refiner or args.model, torch_dtype=dtype
            )
        base, refiner = base.to(args.device, dtype), refiner.to(args.device, dtype)
        for pipe in (base, refiner):
            pipe.scheduler = load_scheduler(args.scheduler, pipe.scheduler.config)  # <- the one line
        latents = base(
            num_inference_steps=args.steps,
            denoising_end=args.denoising_end,
            output_type="latent",
            callback_on_step_end=_counting(steps, "base"),
            **common,
        ).images
        image = refiner(
            image=latents,
            num_inference_steps=args.steps,
            denoising_start=args.denoising_end,
            callback_on_step_end=_counting(steps, "refiner"),
            **common,
        ).images[0]
    else:
        pipe = _load(args.mode, args.model, dtype).to(args.device, dtype)
        pipe.scheduler = load_scheduler(args.scheduler, pipe.scheduler.config)  # <- the one line
        extra: dict[str, Any] = {}
        if args.mode != "txt2img":
            size = pipe.unet.config.sample_size * pipe.vae_scale_factor
            extra["image"] = Image.open(args.image).convert("RGB") if args.image else tiny_image(size=size)
            extra["strength"] = args.strength
        if args.mode == "inpaint":
            extra["mask_image"] = Image.open(args.mask).convert("L") if args.mask else tiny_mask(size=size)
        image = pipe(
            num_inference_steps=args.steps,
            callback_on_step_end=_counting(steps, args.mode),
            **common,
            **extra,
        ).images[0]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out)
    print(f"{args.mode} with {args.scheduler}: steps {steps} -> {args.out}")
    return {
        "mode": args.mode,
        "scheduler": args.scheduler,
        "steps": steps,
        "out": args.out,
        "size": image.size,
    }


if __name__ == "__main__":
    main()
