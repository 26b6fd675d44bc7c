"""EDM-preconditioned models (Karras et al. 2022; diffusers' EDMEuler / EDMDPMSolverMultistep configs).

Our sigma coordinates are EDM's (``x = y``), so an EDM run and a VP run on the same sigma schedule with the
same exact denoiser must give the same samples to round-off; ``EDMEulerScheduler`` is the control for the
pipeline-facing interface (timesteps = c_noise, c_in scaling, init noise, add_noise) and, for
``SigmaDDIMScheduler`` (Euler in sigma), for every step. All checks here are model-free except the tiny SDXL
pipeline, which is compared to round-off in one process.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

from diffusers_geo import SCHEDULERS, OptimalDenoiser, SigmaDDIMScheduler
from diffusers_geo.parameterization import EDM, to_model_output
from diffusers_geo.registry import scheduler_names
from diffusers_geo.schedulers.base import is_edm_config
from diffusers_geo.testing import OWN_OVERRIDES, tiny_cosmos2_pipeline, tiny_edm_sdxl_pipeline

NAMES = scheduler_names()


def edm_config(**options) -> dict:
    """An in-memory ``EDMEulerScheduler`` config (its defaults: sigma in [0.002, 80], sigma_data = 0.5, Karras
    with rho = 7), built by the class so that ``options`` are recorded as given."""
    return dict(EDMEulerScheduler(**options).config)


EDM_CONFIG = edm_config()
SHAPE = (2, 2, 3, 3)


def mixture() -> OptimalDenoiser:
    """A two-component Gaussian mixture with an exact denoiser ``D(y, sigma)``."""
    g = torch.Generator().manual_seed(0)
    means = torch.randn(2, *SHAPE[1:], generator=g, dtype=torch.float64) * 0.5
    return OptimalDenoiser.from_gaussian_mixture(means, torch.tensor([0.04, 0.09])).double()


def vp_betas_covering(lo: float, hi: float, n: int = 1000) -> list[float]:
    """Training betas whose VE noise levels run geometrically from ``lo`` to ``hi`` (a VP model trained on
    the EDM range, so the same sigma schedule is a valid custom schedule for both)."""
    sigmas = np.geomspace(lo, hi, n)
    abar = 1 / (1 + sigmas**2)
    return (1 - abar / np.concatenate([[1.0], abar[:-1]])).tolist()


def drive(scheduler, model: OptimalDenoiser, y0: torch.Tensor, noises: list[torch.Tensor]) -> torch.Tensor:
    """The pipeline loop with the exact denoiser, returned in sigma coordinates ``y = x / alpha``: the model
    output is the one a network of the scheduler's parameterisation would give for ``D`` (EDM: ``F``,
    VP: epsilon), and every step gets the same explicit noise (in ``y`` coordinates, as ``step`` takes it)."""
    param = scheduler.parameterization
    sigma0 = float(scheduler.sigmas[0])
    x = y0 * param.alpha(sigma0)
    for i, t in enumerate(scheduler.timesteps):
        sigma = float(scheduler.sigmas[i])
        alpha = param.alpha(sigma)
        y = x / alpha
        denoised = model.denoise(y, sigma)
        if isinstance(param, EDM):
            output = param.model_output(denoised, x, sigma, scheduler.config.prediction_type)
        else:
            output = to_model_output(denoised, y, alpha, sigma, scheduler.config.prediction_type)
        x = scheduler.step(output, t, x, variance_noise=noises[i]).prev_sample
    return x / param.alpha(float(scheduler.sigmas[-1]))


# ------------------------------------------------------------------------------------------------------
# (a) same D, same sigma -> same samples: EDM against VP on the exact-denoiser problem
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_edm_run_equals_vp_run_on_the_same_sigmas(name, prediction_type):
    cls, steps = SCHEDULERS[name], 8
    edm = cls.from_config(edm_config(prediction_type=prediction_type))
    assert edm.is_edm and isinstance(edm.parameterization, EDM)
    assert edm.config.prediction_type == prediction_type
    edm.set_timesteps(steps)
    vp = cls(trained_betas=vp_betas_covering(0.0019, 81.0), prediction_type="epsilon")
    vp.set_timesteps(sigmas=edm.sigmas)
    assert torch.equal(vp.sigmas, edm.sigmas)  # the same model calls, the same levels
    model = mixture()
    g = torch.Generator().manual_seed(1)
    y0 = torch.randn(SHAPE, generator=g, dtype=torch.float64) * float(edm.sigmas[0])
    noises = [torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in edm.timesteps]
    a, b = drive(edm, model, y0, noises), drive(vp, model, y0, noises)
    assert torch.isfinite(a).all()
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-10), (a - b).abs().max()


@pytest.mark.parametrize("name", NAMES)
def test_edm_final_sigma_min_ends_at_sigma_min(name):
    """``final_sigmas_type="sigma_min"``: the run stops at ``sigma_min`` (EDMDPMSolver's terminal level); the
    last call then sits at that level too, so its step changes nothing (as in EDMEulerScheduler)."""
    s = SCHEDULERS[name].from_config(edm_config(final_sigmas_type="sigma_min"))
    s.set_timesteps(6)
    assert float(s.sigmas[-1]) == pytest.approx(0.002) and float(s.sigmas[-2]) == pytest.approx(0.002)
    g = torch.Generator().manual_seed(3)
    y0 = torch.randn(SHAPE, generator=g, dtype=torch.float64) * 80
    out = drive(s, mixture(), y0, [torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in s.timesteps])
    assert torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------------
# (b) EDMEulerScheduler as the control
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("schedule", ["karras", "exponential"])
def test_interface_equals_edm_euler(name, schedule):
    control = EDMEulerScheduler(sigma_schedule=schedule, sigma_data=0.7, rho=5.0)
    ours = SCHEDULERS[name].from_config(control.config)
    control.set_timesteps(7)
    ours.set_timesteps(7)
    assert ours.init_noise_sigma == control.init_noise_sigma
    # c_noise: bit for bit for Karras (both from float32 sigmas); exponential is built in float32 there
    rtol = 0 if schedule == "karras" else 1e-6
    assert torch.allclose(ours.timesteps, control.timesteps, rtol=rtol, atol=rtol)
    assert torch.allclose(ours.sigmas.float(), control.sigmas, rtol=1e-6, atol=0)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    for i, t in enumerate(control.timesteps):
        ours._step_index = control._step_index = i  # look at every step without running the solvers
        assert torch.allclose(ours.scale_model_input(x, ours.timesteps[i]), control.scale_model_input(x, t))
    # add_noise in VE form, at a level of the schedule
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    ours._step_index = control._step_index = None
    t = control.timesteps[2:3]
    assert torch.allclose(ours.add_noise(x, noise, ours.timesteps[2:3]), control.add_noise(x, noise, t))


def test_scale_model_input_before_the_first_step_changes_no_state():
    ours = SigmaDDIMScheduler.from_config(EDM_CONFIG)
    ours.set_timesteps(5)
    x = torch.ones(1, 1, 2, 2)
    scaled = ours.scale_model_input(x, ours.timesteps[0])
    assert ours.step_index is None
    assert torch.allclose(scaled, x / (80.0**2 + 0.25) ** 0.5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
def test_sigma_ddim_equals_edm_euler_step_by_step(prediction_type, final):
    """Euler in sigma is EDMEuler's step: the same samples at every step, to float32 round-off, with a
    model-free network output (a fixed function of the scaled input and c_noise)."""
    config = dict(prediction_type=prediction_type, final_sigmas_type=final, sigma_data=0.5)
    control = EDMEulerScheduler(**config)
    ours = SigmaDDIMScheduler.from_config(control.config)
    control.set_timesteps(10)
    ours.set_timesteps(10)

    def network(x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x_in * 0.7 + 0.3 * c_noise)

    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)) * ours.init_noise_sigma
    xa, xb = x.clone(), x.clone()
    for ta, tb in zip(ours.timesteps, control.timesteps, strict=True):
        assert ta == tb
        fa = network(ours.scale_model_input(xa, ta), ta)
        fb = network(control.scale_model_input(xb, tb), tb)
        out_a, out_b = ours.step(fa, ta, xa), control.step(fb, tb, xb)
        xa, xb = out_a.prev_sample, out_b.prev_sample
        assert torch.allclose(xa, xb, rtol=1e-5, atol=1e-5), (xa - xb).abs().max()
        assert torch.allclose(out_a.pred_original_sample, out_b.pred_original_sample, rtol=1e-5, atol=1e-5)


def test_tiny_sdxl_pipeline_with_an_edm_scheduler():
    """An SDXL pipeline with an EDM scheduler (Playground v2.5's setup): ours from its config calls the UNet
    at the control's c_noise with the control's c_in-scaled inputs, and Euler gives the control's image."""
    seen: dict[str, list] = {"control": [], "ours": []}

    def run(pipe, key):
        def hook(module, args, kwargs):
            seen[key].append((float(args[1] if len(args) > 1 else kwargs["timestep"]), args[0].clone()))

        handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            return pipe(
                "a", num_inference_steps=4, guidance_scale=1.0, output_type="np",
                generator=torch.Generator().manual_seed(0),
            ).images  # fmt: skip
        finally:
            handle.remove()

    control_image = run(tiny_edm_sdxl_pipeline(), "control")
    ours = tiny_edm_sdxl_pipeline(scheduler="sigma-ddim")
    assert isinstance(ours.scheduler, SigmaDDIMScheduler) and ours.scheduler.is_edm
    image = run(ours, "ours")
    assert len(seen["ours"]) == len(seen["control"]) == 4
    for (ta, xa), (tb, xb) in zip(seen["ours"], seen["control"], strict=True):
        assert ta == tb
        assert torch.allclose(xa, xb, rtol=1e-4, atol=1e-5)
    assert np.allclose(image, control_image, atol=1e-4)


# ------------------------------------------------------------------------------------------------------
# (c) configs: detection, save / reload, round trip into the EDM schedulers
# ------------------------------------------------------------------------------------------------------
EDM_KEYS = (
    "sigma_min",
    "sigma_max",
    "sigma_data",
    "sigma_schedule",
    "rho",
    "prediction_type",
    "final_sigmas_type",
)


def test_edm_configs_are_detected_in_memory_and_saved():
    for cls in (EDMEulerScheduler, EDMDPMSolverMultistepScheduler):
        config = dict(cls().config)
        assert is_edm_config(config)
        assert is_edm_config({k: v for k, v in config.items() if k != "_class_name"})
    assert not is_edm_config({"sigma_min": 0.1, "sigma_max": 10.0})  # EulerDiscrete's respacing ends
    assert not is_edm_config(dict(SigmaDDIMScheduler().config))


@pytest.mark.parametrize("name", NAMES)
def test_save_reload_and_round_trip_into_edm_euler(name, tmp_path):
    control = EDMEulerScheduler(
        sigma_min=0.01, sigma_max=50.0, sigma_data=0.7, sigma_schedule="exponential", rho=6.0,
        prediction_type="v_prediction", final_sigmas_type="sigma_min",
    )  # fmt: skip
    cls = SCHEDULERS[name]
    overrides = OWN_OVERRIDES[cls.__name__]
    ours = cls.from_config(control.config, **overrides)
    ours.save_pretrained(tmp_path)
    back = cls.from_pretrained(tmp_path)
    assert back.is_edm and isinstance(back.parameterization, EDM)
    for key in EDM_KEYS:
        assert back.config[key] == control.config[key], key
    for key, value in overrides.items():
        assert back.config[key] == value, key
    back.set_timesteps(6)
    ours.set_timesteps(6)
    assert torch.equal(back.sigmas, ours.sigmas) and torch.equal(back.timesteps, ours.timesteps)
    again = EDMEulerScheduler.from_config(back.config)
    for key in EDM_KEYS:
        assert again.config[key] == control.config[key], key


def test_edm_dpm_solver_config_serves_and_round_trips():
    dpm = EDMDPMSolverMultistepScheduler(sigma_schedule="exponential", sigma_data=1.0)
    ours = SCHEDULERS["er-sde"].from_config(dpm.config)
    assert ours.is_edm and ours.config.sigma_data == 1.0
    ours.set_timesteps(8)
    dpm.set_timesteps(8)
    assert torch.allclose(ours.sigmas.float(), dpm.sigmas, rtol=1e-6, atol=0)
    assert torch.allclose(ours.timesteps, dpm.timesteps, rtol=1e-6, atol=1e-6)
    back = EDMDPMSolverMultistepScheduler.from_config(ours.config)
    for key in EDM_KEYS:
        assert back.config[key] == dpm.config[key], key


def test_a_vp_config_stays_vp():
    ours = SigmaDDIMScheduler()
    assert not ours.is_edm and ours.config.preconditioning == "none"
    ours.set_timesteps(4)
    x = torch.randn(1, 1, 2, 2)
    assert torch.equal(ours.scale_model_input(x, ours.timesteps[0]), x) and ours.init_noise_sigma == 1.0
    assert ours.timesteps[0] > 900  # training timesteps, not c_noise


def test_custom_sigmas_ramp_timesteps_and_ve_sigmas():
    control = EDMEulerScheduler()
    ours = SigmaDDIMScheduler.from_config(control.config)
    ramp = torch.linspace(0, 1, 5, dtype=torch.float64) ** 1.5  # EDMEuler's convention: a ramp in [0, 1]
    control.set_timesteps(sigmas=ramp)
    ours.set_timesteps(sigmas=ramp)
    assert torch.equal(ours.timesteps, control.timesteps)
    ve = [40.0, 5.0, 0.5, 0.01, 0.0]  # ours: decreasing VE levels with the terminal one
    ours.set_timesteps(sigmas=ve)
    assert ours.sigmas.tolist() == ve
    ours.set_timesteps(timesteps=control.timesteps)
    assert torch.allclose(ours.sigmas[:-1].float(), control.sigmas[:-1], rtol=1e-6)


# ------------------------------------------------------------------------------------------------------
# (d) what we do not implement is named
# ------------------------------------------------------------------------------------------------------
def test_edm_dpm_prediction_type_sample_is_refused_by_name():
    dpm = dict(EDMDPMSolverMultistepScheduler().config) | {"prediction_type": "sample"}
    with pytest.raises(ValueError, match="prediction_type='sample'"):
        SigmaDDIMScheduler.from_config(dpm)


def test_edm_dpm_thresholding_is_taken_over():
    dpm = EDMDPMSolverMultistepScheduler(thresholding=True, sample_max_value=1.5).config
    ours = SigmaDDIMScheduler.from_config(dpm)
    assert ours.config.preconditioning == "edm"
    assert ours.config.thresholding and ours.config.sample_max_value == 1.5


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"use_karras_sigmas": True}, "use_karras_sigmas=True"),
        ({"timestep_spacing": "trailing"}, "timestep_spacing='trailing'"),
        ({"shift": 3.0}, "shift=3.0"),
        ({"sigma_max": 0.001}, "sigma_min=0.002 must be below sigma_max=0.001"),
    ],
)
def test_options_of_other_families_on_an_edm_model_are_named(extra, match):
    with pytest.raises(ValueError, match=match):
        SigmaDDIMScheduler.from_config(EDM_CONFIG, **extra)


def test_edm_schedule_options_on_a_vp_model_are_named():
    with pytest.raises(ValueError, match="sigma_schedule='exponential'.*preconditioning='edm'"):
        SigmaDDIMScheduler(sigma_schedule="exponential")
    with pytest.raises(ValueError, match="rho=5.0"):
        SigmaDDIMScheduler(rho=5.0)


def test_bad_edm_schedule_input_is_refused_before_any_work():
    ours = SigmaDDIMScheduler.from_config(EDM_CONFIG)
    with pytest.raises(ValueError, match="outside its trained range"):
        ours.set_timesteps(sigmas=[100.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="c_noise"):
        ours.set_timesteps(timesteps=[0.1, 0.5])
    with pytest.raises(ValueError, match="mu="):
        ours.set_timesteps(4, mu=0.5)
    assert ours.sigmas is None  # nothing half-built


# ------------------------------------------------------------------------------------------------------
# Cosmos-Predict2: a FlowMatch config with EDM keys, a pipeline that preconditions the network itself
# ------------------------------------------------------------------------------------------------------
COSMOS_KEYS = dict(sigma_max=80.0, sigma_min=0.002, sigma_data=1.0, final_sigmas_type="sigma_min")


def cosmos_scheduler():
    """What ``Cosmos2TextToImagePipeline.__init__`` leaves: its FlowMatchEuler scheduler with Karras sigmas and
    the EDM keys the pipeline registers into its config."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True)
    scheduler.register_to_config(**COSMOS_KEYS)
    return scheduler


def cosmos_loop(scheduler, model: OptimalDenoiser, latents: torch.Tensor, steps: int) -> torch.Tensor:
    """The scheduler calls of ``Cosmos2TextToImagePipeline.__call__``: an increasing ramp as ``sigmas``, the last
    sigma replaced by the one before it, ``sigmas[i]`` read as the EDM level, and ``step`` given the noise
    ``(x - D) / sigma`` of the denoiser (here exact, in place of the preconditioned transformer)."""
    scheduler.set_timesteps(sigmas=torch.linspace(0, 1, steps, dtype=torch.float64))
    if scheduler.config.get("final_sigmas_type", "zero") == "sigma_min":
        scheduler.sigmas[-1] = scheduler.sigmas[-2]
    latents = latents * scheduler.config.sigma_max
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i]
        denoised = model.denoise(latents.double(), float(sigma)).float()
        latents = scheduler.step((latents - denoised) / sigma.float(), t, latents, return_dict=False)[0]
    return latents


def test_cosmos_config_is_a_pipeline_preconditioned_edm_model():
    control = cosmos_scheduler()
    ours = SigmaDDIMScheduler.from_config(control.config)
    assert ours.is_edm and ours.config.preconditioning == "pipeline"
    assert ours.config.prediction_type == "epsilon" and ours.config.sigma_schedule == "karras"
    for key, value in COSMOS_KEYS.items():
        assert ours.config[key] == value, key
    x = torch.randn(SHAPE)
    assert torch.equal(ours.scale_model_input(x, 0), x)  # the pipeline scales the input itself


@pytest.mark.parametrize("name", NAMES)
def test_cosmos_loop_sees_the_control_levels_and_euler_gives_its_latents(name):
    control = cosmos_scheduler()
    ours = SCHEDULERS[name].from_config(control.config)
    model = mixture()
    latents = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    expected = cosmos_loop(control, model, latents, 6)
    got = cosmos_loop(ours, model, latents, 6)
    assert torch.allclose(ours.sigmas.float(), control.sigmas, rtol=1e-6, atol=0)
    assert torch.isfinite(got).all()
    if name == "sigma-ddim":  # Euler in sigma is FlowMatchEuler's step here
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), (got - expected).abs().max()


def test_cosmos_ramp_on_a_flow_scheduler_names_the_fix():
    from diffusers import FlowMatchEulerDiscreteScheduler

    ours = SigmaDDIMScheduler.from_config(FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True).config)
    with pytest.raises(ValueError, match=r"EDM ramp .*X.from_config\(pipe.scheduler.config\)"):
        ours.set_timesteps(sigmas=torch.linspace(0, 1, 4))


@pytest.mark.parametrize(
    "flow_options, match", [({"use_karras_sigmas": False}, "neither use_karras_sigmas"),
                            ({"use_dynamic_shifting": True}, "use_dynamic_shifting=True")],
)  # fmt: skip
def test_cosmos_configs_we_cannot_serve_are_named(flow_options, match):
    from diffusers import FlowMatchEulerDiscreteScheduler

    config = dict(FlowMatchEulerDiscreteScheduler(**{"use_karras_sigmas": True, **flow_options}).config)
    config.update(COSMOS_KEYS)
    with pytest.raises(ValueError, match=match):
        SigmaDDIMScheduler.from_config(config)


def test_cosmos_config_saves_and_reloads(tmp_path):
    ours = SCHEDULERS["er-sde"].from_config(cosmos_scheduler().config)
    ours.save_pretrained(tmp_path)
    back = SCHEDULERS["er-sde"].from_pretrained(tmp_path)
    assert back.config.preconditioning == "pipeline" and back.config.sigma_data == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_tiny_cosmos2_pipeline(name):
    """Cosmos-Predict2 text-to-image with ours built from its scheduler config: the transformer sees the
    control's noise levels; Euler gives the control's latents (round-off, one process)."""
    seen: dict[str, list] = {"control": [], "ours": []}

    def run(pipe, key, output_type="latent"):
        def hook(module, args, kwargs):
            seen[key].append(kwargs["timestep"].float().clone())

        handle = pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            return pipe(
                "a", num_inference_steps=4, height=32, width=32, guidance_scale=1.0, max_sequence_length=16,
                output_type=output_type, generator=torch.Generator().manual_seed(0),
            ).images  # fmt: skip
        finally:
            handle.remove()

    expected = run(tiny_cosmos2_pipeline(), "control")
    pipe = tiny_cosmos2_pipeline(scheduler=name)
    assert pipe.scheduler.config.preconditioning == "pipeline"
    got = run(pipe, "ours")
    assert len(seen["ours"]) == len(seen["control"]) == 4
    for a, b in zip(seen["ours"], seen["control"], strict=True):
        assert torch.allclose(a, b, rtol=1e-6)  # the noise fraction sigma / (1 + sigma) the network sees
    assert torch.isfinite(got).all()
    if name == "sigma-ddim":
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4), (got - expected).abs().max()
