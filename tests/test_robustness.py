"""Robustness of every registered scheduler (issue 6, section 6): the img2img strength × steps grid that
diffusers' DDIMScheduler runs, a clear error where no step is left, half precision down to sigma = 0,
batches and num_images_per_prompt, and no state leaking from one pipeline call to the next."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

from diffusers_geo import OptimalDenoiser, load_scheduler
from diffusers_geo.registry import scheduler_names
from diffusers_geo.testing import SD_BETAS as SD
from diffusers_geo.testing import tiny_image, tiny_sd_pipeline

NAMES = scheduler_names()  # one name per class
PROMPT = "a photo of a cat"


def _model():
    torch.manual_seed(0)
    return OptimalDenoiser.from_images(torch.randn(6, 2, 4, 4) * 0.5, **SD).double()


def _pipeline_slice(scheduler, steps: int, strength: float) -> tuple[torch.Tensor, int, int]:
    """What StableDiffusionImg2ImgPipeline.get_timesteps does: (timesteps to run, begin index, kept steps)."""
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    return scheduler.timesteps[t_start * scheduler.order :], t_start * scheduler.order, init_timestep


@pytest.mark.parametrize("name", NAMES)
def test_img2img_strength_grid_runs_wherever_ddim_does(name):
    model = _model()
    x0 = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ddim, ours = DDIMScheduler(**SD), load_scheduler(name, SD)
    for strength in (0.05, 0.3, 0.99, 1.0):
        for steps in range(1, 51):
            ddim.set_timesteps(steps)
            ddim_runs = len(_pipeline_slice(ddim, steps, strength)[0])
            ours.set_timesteps(steps)
            timesteps, begin, kept = _pipeline_slice(ours, steps, strength)
            if kept == 0:  # the pipeline has nothing to run: a clear error, not a shape error later
                assert ddim_runs == 0
                with pytest.raises(ValueError, match="strength"):
                    ours.set_begin_index(begin)
                continue
            assert ddim_runs == kept
            ours.set_begin_index(begin)
            x = ours.add_noise(x0, noise, timesteps[:1])
            calls = 0
            for t in timesteps:
                x = ours.step(
                    model(x, t).sample, t, x, generator=torch.Generator().manual_seed(calls)
                ).prev_sample
                calls += 1
            assert ours.step_index == len(ours.timesteps), (strength, steps)
            assert calls == len(timesteps) and (ours.order > 1 or calls == kept), (strength, steps)
            assert torch.isfinite(x).all(), (strength, steps)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_down_to_sigma_zero(name, dtype):
    model = _model().float()
    scheduler = load_scheduler(name, SD)
    scheduler.set_timesteps(12)
    x = (
        torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0)).to(dtype)
        * scheduler.init_noise_sigma
    )
    for t in scheduler.timesteps:
        out = scheduler.step(
            model(x.float(), t).sample.to(dtype), t, x, generator=torch.Generator().manual_seed(0)
        )
        x = out.prev_sample
        assert x.dtype == dtype and out.pred_original_sample.dtype == dtype
        assert torch.isfinite(x).all()
    assert float(scheduler.sigmas[-1]) == 0.0


@pytest.fixture(scope="module")
def sd_pipe():
    return tiny_sd_pipeline("txt2img", prediction_type="epsilon", seed=0)


@pytest.mark.parametrize("name", NAMES)
def test_batches_num_images_per_prompt_and_no_leaked_state(sd_pipe, name):
    pipe = sd_pipe
    pipe.scheduler = load_scheduler(name, pipe.scheduler.config)

    def run(**kwargs):
        gen = torch.Generator().manual_seed(0)
        return pipe(num_inference_steps=4, generator=gen, output_type="latent", **kwargs).images

    first = run(prompt=[PROMPT] * 3, num_images_per_prompt=2)
    assert first.shape[0] == 6 and torch.isfinite(first).all()
    second = run(prompt=[PROMPT] * 3, num_images_per_prompt=2)  # same seed, same scheduler object
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    single = run(prompt=PROMPT)
    assert single.shape[0] == 1 and torch.isfinite(single).all()
    torch.testing.assert_close(run(prompt=PROMPT), single, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_img2img_with_no_step_left_is_a_clear_error(sd_pipe, name):
    pipe = StableDiffusionImg2ImgPipeline(**sd_pipe.components)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = load_scheduler(name, sd_pipe.scheduler.config)
    with pytest.raises(ValueError, match="raise strength or num_inference_steps"):
        pipe(PROMPT, image=tiny_image(), strength=0.05, num_inference_steps=10, output_type="latent")
    # and the scheduler is usable right after
    out = pipe(PROMPT, image=tiny_image(), strength=0.5, num_inference_steps=4, output_type="latent").images
    assert torch.isfinite(out).all()
