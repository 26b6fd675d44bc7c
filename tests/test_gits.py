"""GITS time schedules (Chen et al., ICML 2024, arXiv 2405.11326): the dynamic program against brute force,
the Euler-jump costs on trajectories known in closed form, the search on the exact denoiser, and the
schedule in other schedulers and in pipelines."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from diffusers_geo import (
    GeometricHeunScheduler,
    GITSSchedule,
    OptimalDenoiser,
    SigmaDDIMScheduler,
    gits_schedule,
    solve_probability_flow_ode,
)
from diffusers_geo.solvers.euler import euler_step
from diffusers_geo.solvers.gits import afs_noise_scale, gits_dynamic_program, jump_costs
from diffusers_geo.testing import SD_BETAS as SD
from diffusers_geo.testing import tiny_ddpm_pipeline, tiny_sd_pipeline

MEAN = 0.3 * torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
VARIANCES = torch.logspace(-3, 0, 16, dtype=torch.float64).reshape(1, 1, 4, 4)


def gaussian_model() -> OptimalDenoiser:
    """Gaussian data with per-pixel variances from 1e-3 to 1: the denoiser shrinks each pixel at its own
    noise level, so the trajectories bend (most near sigma ~ 1e-1..1), and they are known in closed form
    (:func:`exact_trajectory`)."""
    return OptimalDenoiser.from_gaussian_mixture(MEAN, VARIANCES, **SD).double()


def exact_trajectory(y: torch.Tensor, sigma: float, sigma_end: float) -> torch.Tensor:
    """PF-ODE solution for Gaussian data: ``y(s) - mu = (y(sigma) - mu) * sqrt((v + s^2) / (v + sigma^2))``."""
    return MEAN + (y - MEAN) * ((VARIANCES + sigma_end**2) / (VARIANCES + sigma**2)).sqrt()


# ------------------------------------------------------------------------------------------------
# the math
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("coeff", [0.8, 1.0, 1.2])
@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_dynamic_program_finds_the_brute_force_optimum(coeff, steps):
    m = 7
    costs = np.full((m + 1, m + 1), np.inf)
    rng = np.random.default_rng(steps)
    for i in range(m):
        costs[i, i + 1 :] = rng.uniform(0.1, 2.0, m - i) * (np.arange(i + 1, m + 1) - i) ** 0.5

    def weighted(path):
        return sum(coeff**k * costs[a, b] for k, (a, b) in enumerate(itertools.pairwise(path)))

    paths = [(0, *inner, m) for inner in itertools.combinations(range(1, m), steps - 1)]
    best = min(paths, key=weighted)
    path, value = gits_dynamic_program(costs, steps, coeff)
    assert tuple(path) == best and value == pytest.approx(weighted(best))
    # AFS: the first step is free of model calls; the K model steps start where it lands
    afs_paths = [(0, *inner, m) for inner in itertools.combinations(range(1, m), steps)]
    best = min(afs_paths, key=weighted)
    path, value = gits_dynamic_program(costs, steps, coeff, analytic_first_step=steps < m)
    assert tuple(path) == best and value == pytest.approx(weighted(best))


def test_euler_jumps_cost_nothing_on_straight_trajectories():
    """Point-mass data: D = x0 everywhere, the trajectories y(sigma) = x0 + sigma * n are straight and every
    Euler jump lands on them exactly (paper A, Prop. 1), whatever its length."""
    x0, n = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    sigmas = torch.tensor([10.0, 4.0, 2.0, 0.5, 0.1, 0.0], dtype=torch.float64)
    states = x0 + sigmas[:, None, None] * n
    denoised = x0.expand(len(sigmas) - 1, 3, 5)
    for metric, jump in itertools.product(("l2", "dev"), ("euler", "heun")):
        costs = jump_costs(states, denoised, sigmas, metric, jump=jump)
        finite = costs[torch.isfinite(costs)]
        assert len(finite) == 15 and finite.abs().max() < 1e-12
    # a wrong denoiser costs its error: a jump from i to j = M (sigma 0) returns D_i
    costs = jump_costs(states, denoised + 0.5, sigmas, "l2")
    assert costs[0, -1].item() == pytest.approx(3 * 0.5)


def test_heun_jumps_are_trapezoidal_and_beat_euler_on_curved_trajectories():
    """Gaussian data N(0, c^2 I): y(sigma) = y_0 sqrt(c^2 + sigma^2) / sqrt(c^2 + sigma_0^2) and
    D = c^2 / (c^2 + sigma^2) y exactly. The "heun" jump is the Euler step with (D_i + D_j) / 2; it is more
    accurate than the Euler jump wherever the teacher has D_j, and the same Euler jump into sigma = 0."""
    c = 0.5
    sigmas = torch.tensor([8.0, 3.0, 1.2, 0.5, 0.2, 0.0], dtype=torch.float64)
    y0 = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    states = y0 * ((c**2 + sigmas**2).sqrt() / math.sqrt(c**2 + 64.0))[:, None, None]
    denoised = (c**2 / (c**2 + sigmas[:-1] ** 2))[:, None, None] * states[:-1]
    euler, heun = jump_costs(states, denoised, sigmas), jump_costs(states, denoised, sigmas, jump="heun")
    m = len(sigmas) - 1
    for i in range(m):
        for j in range(i + 1, m):
            jumped = euler_step(
                states[i], 0.5 * (denoised[i] + denoised[j]), float(sigmas[i]), float(sigmas[j])
            )
            direct = ((jumped - states[j]).norm(dim=-1) / math.sqrt(6)).sum()
            assert heun[i, j].item() == pytest.approx(direct.item(), rel=1e-12)
            assert heun[i, j] < euler[i, j]
        assert heun[i, m] == euler[i, m]
    with pytest.raises(ValueError, match="Unknown jump"):
        jump_costs(states, denoised, sigmas, jump="rk4")


def test_afs_noise_scale_is_the_analytic_step():
    sigma_max, sigma = 14.6, 5.0
    eps = torch.randn(1000, dtype=torch.float64)
    y = eps * math.sqrt(1 + sigma_max**2)  # VP noise at sigma_max, in sigma coordinates
    y_next = y + (sigma - sigma_max) * y / math.sqrt(1 + sigma_max**2)  # analytic direction
    torch.testing.assert_close(y_next / math.sqrt(1 + sigma**2), afs_noise_scale(sigma_max, sigma) * eps)


# ------------------------------------------------------------------------------------------------
# the search on a model whose trajectories are known exactly
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def searched():
    model = gaussian_model()
    schedule = gits_schedule(
        model, 4, num_warmup=32, teacher_steps=40, generator=torch.Generator().manual_seed(0), progress=False
    )
    return model, schedule


def _rmse(sampler, sigmas, model, x, exact) -> float:
    """Run ``sampler`` on ``sigmas`` from the VP noise ``x``; RMSE to the exact solution."""
    sampler.set_timesteps(sigmas=sigmas)
    for t in sampler.timesteps:
        x = sampler.step(model(x, t).sample, t, x).prev_sample
    return float((x - exact).pow(2).mean().sqrt())


def test_gits_takes_a_larger_first_step_and_beats_the_uniform_grid(searched):
    model, schedule = searched
    assert len(schedule.sigmas) == 5 and schedule.sigmas[-1] == 0 and len(schedule.timesteps) == 4
    assert (
        schedule.model_calls == 32 * 40 and schedule.grid_indices[0] == 0 and schedule.grid_indices[-1] == 40
    )
    uniform = SigmaDDIMScheduler(**SD)  # "linspace": uniform in training timestep, like the teacher grid
    uniform.set_timesteps(4)
    assert schedule.sigmas[0] == pytest.approx(float(uniform.sigmas[0]))
    assert schedule.sigmas[1] < float(uniform.sigmas[1])  # a larger first step

    # fresh noise (not the warm-up noise): the Euler sampler on both schedules vs the exact PF-ODE solution
    x = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    sigma_max = float(uniform.sigmas[0])
    exact = exact_trajectory(x * math.sqrt(1 + sigma_max**2), sigma_max, 0.0)
    # the closed form is the trajectory the teacher follows
    numeric = solve_probability_flow_ode(model.denoise, x[:4] * math.sqrt(1 + sigma_max**2), sigma_max).sample
    torch.testing.assert_close(numeric, exact[:4], rtol=0, atol=1e-5)
    errors = {
        name: _rmse(SigmaDDIMScheduler(**SD), sigmas, model, x, exact)
        for name, sigmas in (("gits", schedule.sigmas), ("uniform", uniform.sigmas))
    }
    assert errors["gits"] < 0.8 * errors["uniform"], errors


def test_heun_jump_schedule_for_the_multistep_geometric_heun():
    """``jump="heun"`` weighs the error of a second-order step; the one-call GeometricHeun on that schedule
    beats it on the uniform grid with the same number of calls (fresh noise, exact solution)."""
    model = gaussian_model()
    schedule = gits_schedule(
        model, 4, num_warmup=32, teacher_steps=40, jump="heun", coeff=0.9, seed=0, progress=False
    )
    assert schedule.jump == "heun" and GITSSchedule.from_dict(schedule.to_dict()).jump == "heun"
    x = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    uniform = GeometricHeunScheduler(**SD, multistep=True)
    uniform.set_timesteps(4)
    sigma_max = float(uniform.sigmas[0])
    exact = exact_trajectory(x * math.sqrt(1 + sigma_max**2), sigma_max, 0.0)
    errors = {
        name: _rmse(GeometricHeunScheduler(**SD, multistep=True), sigmas, model, x, exact)
        for name, sigmas in (("gits", schedule.sigmas), ("uniform", uniform.sigmas))
    }
    assert errors["gits"] < 0.8 * errors["uniform"], errors


def test_plain_callable_gives_the_same_schedule(searched):
    model, schedule = searched

    def plain(x, t):  # a function returning a tensor, with the schedule passed explicitly
        return model(x, t).sample

    again = gits_schedule(
        plain,
        4,
        scheduler_config=dict(model.config),
        sample_shape=(1, 4, 4),
        num_warmup=32,
        teacher_steps=40,
        batch_size=13,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert again.grid_indices == schedule.grid_indices
    assert again.cost == pytest.approx(schedule.cost, rel=1e-5)


def test_save_load_and_apply_to_other_schedulers(searched, tmp_path):
    _, schedule = searched
    path = schedule.save(tmp_path / "gits.json")
    loaded = GITSSchedule.load(path)
    assert loaded == schedule
    n = schedule.num_inference_steps
    assert all(float(t).is_integer() for t in schedule.timesteps)  # grid="timesteps": integer timesteps

    euler = schedule.apply(EulerDiscreteScheduler(**SD))  # sigmas=
    torch.testing.assert_close(
        euler.sigmas.double(), torch.tensor(schedule.sigmas, dtype=torch.float64), rtol=1e-5, atol=0
    )
    dpm = schedule.apply(DPMSolverMultistepScheduler(**SD))  # timesteps=
    assert dpm.timesteps.tolist() == [int(t) for t in schedule.timesteps]
    torch.testing.assert_close(
        dpm.sigmas.double(), torch.tensor(schedule.sigmas, dtype=torch.float64), rtol=1e-5, atol=0
    )
    unipc = schedule.apply(UniPCMultistepScheduler(**SD))  # neither: the per-step tables are replaced
    assert len(unipc.timesteps) == n and unipc.timesteps.tolist() == [int(t) for t in schedule.timesteps]
    torch.testing.assert_close(
        unipc.sigmas.double(), torch.tensor(schedule.sigmas, dtype=torch.float64), rtol=1e-5, atol=0
    )
    ours = schedule.apply(SigmaDDIMScheduler(**SD))
    torch.testing.assert_close(ours.sigmas, torch.tensor(schedule.sigmas, dtype=torch.float64))
    with pytest.raises(TypeError, match="no custom schedule"):
        schedule.apply(DDIMScheduler(**SD))
    bad = tmp_path / "bad.json"
    bad.write_text('{"sigmas": [1, 0]}')
    with pytest.raises(ValueError, match="not a GITS schedule"):
        GITSSchedule.load(bad)


def test_analytic_first_step_starts_lower_with_almost_unit_noise():
    model = gaussian_model()
    schedule = gits_schedule(
        model,
        3,
        num_warmup=16,
        teacher_steps=30,
        analytic_first_step=True,
        progress=False,
        generator=torch.Generator().manual_seed(0),
    )
    assert schedule.analytic_first_step and len(schedule.sigmas) == 4
    assert schedule.grid_indices[0] > 0 and schedule.sigmas[0] < schedule.teacher_sigmas[0]
    assert schedule.initial_noise_scale == pytest.approx(1.0, abs=0.02)


# ------------------------------------------------------------------------------------------------
# pipelines
# ------------------------------------------------------------------------------------------------
def test_gits_on_a_text_to_image_pipeline_with_the_users_prompt():
    pipe = tiny_sd_pipeline("txt2img", prediction_type="epsilon", seed=0)
    original = pipe.scheduler
    schedule = gits_schedule(
        pipe,
        3,
        prompt="a photo of a cat",
        guidance_scale=5.0,
        num_warmup=4,
        batch_size=2,
        teacher_steps=8,
        progress=False,
        generator=torch.Generator().manual_seed(0),
    )
    assert pipe.scheduler is original  # restored
    assert schedule.model_calls == 4 * 8 and len(schedule.sigmas) == 4
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    latents = pipe(
        "a photo of a cat",
        sigmas=schedule.sigmas,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    ).images
    assert latents.shape == (1, 4, 8, 8) and torch.isfinite(latents).all()


def test_gits_on_ddpm_pipeline_uses_its_unet():
    pipe = tiny_ddpm_pipeline(seed=0)
    schedule = gits_schedule(pipe, 2, num_warmup=2, teacher_steps=6, progress=False)
    assert len(schedule.sigmas) == 3 and schedule.model_calls == 12
    with pytest.raises(TypeError, match="cannot pass"):
        gits_schedule(pipe, 2, prompt="x", num_warmup=2, teacher_steps=6, progress=False)


def test_benchmark_names_with_a_gits_schedule():
    from diffusers_geo.registry import is_known, is_stochastic, make_scheduler, split_gits

    assert split_gits("unipc+gits/coeff=1.0/metric=dev") == ("unipc", {"coeff": 1.0, "metric": "dev"})
    assert split_gits("geometric-heun:multistep=True+gits") == ("geometric-heun:multistep=True", {})
    assert split_gits("dpmpp-2m") == ("dpmpp-2m", None)
    assert is_known("geometric-heun:multistep=True+gits/coeff=1.0") and not is_known("nope+gits")
    scheduler = make_scheduler("geometric-heun:multistep=True+gits", dict(SD))
    assert scheduler.config.multistep and not is_stochastic(scheduler)
    with pytest.raises(ValueError, match=r"\+gits/key=value"):
        split_gits("unipc+gits/coeff")


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_inference_steps=11, teacher_steps=10), ValueError, "more|cannot pick"),
        (dict(num_inference_steps=10, teacher_steps=10, analytic_first_step=True), ValueError, "cannot pick"),
        (dict(num_inference_steps=0), ValueError, "cannot pick"),
        (dict(num_inference_steps=2.0), TypeError, "int"),
        (dict(metric="l1"), ValueError, "metric"),
        (dict(jump="rk4"), ValueError, "jump"),
        (dict(grid="uniform"), ValueError, "grid"),
        (dict(coeff=0), ValueError, "coeff"),
        (dict(num_warmup=0), ValueError, "num_warmup"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    kwargs = {"num_inference_steps": 3, **kwargs}
    with pytest.raises(error, match=match):
        gits_schedule(gaussian_model(), progress=False, **kwargs)


def test_a_plain_callable_needs_its_schedule():
    with pytest.raises(TypeError, match="scheduler_config"):
        gits_schedule(lambda x, t: x, 3, sample_shape=(1, 2, 2), progress=False)
    with pytest.raises(TypeError, match="sample_shape"):
        gits_schedule(lambda x, t: x, 3, scheduler_config=SD, progress=False)
