"""GPU checks (issue 6): float16 latents on CUDA, no host-device synchronisation inside ``step``.

Skipped without a CUDA device (CI has none). On a GPU machine run ``HF_HUB_OFFLINE=1 pytest tests/test_gpu.py``
and, for the step overhead ratio, ``diffusers-geo bench --overhead --device cuda --schedulers ours,dpmpp-2m``.
"""

from __future__ import annotations

import pytest
import torch

from diffusers_geo import load_scheduler
from diffusers_geo.registry import scheduler_names
from diffusers_geo.testing import SD_BETAS, tiny_sd_pipeline

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU checks need a CUDA device")

NAMES = scheduler_names()


@pytest.mark.parametrize("name", NAMES)
def test_float16_latents_on_cuda(name):
    """A tiny SD pipeline in float16 on the GPU: finite float16 latents that agree with the float32 run."""
    latents = {}
    for dtype in (torch.float32, torch.float16):
        pipe = tiny_sd_pipeline(seed=0).to("cuda", dtype)
        pipe.scheduler = load_scheduler(name, pipe.scheduler.config)
        latents[dtype] = pipe(
            "a cat",
            num_inference_steps=6,
            generator=torch.Generator("cuda").manual_seed(0),
            output_type="latent",
        ).images
    half, full = latents[torch.float16], latents[torch.float32]
    assert half.dtype == torch.float16 and half.device.type == "cuda" and torch.isfinite(half).all()
    assert (half.float() - full).abs().max() <= 0.05 * full.abs().max(), name


@pytest.mark.parametrize("variant", ["", ":multistep=True"])
@pytest.mark.parametrize("name", NAMES)
def test_no_host_device_sync_inside_step(name, variant):
    """``torch.cuda.set_sync_debug_mode("error")`` raises on any synchronising call. The first step (it looks
    the timestep up) and the last (the deferred NaN/inf check reads one flag) may synchronise; none between."""
    if variant and name != "geometric-heun":
        pytest.skip("variant of geometric-heun only")
    scheduler = load_scheduler(name, dict(SD_BETAS), **({"multistep": True} if variant else {}))
    scheduler.set_timesteps(10, device="cuda")
    generator = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(1, 4, 64, 64, device="cuda", generator=generator)
    output = torch.randn(1, 4, 64, 64, device="cuda", generator=generator)
    timesteps = scheduler.timesteps
    x = scheduler.step(output, timesteps[0], x, generator=generator).prev_sample
    torch.cuda.set_sync_debug_mode("error")
    try:
        for t in timesteps[1:-1]:
            x = scheduler.step(output, t, x, generator=generator).prev_sample
    finally:
        torch.cuda.set_sync_debug_mode(0)
    x = scheduler.step(output, timesteps[-1], x, generator=generator).prev_sample
    assert torch.isfinite(x).all()
