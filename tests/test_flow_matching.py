"""Flow matching at the scheduler level: configs, schedules, reductions and the exact first step from s = 1.

A flow model's run starts at ``s = 1`` (``sigma = inf``), where every solver takes the exact limit of its own
step. The checks here are model-free (a closed-form velocity of Gaussian data) or use exact schedules, so
they compare bit for bit or to round-off.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from diffusers_geo import SCHEDULERS, load_scheduler
from diffusers_geo.parameterization import FlowMatching
from diffusers_geo.registry import scheduler_names
from diffusers_geo.schedules.flow import noise_fraction

NAMES = scheduler_names()
SD3 = {"shift": 3.0}
FLUX = {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15, "shift": 3.0}
M, C = 0.3, 0.5  # Gaussian data N(M, C^2) per dimension


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """The exact velocity ``v = (x - E[x0 | x]) / s`` of Gaussian data at ``x = (1 - s) x0 + s eps``."""
    s = float(t) / 1000
    denoised = M + (1 - s) * C**2 / ((1 - s) ** 2 * C**2 + s**2) * (x - (1 - s) * M)
    return (x - denoised) / s


def run(scheduler, x: torch.Tensor, noise_seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(noise_seed)
    for t in scheduler.timesteps:
        x = scheduler.step(gaussian_velocity(x, t), t, x, generator=generator).prev_sample
    return x


def noise(n: int = 4000, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


# --------------------------------------------------------------------------------------------------
# configs: detected, kept, round-tripped
# --------------------------------------------------------------------------------------------------
FLOW_CONFIGS = {
    "sd3": lambda: FlowMatchEulerDiscreteScheduler(**SD3).config,
    "flux": lambda: FlowMatchEulerDiscreteScheduler(**FLUX).config,
    "sana-dpm": lambda: (
        DPMSolverMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
        ).config
    ),
    "wan-unipc": lambda: (
        UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
        ).config
    ),
    "json-without-class": lambda: {"use_dynamic_shifting": True, "shift": 3.0},
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("flow", sorted(FLOW_CONFIGS))
def test_flow_configs_give_flow_schedulers(name, flow, tmp_path):
    config = FLOW_CONFIGS[flow]()
    ours = SCHEDULERS[name].from_config(config)
    assert ours.config.prediction_type == "flow_prediction"
    assert isinstance(ours.parameterization, FlowMatching)
    for key in ("shift", "use_dynamic_shifting", "base_shift", "max_shift", "flow_shift", "use_flow_sigmas"):
        if key in config:
            assert ours.config[key] == config[key], key
    assert load_scheduler(name, config).config.prediction_type == "flow_prediction"
    # saved and loaded with its values
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert saved["prediction_type"] == "flow_prediction"
    again = SCHEDULERS[name].from_pretrained(tmp_path)
    public = {k: v for k, v in ours.config.items() if not k.startswith("_")}
    assert {k: again.config[k] for k in public} == public
    # and back into the class it came from, with the same values
    if flow in ("sd3", "flux"):
        back = FlowMatchEulerDiscreteScheduler.from_config(ours.config)
        for key, value in FLOW_CONFIGS[flow]().items():
            if not key.startswith("_"):
                assert back.config[key] == value, key
    if flow == "sana-dpm":
        back = DPMSolverMultistepScheduler.from_config(ours.config)
        assert back.config.use_flow_sigmas and back.config.flow_shift == 3.0
        assert back.config.prediction_type == "flow_prediction"


# --------------------------------------------------------------------------------------------------
# schedules: the same noise levels as the scheduler the config came from
# --------------------------------------------------------------------------------------------------
def fractions(scheduler) -> torch.Tensor:
    """Our VE sigmas as noise fractions s = sigma / (1 + sigma) (inf -> 1)."""
    sigmas = scheduler.sigmas
    return torch.where(torch.isinf(sigmas), torch.ones_like(sigmas), sigmas / (1 + sigmas))


@pytest.mark.parametrize(
    ("config", "kwargs"),
    [
        (SD3, {"num_inference_steps": 8}),
        (SD3, {"num_inference_steps": 1}),
        ({**SD3, "shift_terminal": 0.1}, {"num_inference_steps": 6}),
        ({**SD3, "use_karras_sigmas": True}, {"num_inference_steps": 6}),
        ({**SD3, "use_exponential_sigmas": True}, {"num_inference_steps": 6}),
        (FLUX, {"sigmas": list(np.linspace(1.0, 1 / 8, 8)), "mu": 0.9}),
        ({**FLUX, "time_shift_type": "linear"}, {"sigmas": list(np.linspace(1.0, 1 / 5, 5)), "mu": 2.0}),
        ({"shift": 1.0}, {"num_inference_steps": 10}),
    ],
)
def test_sigmas_match_flow_match_euler(config, kwargs):
    """``timestep_spacing="linspace"`` is FlowMatchEuler's spacing exactly (custom sigmas are the same either
    way)."""
    reference = FlowMatchEulerDiscreteScheduler(**config)
    reference.set_timesteps(**kwargs)
    ours = load_scheduler("sigma-ddim", reference.config, timestep_spacing="linspace")
    ours.set_timesteps(**kwargs)
    torch.testing.assert_close(fractions(ours).float(), reference.sigmas, rtol=0, atol=3e-7)
    torch.testing.assert_close(ours.timesteps, reference.timesteps, rtol=1e-6, atol=1e-4)
    assert math.isinf(float(ours.sigmas[0])) == (float(reference.sigmas[0]) == 1.0)


@pytest.mark.parametrize("config", [SD3, {**SD3, "shift_terminal": 0.1}, {"shift": 1.0}])
@pytest.mark.parametrize("n", [1, 4, 9])
def test_trailing_spacing_is_fluxs(config, n):
    """``timestep_spacing="trailing"`` on a flow model: the noise levels FlowMatchEuler gets from FluxPipeline's
    ``sigmas = linspace(1, 1/N, N)`` (every step the same length in t, shifted once). The default is
    FlowMatchEuler's own spacing ("linspace") for sigma-ddim and geometric-heun, "trailing" for ER-SDE and
    projection DDIM (chosen on the benchmark suite), recorded in the config either way."""
    reference = FlowMatchEulerDiscreteScheduler(**config)
    for name in NAMES:
        expected = SCHEDULERS[name].flow_defaults["timestep_spacing"]
        assert load_scheduler(name, reference.config).config.timestep_spacing == expected
        assert SCHEDULERS[name](prediction_type="flow_prediction").config.timestep_spacing == expected
    assert {n: SCHEDULERS[n].flow_defaults for n in NAMES} == {
        "er-sde": {"timestep_spacing": "trailing"},
        "geometric-heun": {"timestep_spacing": "linspace"},
        "projection-ddim": {"timestep_spacing": "trailing", "schedule": "spacing"},
        "sigma-ddim": {"timestep_spacing": "linspace"},
    }
    # a VP model keeps the VP defaults; a value given explicitly wins
    assert load_scheduler("projection-ddim").config.schedule == "log-linear"
    assert load_scheduler("projection-ddim", reference.config, schedule="log-linear").config.schedule == (
        "log-linear"
    )
    ours = load_scheduler("sigma-ddim", reference.config, timestep_spacing="trailing")
    ours.set_timesteps(n)
    if n == 1 and "shift_terminal" in config:  # diffusers stretches [1.0] by 0 / 0: NaN; ours keeps it
        assert fractions(ours).tolist() == [1.0, 0.0]
        return
    reference.set_timesteps(sigmas=list(np.linspace(1.0, 1 / n, n)))
    torch.testing.assert_close(fractions(ours).float(), reference.sigmas, rtol=0, atol=3e-7)


def test_projection_ddim_log_linear_schedule_on_flow_models():
    """GE's schedule on a flow model: the first call at s = 1, then a constant step size 1 - sigma_next / sigma
    from the spacing's second level down to sqrt(last level x the model's smallest level), then 0. Custom
    sigmas (Flux passes them) are used as given."""
    config = FlowMatchEulerDiscreteScheduler(**SD3).config
    ge = load_scheduler("projection-ddim", config, schedule="log-linear")
    spacing = load_scheduler("projection-ddim", config, schedule="spacing")
    for n in (3, 5, 10):
        ge.set_timesteps(n)
        spacing.set_timesteps(n)
        sig, base = ge.sigmas, spacing.sigmas
        assert math.isinf(float(sig[0])) and float(sig[-1]) == 0 and len(sig) == n + 1
        assert float(sig[1]) == float(base[1])
        ratios = sig[2:-1] / sig[1:-2]
        torch.testing.assert_close(ratios, ratios[:1].expand_as(ratios), rtol=1e-12, atol=0)
        sigma_min = 3.0 * 0.001 / (1 + 2.0 * 0.001)  # s = shift(1 / T)
        sigma_min = sigma_min / (1 - sigma_min)
        assert float(sig[-2]) == pytest.approx(math.sqrt(float(base[-2]) * sigma_min), rel=1e-12)
    ddim_end = load_scheduler("projection-ddim", config, schedule="log-linear", log_linear_end="ddim")
    ddim_end.set_timesteps(5)
    spacing.set_timesteps(5)
    assert float(ddim_end.sigmas[-2]) == pytest.approx(float(spacing.sigmas[-2]), rel=1e-12)
    # FluxPipeline passes its default spacing as sigmas = linspace(1, 1/N, N): that is N steps, "trailing",
    # and gets the log-linear schedule; other custom sigmas are used as given
    flux_config = FlowMatchEulerDiscreteScheduler(**FLUX).config
    flux = load_scheduler("projection-ddim", flux_config, schedule="log-linear")
    flux.set_timesteps(sigmas=list(np.linspace(1.0, 1 / 5, 5)), mu=1.0)
    steps = load_scheduler("projection-ddim", flux_config, schedule="log-linear")
    steps.set_timesteps(5, mu=1.0)
    assert torch.equal(flux.sigmas, steps.sigmas)
    plain = load_scheduler("projection-ddim", flux_config)  # the flow default: the pipeline's spacing
    plain.set_timesteps(sigmas=list(np.linspace(1.0, 1 / 5, 5)), mu=1.0)
    assert not torch.allclose(flux.sigmas[1:], plain.sigmas[1:])
    custom = [1.0, 0.9, 0.5, 0.3, 0.1]
    flux.set_timesteps(sigmas=custom, mu=1.0)
    reference = FlowMatchEulerDiscreteScheduler(**FLUX)
    reference.set_timesteps(sigmas=custom, mu=1.0)
    torch.testing.assert_close(fractions(flux).float(), reference.sigmas, rtol=0, atol=3e-7)


@pytest.mark.parametrize("cls", [DPMSolverMultistepScheduler])
@pytest.mark.parametrize("dynamic", [False, True])
def test_sigmas_match_dpm_flow_sigmas(cls, dynamic):
    """``use_flow_sigmas=True`` follows DPM-Solver's flow schedule (UniPC's differs: it starts at s = 1 and
    clamps it to 1 - 1e-6; ours then starts at DPM-Solver's s = shift(0.999))."""
    config = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0}
    kwargs = {"mu": 0.7} if dynamic else {}
    reference = cls(**config, use_dynamic_shifting=dynamic)
    reference.set_timesteps(7, **kwargs)
    ours = load_scheduler("er-sde", cls(**config, use_dynamic_shifting=dynamic).config)
    ours.set_timesteps(7, **kwargs)
    torch.testing.assert_close(fractions(ours).float(), reference.sigmas.float(), rtol=0, atol=3e-7)
    assert ours.config.flow_shift == 3.0  # mu shifts the run, it does not rewrite the config
    # custom sigmas are shifted by flow_shift (or mu), as UniPC shifts them
    unipc = UniPCMultistepScheduler(**config, use_dynamic_shifting=dynamic)
    unipc.set_timesteps(sigmas=np.array([0.9, 0.6, 0.3]), **kwargs)
    ours.set_timesteps(sigmas=[0.9, 0.6, 0.3], **kwargs)
    torch.testing.assert_close(fractions(ours).float(), unipc.sigmas.float(), rtol=0, atol=3e-7)


# --------------------------------------------------------------------------------------------------
# reductions: the same sampler as diffusers' flow Euler; the other samplers' DDIM modes equal ours
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [SD3, {"shift": 1.0}])
def test_sigma_ddim_is_flow_match_euler(config):
    """The Euler step in sigma is DDIM, and DDIM of a flow model is its Euler step in s (same noise)."""
    reference = FlowMatchEulerDiscreteScheduler(**config)
    ours = load_scheduler("sigma-ddim", reference.config, timestep_spacing="linspace")
    for n in (1, 4, 10):
        reference.set_timesteps(n)
        ours.set_timesteps(n)
        torch.testing.assert_close(run(ours, noise()), run(reference, noise()), rtol=0, atol=2e-6)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("er-sde", {"solver_order": 1, "noise_scale": "ode"}),
        ("projection-ddim", {"gamma": 1.0, "schedule": "spacing"}),
        ("geometric-heun", {"multistep": True, "corrector": False, "max_multistep_weight": 1e-9}),
    ],
)
def test_ddim_modes_reduce_to_sigma_ddim(name, options):
    config = FlowMatchEulerDiscreteScheduler(**SD3).config
    reference = load_scheduler("sigma-ddim", config, timestep_spacing="trailing")
    ours = load_scheduler(name, config, timestep_spacing="trailing", **options)
    for n in (1, 3, 8):
        reference.set_timesteps(n)
        ours.set_timesteps(n)
        torch.testing.assert_close(
            run(ours, noise(dtype=torch.float64)),
            run(reference, noise(dtype=torch.float64)),
            rtol=0,
            atol=1e-12,
        )


def flow_gradient_estimation(
    velocity, x: torch.Tensor, fractions: list[float], timesteps: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Gradient estimation written in a flow model's own coordinates (the reference for
    ``correction="velocity"``): ``d = (x - D) / s``, the Euler step ``x + d * (s_next - s)`` plus
    ``(gamma - 1) * (d - d_prev) * (s_next - s)`` from the second step on, and ``D`` itself on the step to 0.
    The model is called at the scheduler's (float32) timesteps, as a pipeline calls it."""
    d_prev = None
    for s, s_next, t in zip(fractions[:-1], fractions[1:], timesteps, strict=True):
        denoised = x - s * velocity(x, t)
        d = (x - denoised) / s
        if s_next == 0:
            return denoised
        step = x + d * (s_next - s)
        x = step if d_prev is None else step + (gamma - 1) * (d - d_prev) * (s_next - s)
        d_prev = d
    return x


@pytest.mark.parametrize("gamma", [1.0, 2.0, 1.5])
@pytest.mark.parametrize("start", [1.0, 0.7])
def test_velocity_correction_is_gradient_estimation_in_flow_coordinates(gamma, start):
    """correction="velocity" (sigma coordinates) equals the flow-coordinate sampler on the same fractions,
    from pure noise (s = 1, the limit step) and from an image-to-image start, to float64 round-off."""
    config = FlowMatchEulerDiscreteScheduler(**SD3).config
    fractions = [start, 0.8 * start, 0.5 * start, 0.3 * start, 0.1 * start]
    ours = load_scheduler("projection-ddim", config, gamma=gamma, correction="velocity")
    ours.set_timesteps(sigmas=fractions)
    shifted = [float(s) for s in noise_fraction(ours.sigmas)]  # SD3's shift, applied by set_timesteps
    assert shifted[0] == (1.0 if start == 1 else pytest.approx(3 * start / (1 + 2 * start)))
    x = noise(dtype=torch.float64)
    reference = flow_gradient_estimation(gaussian_velocity, x, shifted, ours.timesteps, gamma)
    torch.testing.assert_close(run(ours, noise(dtype=torch.float64)), reference, rtol=1e-10, atol=1e-10)
    paper = load_scheduler("projection-ddim", config, gamma=gamma)
    paper.set_timesteps(sigmas=fractions)
    difference = float((run(paper, noise(dtype=torch.float64)) - reference).abs().max())
    # the two corrections agree on the first two steps and differ from the third on, unless gamma = 1
    assert difference < 1e-12 if gamma == 1 else difference > 1e-4


def test_velocity_correction_saves_and_reloads(tmp_path):
    ours = load_scheduler(
        "projection-ddim", FlowMatchEulerDiscreteScheduler(**FLUX).config, correction="velocity"
    )
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "scheduler_config.json").read_text())["correction"] == "velocity"
    back = type(ours).from_pretrained(tmp_path)
    assert back.config.correction == "velocity" and back.is_flow_matching
    assert FlowMatchEulerDiscreteScheduler.from_config(back.config).config.use_dynamic_shifting


# --------------------------------------------------------------------------------------------------
# the first step from s = 1 is the exact limit of the step from s -> 1
# --------------------------------------------------------------------------------------------------
LIMIT_CASES = [
    ("sigma-ddim", {}),
    ("er-sde", {}),
    ("er-sde", {"noise_scale": "ode"}),
    ("er-sde", {"noise_scale": "exp-inverse", "solver_order": 2}),
    ("projection-ddim", {}),
    ("projection-ddim", {"mu": 0.5}),
    ("geometric-heun", {}),
]


@pytest.mark.parametrize(("name", "options"), LIMIT_CASES)
def test_first_step_from_pure_noise_is_the_limit(name, options):
    """Run from s = 1 exactly and from s = 1 - delta (float64, the same noise for every step): as delta -> 0
    the runs converge to the one from s = 1, at first order in delta. A clamped start would not converge."""
    config = FlowMatchEulerDiscreteScheduler(shift=1.0).config
    base = [0.8, 0.55, 0.3, 0.1]
    x = noise(dtype=torch.float64)
    step_noise = torch.randn(16, *x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def sample(first: float) -> torch.Tensor:
        scheduler = load_scheduler(name, config, **options)
        scheduler.set_timesteps(sigmas=[first, *base])
        y = x.clone()
        for i, t in enumerate(scheduler.timesteps):
            # the model sees the same point: at s = 1 - delta, x is the same pure-noise sample
            y = scheduler.step(gaussian_velocity(y, t), t, y, variance_noise=step_noise[i]).prev_sample
        return y

    exact = sample(1.0)
    assert torch.isfinite(exact).all()
    errors = [float((sample(1 - d) - exact).abs().max()) for d in (1e-3, 1e-4, 1e-5)]
    assert errors[-1] < 1e-3, errors
    if name == "geometric-heun" and options.get("multistep", True):
        # the one-call step weighs its backward difference by h / (2 h_prev), h_prev = log(sigma_0 / sigma_1)
        # ~ log(1 / delta): it reaches its limit (weight 0) only logarithmically in delta
        assert errors[0] > errors[1] > errors[2] and errors[2] < errors[0] / 5, errors
    else:  # first order in delta
        assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5, errors


@pytest.mark.parametrize("r", [1.0, 0.5])
def test_two_call_heun_from_pure_noise(r):
    """Heun's second stage has no limit as s -> 1 (its forward difference is weighted by h / (2 r s), and h ->
    -inf): from s = 1 - delta the step grows like 1 / delta. From s = 1 exactly the two-call step takes the
    trapezoidal rule in denoiser form instead, ``sigma_1 u + (D(u, inf) + D(y_pred, sigma_1)) / 2``, which
    is finite; its first call is the Euler predictor (the limit of every Runge-Kutta predictor)."""
    config = FlowMatchEulerDiscreteScheduler(shift=1.0).config
    scheduler = load_scheduler("geometric-heun", config, multistep=False, intermediate_point=r)
    scheduler.set_timesteps(sigmas=[1.0, 0.5, 0.25])
    assert scheduler.order == 2 and len(scheduler.timesteps) == 5  # the order-2 layout: 2 N - 1 calls
    x = noise(dtype=torch.float64)
    t0, t1 = scheduler.timesteps[:2]
    assert float(t1) == 500.0  # from s = 1 the intermediate point of any r is sigma_next
    d0 = x - gaussian_velocity(x, t0)
    predicted = scheduler.step(gaussian_velocity(x, t0), t0, x).prev_sample  # x at s = 0.5
    torch.testing.assert_close(predicted, 0.5 * (d0 + 1.0 * x), rtol=0, atol=1e-12)
    d1 = predicted - 0.5 * gaussian_velocity(predicted, t1)
    corrected = scheduler.step(gaussian_velocity(predicted, t1), t1, predicted).prev_sample
    torch.testing.assert_close(corrected, 0.5 * (1.0 * x + (d0 + d1) / 2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pure_noise_start_stays_finite(name, dtype):
    scheduler = load_scheduler(name, FlowMatchEulerDiscreteScheduler(**FLUX).config)
    scheduler.set_timesteps(sigmas=list(np.linspace(1.0, 1 / 6, 6)), mu=1.15)
    assert math.isinf(float(scheduler.sigmas[0]))
    out = run(scheduler, noise(dtype=dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()


def test_er_sde_first_step_limits():
    """From sigma = inf the ER-SDE step keeps ``phi(sigma_t) L`` of the noise sample (L = lim sigma / phi)
    and adds the rest as fresh noise: all fresh for the default exp-power scale (L = 0), none for the ODE."""
    config = FlowMatchEulerDiscreteScheduler(shift=1.0).config
    x = noise(dtype=torch.float64)
    z = noise(dtype=torch.float64, seed=5)
    for scale, kept in (("exp-power", 0.0), ("ode", 1.0)):
        scheduler = load_scheduler("er-sde", config, noise_scale=scale)
        scheduler.set_timesteps(sigmas=[1.0, 0.5])
        t = scheduler.timesteps[0]
        denoised = x - gaussian_velocity(x, t)  # D = x - s v at s = 1
        out = scheduler.step(gaussian_velocity(x, t), t, x, variance_noise=z).prev_sample
        sigma_next = 1.0  # s = 0.5
        expected = 0.5 * (denoised + sigma_next * (kept * x + math.sqrt(1 - kept**2) * z))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_inadmissible_noise_scale_from_infinity_is_refused():
    scheduler = load_scheduler(
        "er-sde", FlowMatchEulerDiscreteScheduler(**SD3).config, noise_scale="log-power"
    )
    with pytest.raises(ValueError, match="log-power"):
        scheduler.set_timesteps(8)
    assert scheduler.sigmas is None


# --------------------------------------------------------------------------------------------------
# scale_noise / add_noise (img2img, inpainting) and ODE-Jump
# --------------------------------------------------------------------------------------------------
def test_scale_noise_matches_flow_match_euler():
    reference = FlowMatchEulerDiscreteScheduler(**SD3)
    ours = load_scheduler("er-sde", reference.config, timestep_spacing="linspace")
    sample, eps = noise(16), noise(16, seed=3)
    for begin in (None, 2):
        reference.set_timesteps(6)
        ours.set_timesteps(6)
        if begin is not None:
            reference.set_begin_index(begin)
            ours.set_begin_index(begin)
        for i in (0, 2, 5):
            t = reference.timesteps[i : i + 1]
            torch.testing.assert_close(
                ours.scale_noise(sample, t, eps), reference.scale_noise(sample, t, eps), rtol=0, atol=1e-6
            )
    assert torch.equal(
        ours.add_noise(sample, eps, ours.timesteps[:1]), ours.scale_noise(sample, ours.timesteps[:1], eps)
    )
    torch.testing.assert_close(ours.get_velocity(sample, eps, ours.timesteps[:1]), eps - sample)


def test_ode_jump_on_a_flow_schedule():
    config = FlowMatchEulerDiscreteScheduler(**SD3).config
    scheduler = load_scheduler("sigma-ddim", config, jump_step=3)
    scheduler.set_timesteps(8)
    assert scheduler.ode_jump.nfe == 4 and len(scheduler.timesteps) == 4
    assert torch.isfinite(run(scheduler, noise())).all()
