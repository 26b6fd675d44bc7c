"""OptimalDenoiser against closed forms, and the PF-ODE reference against the exact Gaussian solution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusers_geo import OptimalDenoiser, SigmaDDIMScheduler, solve_probability_flow_ode
from diffusers_geo.parameterization import to_denoised
from diffusers_geo.testing import SD_BETAS as SD


def gaussian(mean=0.3, var=0.04, shape=(1, 2, 3, 3), diagonal=False, **config):
    mean = torch.full(shape, mean, dtype=torch.float64)
    if diagonal:
        var = torch.linspace(0.01, 0.09, math.prod(shape), dtype=torch.float64).reshape(shape)
    return OptimalDenoiser.from_gaussian_mixture(mean, var if diagonal else [var], **config).double()


@pytest.mark.parametrize("diagonal", [False, True])
def test_single_gaussian_posterior_mean(diagonal):
    model = gaussian(diagonal=diagonal)
    y = torch.randn(5, 2, 3, 3, dtype=torch.float64) * 3
    mu, v = model.means.reshape(1, 2, 3, 3), model.variances.expand(1, 18).reshape(1, 2, 3, 3)
    for sigma in (0.02, 0.7, 14.6, 150.0):
        expected = mu + v / (v + sigma**2) * (y - mu)
        assert torch.allclose(model.denoise(y, sigma), expected, atol=1e-12)


def test_dataset_of_one_image_returns_it():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 4, 4) * 2 - 1
    model = OptimalDenoiser.from_images(image)
    y = torch.randn(4, 3, 4, 4) * 10
    for sigma in (0.01, 1.0, 80.0):
        assert torch.allclose(model.denoise(y, sigma), image.expand(4, -1, -1, -1), atol=1e-6)


def test_dataset_denoiser_is_mean_shift():
    torch.manual_seed(0)
    data = torch.randn(7, 1, 3, 3, dtype=torch.float64)
    model = OptimalDenoiser.from_images(data).double()
    y = torch.randn(3, 1, 3, 3, dtype=torch.float64)
    sigma = 0.8
    logits = -((y.flatten(1)[:, None] - data.flatten(1)[None]) ** 2).sum(-1) / (2 * sigma**2)
    expected = (logits.softmax(-1) @ data.flatten(1)).reshape(y.shape)
    assert torch.allclose(model.denoise(y, sigma), expected, atol=1e-12)


def test_mixture_matches_bayes_rule_by_brute_force():
    torch.manual_seed(1)
    k, shape = 4, (1, 2, 2)
    means = torch.randn(k, *shape, dtype=torch.float64)
    var = torch.rand(k, *shape, dtype=torch.float64) * 0.2 + 0.01
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    model = OptimalDenoiser.from_gaussian_mixture(means, var, weights).double()
    y = torch.randn(6, *shape, dtype=torch.float64)
    sigma = 0.5
    comps = [
        torch.distributions.MultivariateNormal(means[i].flatten(), torch.diag(var[i].flatten() + sigma**2))
        for i in range(k)
    ]
    logp = torch.stack([c.log_prob(y.flatten(1)) for c in comps], -1) + weights.log()
    r = logp.softmax(-1)
    post = torch.stack(
        [
            means[i].flatten()
            + var[i].flatten() / (var[i].flatten() + sigma**2) * (y.flatten(1) - means[i].flatten())
            for i in range(k)
        ],
        1,
    )
    expected = (r[..., None] * post).sum(1).reshape(y.shape)
    assert torch.allclose(model.denoise(y, sigma), expected, atol=1e-10)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_prediction_types_convert_back_to_the_same_denoised(prediction_type):
    model = gaussian(prediction_type=prediction_type, **SD)
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    t = torch.tensor(500.0)
    sigma = model.parameterization.sigma_of(t.reshape(1)).item()
    alpha = (1 + sigma**2) ** -0.5
    out = model(x, t).sample
    expected = model.denoise(x / alpha, sigma)
    assert torch.allclose(to_denoised(out, x, alpha, sigma, prediction_type), expected, atol=1e-10)


def test_batched_timesteps_and_fractional_timesteps():
    model = gaussian(**SD)
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    t = torch.tensor([10.0, 500.5, 999.0])
    batched = model(x, t).sample
    one_by_one = torch.cat([model(x[i : i + 1], t[i]).sample for i in range(3)])
    assert torch.allclose(batched, one_by_one, atol=1e-12)
    sig = model.parameterization.train_sigmas
    assert model.parameterization.sigma_of(t)[1].item() == pytest.approx(math.sqrt(sig[500] * sig[501]))


def test_float32_agrees_with_float64():
    torch.manual_seed(0)
    data = torch.randn(20, 1, 4, 4)
    m32 = OptimalDenoiser.from_images(data, **SD)
    m64 = OptimalDenoiser.from_images(data, **SD).double()
    x = torch.randn(4, 1, 4, 4)
    for t in (999, 500, 50, 0):
        a, b = m32(x, t).sample, m64(x.double(), t).sample
        assert a.dtype == torch.float32 and b.dtype == torch.float64
        assert torch.allclose(a.double(), b, atol=2e-4), t


def test_save_and_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = OptimalDenoiser.from_gaussian_mixture(
        torch.randn(3, 1, 4, 4),
        torch.rand(3, 1, 4, 4) * 0.1,
        torch.tensor([0.2, 0.3, 0.5]),
        prediction_type="v_prediction",
        **SD,
    )
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    back = OptimalDenoiser.from_pretrained(tmp_path)
    assert back.config.prediction_type == "v_prediction" and back.config.covariance_type == "diagonal"
    x = torch.randn(2, 1, 4, 4)
    assert torch.equal(model(x, 321).sample, back(x, 321).sample)


def test_exact_moments_match_samples():
    torch.manual_seed(2)
    model = OptimalDenoiser.from_gaussian_mixture(
        torch.randn(3, 1, 2, 2), torch.rand(3, 1, 2, 2) * 0.2, torch.tensor([0.5, 0.3, 0.2])
    ).double()
    x, comp = model.sample_data(40000, torch.Generator().manual_seed(0))
    flat = x.flatten(1)
    assert torch.allclose(flat.mean(0), model.data_mean(), atol=0.02)
    assert torch.allclose(torch.cov(flat.T), model.data_covariance(), atol=0.03)
    freq = torch.bincount(comp, minlength=3).double() / len(comp)
    assert torch.allclose(freq, model.weights, atol=0.01)


def test_bad_input():
    with pytest.raises(ValueError, match="covariance_type"):
        OptimalDenoiser(covariance_type="full")
    with pytest.raises(ValueError, match="shape"):
        OptimalDenoiser.from_images(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="variances"):
        OptimalDenoiser.from_gaussian_mixture(torch.zeros(2, 1, 2, 2), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="non-negative"):
        OptimalDenoiser.from_gaussian_mixture(torch.zeros(2, 1, 2, 2), -1.0)
    with pytest.raises(ValueError, match="NaN"):
        OptimalDenoiser.from_images(torch.full((1, 1, 2, 2), float("nan")))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_gpu():
    model = gaussian(**SD).cuda()
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64, device="cuda")
    assert torch.allclose(model(x, 100).sample.cpu(), model.cpu()(x.cpu(), 100).sample, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# the PF-ODE reference
# ------------------------------------------------------------------------------------------------
def test_reference_matches_exact_gaussian_flow():
    # For N(mu, v): y(sigma) = mu + sqrt((v + sigma^2) / (v + sigma0^2)) (y0 - mu)
    model = gaussian(diagonal=True)
    mu, v = model.means.reshape(1, 2, 3, 3), model.variances.reshape(1, 2, 3, 3)
    y0 = torch.randn(4, 2, 3, 3, dtype=torch.float64) * 14.6
    for end in (1.0, 0.0):
        sol = solve_probability_flow_ode(model.denoise, y0, 14.6, end)
        exact = mu + ((v + end**2) / (v + 14.6**2)).sqrt() * (y0 - mu)
        assert (sol.sample - exact).abs().max() < 1e-5, end
        assert sol.nfe < 2000


def test_reference_bad_input():
    with pytest.raises(ValueError):
        solve_probability_flow_ode(lambda y, s: y, torch.zeros(1, 1), 1.0, 2.0)


def test_euler_converges_at_order_one_to_the_reference():
    torch.manual_seed(0)
    model = OptimalDenoiser.from_gaussian_mixture(
        torch.randn(3, 1, 2, 2) * 0.5, torch.tensor([0.05, 0.1, 0.02]), **SD
    ).double()
    sched = SigmaDDIMScheduler(**SD, use_karras_sigmas=True)
    x = torch.randn(8, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    errors = []
    for n in (16, 32, 64, 128):
        sched.set_timesteps(n)
        sigma0 = sched.sigmas[0].item()
        ref = solve_probability_flow_ode(model.denoise, x * math.sqrt(1 + sigma0**2), sigma0).sample
        y = x
        for t in sched.timesteps:
            y = sched.step(model(y, t).sample, t, y).prev_sample
        errors.append((y - ref).pow(2).mean().sqrt().item())
    slopes = -np.diff(np.log2(errors))
    assert np.all(np.abs(slopes - 1.0) < 0.25), (errors, slopes)


def test_flow_prediction_is_the_velocity():
    """As a flow model (SD3 / Flux): ``v = (x - D) / s`` at ``x = (1 - s) x0 + s eps``, timestep ``1000 s``;
    at ``s = 1`` (pure noise) ``D`` is the data mean."""
    from diffusers_geo.models import OptimalDenoiser

    means = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = OptimalDenoiser.from_gaussian_mixture(
        means, 0.1, None, prediction_type="flow_prediction"
    ).double()
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v = model(x, 1000.0).sample
    torch.testing.assert_close(v, x - model.data_mean().reshape(1, 1, 4, 4), rtol=0, atol=1e-12)
    for t in (800.0, 250.0, 1.0):
        s = t / 1000
        denoised = model.denoise(x / (1 - s), s / (1 - s))
        torch.testing.assert_close(model(x, t).sample, (x - denoised) / s, rtol=1e-12, atol=1e-12)
    # per-sample timesteps, s = 1 among them
    mixed = model(x, torch.tensor([1000.0, 800.0, 1000.0, 250.0, 1.0])).sample
    torch.testing.assert_close(mixed[0], v[0])
    torch.testing.assert_close(mixed[3], model(x[3:4], 250.0).sample[0])
