"""Every public Python entry point names a bad argument, its value and what is expected, before any work
(issue 24, item 6): a table of (callable, bad keyword arguments, exception, substrings of the message)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import diffusers_geo as geo
from diffusers_geo.data import digits_images
from diffusers_geo.metrics import feature_frechet_distance, kernel_distance, psnr, rmse, ssim
from diffusers_geo.priors.mismatch import PriorMismatch
from diffusers_geo.sampling import flux_mu

SD = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
A, B = torch.randn(2, 3), torch.randn(2, 3)


def _never_called(*_args, **_kwargs):
    raise AssertionError("the model was called before the arguments were checked")


def _gits(**kwargs):
    args = {"scheduler_config": SD, "sample_shape": (1, 2, 2), "progress": False, **kwargs}
    return geo.gits_schedule(_never_called, args.pop("num_inference_steps", 3), **args)


def _schedule(**kwargs):
    fields = dict(
        sigmas=[1.0, 0.0],
        timesteps=[999.0],
        grid_indices=[0, 1],
        teacher_sigmas=[1.0, 0.0],
        coeff=1.2,
        metric="l2",
        grid="timesteps",
        num_warmup=4,
        model_calls=8,
        cost=0.1,
    )
    return geo.GITSSchedule(**{**fields, **kwargs})


def _prior(name):
    prior = geo.TruncatedPrior((1, 2, 2), rank=1, sigma=1.0)
    return lambda **kwargs: getattr(prior, name)(**kwargs)


def _scheduler():
    return geo.SigmaDDIMScheduler.from_config(SD)


def _truncated(**kwargs):
    return geo.truncated_schedule(_scheduler(), **{"num_inference_steps": 8, "sigma_start": 1.0, **kwargs})


def _mismatch(**kwargs):
    return geo.prior_mismatch(geo.TruncatedPrior((4,), rank=1), **{"sigmas": [1.0], **kwargs})


def _fit(**kwargs):
    return geo.TruncatedPrior.fit(torch.randn(20, 4), **kwargs)


def _pfgmpp_sample(**kwargs):
    return geo.PFGMPPPrior(8).sample(**{"num_samples": 2, "sigma_max": 1.0, **kwargs})


def _ode(**kwargs):
    return geo.solve_probability_flow_ode(**{"denoiser": _never_called, "y": A, "sigma_start": 1.0, **kwargs})


def _record(**kwargs):
    return geo.TrajectoryRecorder().record(**{"sigma": 1.0, "sample": A, "denoised": B, **kwargs})


def _interpolate(**kwargs):
    return geo.interpolate_latents(**{"a": A, "b": B, "num": 3, **kwargs})


def _pair(**kwargs):
    return {"a": torch.ones(4), "b": torch.tensor([1.0, 2.0, 1.0, 1.0]), "t": 0.5, **kwargs}


def _encode(**kwargs):
    return geo.encode_images(**{"images": torch.zeros(1, 3, 4, 4), "vae": None, **kwargs})


def _mixture(**kwargs):
    return geo.OptimalDenoiser.from_gaussian_mixture(
        **{"means": torch.zeros(2, 1, 2, 2), "variances": 0.1, **kwargs}
    )


IMAGES = np.zeros((1, 4, 4, 1))
CASES = [
    # gits_schedule and GITSSchedule
    (_gits, dict(teacher_steps="6"), TypeError, ["teacher_steps", "'6'"]),
    (_gits, dict(num_warmup=2.5), TypeError, ["num_warmup", "2.5"]),
    (_gits, dict(num_warmup=True), TypeError, ["num_warmup", "True"]),
    (_gits, dict(batch_size=0), ValueError, ["batch_size", "0"]),
    (_gits, dict(coeff=math.nan), ValueError, ["coeff", "nan"]),
    (_gits, dict(sample_shape=(0, 4)), ValueError, ["sample_shape", "(0, 4)"]),
    (_gits, dict(sample_shape="1x2"), TypeError, ["sample_shape", "'1x2'"]),
    (_gits, dict(scheduler_config=[1]), TypeError, ["scheduler_config", "[1]"]),
    (_gits, dict(analytic_first_step="yes"), TypeError, ["analytic_first_step", "'yes'"]),
    (_gits, dict(seed=1.5), TypeError, ["seed", "1.5"]),
    (_gits, dict(generator=0), TypeError, ["generator", "0"]),
    (_gits, dict(mu="1"), TypeError, ["mu", "'1'"]),
    (_gits, dict(num_inference_steps="3"), TypeError, ["num_inference_steps", "'3'"]),
    (_schedule, dict(coeff=-1.0), ValueError, ["coeff", "-1.0"]),
    (_schedule, dict(sigmas=[1.0, -0.5]), ValueError, ["sigmas", "-0.5"]),
    (_schedule, dict(metric="l1"), ValueError, ["metric", "'l1'"]),
    (_schedule, dict(num_warmup="4"), TypeError, ["num_warmup", "'4'"]),
    (lambda **k: _schedule().save(**k), dict(path=3), TypeError, ["path", "3"]),
    (lambda **k: _schedule().save_pretrained(**k), dict(save_directory=None), TypeError, ["save_directory"]),
    (geo.GITSSchedule.from_pretrained, dict(pretrained_model_name_or_path=5), TypeError, ["pretrained", "5"]),
    (
        lambda **k: geo.GITSSchedule.from_pretrained(".", **k),
        dict(subfolder=1),
        TypeError,
        ["subfolder", "1"],
    ),
    # priors
    (geo.TruncatedPrior, dict(rank=2.5), TypeError, ["rank", "2.5"]),
    (geo.TruncatedPrior, dict(rank=-1), ValueError, ["rank", "-1"]),
    (geo.TruncatedPrior, dict(num_components=0), ValueError, ["num_components", "0"]),
    (geo.TruncatedPrior, dict(sample_shape=(0, 4)), ValueError, ["sample_shape", "(0, 4)"]),
    (geo.TruncatedPrior, dict(sample_shape=()), ValueError, ["sample_shape", "()"]),
    (geo.TruncatedPrior, dict(sigma=math.inf), ValueError, ["sigma", "inf"]),
    (geo.TruncatedPrior, dict(sigma="1"), TypeError, ["sigma", "'1'"]),
    (_fit, dict(max_iter=0), ValueError, ["max_iter", "0"]),
    (_fit, dict(rank="1"), TypeError, ["rank", "'1'"]),
    (_prior("sample"), dict(num_samples=2.0), TypeError, ["num_samples", "2.0"]),
    (_prior("sample"), dict(num_samples=2, sigma=-1.0), ValueError, ["sigma", "-1.0"]),
    (_prior("log_prob"), dict(y=[1.0, 2.0]), TypeError, ["y", "list"]),
    (_prior("truncated_schedule"), dict(scheduler=None, num_inference_steps="8"), TypeError, ["'8'"]),
    (_prior("initial_latents"), dict(scheduler=None, batch_size=0), ValueError, ["batch_size", "0"]),
    (geo.PFGMPPPrior, dict(augmented_dim="2048"), TypeError, ["augmented_dim", "'2048'"]),
    (geo.PFGMPPPrior, dict(augmented_dim=-3.0), ValueError, ["augmented_dim", "-3.0"]),
    (geo.PFGMPPPrior, dict(augmented_dim=8, sample_shape=(2, 0)), ValueError, ["sample_shape", "(2, 0)"]),
    (_pfgmpp_sample, dict(shape=(1, -2)), ValueError, ["shape", "(1, -2)"]),
    (_pfgmpp_sample, dict(num_samples="2"), TypeError, ["num_samples", "'2'"]),
    (_pfgmpp_sample, dict(sigma_max=math.inf), ValueError, ["sigma_max", "inf"]),
    (_truncated, dict(num_inference_steps=2.5), TypeError, ["num_inference_steps", "2.5"]),
    (_truncated, dict(sigma_start=math.nan), ValueError, ["sigma_start", "nan"]),
    (_truncated, dict(mu="0.5"), TypeError, ["mu", "'0.5'"]),
    (
        geo.truncated_schedule,
        dict(scheduler="ddim", num_inference_steps=8, sigma_start=1.0),
        TypeError,
        ["str"],
    ),
    (
        geo.truncated_sigmas,
        dict(scheduler_or_config=3, num_inference_steps=8, sigma_start=1.0),
        TypeError,
        ["scheduler_or_config", "3"],
    ),
    (
        geo.truncated_sigmas,
        dict(scheduler_or_config=SD, num_inference_steps=0, sigma_start=1.0),
        ValueError,
        ["num_inference_steps", "0"],
    ),
    (_mismatch, dict(sigmas="1"), TypeError, ["sigmas", "'1'"]),
    (_mismatch, dict(sigmas=[]), ValueError, ["sigmas", "empty"]),
    (_mismatch, dict(sigmas=[0.0]), ValueError, ["sigmas", "0.0"]),
    (_mismatch, dict(num_samples=0), ValueError, ["num_samples", "0"]),
    (_mismatch, dict(noise_prior_kind="edm"), ValueError, ["noise_prior_kind", "'edm'"]),
    (geo.plot_prior_mismatch, dict(rows=[]), ValueError, ["rows", "empty"]),
    (geo.plot_prior_mismatch, dict(rows=[PriorMismatch(1.0, 0.1, 0.0)], path=3), TypeError, ["path", "3"]),
    (geo.plot_prior_mismatch, dict(rows=[1.0]), TypeError, ["rows", "1.0"]),
    (_encode, dict(), TypeError, ["vae", "NoneType"]),
    (_encode, dict(images=[1.0]), TypeError, ["images", "list"]),
    (_encode, dict(images=torch.zeros(3, 4, 4)), ValueError, ["images", "(3, 4, 4)"]),
    (_encode, dict(batch_size=0), ValueError, ["batch_size", "0"]),
    (_encode, dict(max_images=1.5), TypeError, ["max_images", "1.5"]),
    # models
    (geo.OptimalDenoiser, dict(num_components=1.5), TypeError, ["num_components", "1.5"]),
    (geo.OptimalDenoiser, dict(sample_size=(0, 8)), ValueError, ["sample_size", "(0, 8)"]),
    (geo.OptimalDenoiser, dict(in_channels="3"), TypeError, ["in_channels", "'3'"]),
    (geo.OptimalDenoiser, dict(beta_end=1.5), ValueError, ["beta_end", "1.5"]),
    (geo.OptimalDenoiser, dict(rescale_betas_zero_snr=1), TypeError, ["rescale_betas_zero_snr", "1"]),
    (geo.OptimalDenoiser.from_images, dict(images="digits"), TypeError, ["images", "'digits'"]),
    (_mixture, dict(variances="0.1"), TypeError, ["variances", "'0.1'"]),
    (_mixture, dict(weights="uniform"), TypeError, ["weights", "'uniform'"]),
    (lambda **k: geo.OptimalDenoiser().sample_data(**k), dict(n=0), ValueError, ["n", "0"]),
    (geo.load_default_pipeline, dict(dtype="float16"), TypeError, ["dtype", "'float16'"]),
    (geo.load_default_pipeline, dict(device=0.5), TypeError, ["device", "0.5"]),
    # the exact PF-ODE solve
    (_ode, dict(y=[1.0]), TypeError, ["y", "list"]),
    (_ode, dict(y=torch.ones(3)), ValueError, ["y", "(3,)"]),
    (_ode, dict(sigma_start="1"), TypeError, ["sigma_start", "'1'"]),
    (_ode, dict(rtol=-1.0), ValueError, ["rtol", "-1.0"]),
    (_ode, dict(max_steps=1.5), TypeError, ["max_steps", "1.5"]),
    (_ode, dict(denoiser=None), TypeError, ["denoiser", "NoneType"]),
    # diagnostics
    (geo.TrajectoryRecorder, dict(max_dim=2.5), TypeError, ["max_dim", "2.5"]),
    (geo.TrajectoryRecorder, dict(max_records=1), ValueError, ["max_records", "1"]),
    (geo.TrajectoryRecorder, dict(seed="0"), TypeError, ["seed", "'0'"]),
    (_record, dict(sigma="1"), TypeError, ["sigma", "'1'"]),
    (_record, dict(sample=[1.0]), TypeError, ["sample", "list"]),
    (_interpolate, dict(num=2.0), TypeError, ["num", "2.0"]),
    (_interpolate, dict(num=1), ValueError, ["num", "1"]),
    (_interpolate, dict(method="cubic"), ValueError, ["method", "'cubic'"]),
    (_interpolate, dict(method="norm-lerp", radius=-1.0), ValueError, ["radius", "-1.0"]),
    (_interpolate, dict(a=[1.0]), TypeError, ["a", "list"]),
    (geo.slerp, _pair(t=1.5), ValueError, ["t", "1.5"]),
    (geo.slerp, _pair(t="0.5"), TypeError, ["t", "'0.5'"]),
    (geo.slerp, _pair(dot_threshold=2.0), ValueError, ["dot_threshold", "2.0"]),
    (geo.norm_preserving_lerp, _pair(t=math.nan), ValueError, ["t", "nan"]),
    (geo.norm_preserving_lerp, _pair(radius="1"), TypeError, ["radius", "'1'"]),
    (geo.shell_radius, dict(dim=0), ValueError, ["dim", "0"]),
    (geo.shell_radius, dict(dim=(4, 0)), ValueError, ["dim", "(4, 0)"]),
    (geo.shell_radius, dict(dim=2.5), TypeError, ["dim", "2.5"]),
    (geo.shell_radius, dict(dim=4, sigma=-1.0), ValueError, ["sigma", "-1.0"]),
    # data, metrics and the sampling helpers
    (digits_images, dict(size=0), ValueError, ["size", "0"]),
    (digits_images, dict(size="8"), TypeError, ["size", "'8'"]),
    (rmse, dict(samples=[1.0], reference=A), TypeError, ["samples", "list"]),
    (rmse, dict(samples=A, reference=torch.zeros(2, 4)), ValueError, ["samples and reference", "(2, 4)"]),
    (ssim, dict(images=IMAGES, reference=IMAGES, window=0), ValueError, ["window", "0"]),
    (ssim, dict(images=IMAGES, reference=IMAGES, sigma=0.0), ValueError, ["sigma", "0.0"]),
    (psnr, dict(images=np.zeros((4, 4)), reference=np.zeros((4, 4))), ValueError, ["images", "(4, 4)"]),
    (feature_frechet_distance, dict(features=A, reference=torch.randn(2, 5)), ValueError, ["(2, 5)"]),
    (kernel_distance, dict(features=A[:1], reference=B), ValueError, ["features", "N >= 2"]),
    (flux_mu, dict(config={}, image_seq_len=0), ValueError, ["image_seq_len", "0"]),
    (flux_mu, dict(config=None), TypeError, ["config", "None"]),
]


@pytest.mark.parametrize(
    ("function", "kwargs", "error", "parts"),
    CASES,
    ids=[f"{i}-{'-'.join(c[1])}" for i, c in enumerate(CASES)],
)
def test_a_bad_argument_is_named_with_its_value(function, kwargs, error, parts):
    with pytest.raises(error) as caught:
        function(**kwargs)
    message = str(caught.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_the_sampling_helpers_and_evaluation_check_before_sampling(monkeypatch):
    from diffusers_geo import evaluation
    from diffusers_geo.sampling import run_pipeline, set_timesteps, steps_for_nfe

    scheduler = _scheduler()
    with pytest.raises(TypeError, match="steps must be an int.*'8'"):
        set_timesteps(scheduler, "8")
    with pytest.raises(ValueError, match="nfe must be an int >= 1, got 0"):
        steps_for_nfe(scheduler, 0)
    with pytest.raises(TypeError, match="seeds must be a non-empty sequence of ints.*1.5"):
        run_pipeline(None, scheduler, 4, [1.5])
    monkeypatch.setattr(evaluation, "run_pipeline", _never_called)
    pipe = geo.load_default_pipeline()
    for kwargs, error, match in [
        (dict(num_images=2.0), TypeError, "num_images.*2.0"),
        (dict(nfe="5"), TypeError, "nfe.*'5'"),
        (dict(grid_images=-1), ValueError, "grid_images.*-1"),
        (dict(features="clip"), ValueError, "features 'clip'"),
        (dict(schedulers=[1]), TypeError, r"schedulers.*\[1\]"),
        (dict(progress="no"), TypeError, "progress.*'no'"),
        (dict(prompts=[3]), TypeError, r"prompts.*\[3\]"),
    ]:
        with pytest.raises(error, match=match):
            evaluation.evaluate_schedulers(pipe, **{"schedulers": "sigma-ddim", "nfe": [5], **kwargs})


def test_valid_values_still_pass_the_checks():
    """The checks take what the entry points took before them: numpy and 0-d tensor numbers, lists as
    shapes, math.inf as the PFGMPP Gaussian limit, None where optional."""
    assert geo.shell_radius(np.int64(4), sigma=np.float32(2.0)) == 4.0
    assert geo.PFGMPPPrior(math.inf, sample_shape=[1, 2]).sample_shape == (1, 2)
    prior = geo.TruncatedPrior([1, 2, 2], rank=np.int64(1), sigma=0.5)
    assert prior.sample(2, sigma=torch.tensor(1.0, dtype=torch.float64)).shape == (2, 1, 2, 2)
    assert geo.interpolate_latents(A, B, np.int64(3)).shape == (3, 2, 3)
    assert _schedule(mu=None, coeff=np.float64(1.0)).num_inference_steps == 1
