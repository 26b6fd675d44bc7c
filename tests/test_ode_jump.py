"""ODE-Jump (``jump_sigma`` / ``jump_step``), a shared option of every diffusers-geo scheduler: the run ends by
returning the denoiser output at the jump noise level (Chen et al., arXiv 2305.19947, Prop. 1)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from diffusers_geo import SCHEDULERS, GeometricHeunScheduler, OdeJump, OptimalDenoiser, SigmaDDIMScheduler
from diffusers_geo.testing import SD_BETAS as SD
from diffusers_geo.testing import tiny_ddpm_pipeline


def mixture_model() -> OptimalDenoiser:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(4, 2, 4, 4, generator=g, dtype=torch.float64) * 0.6
    return OptimalDenoiser.from_gaussian_mixture(means, 0.05, **SD).double()


def run(scheduler, model, x):
    """Pipeline-style loop; returns the final sample and the VP sample at the last model call."""
    generator = torch.Generator().manual_seed(5)
    last_input = None
    for t in scheduler.timesteps:
        last_input = scheduler.scale_model_input(x, t)
        x = scheduler.step(model(last_input, t).sample, t, x, generator=generator).prev_sample
    return x, last_input


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_jump_returns_the_denoiser_output_at_the_jump_sigma(name):
    """For every registered scheduler: the run stops at the first level <= jump_sigma, and its output is
    the exact denoiser D(y, sigma) at that level, computed independently from the last model input. (The
    multistep geometric Heun's corrector moves that output to its corrected point, as its own final step
    does: tested in test_geometric_heun; here without the corrector.)"""
    model = mixture_model()
    options = {"corrector": False} if SCHEDULERS[name] is GeometricHeunScheduler else {}
    full = SCHEDULERS[name](**SD, **options)
    full.set_timesteps(10)
    scheduler = SCHEDULERS[name](**SD, **options, jump_sigma=1.0)
    scheduler.set_timesteps(10)
    jump = scheduler.ode_jump
    assert isinstance(jump, OdeJump)
    levels = full.sigmas[:-1]  # the noise levels of the full run's model calls
    assert jump.sigma == pytest.approx(float(levels[levels <= 1.0].max()))  # the first level <= jump_sigma
    assert float(scheduler.sigmas[-1]) == 0 and len(scheduler.timesteps) == jump.nfe
    assert jump.nfe_saved == len(full.timesteps) - len(scheduler.timesteps) > 0

    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, last_input = run(scheduler, model, x)
    sigma = jump.sigma
    assert float(scheduler.sigmas[-2]) == pytest.approx(sigma)
    expected = model.denoise(last_input * math.sqrt(1 + sigma**2), sigma)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert scheduler.step_index == len(scheduler.timesteps)


def test_jump_step_names_the_same_jump_and_counts_heun_calls():
    model = mixture_model()
    by_sigma = GeometricHeunScheduler(multistep=False, **SD, use_karras_sigmas=True, jump_sigma=0.5)
    by_sigma.set_timesteps(8)
    by_step = GeometricHeunScheduler(
        multistep=False, **SD, use_karras_sigmas=True, jump_step=by_sigma.ode_jump.step
    )
    by_step.set_timesteps(8)
    assert by_step.ode_jump == by_sigma.ode_jump
    assert torch.equal(by_step.sigmas, by_sigma.sigmas)
    k = by_step.ode_jump.step
    # Heun: two calls per full step and one for the final (jump) step
    assert by_step.ode_jump.nfe == 2 * k + 1 and by_step.ode_jump.nfe_saved == 2 * (8 - 1 - k)
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    assert torch.equal(run(by_sigma, model, x)[0], run(by_step, model, x)[0])


def test_jump_equals_the_truncated_run_followed_by_an_euler_step_to_zero():
    """A jump at step k is exactly the first k steps of the full run plus one Euler step to sigma = 0."""
    model = mixture_model()
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    full = SigmaDDIMScheduler(**SD, timestep_spacing="trailing")
    full.set_timesteps(10)
    k = 6
    truncated = SigmaDDIMScheduler(**SD, timestep_spacing="trailing")
    truncated.set_timesteps(sigmas=torch.cat([full.sigmas[: k + 1], torch.zeros(1, dtype=torch.float64)]))
    jumped = SigmaDDIMScheduler(**SD, timestep_spacing="trailing", jump_step=k)
    jumped.set_timesteps(10)
    assert torch.equal(jumped.timesteps, truncated.timesteps)
    torch.testing.assert_close(run(jumped, model, x)[0], run(truncated, model, x)[0], rtol=0, atol=1e-12)


def test_no_jump_by_default_and_jump_at_the_last_level_saves_nothing():
    s = SigmaDDIMScheduler(**SD)
    s.set_timesteps(5)
    assert s.ode_jump is None
    last = SigmaDDIMScheduler(**SD, jump_sigma=float(s.sigmas[-2]))
    last.set_timesteps(5)
    assert last.ode_jump.nfe_saved == 0 and torch.equal(last.sigmas, s.sigmas)
    # with final_sigmas_type="sigma_min" the jump replaces the terminal level by 0
    tail = SigmaDDIMScheduler(**SD, final_sigmas_type="sigma_min", jump_step=4)
    tail.set_timesteps(5)
    assert float(tail.sigmas[-1]) == 0 and len(tail.timesteps) == 5


def test_jump_in_a_pipeline_saves_unet_calls(tmp_path):
    pipe = tiny_ddpm_pipeline(seed=0)
    pipe.scheduler = GeometricHeunScheduler.from_config(pipe.scheduler.config, multistep=False, jump_step=2)
    calls = []
    forward = pipe.unet.forward

    def counting(sample, timestep, *args, **kwargs):
        calls.append(float(torch.as_tensor(timestep).reshape(-1)[0]))
        return forward(sample, timestep, *args, **kwargs)

    pipe.unet.forward = counting
    image = pipe(num_inference_steps=6, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert image.shape == (1, 8, 8, 3) and torch.isfinite(torch.as_tensor(image)).all()
    assert len(calls) == 5 and pipe.scheduler.ode_jump.nfe_saved == 6  # 2 full Heun steps + the jump call

    pipe.scheduler.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "scheduler_config.json").read_text())["jump_step"] == 2
    assert GeometricHeunScheduler.from_pretrained(tmp_path).config.jump_step == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(jump_sigma=100.0), "outside the schedule"),  # above sigma_max = 14.6
        (dict(jump_sigma=0.001), "outside the schedule"),  # below the last level called
        (dict(jump_step=10), "outside the schedule"),
    ],
)
def test_jump_outside_the_schedule_is_an_error(kwargs, match):
    s = SigmaDDIMScheduler(**SD, **kwargs)
    with pytest.raises(ValueError, match=match):
        s.set_timesteps(10)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(jump_sigma=1.0, jump_step=3), ValueError, "not both"),
        (dict(jump_sigma=-1.0), ValueError, "> 0"),
        (dict(jump_sigma=float("nan")), ValueError, "> 0"),
        (dict(jump_sigma="1.0"), TypeError, "number"),
        (dict(jump_step=-1), ValueError, ">= 0"),
        (dict(jump_step=2.5), TypeError, "int"),
    ],
)
def test_bad_jump_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        SigmaDDIMScheduler(**kwargs)
