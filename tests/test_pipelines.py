"""The pipeline matrix every diffusers-geo scheduler must pass, in the real diffusers pipelines.

Each scheduler in :data:`diffusers_geo.SCHEDULERS` is picked up automatically and run through tiny,
random-weight, offline pipelines (:mod:`diffusers_geo.testing`): ``DDPMPipeline``, Stable Diffusion
txt2img (epsilon and v-prediction, with and without classifier-free guidance, custom ``timesteps=`` and
``sigmas=``), img2img at several strengths, 4-channel inpainting, the SDXL base -> refiner hand-off, and
``save_pretrained`` -> ``DiffusionPipeline.from_pretrained``. A few diffusers built-ins run the same
checks as controls, proving that the tiny pipelines and the expectations themselves are right.

The pipelines are built once per module; each test installs a fresh scheduler built from a copy of the
pipeline's original scheduler config, so tests do not depend on each other's order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    SchedulerMixin,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
)
from pipeline_matrix import Case, assert_finite, cases, control, gen, install, traced

import diffusers_geo
from diffusers_geo.testing import (
    tiny_ddpm_pipeline,
    tiny_image,
    tiny_mask,
    tiny_sd_pipeline,
    tiny_sdxl_pipelines,
)

PROMPT = "a photo of a cat"


# Controls, where the pipeline supports them: DDPMPipeline only handles VP schedulers (it never scales the
# initial noise; Euler gives noise there and Heun's step takes no `generator`); DDIMScheduler's
# set_timesteps takes neither `timesteps` nor `sigmas`, and only Euler-type schedulers take `sigmas`.
DDIM, EULER, DPM, HEUN = (
    control(c)
    for c in (DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler, HeunDiscreteScheduler)
)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def full_schedule(case: Case, config: Mapping[str, Any], **set_timesteps_kwargs) -> list[float]:
    """The timesteps a fresh scheduler produces, i.e. what a pipeline slices."""
    scheduler = case(config)
    scheduler.set_timesteps(**set_timesteps_kwargs)
    return scheduler.timesteps.tolist()


def strength_schedule(
    case: Case, config: Mapping[str, Any], steps: int, strength: float, order: int
) -> list[float]:
    """What img2img/inpaint run: the full schedule without its first ``steps - int(steps * strength)``
    steps (``order`` timesteps each), as the pipelines' ``get_timesteps`` slices it."""
    kept = min(int(steps * strength), steps)
    return full_schedule(case, config, num_inference_steps=steps)[(steps - kept) * order :]


def assert_ran_to_the_end(pipe, case: Case) -> None:
    """Our schedulers count steps: after a run, the step index is at the terminal noise level."""
    if case.ours:
        assert pipe.scheduler.step_index == len(pipe.scheduler.timesteps)


# --------------------------------------------------------------------------------------------------
# pipelines, built once per module
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ddpm():
    pipe = tiny_ddpm_pipeline(seed=0)
    return pipe, dict(pipe.scheduler.config)


@pytest.fixture(scope="module")
def sd_eps():
    pipe = tiny_sd_pipeline("txt2img", prediction_type="epsilon", seed=0)
    return pipe, dict(pipe.scheduler.config)


@pytest.fixture(scope="module")
def sd_v():
    pipe = tiny_sd_pipeline("txt2img", prediction_type="v_prediction", seed=0)
    return pipe, dict(pipe.scheduler.config)


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def sd(request):
    """The txt2img pipeline for each prediction type (SD 1.x epsilon, SD 2.x v-prediction + trailing)."""
    return request.getfixturevalue("sd_eps" if request.param == "epsilon" else "sd_v")


@pytest.fixture(scope="module")
def img2img(sd_eps):
    pipe, config = sd_eps
    sub = StableDiffusionImg2ImgPipeline(**pipe.components)  # same models, own scheduler slot
    sub.set_progress_bar_config(disable=True)
    return sub, config


@pytest.fixture(scope="module")
def inpaint(sd_eps):
    pipe, config = sd_eps
    sub = StableDiffusionInpaintPipeline(**pipe.components)
    sub.set_progress_bar_config(disable=True)
    return sub, config


@pytest.fixture(scope="module")
def sdxl():
    base, refiner = tiny_sdxl_pipelines(seed=0)
    return base, refiner, dict(base.scheduler.config), dict(refiner.scheduler.config)


#: images in [0, 1] of a reloaded float32 pipeline (see test_save_and_reload_pipeline)
RELOAD_ATOL = 2e-4


# --------------------------------------------------------------------------------------------------
# DDPMPipeline (pixel space; never scales the initial noise nor calls scale_model_input)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", cases(DDIM, DPM))
def test_ddpm_pipeline_reproducible_and_stateless(ddpm, case):
    pipe, config = ddpm
    install(pipe, case, config)
    with traced(pipe) as trace:
        first = pipe(num_inference_steps=5, generator=gen(0), output_type="np").images
    assert first.shape == (1, 8, 8, 3)
    assert_finite(trace, first)
    assert trace.model_calls == len(full_schedule(case, config, num_inference_steps=5))
    assert_ran_to_the_end(pipe, case)

    # a second call on the same pipeline and scheduler: nothing leaks from the first run
    second = pipe(num_inference_steps=5, generator=gen(0), output_type="np").images
    np.testing.assert_array_equal(first, second)

    # a freshly built pipeline with a fresh scheduler: same seed, same output
    fresh = tiny_ddpm_pipeline(scheduler=case, seed=0)
    np.testing.assert_array_equal(
        first, fresh(num_inference_steps=5, generator=gen(0), output_type="np").images
    )

    # and the seed matters
    other = pipe(num_inference_steps=5, generator=gen(1), output_type="np").images
    assert not np.array_equal(first, other)


# --------------------------------------------------------------------------------------------------
# Stable Diffusion txt2img
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", cases(DDIM, EULER, DPM, HEUN))
def test_sd_txt2img(sd, case):
    pipe, config = sd
    scheduler = install(pipe, case, config)
    assert scheduler.config.prediction_type == config["prediction_type"]
    outputs = {}
    for guidance_scale in (1.0, 5.0):  # 1.0: single batch; > 1: classifier-free guidance (batch of 2)
        with traced(pipe) as trace:
            latents = pipe(
                PROMPT,
                num_inference_steps=4,
                guidance_scale=guidance_scale,
                generator=gen(0),
                output_type="latent",
            ).images
        assert latents.shape == (1, 4, 8, 8)
        assert_finite(trace, latents)
        assert trace.model_calls == len(full_schedule(case, config, num_inference_steps=4))
        assert_ran_to_the_end(pipe, case)
        outputs[guidance_scale] = latents
    assert not torch.allclose(outputs[1.0], outputs[5.0]), "guidance had no effect"

    # decode once through the VAE and image processor; a second identical call gives the same image
    first = pipe(PROMPT, num_inference_steps=4, generator=gen(0), output_type="np").images
    second = pipe(PROMPT, num_inference_steps=4, generator=gen(0), output_type="np").images
    assert first.shape == (1, 16, 16, 3) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("case", cases(EULER, DPM, HEUN))
def test_sd_custom_timesteps(sd_v, case):
    """``timesteps=`` through ``retrieve_timesteps`` runs exactly the given timesteps; passing a scheduler's
    own default 4-step timesteps as ``timesteps=`` reproduces ``num_inference_steps=4`` (for most schedulers
    that is [999, 749, 499, 249], "trailing"; projection-DDIM's default is its log-linear schedule)."""
    pipe, config = sd_v
    custom = [999, 749, 499, 249]
    install(pipe, case, config)
    with traced(pipe) as trace:
        latents = pipe(PROMPT, timesteps=custom, generator=gen(0), output_type="latent").images
    assert_finite(trace, latents)
    schedule = full_schedule(case, config, timesteps=custom)
    assert trace.model_timesteps == schedule
    assert sorted(set(schedule), reverse=True) == custom
    assert_ran_to_the_end(pipe, case)

    own = sorted(set(full_schedule(case, config, num_inference_steps=4)), reverse=True)
    if own != custom:
        install(pipe, case, config)
        latents = pipe(PROMPT, timesteps=own, generator=gen(0), output_type="latent").images
    install(pipe, case, config)
    default = pipe(PROMPT, num_inference_steps=4, generator=gen(0), output_type="latent").images
    torch.testing.assert_close(latents, default, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", cases(EULER))
def test_sd_custom_sigmas(sd_eps, case):
    """``sigmas=`` (N + 1 values with the terminal 0, Euler's convention) through ``retrieve_timesteps``;
    the model is called at the same fractional timesteps as diffusers' Euler for these sigmas."""
    pipe, config = sd_eps
    custom = [14.6, 5.0, 1.0, 0.1, 0.0]
    install(pipe, case, config)
    with traced(pipe) as trace:
        latents = pipe(PROMPT, sigmas=custom, generator=gen(0), output_type="latent").images
    assert_finite(trace, latents)
    assert trace.model_timesteps == full_schedule(case, config, sigmas=custom)
    assert_ran_to_the_end(pipe, case)

    euler = full_schedule(EULER, config, sigmas=custom)  # [998.8, 795.2, 353.9, 10.4]
    seen = list(dict.fromkeys(trace.model_timesteps))  # distinct, in order (order-2 layouts repeat)
    np.testing.assert_allclose(seen, euler, rtol=0, atol=1e-2)


# --------------------------------------------------------------------------------------------------
# img2img: the pipeline slices the schedule by strength * order and calls set_begin_index
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", cases(DDIM, EULER, DPM, HEUN))
def test_sd_img2img(img2img, case):
    pipe, config = img2img
    image = tiny_image(0)
    for steps, strength in [(4, 0.5), (5, 0.3), (7, 0.9), (3, 1.0)]:
        install(pipe, case, config)
        with traced(pipe) as trace:
            latents = pipe(
                PROMPT,
                image=image,
                strength=strength,
                num_inference_steps=steps,
                generator=gen(0),
                output_type="latent",
            ).images
        assert_finite(trace, latents)
        order = pipe.scheduler.order
        expected = strength_schedule(case, config, steps, strength, order)
        assert trace.model_timesteps == expected, f"steps={steps} strength={strength}"
        if order == 1:
            assert trace.model_calls == min(int(steps * strength), steps)
        assert_ran_to_the_end(pipe, case)


@pytest.mark.parametrize("case", cases(DDIM, EULER, DPM, HEUN))
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_sd_inpaint_4_channel(inpaint, case, strength):
    """4-channel UNet: the pipeline re-noises the kept region with ``add_noise`` after every step."""
    pipe, config = inpaint
    install(pipe, case, config)
    with traced(pipe) as trace:
        latents = pipe(
            PROMPT,
            image=tiny_image(0),
            mask_image=tiny_mask(),
            strength=strength,
            num_inference_steps=4,
            generator=gen(0),
            output_type="latent",
        ).images
    assert latents.shape == (1, 4, 8, 8)
    assert_finite(trace, latents)
    assert trace.model_timesteps == strength_schedule(case, config, 4, strength, pipe.scheduler.order)
    assert_ran_to_the_end(pipe, case)


# --------------------------------------------------------------------------------------------------
# SDXL ensemble of experts: base(denoising_end) -> refiner(denoising_start)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", cases(EULER, DDIM, DPM, HEUN))
def test_sdxl_base_to_refiner_handoff(sdxl, case):
    base, refiner, base_config, refiner_config = sdxl
    steps, split = 10, 0.7
    install(base, case, base_config)
    install(refiner, case, refiner_config)
    with traced(base) as base_trace:
        latents = base(
            PROMPT, num_inference_steps=steps, denoising_end=split, generator=gen(0), output_type="latent"
        ).images
    assert_finite(base_trace, latents)
    base_end = getattr(base.scheduler, "step_index", None)
    with traced(refiner) as refiner_trace:
        image = refiner(
            PROMPT,
            image=latents,
            num_inference_steps=steps,
            denoising_start=split,
            generator=gen(0),
            output_type="np",
        ).images
    assert image.shape == (1, 16, 16, 3)
    assert_finite(refiner_trace, image)
    assert_ran_to_the_end(refiner, case)

    schedule = full_schedule(case, base_config, num_inference_steps=steps)
    cutoff = round(1000 - split * 1000)
    assert base_trace.model_timesteps == [t for t in schedule if t >= cutoff]
    assert refiner_trace.model_timesteps == schedule[len(schedule) - refiner_trace.model_calls :]
    assert all(t < cutoff for t in refiner_trace.model_timesteps[1:])
    if base.scheduler.order == 1:
        # the refiner starts exactly where the base stopped: together they run the whole schedule once
        assert base_trace.model_timesteps + refiner_trace.model_timesteps == schedule
        assert base_trace.model_calls + refiner_trace.model_calls == steps
        if case.ours:
            assert refiner.scheduler.begin_index == base_end == base_trace.model_calls
    else:
        # order 2: the refiner may re-enter at the second copy of a duplicated timestep (diffusers' rule)
        assert base_trace.model_calls + refiner_trace.model_calls - len(schedule) in (0, 1)


# --------------------------------------------------------------------------------------------------
# save_pretrained -> DiffusionPipeline.from_pretrained
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", cases(DDIM))
def test_save_and_reload_pipeline(ddpm, case, tmp_path):
    pipe, config = ddpm
    scheduler = install(pipe, case, config)
    pipe.save_pretrained(tmp_path)

    library = "diffusers_geo" if case.ours else "diffusers"
    model_index = json.loads((tmp_path / "model_index.json").read_text())
    assert model_index["scheduler"] == [library, type(scheduler).__name__]
    saved = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    assert saved["_class_name"] == type(scheduler).__name__

    assert diffusers_geo.SchedulerMixin is SchedulerMixin  # imported: diffusers >= 0.42.1 needs it
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded) is type(pipe)
    assert type(loaded.scheduler) is type(scheduler)
    public = {k: v for k, v in scheduler.config.items() if not k.startswith("_")}
    assert {k: loaded.scheduler.config[k] for k in public} == public

    expected = pipe(num_inference_steps=5, generator=gen(0), output_type="np").images
    actual = loaded(num_inference_steps=5, generator=gen(0), output_type="np").images
    # Not bit-equal: the reloaded UNet's weights are equal, but safetensors leaves them at other memory
    # alignments, and float32 kernels take other SIMD paths there (and with other thread counts or CPUs), so
    # its outputs move by ~1e-6 and the 5-step images in [0, 1] by up to ~3e-5 (measured 2.4e-5 on AVX-512).
    # A scheduler that lost a config value on reload differs by orders of magnitude more (checked above, too).
    np.testing.assert_allclose(actual, expected, rtol=0, atol=RELOAD_ATOL)
