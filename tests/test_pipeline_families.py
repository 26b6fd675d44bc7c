"""Pipeline families beyond Stable Diffusion / SD3 / Flux (issue 25): CogVideoX (a VP v-prediction video model
with zero terminal SNR and CogVideoX's SNR shift) and LTX-Video's conditioning pipeline (per-token timesteps),
plus the scheduler-side pieces they need: the SNR shift, the zero-SNR clamp, clipping / thresholding of the data
prediction, and the rule for config keys a diffusers-geo scheduler does not take over (docs/pipelines.md).

Each pipeline runs with every scheduler of ours and with its own scheduler as the control: outputs are finite,
the model is called once per scheduled timestep, and the timesteps the model sees are the control's.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import diffusers
import numpy as np
import pytest
import torch
from diffusers import (
    CogVideoXDDIMScheduler,
    CogVideoXDPMScheduler,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    SchedulerMixin,
)
from pipeline_matrix import Case, assert_finite, cases, control, gen, install, traced

from diffusers_geo import ERSDEScheduler, GeometricHeunScheduler, SigmaDDIMScheduler
from diffusers_geo.schedulers.base import UNSERVED_MODEL_KEYS, GeoScheduler
from diffusers_geo.testing import (
    COGVIDEOX_2B_SCHEDULER_CONFIG,
    COGVIDEOX_5B_SCHEDULER_CONFIG,
    DDPM_BETAS,
    SD_BETAS,
    TEXT_HIDDEN_SIZE,
    tiny_cogvideox_pipeline,
    tiny_image,
    tiny_ltx_condition_pipeline,
)

STEPS = 4


def _embeds(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 16, TEXT_HIDDEN_SIZE, generator=gen(seed))


def _uses_pipeline_schedule(scheduler: SchedulerMixin) -> bool:
    """Whether the scheduler runs the pipeline's own timesteps for ``num_inference_steps`` (projection DDIM's
    default is its own log-linear schedule)."""
    return (
        not isinstance(scheduler, GeoScheduler)
        or type(scheduler).schedule_sigmas is GeoScheduler.schedule_sigmas
    )


def _distinct(values) -> list[float]:
    """The distinct values in order (order-2 layouts repeat a timestep)."""
    return list(dict.fromkeys(float(v) for v in values))


# --------------------------------------------------------------------------------------------------
# CogVideoX
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["2b", "5b"])
def cogvideox(request):
    pipe = tiny_cogvideox_pipeline(config=request.param, seed=0)
    return pipe, dict(pipe.scheduler.config), type(pipe.scheduler)


#: the control: the pipeline's own scheduler class (CogVideoXDDIMScheduler for 2b, CogVideoXDPMScheduler for 5b)
OWN = Case("pipeline-own", lambda config: None, ours=False)


@pytest.mark.parametrize("case", cases(OWN))
def test_cogvideox_pipeline(cogvideox, case: Case):
    pipe, config, own_class = cogvideox
    own = own_class.from_config(config)
    own.set_timesteps(STEPS)
    scheduler = install(pipe, case if case.ours else control(own_class), config)
    if case.ours:
        assert scheduler.config.snr_shift_scale == config["snr_shift_scale"]
    with traced(pipe, "transformer") as trace:
        latents = pipe(
            prompt_embeds=_embeds(),
            guidance_scale=1.0,
            height=16,
            width=16,
            num_frames=5,
            num_inference_steps=STEPS,
            max_sequence_length=16,
            output_type="latent",
            generator=gen(0),
        ).frames
    assert latents.shape == (1, 2, 4, 2, 2)
    assert_finite(trace, latents)
    assert trace.model_calls == len(scheduler.timesteps)
    if _uses_pipeline_schedule(scheduler):
        np.testing.assert_allclose(_distinct(trace.model_timesteps), own.timesteps.tolist(), atol=1e-3)
    if case.ours:
        assert scheduler.step_index == len(scheduler.timesteps)


@pytest.mark.parametrize("config", [COGVIDEOX_2B_SCHEDULER_CONFIG, COGVIDEOX_5B_SCHEDULER_CONFIG])
def test_cogvideox_training_noise_levels_are_the_models(config):
    """The SNR shift acts on alphas_cumprod before the zero-SNR rescaling, as in CogVideoXDDIMScheduler: our
    training sigmas equal its (float64) ones to float32 round-off, at every finite level."""
    reference = CogVideoXDDIMScheduler(**config)
    abar = reference.alphas_cumprod.to(torch.float64)
    expected = ((1 - abar) / abar).sqrt()[:-1]
    ours = SigmaDDIMScheduler.from_config(reference.config).parameterization.train_sigmas[:-1]
    torch.testing.assert_close(ours, expected, rtol=5e-5, atol=0)
    unshifted = SigmaDDIMScheduler.from_config({**reference.config, "snr_shift_scale": 1.0})
    ratio = float(ours[799] / unshifted.parameterization.train_sigmas[799])
    assert ratio == pytest.approx(config["snr_shift_scale"] ** 0.5, rel=0.05)


def test_cogvideox_dpm_config_keeps_its_shift():
    """CogVideoXDPMScheduler's config (5b) comes with its SNR shift and zero SNR; a saved config round-trips."""
    ours = ERSDEScheduler.from_config(
        CogVideoXDPMScheduler(**{**COGVIDEOX_5B_SCHEDULER_CONFIG, "snr_shift_scale": 2.0}).config
    )
    assert ours.config.snr_shift_scale == 2.0 and ours.config.rescale_betas_zero_snr
    again = ERSDEScheduler.from_config(ours.config)
    torch.testing.assert_close(again.parameterization.train_sigmas, ours.parameterization.train_sigmas)


def test_snr_shift_is_refused_for_flow_models():
    with pytest.raises(ValueError, match="snr_shift_scale=3.0"):
        SigmaDDIMScheduler(prediction_type="flow_prediction", snr_shift_scale=3.0)


# --------------------------------------------------------------------------------------------------
# LTX-Video conditioning: per_token_timesteps
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ltx():
    pipe = tiny_ltx_condition_pipeline(seed=0)
    return pipe, dict(pipe.scheduler.config)


def _run_ltx(pipe, image=None):
    return pipe(
        image=image,
        prompt_embeds=_embeds(),
        prompt_attention_mask=torch.ones(1, 16),
        guidance_scale=1.0,
        height=32,
        width=32,
        num_frames=5,
        num_inference_steps=STEPS,
        max_sequence_length=16,
        output_type="latent",
        generator=gen(0),
    ).frames


@pytest.mark.parametrize("case", cases(control(FlowMatchEulerDiscreteScheduler)))
def test_ltx_condition_text_to_video(ltx, case: Case):
    """Without conditioning every token sits at the step's timestep: every scheduler serves it."""
    pipe, config = ltx
    with traced(pipe, "transformer") as control_trace:
        install(pipe, control(FlowMatchEulerDiscreteScheduler), config)
        _run_ltx(pipe)
    scheduler = install(pipe, case, config)
    with traced(pipe, "transformer") as trace:
        latents = _run_ltx(pipe)
    assert latents.shape == (1, 8, 2, 8, 8)
    assert_finite(trace, latents)
    assert trace.model_calls == len(scheduler.timesteps)
    if _uses_pipeline_schedule(scheduler):
        np.testing.assert_allclose(_distinct(trace.model_timesteps), control_trace.model_timesteps, atol=1e-3)


def test_ltx_condition_on_an_image_with_the_euler_step(ltx):
    """Conditioning tokens sit at timestep 0 (per_token_timesteps): sigma-ddim's per-token Euler step gives the
    pipeline's own FlowMatchEulerDiscreteScheduler's result on the same sigmas (shift_terminal off, where
    diffusers shifts the sigmas of given timesteps but not the timesteps)."""
    pipe, config = ltx
    config = {**config, "shift_terminal": None}
    image = tiny_image(0, size=32)
    install(pipe, control(FlowMatchEulerDiscreteScheduler), config)
    with traced(pipe, "transformer") as control_trace:
        expected = _run_ltx(pipe, image)
    scheduler = install(pipe, Case("sigma-ddim", SigmaDDIMScheduler.from_config, ours=True), config)
    with traced(pipe, "transformer") as trace:
        latents = _run_ltx(pipe, image)
    assert_finite(trace, latents)
    assert trace.model_timesteps == control_trace.model_timesteps
    assert scheduler.step_index == len(scheduler.timesteps)
    torch.testing.assert_close(latents, expected, rtol=1e-4, atol=1e-4)
    # and the conditioning changed the video (the per-token path was taken)
    assert not torch.allclose(latents, _run_ltx(pipe))


@pytest.mark.parametrize("name", ["er-sde", "geometric-heun", "projection-ddim"])
def test_ltx_condition_on_an_image_needs_the_euler_step(ltx, name):
    """A scheduler with state refuses tokens at other levels at the first step, naming the fix, and is left as it
    was (no step index)."""
    pipe, config = ltx
    from diffusers_geo import load_scheduler

    scheduler = install(pipe, Case(name, lambda c: load_scheduler(name, c), ours=True), config)
    with traced(pipe, "transformer") as trace, pytest.raises(ValueError, match="sigma-ddim"):
        _run_ltx(pipe, tiny_image(0, size=32))
    assert trace.model_calls == 1 and trace.steps == 0
    assert scheduler.step_index is None


def test_per_token_timesteps_checks():
    s = SigmaDDIMScheduler(prediction_type="flow_prediction")
    s.set_timesteps(4)
    x = torch.randn(1, 6, 3, generator=gen(0))
    t = s.timesteps[0]
    with pytest.raises(ValueError, match="per_token_timesteps has shape"):
        s.step(x, t, x, per_token_timesteps=torch.full((1, 5), float(t)))
    vp = ERSDEScheduler(**SD_BETAS)
    vp.set_timesteps(4)
    with pytest.raises(ValueError, match="variance-preserving"):
        vp.step(x, vp.timesteps[0], x, per_token_timesteps=torch.zeros(1, 6))
    assert vp.step_index is None
    # every token at the step's level: the plain step, the output negated as in FlowMatchEulerDiscreteScheduler
    v = torch.randn(1, 6, 3, generator=gen(1))
    a = s.step(-v, t, x, per_token_timesteps=torch.full((1, 6), float(t))).prev_sample
    s.set_timesteps(4)
    torch.testing.assert_close(a, s.step(v, t, x).prev_sample, rtol=0, atol=0)
    reference = FlowMatchEulerDiscreteScheduler(shift=1.0)
    reference.set_timesteps(4)
    t = reference.timesteps[0]
    per_token = torch.tensor([[float(t), 0.0, float(t), 500.0, 0.0, 990.0]])
    expected = reference.step(-v, t, x, per_token_timesteps=per_token).prev_sample
    s = SigmaDDIMScheduler(prediction_type="flow_prediction")
    s.set_timesteps(4)
    torch.testing.assert_close(s.step(-v, t, x, per_token_timesteps=per_token).prev_sample, expected)


# --------------------------------------------------------------------------------------------------
# zero terminal SNR
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("betas", [SD_BETAS, DDPM_BETAS], ids=["scaled-linear", "linear"])
def test_zero_snr_builds_with_increasing_noise_levels(betas):
    """The terminal clamp is diffusers' Euler one (abar = 2**-24, sigma = 4096) where that lies below the level
    before it, else the last step's ratio: the noise levels increase with t either way."""
    ours = SigmaDDIMScheduler(**betas, prediction_type="v_prediction", rescale_betas_zero_snr=True)
    sigmas = ours.parameterization.train_sigmas
    assert torch.isfinite(sigmas).all() and (sigmas[1:] > sigmas[:-1]).all()
    euler = EulerDiscreteScheduler(**betas, rescale_betas_zero_snr=True)
    torch.testing.assert_close(ours.alphas_cumprod[:-1], euler.alphas_cumprod[:-1])
    if float(euler.alphas_cumprod[-2]) > 2**-24:
        assert float(ours.alphas_cumprod[-1]) == 2**-24
    else:
        assert float(ours.alphas_cumprod[-1]) < float(ours.alphas_cumprod[-2])
    ours.set_timesteps(5)
    assert ours.timesteps[0] == pytest.approx(999, abs=1e-3)


# --------------------------------------------------------------------------------------------------
# clip_sample / thresholding of the data prediction
# --------------------------------------------------------------------------------------------------
THRESHOLDS = [
    dict(clip_sample=True, clip_sample_range=0.5),
    dict(clip_sample=True),
    dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.0),
]


@pytest.mark.parametrize("options", THRESHOLDS, ids=["clip-0.5", "clip-1", "threshold"])
def test_clipped_data_prediction_matches_ddim(options):
    """SigmaDDIMScheduler clips / thresholds D as DDIMScheduler does its x0 (with use_clipped_model_output=True:
    the noise direction is the clipped D's, since every solver reads D only), on a model-free input."""
    ddim = DDIMScheduler(**SD_BETAS, timestep_spacing="trailing", set_alpha_to_one=True, **options)
    ours = SigmaDDIMScheduler.from_config(ddim.config)
    for key, value in options.items():
        assert ours.config[key] == value
    ddim.set_timesteps(8)
    ours.set_timesteps(8)
    x = torch.randn(2, 3, 4, 4, generator=gen(0)) * 3
    for i, t in enumerate(ddim.timesteps):  # each step from the same sample and model output
        eps = 2 * torch.sin(x * (i + 1))
        theirs = ddim.step(eps, t, x, use_clipped_model_output=True).prev_sample
        mine = ours.step(eps, ours.timesteps[i], x).prev_sample
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
        x = theirs
    bound = options.get("clip_sample_range", 1.0)
    assert float(mine.abs().max()) <= bound + 1e-6  # the last step returns the clipped D


def test_clipping_is_off_by_default_and_round_trips(tmp_path):
    x = torch.full((1, 1, 2, 2), 5.0)
    plain = SigmaDDIMScheduler(**DDPM_BETAS)
    assert torch.equal(plain.clip_denoised(x), x)
    clipped = GeometricHeunScheduler(**DDPM_BETAS, thresholding=True, sample_max_value=3.0)
    clipped.save_pretrained(tmp_path)
    again = GeometricHeunScheduler.from_pretrained(tmp_path)
    assert again.config.thresholding and again.config.sample_max_value == 3.0
    assert torch.equal(again.clip_denoised(x), torch.ones_like(x))  # s = 3: clip to [-3, 3], divide by 3


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(clip_sample_range=0.0), "clip_sample_range"),
        (dict(dynamic_thresholding_ratio=1.5), "dynamic_thresholding_ratio"),
        (dict(sample_max_value=0.5), "sample_max_value"),
        (dict(clip_sample="yes"), "clip_sample"),
    ],
)
def test_clipping_options_are_checked(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SigmaDDIMScheduler(**options)


# --------------------------------------------------------------------------------------------------
# nothing silent: every config key of diffusers' schedulers is served, refused or named
# --------------------------------------------------------------------------------------------------
def _diffusers_scheduler_keys() -> dict[str, tuple[str, Any]]:
    """Every ``__init__`` key of every scheduler class diffusers exports: key -> (a class, its default)."""
    keys: dict[str, tuple[str, Any]] = {}
    for name in sorted(dir(diffusers)):
        if not name.endswith("Scheduler"):
            continue
        cls = getattr(diffusers, name)
        if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
            continue
        for key, param in inspect.signature(cls.__init__).parameters.items():
            if key not in ("self", "kwargs") and key not in keys:
                keys[key] = (name, None if param.default is inspect.Parameter.empty else param.default)
    return keys


DIFFUSERS_KEYS = _diffusers_scheduler_keys()
SERVED = set(inspect.signature(GeoScheduler.__init__).parameters) - {"self"}
SAMPLER_OPTIONS = sorted(k for k in DIFFUSERS_KEYS if k not in SERVED and k not in UNSERVED_MODEL_KEYS)


def test_the_key_census_is_not_empty():
    assert {"solver_order", "stochastic_sampling", "set_alpha_to_one"} <= set(SAMPLER_OPTIONS)
    assert {"clip_sample", "thresholding", "snr_shift_scale", "rescale_betas_zero_snr"} <= SERVED


@pytest.mark.parametrize("key", SAMPLER_OPTIONS)
def test_another_samplers_option_is_named(key, caplog):
    origin, default = DIFFUSERS_KEYS[key]
    config = {**SD_BETAS, "_class_name": origin, key: default if default is not None else 1}
    # SigmaDDIM has no options of its own: a key another class shares with one of ours (ER-SDE's eta, say) is
    # named by that rule instead (tests/test_registry.py)
    with caplog.at_level(logging.WARNING, logger="diffusers_geo"):
        SigmaDDIMScheduler.from_config(config)
    named = [r.getMessage() for r in caplog.records if "not taken over" in r.getMessage()]
    assert len(named) == 1 and f"{key}=" in named[0] and origin in named[0]


@pytest.mark.parametrize("key", sorted(UNSERVED_MODEL_KEYS))
def test_an_unserved_model_key_is_refused_or_warned(key, caplog):
    neutral = UNSERVED_MODEL_KEYS[key]
    with caplog.at_level(logging.WARNING, logger="diffusers_geo"):
        ERSDEScheduler.from_config({**SD_BETAS, "_class_name": "DDPMScheduler", key: neutral[0]})
    ours = [r for r in caplog.records if r.name.startswith("diffusers_geo") and key in r.getMessage()]
    assert not ours, "a neutral value needs no word"
    bad = {"timestep_type": "continuous", "variance_type": "learned_range", "invert_sigmas": True}[key]
    config = {**SD_BETAS, "_class_name": "EulerDiscreteScheduler", key: bad}
    if key == "variance_type":
        with caplog.at_level(logging.WARNING, logger="diffusers_geo"):
            ERSDEScheduler.from_config(config)
        assert any("variance_type='learned_range'" in r.getMessage() for r in caplog.records)
    else:
        if key == "invert_sigmas":
            config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0, key: bad}
        with pytest.raises(ValueError, match=key):
            ERSDEScheduler.from_config(config)


def test_unserved_model_keys_are_not_served():
    """A key is served (in the config), or an unserved model key, never both; each unserved one is a diffusers
    scheduler's."""
    assert not SERVED & set(UNSERVED_MODEL_KEYS)
    assert set(UNSERVED_MODEL_KEYS) <= set(DIFFUSERS_KEYS)


def test_own_config_names_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="diffusers_geo"):
        ERSDEScheduler.from_config(ERSDEScheduler(**SD_BETAS, solver_order=2).config)
    assert not [r for r in caplog.records if "not taken over" in r.getMessage()]


# --------------------------------------------------------------------------------------------------
# the two-call geometric Heun on zero-terminal-SNR schedules and in Flux img2img
# --------------------------------------------------------------------------------------------------
def test_two_call_heun_treats_the_zero_snr_clamp_as_infinite():
    """From the clamped sigma_T = 4096 Heun's forward difference would be weighted by h / (2 sigma_1), some
    hundreds; the step from it is the trapezoidal rule of the sigma = inf limit, weight (1 - sigma_1 / sigma_0) / 2."""
    from diffusers_geo.solvers.geometric import heun_call, heun_corrector

    scheduler = GeometricHeunScheduler(
        **SD_BETAS,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        multistep=False,
    )
    scheduler.set_timesteps(4)
    assert float(scheduler.sigmas[0]) == pytest.approx(4096, rel=1e-6)
    x = torch.randn(1, 2, 3, 3, generator=gen(0))
    outputs = [torch.randn(1, 2, 3, 3, generator=gen(i + 1)) for i in range(2)]
    first = scheduler.step(outputs[0], scheduler.timesteps[0], x).prev_sample
    state = scheduler._state
    second = scheduler.step(outputs[1], scheduler.timesteps[1], first).prev_sample
    sigma_0, sigma_1 = float(scheduler.sigmas[0]), float(scheduler.sigmas[2])
    param = scheduler.parameterization
    y1 = param.to_y(first, float(scheduler.sigmas[1]))
    d1 = param.denoised(outputs[1], first, y1, float(scheduler.sigmas[1]), "v_prediction")
    expected = heun_corrector(state.y, state.denoised, d1, sigma_0, sigma_1) * param.alpha(sigma_1)
    torch.testing.assert_close(second, expected)
    # a finite start below the clamp keeps Heun's step
    plain = heun_call(state.y, state.denoised, sigma_1, sigma_1 / 2, None)[1]
    assert (
        heun_call(state.y, d1, sigma_1 / 2, sigma_1 / 4, plain, 1.0, scheduler._infinite_sigma())[1] is None
    )
    assert float(second.std()) < 5 * float(x.std())


def test_two_call_heun_zero_snr_sd_pipeline_stays_near_the_control():
    """In a v-prediction SD pipeline with zero terminal SNR (random weights) the two-call Heun's latents keep the
    control's scale (15x the control's std before the limit form, issue 25)."""
    from diffusers_geo import load_scheduler
    from diffusers_geo.testing import tiny_sd_pipeline

    pipe = tiny_sd_pipeline("txt2img", prediction_type="v_prediction", seed=0)
    config = DDIMScheduler.from_config(
        pipe.scheduler.config, rescale_betas_zero_snr=True, timestep_spacing="trailing"
    ).config
    stds = {}
    for name, scheduler in (
        ("control", DDIMScheduler.from_config(config)),
        ("heun", load_scheduler("geometric-heun", config, multistep=False)),
    ):
        pipe.scheduler = scheduler
        latents = pipe("a cat", num_inference_steps=4, generator=gen(0), output_type="latent").images
        assert torch.isfinite(latents).all()
        stds[name] = float(latents.std())
    assert stds["heun"] < 2 * stds["control"]


def test_two_call_heun_warns_where_a_pipeline_counts_its_calls_as_steps(caplog):
    """Flux img2img passes sigmas, then slices len(timesteps) = 2N - 1 'steps' by strength: named, not silent."""
    from diffusers_geo import load_scheduler
    from diffusers_geo.testing import tiny_flux_pipeline

    pipe = tiny_flux_pipeline(
        "img2img", scheduler=lambda c: load_scheduler("geometric-heun", c, multistep=False)
    )
    with caplog.at_level(logging.WARNING, logger="diffusers_geo"):
        pipe(
            "a cat",
            image=tiny_image(0),
            strength=0.5,
            num_inference_steps=4,
            generator=gen(0),
            output_type="latent",
        )
    assert any("cutting `strength`" in r.getMessage() for r in caplog.records)
    caplog.clear()
    one_call = load_scheduler("geometric-heun", dict(pipe.scheduler.config), multistep=True)
    pipe.scheduler = one_call
    with caplog.at_level(logging.WARNING, logger="diffusers_geo"):
        pipe(
            "a cat",
            image=tiny_image(0),
            strength=0.5,
            num_inference_steps=4,
            generator=gen(0),
            output_type="latent",
        )
    assert not any("cutting `strength`" in r.getMessage() for r in caplog.records)
    assert one_call.begin_index == 2  # the control's: int(4 * 0.5) steps kept


# ------------------------------------------------------------------------------------------------------
# CogView4: `timesteps` (unshifted, for the model) and `sigmas` (shifted, for the noise) passed together
# ------------------------------------------------------------------------------------------------------
def _cogview4_control():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        base_shift=0.25,
        max_shift=0.75,
        base_image_seq_len=256,
        use_dynamic_shifting=True,
        time_shift_type="linear",
    )


@pytest.mark.parametrize("name", ["sigma-ddim", "er-sde", "projection-ddim", "geometric-heun"])
def test_cogview4_timesteps_beside_sigmas_are_the_controls(name):
    import numpy as np

    from diffusers_geo import load_scheduler
    from diffusers_geo.schedules.flow import noise_fraction

    control = _cogview4_control()
    steps, mu = 6, 0.6
    timesteps = np.linspace(1000, 1.0, steps).astype(np.int64).astype(np.float32)  # the pipeline's own
    sigmas = timesteps / 1000
    control.set_timesteps(timesteps=timesteps, sigmas=sigmas, mu=mu)
    ours = load_scheduler(name, control.config)
    ours.set_timesteps(timesteps=timesteps, sigmas=sigmas, mu=mu)
    assert torch.equal(ours.timesteps, control.timesteps)  # the model sees the unshifted timesteps
    levels = noise_fraction(ours.sigmas).float()
    assert torch.allclose(levels, control.sigmas, atol=1e-6)  # and the noise the shifted fractions give
    assert not torch.allclose(control.sigmas[:-1] * 1000, control.timesteps)  # the two do differ here


def test_cogview4_two_call_heun_is_refused_naming_the_fix():
    import numpy as np

    from diffusers_geo import GeometricHeunScheduler

    ours = GeometricHeunScheduler.from_config(_cogview4_control().config, multistep=False)
    timesteps = np.linspace(1000, 1.0, 6).astype(np.float32)
    with pytest.raises(ValueError, match="multistep=True"):
        ours.set_timesteps(timesteps=timesteps, sigmas=timesteps / 1000, mu=0.6)
    assert ours.sigmas is None  # nothing left behind
