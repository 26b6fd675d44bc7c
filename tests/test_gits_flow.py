"""GITS schedules on flow-matching models (SD3, Flux): searched from the teacher's start at s = 1
(sigma = inf, the exact Euler-jump limit), stored as the unshifted noise fractions flow pipelines take, and
run by ours and by diffusers' flow schedulers, on the exact denoiser and on tiny SD3 / Flux pipelines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from diffusers_geo import (
    ERSDEScheduler,
    GeometricHeunScheduler,
    GITSSchedule,
    gits_schedule,
)
from diffusers_geo.bench.problems import FLUX_CONFIG, SD3_CONFIG, load_config, make_problem
from diffusers_geo.sampling import flux_mu, sample, set_timesteps
from diffusers_geo.schedules.flow import flow_sigma
from diffusers_geo.testing import tiny_flux_pipeline, tiny_sd3_pipeline

CONFIGS = {"sd3": SD3_CONFIG, "flux": FLUX_CONFIG}
SEARCH = {"num_warmup": 32, "batch_size": 32, "teacher_steps": 30, "seed": 0, "progress": False}


def search(name: str, steps: int, problem: str = "mixture", **options):
    config = load_config(name)
    model = make_problem(problem, config, size=8)
    shift = {"mu": flux_mu(config)} if config.get("use_dynamic_shifting") else {}
    return (
        model,
        config,
        gits_schedule(model, steps, scheduler_config=config, **{**SEARCH, **shift, **options}),
    )


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_schedule_is_a_subset_of_the_teacher_grid_in_the_pipelines_convention(name):
    _, config, schedule = search(name, 5)
    assert schedule.flow_matching and schedule.num_inference_steps == 5
    assert (schedule.mu is not None) == bool(config.get("use_dynamic_shifting"))
    path = schedule.grid_indices
    assert path[0] == 0 and path[-1] == len(schedule.teacher_sigmas) - 1 and path == sorted(set(path))
    assert schedule.teacher_sigmas[0] == 1.0 and schedule.teacher_sigmas[-1] == 0.0
    # sigmas: N unshifted fractions starting at s = 1, no terminal 0 (what FluxPipeline passes as sigmas=)
    assert (
        len(schedule.sigmas) == 5 and schedule.sigmas[0] == 1.0 and all(0 < s <= 1 for s in schedule.sigmas)
    )
    shifted = [schedule.teacher_sigmas[i] for i in path]
    np.testing.assert_allclose(schedule.timesteps, 1000 * np.array(shifted[:-1]), rtol=1e-12)
    # strict JSON (no inf), and back
    text = json.dumps(schedule.to_dict(), allow_nan=False)
    assert GITSSchedule.from_dict(json.loads(text)) == schedule

    # diffusers' FlowMatchEuler (which shifts the given fractions itself) runs exactly the shifted subset
    euler = schedule.apply(FlowMatchEulerDiscreteScheduler.from_config(CONFIGS[name]))
    np.testing.assert_allclose(euler.sigmas.numpy(), shifted, atol=1e-6)
    # ours: the same levels as VE sigmas, inf first
    ours = schedule.apply(ERSDEScheduler.from_config(CONFIGS[name]))
    assert math.isinf(ours.sigmas[0])
    np.testing.assert_allclose(ours.sigmas[1:], flow_sigma(torch.tensor(shifted[1:])), rtol=1e-6)
    # DPM-style flow schedulers without sigmas= in a pipeline get the tables set by step index
    unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    if name == "sd3":
        schedule.apply(unipc)
        np.testing.assert_allclose(unipc.sigmas.numpy(), shifted, atol=1e-6)


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_searched_schedule_halves_the_ode_error_of_the_default_one(name):
    """Measured on the exact denoiser (mixture, 8x8): the multistep geometric Heun on its GITS schedule
    (jump="heun", coeff=0.9) against the same sampler on the pipeline's spacing, both against a 200-step
    run from the same noise (about 0.3x at NFE 5 with 128 warm-up samples; the test asks for 0.6x)."""
    model, config, schedule = search(name, 5, jump="heun", coeff=0.9, num_warmup=64, batch_size=64)
    noise = torch.randn(128, 1, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    reference = GeometricHeunScheduler.from_config(config, multistep=True)
    set_timesteps(reference, 200)
    target = sample(reference, model, noise, None)[0]

    def error(apply) -> float:
        scheduler = GeometricHeunScheduler.from_config(config, multistep=True)
        apply(scheduler)
        return (sample(scheduler, model, noise, None)[0] - target).pow(2).mean().sqrt().item()

    default = error(lambda s: set_timesteps(s, 5))
    searched = error(schedule.apply)
    assert searched < 0.6 * default, (searched, default)


def test_bad_searches_are_refused_before_any_model_call():
    config = load_config("flux")

    def no_calls(*args, **kwargs):
        raise AssertionError("the model was called")

    calls = {"scheduler_config": config, **SEARCH}
    with pytest.raises(ValueError, match="mu="):
        gits_schedule(no_calls, 5, sample_shape=(1, 8, 8), **calls)
    for option, match in (
        ({"grid": "karras"}, "grid='timesteps'"),
        ({"metric": "dev"}, "metric='l2'"),
        ({"analytic_first_step": True}, "analytic_first_step"),
    ):
        with pytest.raises(ValueError, match=match):
            gits_schedule(no_calls, 5, sample_shape=(1, 8, 8), mu=1.0, **{**calls, **option})
    stretched = {**SD3_CONFIG, "shift_terminal": 0.1, "prediction_type": "flow_prediction"}
    with pytest.raises(ValueError, match="shift_terminal"):
        gits_schedule(no_calls, 5, sample_shape=(1, 8, 8), **{**calls, "scheduler_config": stretched})
    vp = make_problem("mixture", load_config("sd"), size=8)
    with pytest.raises(ValueError, match="variance-preserving"):
        gits_schedule(vp, 5, mu=1.0, **SEARCH)
    _, _, schedule = search("sd3", 3)
    with pytest.raises(ValueError, match="flow-matching model"):
        schedule.apply(DDIMScheduler())


@pytest.mark.parametrize("make", [tiny_sd3_pipeline, tiny_flux_pipeline], ids=["sd3", "flux"])
def test_search_on_a_flow_pipeline_runs_in_the_pipeline(make):
    """The pipeline runs the teacher itself: the schedule (and Flux's mu for this resolution) is the one the
    pipeline sets, the warm-up costs exactly teacher_steps x num_warmup transformer calls, and the result
    runs through the pipeline with ours and with FlowMatchEuler."""
    pipe = make()
    call = {"prompt": "a cat", "max_sequence_length": 16, "height": 16, "width": 16}
    counted = []
    handle = pipe.transformer.register_forward_hook(lambda *a: counted.append(1))  # completed calls
    schedule = gits_schedule(
        pipe, 3, num_warmup=4, batch_size=2, teacher_steps=8, seed=0, progress=False, **call
    )
    handle.remove()
    # 8 teacher steps for each of 2 batches (of 2 warm-up samples each); the probe of the schedule calls none
    assert len(counted) == 8 * 2 and schedule.model_calls == 8 * 4
    assert schedule.flow_matching and len(schedule.sigmas) == 3
    config = pipe.scheduler.config
    if config.get("use_dynamic_shifting"):
        tokens = (16 // pipe.vae_scale_factor // 2) ** 2  # 16 x 16 images, 2 x 2 latent packing
        assert schedule.mu == pytest.approx(flux_mu(config, image_seq_len=tokens))
    shifted = [schedule.teacher_sigmas[i] for i in schedule.grid_indices]
    for scheduler in (
        ERSDEScheduler.from_config(config),
        FlowMatchEulerDiscreteScheduler.from_config(config),
    ):
        pipe.scheduler = scheduler
        generator = torch.Generator().manual_seed(0)
        image = pipe(**call, sigmas=schedule.sigmas, generator=generator, output_type="np").images
        assert np.isfinite(image).all()
        levels = scheduler.sigmas if isinstance(scheduler, FlowMatchEulerDiscreteScheduler) else None
        if levels is not None:
            np.testing.assert_allclose(levels.numpy(), shifted, atol=1e-6)


def test_bench_runs_gits_schedules_on_flow_configs(tmp_path):
    from diffusers_geo.cli import main

    name = "flow-euler+gits/num_warmup=16/teacher_steps=12"
    options = f"--config flux --schedulers {name},flow-euler --nfe 4 --seeds 1 --samples 16 --size 4"
    main(["bench", *options.split(), "--no-progress", "--out", str(tmp_path)])
    summary = {s["sampler"]: s for s in json.loads((tmp_path / "results.json").read_text())["summary"]}
    assert summary[name]["nfe"] == 4 and math.isfinite(summary[name]["metrics"]["rmse"][0])
