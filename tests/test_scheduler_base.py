"""The shared scheduler base, proven through SigmaDDIMScheduler against diffusers' built-ins."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)

import diffusers_geo
from diffusers_geo import GeoScheduler, OptimalDenoiser, SigmaDDIMScheduler, load_scheduler
from diffusers_geo.testing import DDPM_BETAS as DDPM
from diffusers_geo.testing import SD_BETAS as SD


def gaussian_data_model(prediction_type="epsilon", **schedule):
    torch.manual_seed(0)
    images = torch.randn(6, 2, 4, 4) * 0.5 + 0.1
    return OptimalDenoiser.from_images(images, prediction_type=prediction_type, **schedule)


def run(scheduler, model, x, steps=None, **kwargs):
    """Manual pipeline loop; returns the final sample."""
    if steps is not None:
        scheduler.set_timesteps(steps)
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = model(scheduler.scale_model_input(x, t), t).sample
        x = scheduler.step(out, t, x, **kwargs).prev_sample
    return x


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("steps", [10, 20, 50])
@pytest.mark.parametrize("schedule", [SD, DDPM], ids=["sd", "ddpm"])
def test_sigma_ddim_equals_diffusers_ddim_trailing(prediction_type, steps, schedule):
    model = gaussian_data_model(prediction_type, **schedule)
    ref = DDIMScheduler(
        **schedule,
        prediction_type=prediction_type,
        timestep_spacing="trailing",
        set_alpha_to_one=True,
        clip_sample=False,
    )
    ours = SigmaDDIMScheduler.from_config(ref.config)
    ref.set_timesteps(steps)
    ours.set_timesteps(steps)
    np.testing.assert_array_equal(ref.timesteps.numpy(), ours.timesteps.numpy())
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    a, b = run(ref, model, x), run(ours, model, x)
    assert (a - b).abs().max() < 5e-6 * max(1.0, a.abs().max())


def test_sigma_min_final_equals_ddim_without_alpha_to_one():
    model = gaussian_data_model(**SD)
    ref = DDIMScheduler(**SD, timestep_spacing="trailing", set_alpha_to_one=False, clip_sample=False)
    ours = SigmaDDIMScheduler(**SD, timestep_spacing="trailing", final_sigmas_type="sigma_min")
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(run(ref, model, x, 10), run(ours, model, x, 10), atol=5e-6)


def test_float64_samples_stay_float64_and_match_closed_form_step():
    ours = SigmaDDIMScheduler(**SD)
    ours.set_timesteps(5)
    x = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    eps = torch.randn_like(x)
    out = ours.step(eps, ours.timesteps[0], x).prev_sample
    assert out.dtype == torch.float64
    s, s1 = ours.sigmas[0].item(), ours.sigmas[1].item()
    y = x * (1 + s**2) ** 0.5
    expected = (y + (s1 - s) * eps) / (1 + s1**2) ** 0.5  # y_next = y + (sigma_next - sigma) eps
    assert torch.allclose(out, expected, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_in_half_out(dtype):
    model = gaussian_data_model(**SD)
    ours = SigmaDDIMScheduler(**SD)
    x = torch.randn(2, 2, 4, 4).to(dtype)
    ours.set_timesteps(8)
    for t in ours.timesteps:
        step = ours.step(model(x.float(), t).sample.to(dtype), t, x)
        x = step.prev_sample
        assert x.dtype == dtype and step.pred_original_sample.dtype == dtype
    assert torch.isfinite(x).all()


# ------------------------------------------------------------------------------------------------
# config and loading
# ------------------------------------------------------------------------------------------------
def test_init_signature_is_explicit():
    params = inspect.signature(SigmaDDIMScheduler.__init__).parameters
    assert not any(p.kind == p.VAR_KEYWORD for p in params.values())
    base = [n for n in inspect.signature(GeoScheduler.__init__).parameters if n != "self"]
    assert set(base) <= set(params)
    assert set(base) == set(SigmaDDIMScheduler().config) - {"_use_default_values", "_class_name"}
    with pytest.raises(TypeError):
        SigmaDDIMScheduler(not_a_key=1)


@pytest.mark.parametrize(
    "source",
    [
        PNDMScheduler(**SD, steps_offset=1, skip_prk_steps=True, set_alpha_to_one=False),
        EulerDiscreteScheduler(**SD, timestep_spacing="leading", steps_offset=1, use_karras_sigmas=True),
        DDPMScheduler(**DDPM, variance_type="fixed_small", clip_sample=True),
        DDIMScheduler(
            **SD, prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing"
        ),
    ],
    ids=["sd15-pndm", "sdxl-euler", "ddpm", "zero-snr-v"],
)
def test_from_config_of_builtin_configs(source, tmp_path):
    ours = SigmaDDIMScheduler.from_config(source.config)
    for key in ("beta_schedule", "beta_start", "beta_end", "prediction_type", "num_train_timesteps"):
        assert ours.config[key] == source.config[key]
    assert torch.allclose(ours.alphas_cumprod[:-1], source.alphas_cumprod[:-1])
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "SigmaDDIMScheduler"
    back = SigmaDDIMScheduler.from_pretrained(tmp_path)
    assert {k: v for k, v in back.config.items() if k != "_use_default_values"} == {
        k: v for k, v in ours.config.items() if k != "_use_default_values"
    }
    # switching back to the source class loses nothing
    again = type(source).from_config(ours.config)
    for key, value in source.config.items():
        if key != "_use_default_values":
            assert again.config[key] == value, key
    ours.set_timesteps(7)
    assert torch.isfinite(ours.sigmas).all() and ours.sigmas[-1] == 0


def test_trained_betas_roundtrip(tmp_path):
    s = SigmaDDIMScheduler(trained_betas=[0.1, 0.3, 0.5], num_train_timesteps=3)
    s.save_pretrained(tmp_path)
    assert torch.equal(SigmaDDIMScheduler.from_pretrained(tmp_path).betas, s.betas)


def test_public_contract_attributes():
    s = load_scheduler("sigma-ddim", DDPMScheduler().config)
    assert isinstance(s, SigmaDDIMScheduler) and isinstance(s, diffusers_geo.SchedulerMixin)
    assert s.init_noise_sigma == 1.0 and len(s) == 1000 and s.order == 1
    x = torch.randn(1, 3, 4, 4)
    assert s.scale_model_input(x, 0.0) is x
    assert SigmaDDIMScheduler.__module__ == "diffusers_geo"
    assert "EulerDiscreteScheduler" in SigmaDDIMScheduler._compatibles
    with pytest.raises(ValueError, match="valid names"):
        load_scheduler("no-such-sampler")


# ------------------------------------------------------------------------------------------------
# schedules
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("steps", [1, 7, 10, 25])
def test_timestep_spacings_match_ddim(spacing, steps):
    ref = DDIMScheduler(**SD, timestep_spacing=spacing, steps_offset=1)
    ours = SigmaDDIMScheduler.from_config(ref.config)
    ref.set_timesteps(steps)
    ours.set_timesteps(steps)
    np.testing.assert_array_equal(ref.timesteps.numpy().astype(np.float32), ours.timesteps.numpy())
    assert len(ours.sigmas) == steps + 1 and ours.sigmas[-1] == 0


@pytest.mark.parametrize("option", ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"])
def test_sigma_respacing_matches_euler(option):
    ref = EulerDiscreteScheduler(**SD, **{option: True})
    ours = SigmaDDIMScheduler(**SD, **{option: True})
    ref.set_timesteps(12)
    ours.set_timesteps(12)
    assert torch.allclose(ref.sigmas.double(), ours.sigmas, rtol=1e-5)
    assert torch.allclose(ref.timesteps.double(), ours.timesteps.double(), atol=2e-3)


def test_sigma_min_max_overrides():
    ours = SigmaDDIMScheduler(**SD, use_karras_sigmas=True, sigma_min=0.1, sigma_max=10.0)
    ours.set_timesteps(5)
    assert ours.sigmas[0].item() == pytest.approx(10.0) and ours.sigmas[-2].item() == pytest.approx(0.1)


def test_custom_sigmas_and_timesteps():
    ours = SigmaDDIMScheduler(**SD)
    ours.set_timesteps(sigmas=[14.6, 5.0, 1.0, 0.1, 0.0])
    assert ours.num_inference_steps == 4 and ours.sigmas[-1] == 0
    euler = EulerDiscreteScheduler(**SD)
    euler.set_timesteps(sigmas=[14.6, 5.0, 1.0, 0.1, 0.0])
    assert torch.allclose(euler.timesteps.double(), ours.timesteps.double(), atol=1e-3)

    ours.set_timesteps(timesteps=[999, 749, 499, 249])
    assert ours.timesteps.tolist() == [999, 749, 499, 249]
    train = ((1 - ours.alphas_cumprod.double()) / ours.alphas_cumprod.double()).sqrt()
    assert torch.allclose(ours.sigmas[:-1], train[[999, 749, 499, 249]])


def test_custom_timesteps_give_same_result_as_default_schedule():
    model = gaussian_data_model(**SD)
    a, b = SigmaDDIMScheduler(**SD), SigmaDDIMScheduler(**SD)
    a.set_timesteps(6)
    b.set_timesteps(timesteps=a.timesteps.tolist())
    x = torch.randn(2, 2, 4, 4)
    assert torch.equal(run(a, model, x), run(b, model, x))


def test_sigma_to_timestep_roundtrip():
    s = SigmaDDIMScheduler(**SD)
    t = torch.tensor([0.0, 3.25, 500.5, 998.9])
    sig = s.parameterization.sigma_of(t)
    assert torch.allclose(s.parameterization.timestep_of(sig), t.double(), atol=1e-9)
    # fractional timesteps interpolate log sigma
    train = s.parameterization.train_sigmas
    assert sig[1].item() == pytest.approx(float(train[3] ** 0.75 * train[4] ** 0.25), rel=1e-12)


# ------------------------------------------------------------------------------------------------
# run state, indices, add_noise
# ------------------------------------------------------------------------------------------------
def test_set_timesteps_resets_state_and_runs_repeat():
    model = gaussian_data_model(**SD)
    s = SigmaDDIMScheduler(**SD)
    x = torch.randn(2, 2, 4, 4)
    first = run(s, model, x, 6)
    assert s.step_index == 6
    s.set_begin_index(2)
    s.set_timesteps(6)
    assert s.step_index is None and s.begin_index is None
    assert torch.equal(first, run(s, model, x))


def test_index_fallback_and_begin_index():
    s = SigmaDDIMScheduler(**SD, timestep_spacing="trailing")
    s.set_timesteps(10)
    assert s.index_for_timestep(torch.tensor(0.0)) == 9  # absent -> last index
    assert s.index_for_timestep(s.timesteps[3]) == 3
    s.set_begin_index(4)
    x = torch.randn(1, 1, 2, 2)
    s.step(torch.zeros_like(x), s.timesteps[4], x)
    assert s.step_index == 5


def test_add_noise_matches_ddpm_and_follows_indices():
    ddpm = DDPMScheduler(**SD)
    s = SigmaDDIMScheduler(**SD)
    x0, n = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([999, 500, 10])
    assert torch.allclose(s.add_noise(x0, n, t), ddpm.add_noise(x0, n, t), atol=1e-5)  # no schedule yet
    s.set_timesteps(10)
    t = s.timesteps[[0, 4, 9]]
    sig = s.sigmas[[0, 4, 9]].float().reshape(-1, 1, 1, 1)
    assert torch.allclose(s.add_noise(x0, n, t), (x0 + sig * n) / (1 + sig**2).sqrt(), atol=1e-6)
    # img2img: begin index picks the level, whatever timestep value is passed along
    s.set_begin_index(3)
    expected = (x0 + s.sigmas[3].item() * n) / (1 + s.sigmas[3].item() ** 2) ** 0.5
    assert torch.allclose(s.add_noise(x0, n, s.timesteps[3:4]), expected, atol=1e-6)
    # inpainting: after a step, the current step index
    s.step(torch.zeros_like(x0), s.timesteps[3], x0)
    expected = (x0 + s.sigmas[4].item() * n) / (1 + s.sigmas[4].item() ** 2) ** 0.5
    assert torch.allclose(s.add_noise(x0, n, s.timesteps[4:5]), expected, atol=1e-6)


def test_return_dict_false_and_velocity():
    s = SigmaDDIMScheduler(**SD)
    s.set_timesteps(4)
    x, e = torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2)
    out = s.step(e, s.timesteps[0], x)
    s.set_timesteps(4)
    tup = s.step(e, s.timesteps[0], x, return_dict=False)
    assert torch.equal(out.prev_sample, tup[0]) and torch.equal(out.pred_original_sample, tup[1])
    ddpm = DDPMScheduler(**SD)
    t = torch.tensor([10, 900])
    x2, e2 = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)
    assert torch.allclose(s.get_velocity(x2, e2, t), ddpm.get_velocity(x2, e2, t), atol=1e-5)


def test_zero_snr_is_finite_with_v_prediction():
    model = gaussian_data_model("v_prediction", **SD, rescale_betas_zero_snr=True)
    s = SigmaDDIMScheduler(
        **SD, prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing"
    )
    out = run(s, model, torch.randn(2, 2, 4, 4), 5)
    assert torch.isfinite(out).all()
    assert s.sigmas[0] > 1000


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prediction_type="flow"), "prediction_type"),
        (dict(timestep_spacing="uniform"), "timestep_spacing"),
        (dict(beta_schedule="cosine"), "beta_schedule"),
        (dict(final_sigmas_type="one"), "final_sigmas_type"),
        (dict(use_karras_sigmas=True, use_exponential_sigmas=True), "Only one"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SigmaDDIMScheduler(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_inference_steps=0), "between 1 and"),
        (dict(num_inference_steps=1001), "between 1 and"),
        (dict(num_inference_steps=10, timesteps=[999, 500]), "exactly one"),
        (dict(), "exactly one"),
        (dict(timesteps=[500, 999]), "strictly decreasing"),
        (dict(timesteps=[1500, 10]), "must lie in"),
        (dict(sigmas=[1.0, 5.0, 0.0]), "strictly decreasing"),
        (dict(sigmas=[5.0, 5.0, 0.0]), "strictly decreasing"),
        (dict(sigmas=[5.0, float("nan"), 0.0]), "NaN"),
        (dict(sigmas=[5.0]), "at least 2"),
    ],
)
def test_bad_set_timesteps(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SigmaDDIMScheduler().set_timesteps(**kwargs)


def test_bad_steps_count_type_and_karras_timesteps():
    with pytest.raises(TypeError):
        SigmaDDIMScheduler().set_timesteps(2.5)
    with pytest.raises(ValueError, match="karras"):
        SigmaDDIMScheduler(use_karras_sigmas=True).set_timesteps(timesteps=[999, 500])


def test_step_errors():
    s = SigmaDDIMScheduler()
    x = torch.randn(1, 1, 2, 2)
    with pytest.raises(ValueError, match="before set_timesteps"):
        s.step(x, 999, x)
    s.set_timesteps(3)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    s.step(x, s.timesteps[0], x)
    with pytest.raises(ValueError, match="step 1 .*NaN or inf"):
        s.step(bad, s.timesteps[1], x)
    s.set_timesteps(1)
    s.step(x, s.timesteps[0], x)
    with pytest.raises(ValueError, match="set_timesteps again"):
        s.step(x, s.timesteps[0], x)
    s.set_timesteps(1)
    with pytest.raises(ValueError, match="variance_noise"):
        s.step(x, s.timesteps[0], x, variance_noise=torch.randn(2, 2))


@pytest.mark.parametrize("bad_value", [float("inf"), float("-inf"), float("nan")])
def test_step_rejects_any_non_finite_output_but_not_large_half_outputs(bad_value):
    s = SigmaDDIMScheduler()
    s.set_timesteps(3)
    x = torch.randn(1, 4, 8, 8)
    bad = x.clone()
    bad[0, 1, 2, 3] = bad_value
    with pytest.raises(ValueError, match="step 0 .*NaN or inf"):
        s.step(bad, s.timesteps[0], x)
    # the check sums in float32: 256 float16 outputs at the float16 maximum must not read as overflow
    s.set_timesteps(3)
    big = torch.full((1, 4, 8, 8), 65504.0, dtype=torch.float16)
    out = s.step(big, s.timesteps[0], x.half()).prev_sample
    assert out.dtype == torch.float16
