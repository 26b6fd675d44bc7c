"""The pipeline-style sampling loop with counted model calls, for exact denoisers and bare models.

What a diffusers pipeline does between ``set_timesteps`` and the decoder, written once: the initial noise times
``init_noise_sigma``, ``scale_model_input``, the model call and ``step`` (with ``generator=`` where the
scheduler takes it). The benchmark, ``analyze`` and the tests run it; :func:`run_pipeline` runs any pipeline
with one generator per image and counts its model calls (the demo, ``eval``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from diffusers import DDIMPipeline, DDPMPipeline
from diffusers.utils.torch_utils import randn_tensor

from .schedulers.options import Choice, Int
from .solvers.arguments import Instance, Numbers, Tensor

#: the image sequence length (2x2-packed latent tokens) of a 1024 x 1024 Flux image: what the benchmark's
#: dynamic shift assumes (``mu = max_shift`` with Flux.1-dev's config)
FLUX_IMAGE_SEQ_LEN = 4096


def flux_mu(config, image_seq_len: int = FLUX_IMAGE_SEQ_LEN) -> float:
    """Flux's resolution-dependent shift (diffusers' ``calculate_shift``): linear in the image sequence length
    from ``base_shift`` at ``base_image_seq_len`` to ``max_shift`` at ``max_image_seq_len``."""
    Instance(Mapping, "a scheduler config (scheduler.config)")("config", config)
    Int(1)("image_seq_len", image_seq_len)
    lo, hi = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base, top = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (top - base) / (hi - lo)
    return image_seq_len * slope + base - slope * lo


def dynamic_shift(config, image_seq_len: int = FLUX_IMAGE_SEQ_LEN) -> float | None:
    """:func:`flux_mu` where ``config`` has dynamic shifting (Flux), ``None`` otherwise (its ``mu`` is unused)."""
    return flux_mu(config, image_seq_len) if config.get("use_dynamic_shifting") else None


def set_timesteps(scheduler, steps: int, image_seq_len: int = FLUX_IMAGE_SEQ_LEN) -> None:
    """``scheduler.set_timesteps`` as the pipeline of its model calls it: with dynamic shifting (Flux) the
    unshifted ``sigmas = linspace(1, 1/N, N)`` and ``mu`` (:func:`flux_mu`), or ``N`` and ``mu`` where the config
    has ``use_flow_sigmas`` or ``set_timesteps`` takes no ``sigmas`` (as FluxPipeline does); otherwise ``N``."""
    Int(1)("steps", steps)
    config = scheduler.config
    if not config.get("use_dynamic_shifting"):
        scheduler.set_timesteps(steps)
        return
    mu = flux_mu(config, image_seq_len)
    takes_sigmas = "sigmas" in inspect.signature(scheduler.set_timesteps).parameters
    if config.get("use_flow_sigmas") or not takes_sigmas:
        scheduler.set_timesteps(steps, mu=mu)
    else:
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)


def steps_for_nfe(scheduler, nfe: int) -> int | None:
    """Largest ``num_inference_steps`` whose schedule makes at most ``nfe`` model calls."""
    Int(1)("nfe", nfe)
    for steps in range(nfe, 0, -1):
        set_timesteps(scheduler, steps)
        if len(scheduler.timesteps) <= nfe:
            return steps
    return None


def sample(scheduler, model, noise: torch.Tensor, generator: torch.Generator | None):
    """Run one pipeline-style loop; returns ``(final sample, model calls, VP model input at the start, t0)``."""
    Tensor()("noise", noise)
    Instance((torch.Generator, list), "a torch.Generator or a list of them (one per sample)", optional=True)(
        "generator", generator
    )
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    x = noise * getattr(scheduler, "init_noise_sigma", 1.0)  # FlowMatch schedulers: pure noise, no attribute
    calls, start = 0, None
    for t in scheduler.timesteps:
        # FlowMatch schedulers have no scale_model_input (flow pipelines never call it)
        scale = getattr(scheduler, "scale_model_input", None)
        model_input = x if scale is None else scale(x, t)
        if start is None:
            start = (model_input, t)
        output = model(model_input, t).sample
        calls += 1
        kwargs = {"generator": generator} if takes_generator else {}
        x = scheduler.step(output, t, x, **kwargs).prev_sample
    return x, calls, start


# --------------------------------------------------------------------------------------------------
# a diffusers pipeline, one image per seed, with counted model calls
# --------------------------------------------------------------------------------------------------
#: pipelines whose ``__call__`` skips ``init_noise_sigma`` / ``scale_model_input``: their loop runs here
UNCONDITIONAL = (DDPMPipeline, DDIMPipeline)


def denoiser_module(pipe) -> torch.nn.Module:
    """The network whose calls count as model evaluations (``unet`` or ``transformer``)."""
    for name in ("unet", "transformer", "prior"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise ValueError(f"{type(pipe).__name__} has no `unet` or `transformer` whose calls could be counted.")


def takes(pipe, name: str) -> bool:
    """Whether ``pipe.__call__`` has the argument ``name``."""
    return name in inspect.signature(pipe.__call__).parameters


@torch.no_grad()
def run_pipeline(
    pipe,
    scheduler,
    steps: int,
    seeds: Sequence[int],
    prompts: Sequence[str] | None = None,
    output_type: str = "np",
    schedule=None,
) -> tuple[np.ndarray | torch.Tensor, int]:
    """Sample one image per seed with ``scheduler`` in ``steps`` steps; returns ``(samples, model calls)``.

    Image ``i`` draws its initial noise (and, for a stochastic scheduler, its step noise) from
    ``torch.Generator().manual_seed(seeds[i])`` on the CPU, so every scheduler starts from the same noise on any
    device. ``prompts`` gives one prompt per image for pipelines that take one. ``output_type="np"``: images
    in [0, 1], ``(N, H, W, C)``; ``"latent"``: the final sample before decoding (for pixel models the image in
    [-1, 1]). Model calls are counted with a forward hook on the UNet / transformer (classifier-free
    guidance's batched call counts once). ``DDPMPipeline`` / ``DDIMPipeline`` apply neither
    ``init_noise_sigma`` nor ``scale_model_input``, so their loop runs here (:func:`sample`, which does both).
    ``schedule`` (a :class:`~diffusers_geo.GITSSchedule`) replaces the ``steps``-step schedule: the pipeline
    gets its ``sigmas=`` (or ``timesteps=`` where the scheduler takes no sigmas:
    :meth:`~diffusers_geo.GITSSchedule.set_timesteps_kwargs`).
    """
    Choice(("np", "latent"))("output_type", output_type)
    Int(1)("steps", steps)
    Numbers(ints=True)("seeds", seeds)
    pipe.scheduler = scheduler
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    calls = 0

    def count(*_):
        nonlocal calls
        calls += 1

    hook = denoiser_module(pipe).register_forward_pre_hook(count)
    try:
        if isinstance(pipe, UNCONDITIONAL):
            if prompts is not None:
                raise ValueError(f"{type(pipe).__name__} is unconditional: it takes no prompt.")
            unet = pipe.unet
            size = unet.config.sample_size
            size = (size, size) if isinstance(size, int) else tuple(size)
            shape = (len(seeds), unet.config.in_channels, *size)
            noise = randn_tensor(shape, generator=generators, device=pipe.device, dtype=unet.dtype)
            if schedule is None:
                scheduler.set_timesteps(steps, device=pipe.device)
            else:
                schedule.apply(scheduler, device=pipe.device)
            x, _, _ = sample(scheduler, unet, noise, generators)
            if output_type == "latent":
                return x, calls
            return (x.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy(), calls
        kwargs: dict[str, Any] = {"generator": generators, "output_type": output_type}
        if schedule is None:
            kwargs["num_inference_steps"] = steps
        else:
            custom = schedule.set_timesteps_kwargs(scheduler)
            if not custom:
                raise TypeError(
                    f"{type(scheduler).__name__} takes no custom schedule through a pipeline (neither sigmas= "
                    "nor timesteps=); run the GITS schedule with Euler, DPM-Solver++ or a diffusers-geo scheduler."
                )
            kwargs.update(custom)
        if takes(pipe, "prompt"):
            if prompts is None:
                raise ValueError(f"{type(pipe).__name__} needs a prompt per image.")
            kwargs["prompt"] = list(prompts)
        elif prompts is not None:
            raise ValueError(f"{type(pipe).__name__} takes no prompt.")
        elif takes(pipe, "batch_size"):
            kwargs["batch_size"] = len(seeds)
        images = pipe(**kwargs).images
    finally:
        hook.remove()
    if output_type == "latent":
        return images, calls
    return np.asarray(images, dtype=np.float32), calls


@torch.no_grad()
def decode(pipe, samples: torch.Tensor) -> np.ndarray:
    """Images in [0, 1], ``(N, H, W, C)``, from what :func:`run_pipeline` returns with ``output_type="latent"``:
    through the pipeline's VAE for latent pipelines, directly for pixel models."""
    vae = getattr(pipe, "vae", None)
    if vae is not None and samples.ndim == 3 and hasattr(pipe, "_unpack_latents"):
        # Flux packs 2x2 latent patches into tokens (N, H/16 * W/16, 4 C): unpack (a square image, which is
        # what the pipeline makes by default) before decoding
        factor = pipe.vae_scale_factor
        side = round(math.sqrt(samples.shape[1])) * 2 * factor
        samples = pipe._unpack_latents(samples, side, side, factor)
    if vae is not None:
        latents = samples.to(vae.device, vae.dtype) / vae.config.scaling_factor
        shift = getattr(vae.config, "shift_factor", None)
        samples = vae.decode(latents + (shift or 0.0), return_dict=False)[0]
    return (samples.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
