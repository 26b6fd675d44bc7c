"""GeometricHeunScheduler: Heun in denoiser form, AMED's intermediate point and the one-call multistep variant,
checked against diffusers' Heun, closed forms and measured convergence orders on the exact denoiser."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, HeunDiscreteScheduler

from diffusers_geo import (
    GeometricHeunScheduler,
    OptimalDenoiser,
    SigmaDDIMScheduler,
    solve_probability_flow_ode,
)
from diffusers_geo.solvers import euler_step, heun_step, intermediate_sigma, multistep_step
from diffusers_geo.solvers.geometric import (
    heun_corrector,
    multistep_weight,
    transfer_correction,
)
from diffusers_geo.testing import SD_BETAS as SD
from diffusers_geo.testing import tiny_ddpm_pipeline, tiny_image, tiny_sd_pipeline


def image_set_model(prediction_type: str = "epsilon") -> OptimalDenoiser:
    torch.manual_seed(0)
    images = torch.randn(6, 2, 4, 4) * 0.5 + 0.1
    return OptimalDenoiser.from_images(images, prediction_type=prediction_type, **SD).double()


def mixture_model() -> OptimalDenoiser:
    """A 3-component Gaussian mixture in 8 dimensions: a smooth denoiser with curved trajectories."""
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 2, 2, 2, generator=g, dtype=torch.float64)
    return OptimalDenoiser.from_gaussian_mixture(means, torch.tensor([0.05, 0.2, 0.5]), **SD).double()


def run_vp(scheduler, model, x: torch.Tensor) -> torch.Tensor:
    """Pipeline-style loop (VP sample in, VP sample out)."""
    for t in scheduler.timesteps:
        x = scheduler.step(model(scheduler.scale_model_input(x, t), t).sample, t, x).prev_sample
    return x


# ------------------------------------------------------------------------------------------------
# closed forms
# ------------------------------------------------------------------------------------------------
def test_euler_step_is_a_convex_combination_and_jumps_to_the_denoiser():
    g = torch.Generator().manual_seed(1)
    y, d = (
        torch.randn(4, 5, generator=g, dtype=torch.float64),
        torch.randn(4, 5, generator=g, dtype=torch.float64),
    )
    sigma, sigma_next = 3.0, 1.2
    ratio = sigma_next / sigma
    step = euler_step(y, d, sigma, sigma_next)
    torch.testing.assert_close(step, ratio * y + (1 - ratio) * d, rtol=0, atol=1e-14)
    torch.testing.assert_close(step, y + (sigma_next - sigma) * (y - d) / sigma, rtol=0, atol=1e-14)
    # the new point lies on the segment [D, y]: same direction, distance shrunk by the ratio
    torch.testing.assert_close((step - d).norm(dim=1), ratio * (y - d).norm(dim=1), rtol=1e-12, atol=0)
    assert torch.equal(euler_step(y, d, sigma, 0.0), d)  # ODE-Jump: the step to 0 returns D


@pytest.mark.parametrize("r", [1.0, 0.5, 0.3])
def test_heun_step_in_denoiser_form_equals_the_direction_form(r):
    """Two-stage step = ``y + h * ((1/(2r)) d(y_s, s) + (1 - 1/(2r)) d(y, sigma))`` (AMED Table 1; Heun at r=1)."""
    g = torch.Generator().manual_seed(2)
    y, d0, ds = (torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(3))
    sigma, sigma_next = 2.5, 0.9
    s = intermediate_sigma(sigma, sigma_next, r)
    assert s == pytest.approx(sigma ** (1 - r) * sigma_next**r)
    y_s = euler_step(y, d0, sigma, s)
    direction = (1 / (2 * r)) * (y_s - ds) / s + (1 - 1 / (2 * r)) * (y - d0) / sigma
    expected = y + (sigma_next - sigma) * direction
    torch.testing.assert_close(heun_step(y, d0, ds, sigma, sigma_next, s, r), expected, rtol=0, atol=1e-12)


def test_multistep_step_is_euler_with_the_denoiser_extrapolated_to_the_geometric_midpoint():
    """A denoising trajectory linear in log sigma, D = a + b * log(sigma): the backward difference through
    (sigma_prev, sigma) extrapolates it exactly, and the step uses its value at sqrt(sigma * sigma_next)."""
    a, b, y = (torch.tensor(v, dtype=torch.float64) for v in ([0.3, -1.0], [0.7, 0.2], [1.5, -0.4]))
    sigma_prev, sigma, sigma_next = 4.0, 2.0, 0.7
    d_prev, d = a + b * math.log(sigma_prev), a + b * math.log(sigma)
    d_mid = a + b * math.log(math.sqrt(sigma * sigma_next))  # the trajectory's value at the midpoint
    step = multistep_step(y, d, d_prev, sigma_prev, sigma, sigma_next)
    torch.testing.assert_close(step, euler_step(y, d_mid, sigma, sigma_next), rtol=0, atol=1e-14)


def test_multistep_weight_is_small_on_smooth_grids_and_large_after_a_short_step():
    for q in (0.2, 0.5, 0.8):  # constant ratio: (1 - q) / 2
        assert multistep_weight(10.0 / q, 10.0, 10.0 * q) == pytest.approx((1 - q) / 2, rel=1e-12)
    assert multistep_weight(10.0, 9.99, 1.0) > 100
    assert multistep_weight(4.0, 2.0, 0.0) == math.inf  # the step to sigma = 0 is never extrapolated


def test_heun_corrector_is_the_trapezoidal_mean_and_second_order():
    """The corrector is the Euler step with the mean of the two end-point denoiser outputs. Along an exact
    trajectory whose denoiser is linear in log sigma (D = a + b log sigma: y(s) = s * (C + int D / s^2)), its
    one-step error shrinks like h^3 (local error of a second-order method)."""
    a, b, c = 0.3, 0.7, 1.5

    def exact(s):  # y(s) = s * (c + int_s^inf (a + b log t) / t^2 dt) = c s + a + b (log s + 1)
        return c * s + a + b * (math.log(s) + 1)

    def denoiser(s):
        return a + b * math.log(s)

    errors = []
    for h in (0.4, 0.2, 0.1):
        sigma_prev, sigma = 2.0, 2.0 * math.exp(-h)
        t = torch.tensor([exact(sigma_prev)], dtype=torch.float64)
        dp, dn = (torch.tensor([denoiser(v)], dtype=torch.float64) for v in (sigma_prev, sigma))
        corrected = heun_corrector(t, dp, dn, sigma_prev, sigma)
        mean_step = euler_step(t, 0.5 * (dp + dn), sigma_prev, sigma)
        torch.testing.assert_close(corrected, mean_step, rtol=0, atol=1e-15)
        errors.append(abs(float(corrected) - exact(sigma)))
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(r == pytest.approx(3.0, abs=0.3) for r in rates), (errors, rates)


def test_transfer_correction_is_exact_for_gaussian_data():
    """For data N(mu, sigma_data^2 I) the optimal denoiser is affine in y with Jacobian
    sigma_data^2 / (sigma_data^2 + sigma^2): moving its output to y + delta is exact."""
    sigma_data, mu = 0.5, torch.full((1, 2, 2, 2), 0.3, dtype=torch.float64)
    model = OptimalDenoiser.from_gaussian_mixture(mu, torch.tensor([sigma_data**2]), **SD).double()
    g = torch.Generator().manual_seed(5)
    y, delta = (torch.randn(3, 2, 2, 2, generator=g, dtype=torch.float64) for _ in range(2))
    for sigma in (0.05, 0.7, 12.0):
        moved = transfer_correction(model.denoise(y, sigma), delta, sigma, sigma_data)
        torch.testing.assert_close(moved, model.denoise(y + delta, sigma), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# diffusers layout and equivalence with HeunDiscreteScheduler
# ------------------------------------------------------------------------------------------------
def test_order_two_layout_and_multistep_layout():
    heun = GeometricHeunScheduler(multistep=False, **SD, use_karras_sigmas=True)
    heun.set_timesteps(5)
    assert heun.order == 2 and len(heun.timesteps) == 2 * 5 - 1 and heun.num_inference_steps == 5
    ref = HeunDiscreteScheduler(**SD, use_karras_sigmas=True)
    ref.set_timesteps(5)
    torch.testing.assert_close(heun.sigmas, ref.sigmas.double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(heun.timesteps, ref.timesteps, rtol=0, atol=2e-3)

    mid = GeometricHeunScheduler(multistep=False, **SD, intermediate_point=0.5)
    mid.set_timesteps(4)
    base = SigmaDDIMScheduler(**SD)
    base.set_timesteps(4)
    s = base.sigmas
    expected = [
        s[0],
        (s[0] * s[1]).sqrt(),
        s[1],
        (s[1] * s[2]).sqrt(),
        s[2],
        (s[2] * s[3]).sqrt(),
        s[3],
        s[4],
    ]
    torch.testing.assert_close(mid.sigmas, torch.stack(expected), rtol=1e-12, atol=0)

    multi = GeometricHeunScheduler(**SD, multistep=True)
    multi.set_timesteps(6)
    assert multi.order == 1 and len(multi.timesteps) == 6
    base.set_timesteps(6)
    assert torch.equal(multi.sigmas, base.sigmas)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", [3, 8])
def test_heun_reproduces_diffusers_heun_with_karras_sigmas(prediction_type, steps):
    """Same sigmas, same start y = x0 + sigma * eps: diffusers' VE Heun and our VP Heun give the same result."""
    model = image_set_model(prediction_type)
    ref = HeunDiscreteScheduler(**SD, prediction_type=prediction_type, use_karras_sigmas=True)
    ours = GeometricHeunScheduler.from_config(ref.config, multistep=False)  # Heun mode, Heun's sigmas
    ref.set_timesteps(steps)
    ours.set_timesteps(steps)
    y0 = float(ours.sigmas[0]) * torch.randn(
        3, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    expected = run_vp(ref, model, y0)  # VE sample: x = y
    actual = run_vp(ours, model, y0 / math.sqrt(1 + float(ours.sigmas[0]) ** 2))  # VP sample
    assert (actual - expected).abs().max() < 2e-6 * expected.abs().max()


def _run_sigma_space(scheduler, model, y0: torch.Tensor) -> torch.Tensor:
    """Pipeline loop where the model sees the exact sigma of each step (diffusers' DPM-Solver rounds its Karras
    timesteps to integers but steps with the unrounded sigmas): epsilon from the exact denoiser at sigma."""
    sigmas = scheduler.sigmas
    x = y0 / math.sqrt(1 + float(sigmas[0]) ** 2)
    for i, t in enumerate(scheduler.timesteps):
        sigma = float(sigmas[i])
        y = x * math.sqrt(1 + sigma**2)
        eps = (y - model.denoise(y, sigma)) / sigma
        x = scheduler.step(eps, t, x).prev_sample
    return x


@pytest.mark.parametrize("steps", [4, 9])
def test_multistep_predictor_alone_is_dpm_solver_pp_2m(steps):
    """``corrector=False``: the predictor is DPM-Solver++(2M) (Lu et al. 2022, Alg. 2; midpoint form, first-
    order first and last step), on the same sigmas and the same model outputs."""
    model = mixture_model()
    ref = DPMSolverMultistepScheduler(**SD, use_karras_sigmas=True, solver_order=2, lower_order_final=True)
    ref.set_timesteps(steps)
    ours = GeometricHeunScheduler(**SD, multistep=True, corrector=False)
    ours.set_timesteps(sigmas=ref.sigmas.double())
    assert torch.equal(ours.sigmas, ref.sigmas.double())
    y0 = float(ref.sigmas[0]) * torch.randn(8, 2, 2, 2, generator=torch.Generator().manual_seed(6)).double()
    expected, actual = _run_sigma_space(ref, model, y0), _run_sigma_space(ours, model, y0)
    assert (actual - expected).abs().max() < 1e-5 * expected.abs().max()
    corrected = GeometricHeunScheduler(**SD, multistep=True)
    corrected.set_timesteps(sigmas=ref.sigmas.double())
    assert (_run_sigma_space(corrected, model, y0) - expected).abs().max() > 1e-3  # the corrector acts


def test_ode_jump_returns_the_corrected_output_of_the_multistep_run():
    """A jump at the schedule's last level saves no call and changes nothing: it returns the corrected denoiser
    output, as the final step does (not the raw model output at the predicted point)."""
    model = mixture_model()
    plain = GeometricHeunScheduler(**SD, multistep=True, use_karras_sigmas=True)
    plain.set_timesteps(8)
    jumped = GeometricHeunScheduler(
        **SD, multistep=True, use_karras_sigmas=True, jump_sigma=float(plain.sigmas[-2])
    )
    jumped.set_timesteps(8)
    assert jumped.ode_jump.nfe_saved == 0
    y0 = float(plain.sigmas[0]) * torch.randn(8, 2, 2, 2, generator=torch.Generator().manual_seed(8)).double()
    torch.testing.assert_close(
        _run_sigma_space(jumped, model, y0), _run_sigma_space(plain, model, y0), rtol=0, atol=1e-12
    )


def test_the_corrector_lowers_the_error_at_few_steps():
    """Same one call per step, 8 Karras steps: with Heun's corrector the error to the exact PF-ODE solution
    is lower than the predictor's alone."""
    model = mixture_model()
    rmse = {}
    for corrector in (False, True):
        s = GeometricHeunScheduler(**SD, multistep=True, corrector=corrector, use_karras_sigmas=True)
        s.set_timesteps(8)
        start = float(s.sigmas[0])
        y0 = start * torch.randn(32, 2, 2, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        reference = solve_probability_flow_ode(model.denoise, y0, start, 0.0, rtol=1e-9, atol=1e-9).sample
        rmse[corrector] = float((_run_sigma_space(s, model, y0) - reference).pow(2).mean().sqrt())
    assert rmse[True] < 0.8 * rmse[False], rmse


# ------------------------------------------------------------------------------------------------
# convergence orders, measured against the exact PF-ODE solution
# ------------------------------------------------------------------------------------------------
def _error(cls, kwargs, steps, model, y0, reference, sigma_hi=10.0, sigma_lo=0.05) -> float:
    sigmas = torch.exp(torch.linspace(math.log(sigma_hi), math.log(sigma_lo), steps + 1, dtype=torch.float64))
    scheduler = cls(**SD, **kwargs)
    scheduler.set_timesteps(sigmas=sigmas)
    x = run_vp(scheduler, model, y0 / math.sqrt(1 + sigma_hi**2))
    return float((x * math.sqrt(1 + sigma_lo**2) - reference).pow(2).mean().sqrt())


@pytest.mark.parametrize(
    "cls, kwargs, order",
    [
        (SigmaDDIMScheduler, {}, 1),
        (GeometricHeunScheduler, dict(multistep=False), 2),
        (GeometricHeunScheduler, dict(multistep=False, intermediate_point=0.5), 2),
        (GeometricHeunScheduler, dict(multistep=True), 2),
        (GeometricHeunScheduler, dict(multistep=True, corrector=False), 2),
    ],
    ids=["euler", "heun", "midpoint", "multistep", "multistep-predictor"],
)
def test_measured_convergence_order(cls, kwargs, order):
    """Global error vs step count on a geometric grid from sigma 10 to 0.05 (terminal > 0, so every step is
    a regular step): the slope of log(error) against log(steps) is -order."""
    model = mixture_model()
    y0 = 10.0 * torch.randn(16, 2, 2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    reference = solve_probability_flow_ode(model.denoise, y0, 10.0, 0.05, rtol=1e-11, atol=1e-11).sample
    steps = [16, 32, 64, 128]
    errors = [_error(cls, kwargs, n, model, y0, reference) for n in steps]
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert slope == pytest.approx(-order, abs=0.25), (errors, slope)


# ------------------------------------------------------------------------------------------------
# run state: img2img entry at a first stage, second-stage entry, multistep guard
# ------------------------------------------------------------------------------------------------
def test_a_run_entered_at_a_second_stage_finishes_that_step_by_euler():
    model = image_set_model()
    s = GeometricHeunScheduler(multistep=False, **SD)
    s.set_timesteps(4)
    s.set_begin_index(3)  # a second stage (at sigma_2, ending at sigma_2): no stored first stage
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    t = s.timesteps[3]
    out = model(x, t).sample
    step = s.step(out, t, x)
    sigma = float(s.sigmas[3])
    assert float(s.sigmas[4]) == sigma
    torch.testing.assert_close(step.prev_sample, x)  # Euler from sigma to sigma: unchanged
    assert s.step_index == 4


def test_multistep_guard_falls_back_to_euler_after_a_short_step():
    model = image_set_model()
    sigmas = [3.0, 2.99, 0.3, 0.0]  # weight of the backward difference at step 1: ~200
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64) / math.sqrt(
        10
    )
    results = {}
    for name, scheduler in {
        "guarded": GeometricHeunScheduler(**SD, multistep=True, corrector=False),
        "unguarded": GeometricHeunScheduler(**SD, multistep=True, corrector=False, max_multistep_weight=None),
        "euler": SigmaDDIMScheduler(**SD),
    }.items():
        scheduler.set_timesteps(sigmas=sigmas)
        xs = x
        for t in scheduler.timesteps[:2]:
            xs = scheduler.step(model(xs, t).sample, t, xs).prev_sample
        results[name] = xs
    torch.testing.assert_close(results["guarded"], results["euler"], rtol=0, atol=1e-12)
    assert (results["unguarded"] - results["euler"]).abs().max() > 1e-3


def test_set_timesteps_resets_the_stored_stage():
    model = image_set_model()
    for kwargs in (dict(), dict(multistep=True), dict(multistep=True, corrector=False)):
        s = GeometricHeunScheduler(**SD, **{"multistep": False, **kwargs})
        x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
        s.set_timesteps(5)
        first = run_vp(s, model, x)
        s.set_timesteps(5)
        assert torch.equal(first, run_vp(s, model, x))


def test_config_roundtrip(tmp_path):
    s = GeometricHeunScheduler(
        **SD,
        multistep=True,
        max_multistep_weight=0.5,
        use_karras_sigmas=True,
        corrector=False,
        sigma_data=1.0,
    )
    s.save_pretrained(tmp_path)
    back = GeometricHeunScheduler.from_pretrained(tmp_path)
    assert back.config.multistep and back.config.max_multistep_weight == 0.5 and back.order == 1
    assert back.config.corrector is False and back.config.sigma_data == 1.0
    r = GeometricHeunScheduler.from_config(
        HeunDiscreteScheduler(**SD).config, multistep=False, intermediate_point=0.5
    )
    assert r.config.intermediate_point == 0.5 and r.order == 2


# ------------------------------------------------------------------------------------------------
# the variants in pipelines (the default and the two-call Heun mode run in the shared pipeline matrix)
# ------------------------------------------------------------------------------------------------
VARIANTS = [dict(multistep=False, intermediate_point=0.5), dict(multistep=True)]


def _record_unet_timesteps(pipe) -> list[float]:
    seen: list[float] = []
    forward = pipe.unet.forward

    def recording(sample, timestep, *args, **kwargs):
        seen.append(float(torch.as_tensor(timestep).reshape(-1)[0]))
        return forward(sample, timestep, *args, **kwargs)

    pipe.unet.forward = recording
    return seen


@pytest.mark.parametrize("kwargs", VARIANTS, ids=["midpoint", "multistep"])
def test_variants_in_img2img_slice_by_order(kwargs):
    """img2img keeps the last ``int(N * strength)`` steps, ``order`` timesteps each; the run must make exactly
    those model calls and end at sigma = 0."""
    pipe = tiny_sd_pipeline("img2img", seed=0)
    pipe.scheduler = GeometricHeunScheduler.from_config(pipe.scheduler.config, **kwargs)
    seen = _record_unet_timesteps(pipe)
    steps, strength = 5, 0.6
    latents = pipe(
        "a cat",
        image=tiny_image(0),
        strength=strength,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    ).images
    order = pipe.scheduler.order
    assert seen == pipe.scheduler.timesteps[(steps - int(steps * strength)) * order :].tolist()
    assert len(seen) == (2 * int(steps * strength) - 1 if order == 2 else int(steps * strength))
    assert pipe.scheduler.step_index == len(pipe.scheduler.timesteps) and torch.isfinite(latents).all()


@pytest.mark.parametrize("kwargs", VARIANTS, ids=["midpoint", "multistep"])
def test_variants_in_ddpm_pipeline(kwargs):
    pipe = tiny_ddpm_pipeline(seed=0)
    pipe.scheduler = GeometricHeunScheduler.from_config(pipe.scheduler.config, **kwargs)
    seen = _record_unet_timesteps(pipe)
    image = pipe(num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert image.shape == (1, 8, 8, 3) and np.isfinite(image).all()
    assert len(seen) == (7 if pipe.scheduler.order == 2 else 4)


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(intermediate_point=0.0), ValueError, r"\(0, 1\]"),
        (dict(intermediate_point=1.5), ValueError, r"\(0, 1\]"),
        (dict(intermediate_point=-0.5), ValueError, r"\(0, 1\]"),
        (dict(intermediate_point="half"), TypeError, "number"),
        (dict(multistep=True, intermediate_point=0.5), ValueError, "one model call"),
        (dict(multistep="yes"), TypeError, "True or False"),
        (dict(max_multistep_weight=0.0), ValueError, "> 0"),
        (dict(max_multistep_weight="1"), TypeError, "number"),
        (dict(corrector=1), TypeError, "True or False"),
        (dict(sigma_data=0.0), ValueError, "> 0"),
        (dict(sigma_data=-1.0), ValueError, "> 0"),
        (dict(sigma_data="0.5"), TypeError, "number"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        GeometricHeunScheduler(**kwargs)


# ------------------------------------------------------------------------------------------------
# defaults: the one-call multistep mode on Karras sigmas; configs saved before keep their behaviour
# ------------------------------------------------------------------------------------------------
def test_the_default_is_the_one_call_multistep_mode_on_the_pipelines_schedule():
    for source in (DDIMScheduler(**SD), HeunDiscreteScheduler(**SD)):
        ours = GeometricHeunScheduler.from_config(source.config)
        assert ours.config.multistep and ours.order == 1
        ours.set_timesteps(8)
        assert len(ours.timesteps) == 8  # one model call per step
        spaced = SigmaDDIMScheduler.from_config(source.config)
        spaced.set_timesteps(8)
        assert torch.equal(ours.sigmas, spaced.sigmas)


def test_a_config_saved_with_the_old_default_samples_as_it_did(tmp_path):
    """save_pretrained writes every option, so a scheduler_config.json saved when Heun was the default
    (``"multistep": false``) loads as Heun and samples bit for bit like it; the new default applies to
    configs of other classes only."""
    old = {**GeometricHeunScheduler(**SD, multistep=False).config}
    old = {k: v for k, v in old.items() if k != "_use_default_values"}
    old["_class_name"] = "GeometricHeunScheduler"
    (tmp_path / "scheduler_config.json").write_text(json.dumps(old))
    loaded = GeometricHeunScheduler.from_pretrained(tmp_path)
    assert not loaded.config.multistep and loaded.order == 2
    explicit = GeometricHeunScheduler(**SD, multistep=False)
    model = image_set_model()
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for s in (loaded, explicit):
        s.set_timesteps(6)
    assert torch.equal(run_vp(loaded, model, x), run_vp(explicit, model, x))
    loaded.save_pretrained(tmp_path / "now")
    assert json.loads((tmp_path / "now" / "scheduler_config.json").read_text())["multistep"] is False
