"""Fitted priors for a truncated start (Franzese et al., arXiv 2206.05173) and the PFGM++ prior.

The sampler tests use the exact optimal denoiser of a Gaussian mixture whose mean is far from 0, so the
noise prior ``N(0, (1 + sigma^2) I)`` is visibly wrong at SD's sigma_max ~ 14.6 and a deterministic sampler
inherits that as an error floor; the fitted prior must remove it, and a truncated start must save steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from diffusers_geo import OptimalDenoiser, SigmaDDIMScheduler
from diffusers_geo.metrics import frechet_distance
from diffusers_geo.priors import (
    PFGMPPPrior,
    TruncatedPrior,
    encode_images,
    plot_prior_mismatch,
    prior_mismatch,
    schedule_start,
    truncated_schedule,
    truncated_sigmas,
)
from diffusers_geo.priors.fitting import FactorMixture, fit_factor_mixture, gaussian_kl, monte_carlo_kl
from diffusers_geo.sampling import sample
from diffusers_geo.schedules import karras_sigmas, spaced_timesteps
from diffusers_geo.testing import SD_BETAS as SD

SHAPE = (1, 4, 4)  # d = 16


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def mixture_model() -> OptimalDenoiser:
    """Three well-separated components whose mean is about 2 per pixel (the noise prior assumes 0)."""
    means = 2.0 + 1.5 * torch.randn(3, *SHAPE, generator=seeded(0), dtype=torch.float64)
    return OptimalDenoiser.from_gaussian_mixture(means, 0.05, **SD).double()


@pytest.fixture(scope="module")
def fitted(mixture_model):
    data, _ = mixture_model.sample_data(2000, seeded(1))
    return data, TruncatedPrior.fit(data, num_components=3, rank=0, generator=seeded(2))


def frechet_to_model(samples: torch.Tensor, model: OptimalDenoiser) -> float:
    flat = samples.reshape(len(samples), -1).to(torch.float64)
    return frechet_distance(flat.mean(0), torch.cov(flat.T), model.data_mean(), model.data_covariance())


def run_sampler(scheduler, model, latents: torch.Tensor, **set_timesteps_kwargs) -> tuple[torch.Tensor, int]:
    """A pipeline's loop (latents * init_noise_sigma, scale_model_input, step) with counted model calls."""
    scheduler.set_timesteps(**set_timesteps_kwargs)
    out, calls, _ = sample(scheduler, model, latents, None)
    return out, calls


# ------------------------------------------------------------------------------------------------
# fitting
# ------------------------------------------------------------------------------------------------
def test_fitted_gaussian_recovers_mean_and_low_rank_plus_diagonal_covariance():
    g = seeded(0)
    d, r = 12, 2
    factors = torch.randn(d, r, generator=g, dtype=torch.float64)
    psi = 0.05 + 0.3 * torch.rand(d, generator=g, dtype=torch.float64)
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    cov = factors @ factors.T + torch.diag(psi)
    x = mean + torch.randn(3000, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    prior = TruncatedPrior.fit(x, num_components=1, rank=r, max_iter=200, generator=g)
    fit = prior.mixture()
    sample_cov_error = float((torch.cov(x.T) - cov).norm() / cov.norm())
    assert float((fit.covariance() - cov).norm() / cov.norm()) < 1.5 * sample_cov_error + 1e-3
    assert torch.allclose(fit.mean(), x.mean(0), atol=1e-10)
    assert float((fit.variances[0] - psi).abs().max()) < 0.05  # the diagonal part itself is identified
    ll = prior.fit_info.log_likelihood
    assert all(b >= a - 1e-9 for a, b in zip(ll, ll[1:], strict=False)), "EM must not decrease the likelihood"
    # rank 0: a diagonal Gaussian, i.e. the per-coordinate sample variances
    diag = TruncatedPrior.fit(x, num_components=1, rank=0).mixture()
    assert torch.allclose(diag.variances[0], x.var(0, unbiased=False), rtol=1e-10)


def test_mixture_prior_sample_moments_match_data_and_noise_convolution(mixture_model, fitted):
    data, prior = fitted
    flat = data.reshape(len(data), -1)
    assert sorted(prior.mixture().weights.tolist()) == pytest.approx(
        sorted(
            (
                torch.bincount(mixture_model.log_responsibilities(flat, 1e-3).argmax(1), minlength=3) / 2000
            ).tolist()
        ),
        abs=1e-6,
    )
    n, sigma = 40000, 1.5
    draws = prior.sample(n, sigma=sigma, generator=seeded(3)).reshape(n, -1)
    target_cov = torch.cov(flat.T) + sigma**2 * torch.eye(flat.shape[1], dtype=torch.float64)
    stderr = math.sqrt(float(target_cov.diagonal().max()) / n)
    assert float((draws.mean(0) - flat.mean(0)).abs().max()) < 5 * stderr
    assert float((torch.cov(draws.T) - target_cov).norm() / target_cov.norm()) < 0.02
    # EM's fixed point: the fitted mixture has the data's mean and per-coordinate variances exactly
    fit = prior.mixture(sigma)
    assert torch.allclose(fit.mean(), flat.mean(0), atol=1e-8)
    biased = torch.cov(flat.T, correction=0).diagonal() + sigma**2
    assert torch.allclose(fit.covariance().diagonal(), biased, atol=1e-8)


def test_fit_accepts_batches_and_an_image_folder(tmp_path):
    x = torch.randn(60, 2, 3, 3, generator=seeded(0), dtype=torch.float64)
    whole = TruncatedPrior.fit(x, 2, 1, generator=seeded(1))
    batches = TruncatedPrior.fit([(x[i : i + 16], None) for i in range(0, 60, 16)], 2, 1, generator=seeded(1))
    for name, buffer in whole.state_dict().items():
        assert torch.equal(buffer, batches.state_dict()[name]), name

    from PIL import Image

    from diffusers_geo.testing import tiny_sd_pipeline

    vae = tiny_sd_pipeline().vae
    pixels = torch.rand(6, 16, 16, 3, generator=seeded(2))
    for i, image in enumerate(pixels):
        Image.fromarray((image.numpy() * 255).round().astype(np.uint8)).save(tmp_path / f"{i}.png")
    prior = TruncatedPrior.fit(tmp_path, num_components=1, rank=2, vae=vae)
    assert prior.sample_shape == (4, 8, 8)
    latents = encode_images(tmp_path, vae)
    assert latents.shape == (6, 4, 8, 8)
    assert torch.allclose(prior.mixture().mean(), latents.flatten(1).mean(0), atol=1e-8)


# ------------------------------------------------------------------------------------------------
# the premise and the gain, on the exact denoiser
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheduler_cls", [SigmaDDIMScheduler, DPMSolverMultistepScheduler])
def test_fitted_prior_removes_the_noise_prior_error_floor(mixture_model, fitted, scheduler_cls):
    _, prior = fitted
    prior = prior.with_sigma(None)  # start wherever the schedule starts: sigma_max
    n, steps = 2000, 50
    noise = torch.randn(n, *SHAPE, generator=seeded(4), dtype=torch.float64)
    exact, _ = mixture_model.sample_data(n, seeded(5))
    floor = frechet_to_model(exact, mixture_model)  # finite-sample floor of the metric

    scheduler = scheduler_cls.from_config(SD)
    from_noise, _ = run_sampler(scheduler, mixture_model, noise, num_inference_steps=steps)
    latents = prior.initial_latents(
        scheduler, n, generator=seeded(4), dtype=torch.float64, num_inference_steps=steps
    )
    from_prior, _ = run_sampler(scheduler, mixture_model, latents, num_inference_steps=steps)
    error_noise = frechet_to_model(from_noise, mixture_model)
    error_prior = frechet_to_model(from_prior, mixture_model)
    assert error_noise > 4 * floor  # the premise: a floor from the prior mismatch, not from the steps
    assert error_prior < 0.35 * error_noise
    assert error_prior < 2 * floor + 0.02


def test_truncated_start_reaches_the_noise_error_with_fewer_steps(mixture_model, fitted):
    _, prior = fitted
    n = 1000
    noise = torch.randn(n, *SHAPE, generator=seeded(6), dtype=torch.float64)

    def error(steps: int, start: str | float) -> tuple[float, int]:
        scheduler = SigmaDDIMScheduler.from_config(SD)
        if start == "noise":
            out, calls = run_sampler(scheduler, mixture_model, noise, num_inference_steps=steps)
        else:
            sigma_t = None if start == "sigma_max" else start
            this = prior.with_sigma(sigma_t)
            schedule = this.truncated_schedule(scheduler, steps) if sigma_t else None
            kwargs = schedule.pipeline_kwargs if schedule else {"num_inference_steps": steps}
            latents = this.initial_latents(scheduler, n, generator=seeded(6), dtype=torch.float64, **kwargs)
            out, calls = run_sampler(scheduler, mixture_model, latents, **kwargs)
        return frechet_to_model(out, mixture_model), calls

    truncated, calls = error(5, 0.5)
    assert calls == 5
    assert truncated < error(20, "noise")[0]  # 5 model calls from sigma_T = 0.5 beat 20 from sigma_max
    assert truncated < error(10, "sigma_max")[0]  # and 10 from the same prior at sigma_max


# ------------------------------------------------------------------------------------------------
# the schedule and the latents
# ------------------------------------------------------------------------------------------------
def test_truncated_schedule_for_our_schedulers_and_builtins():
    geo = SigmaDDIMScheduler.from_config(SD)
    sigmas = truncated_sigmas(geo, 6, 3.0)
    assert len(sigmas) == 7 and sigmas[0] == pytest.approx(3.0) and sigmas[-1] == 0
    assert (sigmas[1:] < sigmas[:-1]).all()
    # linspace spacing: the scheduler's own (integer) timesteps scaled onto [0, t(3.0)]
    t = geo.parameterization.timestep_of(sigmas[:-1])
    full = torch.from_numpy(spaced_timesteps(6, 1000, "linspace"))
    assert torch.allclose(t, full * (float(t[0]) / float(full[0])), atol=1e-6)
    # Karras spacing: the same rho = 7 ramp ending at sigma_T
    karras = SigmaDDIMScheduler.from_config(SD, use_karras_sigmas=True)
    ks = truncated_sigmas(karras, 6, 3.0)
    assert torch.allclose(ks[:-1], karras_sigmas(karras.parameterization.sigma_min, 3.0, 6), rtol=1e-12)
    # the config form and the scheduler's own set_timesteps agree
    assert torch.equal(truncated_sigmas(geo.config, 6, 3.0), sigmas)
    geo.set_timesteps(sigmas=sigmas)
    assert float(geo.sigmas[0]) == pytest.approx(3.0)

    euler = truncated_schedule(EulerDiscreteScheduler.from_config(SD), 6, 3.0)
    assert set(euler.pipeline_kwargs) == {"sigmas"} and euler.sigma_start == pytest.approx(3.0, rel=1e-6)
    dpm = truncated_schedule(DPMSolverMultistepScheduler.from_config(SD), 6, 3.0)
    assert set(dpm.pipeline_kwargs) == {"timesteps"} and dpm.sigma_start == pytest.approx(3.0, rel=0.02)
    dpm_karras = truncated_schedule(
        DPMSolverMultistepScheduler.from_config(SD, use_karras_sigmas=True), 6, 3.0
    )
    assert dpm_karras.pipeline_kwargs == {"num_inference_steps": 6}
    assert dpm_karras.sigma_start == pytest.approx(3.0, rel=1e-6)
    with pytest.raises(ValueError, match="cannot start"):
        truncated_schedule(DDIMScheduler.from_config(SD), 6, 3.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), 15.0])
def test_truncated_schedule_rejects_bad_sigma(bad):
    with pytest.raises(ValueError, match="sigma_start"):
        truncated_schedule(SigmaDDIMScheduler.from_config(SD), 5, bad)


def test_initial_latents_give_every_scheduler_the_same_first_model_input(fitted):
    _, prior = fitted
    prior = prior.with_sigma(2.0)
    inputs = []
    for scheduler in (
        SigmaDDIMScheduler.from_config(SD),
        EulerDiscreteScheduler.from_config(SD),
        EulerDiscreteScheduler.from_config(SD, timestep_spacing="leading"),
    ):
        schedule = prior.truncated_schedule(scheduler, 4)
        latents = prior.initial_latents(schedule, 3, generator=seeded(7), dtype=torch.float64)
        s = schedule.scheduler
        s.set_timesteps(**schedule.pipeline_kwargs)
        inputs.append(s.scale_model_input(latents * s.init_noise_sigma, s.timesteps[0]))
    y = prior.sample(3, generator=seeded(7))
    expected = y / math.sqrt(1 + 2.0**2)  # x = alpha(sigma_T) * y
    for model_input in inputs:
        assert torch.allclose(model_input, expected, rtol=1e-5, atol=1e-6)
    start = schedule_start(SigmaDDIMScheduler.from_config(SD), num_inference_steps=4)
    assert start.sigma == pytest.approx(SigmaDDIMScheduler.from_config(SD).parameterization.sigma_max)


def test_prior_in_a_stable_diffusion_pipeline():
    from diffusers_geo.testing import tiny_sd_pipeline

    pipe = tiny_sd_pipeline(scheduler=SigmaDDIMScheduler)
    latents_data = torch.randn(40, 4, 8, 8, generator=seeded(8)) * 0.8 + 0.3
    prior = TruncatedPrior.fit(latents_data, num_components=2, rank=2, sigma=2.5, generator=seeded(8))
    schedule = prior.truncated_schedule(pipe.scheduler, 3)
    pipe.scheduler = schedule.scheduler
    latents = prior.initial_latents(schedule, 2, generator=seeded(9))
    seen = []
    pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(args[1].reshape(-1)[0].item()))
    out = pipe(
        "a", num_images_per_prompt=2, latents=latents, output_type="latent", **schedule.pipeline_kwargs
    )
    assert out.images.shape == (2, 4, 8, 8) and len(seen) == 3
    assert float(pipe.scheduler.sigmas[0]) == pytest.approx(2.5)
    assert seen[0] == pytest.approx(
        float(pipe.scheduler.parameterization.timestep_of(torch.tensor([2.5]))[0]), abs=1e-3
    )
    with pytest.raises(ValueError, match="shape"):
        prior.initial_latents(schedule, shape=(2, 4, 16, 16))
    with pytest.raises(ValueError, match="sigma_T"):
        prior.initial_latents(pipe.scheduler, 2, num_inference_steps=3)  # would start at sigma_max


# ------------------------------------------------------------------------------------------------
# the diagnostic
# ------------------------------------------------------------------------------------------------
def test_gaussian_kl_closed_form_against_dense_and_monte_carlo():
    g = seeded(0)
    d = 10
    args = []
    for r in (3, 2):
        args += [
            torch.randn(d, generator=g, dtype=torch.float64),
            torch.randn(d, r, generator=g, dtype=torch.float64),
        ]
        args.append(0.1 + torch.rand(d, generator=g, dtype=torch.float64))
    mp, wp, vp, mq, wq, vq = args
    dense = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(mp, wp @ wp.T + torch.diag(vp)),
        torch.distributions.MultivariateNormal(mq, wq @ wq.T + torch.diag(vq)),
    )
    assert gaussian_kl(mp, wp, vp, mq, wq, vq) == pytest.approx(float(dense), rel=1e-10)
    p = FactorMixture(torch.zeros(1, dtype=torch.float64), mp[None], wp[None], vp[None])
    q = FactorMixture(torch.zeros(1, dtype=torch.float64), mq[None], wq[None], vq[None])
    estimate, stderr = monte_carlo_kl(p, q, 20000, g)
    assert abs(estimate - float(dense)) < 4 * stderr


def test_prior_mismatch_shrinks_with_sigma_and_the_mixture_leaves_less(mixture_model, fitted, tmp_path):
    data, mixture_prior = fitted
    gaussian_prior = TruncatedPrior.fit(data, num_components=1, rank=4)
    sigmas = [0.5, 2.0, 14.6]
    rows_g = prior_mismatch(
        gaussian_prior, sigmas, reference=mixture_model, num_samples=2000, generator=seeded(10)
    )
    rows_m = prior_mismatch(
        mixture_prior, sigmas, reference=mixture_model, num_samples=2000, generator=seeded(10)
    )
    kl_noise = [r.kl_noise for r in rows_g]
    assert kl_noise[0] > kl_noise[1] > kl_noise[2] > 0 and rows_g[0].kl_noise_stderr == 0  # closed form
    for rg, rm in zip(rows_g, rows_m, strict=True):
        assert rm.kl_remaining < rg.kl_remaining + 3 * rg.kl_remaining_stderr
        assert rm.kl_remaining < 0.1 * rm.kl_reference_noise
    assert rows_m[0].kl_remaining < 0.2 * rows_g[0].kl_remaining  # at small sigma the mixture matters
    # the noise prior's mismatch at sigma_max is the floor of the premise: clearly above zero
    assert rows_m[-1].kl_reference_noise > 10 * rows_m[-1].kl_reference_noise_stderr
    plot_prior_mismatch(rows_g, tmp_path / "mismatch.png")
    assert (tmp_path / "mismatch.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------------
# PFGM++
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("augmented_dim", [1, 8, 128])
def test_pfgmpp_radius_follows_the_beta_prime_law(augmented_dim):
    from scipy import stats

    prior = PFGMPPPrior(augmented_dim, sample_shape=(4, 2, 2))
    draws = prior.sample(3000, sigma_max=5.0, generator=seeded(11))
    radii = draws.flatten(1).norm(dim=1).numpy()
    assert stats.kstest(radii, lambda r: prior.radius_cdf(r, 16, 5.0)).pvalue > 0.01
    directions = draws.flatten(1) / draws.flatten(1).norm(dim=1, keepdim=True)
    assert float(directions.mean(0).abs().max()) < 4 / math.sqrt(3000)  # uniform on the sphere


def test_pfgmpp_tends_to_the_gaussian_for_large_d():
    from scipy import stats

    chi = stats.chi(16, scale=5.0).cdf
    statistics = []
    for augmented_dim in (4, 64, 1024, 10**7):
        radii = PFGMPPPrior(augmented_dim).radii(3000, 16, 5.0, seeded(12)).numpy()
        statistics.append(stats.kstest(radii, chi).statistic)
    assert statistics == sorted(statistics, reverse=True)
    assert stats.kstest(PFGMPPPrior(10**7).radii(3000, 16, 5.0, seeded(13)).numpy(), chi).pvalue > 0.01
    gaussian = PFGMPPPrior(math.inf).sample(5, 5.0, shape=(16,), generator=seeded(14))
    assert torch.equal(gaussian, 5.0 * torch.randn(5, 16, generator=seeded(14), dtype=torch.float64))


def test_pfgmpp_latents_for_a_karras_scheduler():
    scheduler = EulerDiscreteScheduler.from_config(SD, use_karras_sigmas=True)
    prior = PFGMPPPrior(128, sample_shape=(4, 2, 2))
    latents = prior.initial_latents(scheduler, 3, generator=seeded(15), num_inference_steps=8)
    scheduler.set_timesteps(8)
    y = prior.sample(3, float(scheduler.sigmas[0]), generator=seeded(15))
    assert torch.allclose(latents.double() * scheduler.init_noise_sigma, y, rtol=1e-5)  # Euler's sample is y
    with pytest.raises(ValueError, match="augmented_dim"):
        PFGMPPPrior(0)
    with pytest.raises(ValueError, match="sigma_max"):
        prior.sample(2, sigma_max=0.0)
    with pytest.raises(ValueError, match="shape"):
        PFGMPPPrior(128).sample(2, 1.0)


# ------------------------------------------------------------------------------------------------
# the benchmark option (diffusers-geo bench --prior / --sigma-start)
# ------------------------------------------------------------------------------------------------
def test_bench_start_option():
    from diffusers_geo.bench import digits_mixture, load_config
    from diffusers_geo.bench.quality import common_noise, run_quality
    from diffusers_geo.bench.start import make_start
    from diffusers_geo.registry import make_scheduler

    config = load_config("sd")
    model = digits_mixture(config, size=4)  # d = 16
    noise = common_noise(model, 0, 64)
    default = make_start(model)
    scheduler = make_scheduler("dpmpp-2m", config)
    assert default.prepare(scheduler, 5, noise, 0) == (scheduler, noise)

    start = make_start(model, "gmm", 4.0)
    assert start.prior.config.num_components == 10 and start.prior.config.sigma == 4.0
    for name in ("sigma-ddim", "dpmpp-2m", "unipc-karras"):
        scheduler, latents = start.prepare(make_scheduler(name, config), 5, noise, 0)
        assert len(scheduler.timesteps) == 5
        sigma_start = float(scheduler.sigmas[0])
        assert sigma_start == pytest.approx(4.0, rel=0.02)  # integer timesteps round it
        # the pipeline's first model input is alpha * y with y the prior's draws at the actual start
        x = scheduler.scale_model_input(latents * scheduler.init_noise_sigma, scheduler.timesteps[0])
        y = start.prior.sample(64, sigma_start, torch.Generator().manual_seed(40_000))
        assert torch.allclose(x.double() * math.sqrt(1 + sigma_start**2), y, rtol=1e-6, atol=1e-6)
    runs, summaries = run_quality(model, config, ["sigma-ddim"], [5], [0], 64, progress=False, start=start)
    assert runs[0].nfe == 5 and runs[0].rmse is not None
    floor = start.floors(model, [0], 64)
    assert floor[0].sampler.startswith("exact PF-ODE from gmm") and "fd" in floor[0].metrics
    with pytest.raises(ValueError, match="gits"):
        start.prepare(make_scheduler("sigma-ddim", config), 5, noise, 0, gits=True)
    with pytest.raises(ValueError, match="sigma-start"):
        make_start(model, "gmm", 100.0)
    with pytest.raises(ValueError, match="--prior"):
        make_start(model, "flow")


def test_bench_cli_prior_flags(tmp_path, capsys):
    from diffusers_geo.cli import main

    args = ["bench", "--schedulers", "sigma-ddim", "--nfe", "3", "--seeds", "1", "--samples", "32"]
    args += ["--size", "4", "--no-progress", "--out", str(tmp_path)]
    assert main(args + ["--prior", "gaussian", "--sigma-start", "4"]) == 0
    text = capsys.readouterr().out
    assert "start=gaussian@sigma_T=4" in text and "| exact PF-ODE from gaussian at sigma=4 |" in text
    with pytest.raises(SystemExit):
        main(args + ["--prior", "gmm", "--sigma-start", "1000"])  # above sigma_max


# ------------------------------------------------------------------------------------------------
# persistence and errors
# ------------------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path, fitted):
    _, prior = fitted
    prior = prior.with_sigma(2.0)
    prior.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (
        tmp_path / "diffusion_pytorch_model.safetensors"
    ).is_file()
    back = TruncatedPrior.from_pretrained(tmp_path)
    assert back.config.sigma == 2.0 and back.sample_shape == prior.sample_shape
    for name, buffer in prior.state_dict().items():
        assert back.state_dict()[name].dtype == torch.float64
        assert torch.equal(back.state_dict()[name], buffer), name
    assert torch.equal(back.sample(4, generator=seeded(16)), prior.sample(4, generator=seeded(16)))


def test_bad_inputs(tmp_path):
    x = torch.randn(5, 2, 3, 3, generator=seeded(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="Too few samples"):
        TruncatedPrior.fit(x, num_components=1, rank=5)
    with pytest.raises(ValueError, match="Too few samples"):
        TruncatedPrior.fit(x, num_components=3, rank=0)
    with pytest.raises(ValueError, match="rank must be smaller"):
        fit_factor_mixture(torch.randn(50, 4, dtype=torch.float64), 1, 4)
    with pytest.raises(ValueError, match="NaN"):
        TruncatedPrior.fit(torch.full((10, 3), float("nan")), rank=1)
    with pytest.raises(TypeError):
        TruncatedPrior.fit(42)
    with pytest.raises(ValueError, match="VAE"):
        TruncatedPrior.fit(tmp_path)
    with pytest.raises(ValueError, match="No images"):
        encode_images(tmp_path, vae=None)
    with pytest.raises(ValueError, match="sigma"):
        TruncatedPrior((2, 3, 3), sigma=0.0)
    prior = TruncatedPrior.fit(x, rank=1)
    with pytest.raises(ValueError, match="no sigma_T"):
        prior.sample(2)
    with pytest.raises(ValueError, match="positive"):
        prior.sample(2, sigma=-1.0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        schedule_start(SigmaDDIMScheduler.from_config(SD))
