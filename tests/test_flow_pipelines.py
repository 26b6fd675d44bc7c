"""The flow-matching pipeline matrix: every diffusers-geo scheduler in Stable Diffusion 3 and Flux.

The one-line swap ``X.from_config(pipe.scheduler.config)`` on a tiny, random-weight, offline SD3 or Flux
pipeline (:mod:`diffusers_geo.testing`) must give a flow-matching scheduler that runs txt2img, img2img at
several strengths and inpainting, calls the transformer exactly once per entry of its schedule, is
reproducible with ``generator=``, keeps nothing from one call to the next, survives ``save_pretrained`` ->
``DiffusionPipeline.from_pretrained`` and runs bfloat16 latents. diffusers' own flow schedulers run the same
checks as controls.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from diffusers import (
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
)
from pipeline_matrix import OURS, Case, assert_finite, cases, control, gen, install
from pipeline_matrix import traced as traced_run

import diffusers_geo  # noqa: F401  (registers our classes for DiffusionPipeline.from_pretrained)
from diffusers_geo.parameterization import FlowMatching
from diffusers_geo.testing import tiny_flux_pipeline, tiny_image, tiny_mask, tiny_sd3_pipeline

PROMPT = "a photo of a cat"
#: images in [0, 1] of a reloaded float32 pipeline (as in test_pipelines.py: not bit-equal across a reload)
RELOAD_ATOL = 2e-4
# short text sequences keep the tiny runs fast (the pipelines pad every prompt to this length)
CALL = {"max_sequence_length": 16, "height": 16, "width": 16}


EULER, HEUN = control(FlowMatchEulerDiscreteScheduler), control(FlowMatchHeunDiscreteScheduler)
# DPM-Solver++ with flow sigmas, as a user sets it up for SD3 (its own flow schedule, flow_shift = shift)
DPM = Case(
    "DPMSolver-flow",
    lambda c: DPMSolverMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=c.get("shift", 1.0),
        use_dynamic_shifting=c.get("use_dynamic_shifting", False),
    ),
    False,
)


traced = functools.partial(traced_run, model="transformer")


def schedule_timesteps(pipe) -> list[float]:
    return pipe.scheduler.timesteps.tolist()


PIPES = {"sd3": tiny_sd3_pipeline, "flux": tiny_flux_pipeline}
# the transformer sees timestep / 1000 in Flux (the pipeline divides), t itself in SD3
TIMESTEP_SCALE = {"sd3": 1.0, "flux": 1000.0}


@pytest.fixture(scope="module", params=sorted(PIPES))
def family(request):
    """One pipeline of each kind per family, sharing the models, with the family's original config."""
    build = PIPES[request.param]
    txt2img = build("txt2img", seed=0)
    config = dict(txt2img.scheduler.config)
    pipes = {"txt2img": txt2img}
    for kind in ("img2img", "inpaint"):
        pipe = type(build(kind, seed=0))(**txt2img.components)
        pipe.set_progress_bar_config(disable=True)
        pipes[kind] = pipe
    return request.param, pipes, config


def skip_unsupported(name: str, case: Case) -> None:
    if name == "flux" and case is HEUN:
        pytest.skip(
            "FlowMatchHeunDiscreteScheduler.set_timesteps takes no `sigmas`, which FluxPipeline passes"
        )


@pytest.mark.parametrize("case", cases(EULER, HEUN, DPM))
def test_txt2img(family, case):
    name, pipes, config = family
    skip_unsupported(name, case)
    pipe = pipes["txt2img"]
    scheduler = install(pipe, case, config)
    if case.ours:
        assert scheduler.config.prediction_type == "flow_prediction"
        assert isinstance(scheduler.parameterization, FlowMatching)
    with traced(pipe) as trace:
        first = pipe(PROMPT, num_inference_steps=5, generator=gen(0), output_type="np", **CALL).images
    assert first.shape == (1, 16, 16, 3)
    assert_finite(trace, first)
    # one transformer call per schedule entry, at the schedule's timesteps
    seen = [t * TIMESTEP_SCALE[name] for t in trace.model_timesteps]
    np.testing.assert_allclose(seen, schedule_timesteps(pipe), rtol=1e-6, atol=1e-3)
    if case.ours:
        assert pipe.scheduler.step_index == len(pipe.scheduler.timesteps)
        expected_calls = 5 if pipe.scheduler.order == 1 else 2 * 5 - 1
        assert len(trace.model_timesteps) == expected_calls
    # the same seed again on the same scheduler: nothing leaks from the first run. SD3 and Flux do not pass
    # `generator` to `step`: a stochastic sampler draws its noise from torch's global RNG (as diffusers' own
    # stochastic schedulers do in these pipelines), so it is seeded too
    torch.manual_seed(0)
    first = pipe(PROMPT, num_inference_steps=5, generator=gen(0), output_type="np", **CALL).images
    torch.manual_seed(0)
    second = pipe(PROMPT, num_inference_steps=5, generator=gen(0), output_type="np", **CALL).images
    np.testing.assert_array_equal(first, second)
    torch.manual_seed(0)
    other = pipe(PROMPT, num_inference_steps=5, generator=gen(1), output_type="np", **CALL).images
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("case", cases(EULER, HEUN))
def test_img2img(family, case):
    name, pipes, config = family
    skip_unsupported(name, case)
    pipe = pipes["img2img"]
    for steps, strength in [(4, 0.5), (5, 0.3), (7, 0.9), (3, 1.0)]:
        install(pipe, case, config)
        full = case(config)
        kwargs = {"mu": 1.0} if config.get("use_dynamic_shifting") else {}
        if name == "flux":  # Flux passes sigmas; retrieve_timesteps then counts model calls as steps
            full.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), **kwargs)
            n = len(full.timesteps)
        else:
            full.set_timesteps(steps, **kwargs)
            n = steps
        t_start = int(max(n - min(n * strength, n), 0))  # the pipelines' get_timesteps
        expected_calls = len(full.timesteps) - t_start * full.order
        run = functools.partial(
            pipe,
            PROMPT,
            image=tiny_image(0),
            strength=strength,
            num_inference_steps=steps,
            generator=gen(0),
            output_type="np",
            **CALL,
        )
        if expected_calls <= 0:
            # FluxImg2ImgPipeline slices an order-2 schedule (the two-call Heun step) by twice its model
            # calls and can skip past its end: a clear error, never a silent run without steps
            assert case.ours and full.order == 2
            with pytest.raises(ValueError, match="leaves no denoising step"):
                run()
            continue
        with traced(pipe) as trace:
            out = run().images
        assert_finite(trace, out)
        assert len(trace.model_timesteps) == expected_calls, f"steps={steps} strength={strength}"
        if case.ours:
            assert pipe.scheduler.step_index == len(pipe.scheduler.timesteps)


@pytest.mark.parametrize("case", cases(EULER))
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_inpaint(family, case, strength):
    """The pipelines re-noise the kept region with ``scale_noise`` at the next step's timestep."""
    name, pipes, config = family
    pipe = pipes["inpaint"]
    install(pipe, case, config)
    with traced(pipe) as trace:
        out = pipe(
            PROMPT,
            image=tiny_image(0),
            mask_image=tiny_mask(),
            strength=strength,
            num_inference_steps=4,
            generator=gen(0),
            output_type="np",
            **CALL,
        ).images
    assert out.shape == (1, 16, 16, 3)
    assert_finite(trace, out)
    if case.ours:
        assert pipe.scheduler.step_index == len(pipe.scheduler.timesteps)


@pytest.mark.parametrize("case", cases(EULER))
def test_bfloat16_latents(family, case):
    """A bfloat16 pipeline (as Flux is run): the first step from pure noise (sigma = inf) stays finite."""
    name, pipes, config = family
    pipe = pipes["txt2img"].to(torch.bfloat16)
    try:
        install(pipe, case, config)
        with traced(pipe) as trace:
            latents = pipe(
                PROMPT, num_inference_steps=4, generator=gen(0), output_type="latent", **CALL
            ).images
        assert latents.dtype == torch.bfloat16
        assert_finite(trace, latents.float())
    finally:
        pipe.to(torch.float32)


@pytest.mark.parametrize("case", cases(EULER))
def test_save_and_reload(family, case, tmp_path):
    name, pipes, config = family
    pipe = pipes["txt2img"]
    scheduler = install(pipe, case, config)
    pipe.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    assert saved["_class_name"] == type(scheduler).__name__
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is type(scheduler)
    public = {k: v for k, v in scheduler.config.items() if not k.startswith("_")}
    assert {k: loaded.scheduler.config[k] for k in public} == public
    torch.manual_seed(0)
    expected = pipe(PROMPT, num_inference_steps=4, generator=gen(0), output_type="np", **CALL).images
    torch.manual_seed(0)
    actual = loaded(PROMPT, num_inference_steps=4, generator=gen(0), output_type="np", **CALL).images
    np.testing.assert_allclose(actual, expected, rtol=0, atol=RELOAD_ATOL)


def test_trajectory_recorder_on_a_flow_pipeline(family):
    """The recorder watches a flow run: the trajectory starts at the first finite noise level (the run's
    first step starts at sigma = inf, where y is infinite) and ends at the pipeline's final latents."""
    from diffusers_geo import TrajectoryRecorder

    name, pipes, config = family
    pipe = pipes["txt2img"]
    scheduler = install(pipe, OURS[0], config)
    recorder = TrajectoryRecorder()
    with recorder.watch(pipe):
        latents = pipe(PROMPT, num_inference_steps=4, generator=gen(0), output_type="latent", **CALL).images
    trajectory = recorder.trajectory()
    assert trajectory.num_steps == len(scheduler.timesteps) - 1
    assert torch.isfinite(trajectory.sigmas).all() and torch.isfinite(trajectory.samples).all()
    assert trajectory.final_sigma == 0.0
    if name == "sd3":  # Flux packs its latents into tokens; SD3's are the scheduler's sample
        torch.testing.assert_close(
            trajectory.final_sample.reshape(latents.shape), latents, rtol=1e-5, atol=1e-5
        )
