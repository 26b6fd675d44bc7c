"""ERSDEScheduler (Cui et al., arXiv 2309.06169): reductions to DDIM/DDPM, exactness, convergence order,
noise-scale admissibility, quadrature accuracy, reproducibility and bad input."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from diffusers_geo import ERSDEScheduler, OptimalDenoiser, solve_probability_flow_ode
from diffusers_geo.solvers.er_sde import (
    NOISE_SCALES,
    backward_differences,
    er_sde_multistep,
    er_sde_step,
    history_weights,
    inadmissible_range,
    quadrature_nodes,
    step_coefficients,
)
from diffusers_geo.testing import DDPM_BETAS as DDPM
from diffusers_geo.testing import SD_BETAS as SD


def mixture(shape=(1, 2, 2), seed=0, **config) -> OptimalDenoiser:
    torch.manual_seed(seed)
    means = torch.randn(3, *shape) * 0.5
    return OptimalDenoiser.from_gaussian_mixture(
        means, torch.tensor([0.05, 0.1, 0.02]), **(config or SD)
    ).double()


def run(scheduler, model, x, generator=None, noises=None):
    for i, t in enumerate(scheduler.timesteps):
        kwargs = {"variance_noise": noises[i]} if noises is not None else {"generator": generator}
        x = scheduler.step(model(x, t).sample, t, x, **kwargs).prev_sample
    return x


# --------------------------------------------------------------------------------------------------
# reductions
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("config", [SD, DDPM], ids=["sd", "ddpm"])
def test_ode_order_one_is_ddim(config, prediction_type):
    model = mixture(**config, prediction_type=prediction_type).float()
    ddim = DDIMScheduler(
        **config,
        prediction_type=prediction_type,
        timestep_spacing="trailing",
        set_alpha_to_one=True,
        clip_sample=False,
    )
    ours = ERSDEScheduler(
        **config,
        prediction_type=prediction_type,
        timestep_spacing="trailing",
        noise_scale="ode",
        solver_order=1,
    )
    ddim.set_timesteps(10)
    ours.set_timesteps(10)
    assert ddim.timesteps.tolist() == ours.timesteps.long().tolist()
    x = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    assert not ours.stochastic
    assert (run(ddim, model, x) - run(ours, model, x)).abs().max() < 2e-6


@pytest.mark.parametrize("config", [SD, DDPM], ids=["sd", "ddpm"])
def test_reverse_sde_order_one_is_ddpm_ancestral_sampling(config):
    """phi = sigma^2 at order 1 is DDIM with eta = 1 (DDPM ancestral sampling) given the same noise."""
    model = mixture(**config).float()
    ddim = DDIMScheduler(**config, timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False)
    ours = ERSDEScheduler(**config, timestep_spacing="trailing", noise_scale="reverse-sde", solver_order=1)
    ddim.set_timesteps(8)
    ours.set_timesteps(8)
    noises = torch.randn(8, 4, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    x = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    a = x
    for i, t in enumerate(ddim.timesteps):
        a = ddim.step(model(a, t).sample, t, a, eta=1.0, variance_noise=noises[i]).prev_sample
    b = run(ours, model, x, noises=noises)
    assert (a - b).abs().max() < 2e-6
    # and the noise matters: a different draw gives a different sample
    ours.set_timesteps(8)
    assert (run(ours, model, x, noises=noises.flip(0)) - b).abs().max() > 1e-2


def test_eta_zero_is_the_ode_and_reverse_sde_eta_is_power_one_plus_eta():
    model = mixture()
    x = torch.randn(4, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ode = ERSDEScheduler(**SD, noise_scale="ode")
    zero = ERSDEScheduler(**SD, eta=0.0)
    assert not zero.stochastic
    for s in (ode, zero):
        s.set_timesteps(12)
    assert (run(ode, model, x) - run(zero, model, x)).abs().max() < 1e-12

    noises = torch.randn(12, 4, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    eta = ERSDEScheduler(**SD, noise_scale="reverse-sde", eta=0.5)
    power = ERSDEScheduler(**SD, noise_scale="power-1.5")  # sigma^(1 + 0.5)
    for s in (eta, power):
        s.set_timesteps(12)
    assert (run(eta, model, x, noises=noises) - run(power, model, x, noises=noises)).abs().max() < 1e-10


def test_vp_form_is_ve_form_in_y_coordinates():
    torch.manual_seed(0)
    x, d, z, d1 = (torch.randn(3, 5, dtype=torch.float64) for _ in range(4))
    coeffs = step_coefficients(NOISE_SCALES["exp-power"], 3.0, 1.7, "gauss-legendre")
    a_s, a_t = 1 / math.sqrt(1 + 3.0**2), 1 / math.sqrt(1 + 1.7**2)
    # eq. 11: x_t = (alpha_t / alpha_s) r x_s + alpha_t (C0 D + C1 D') + alpha_t std z
    vp = (a_t / a_s) * coeffs.r * x + a_t * (coeffs.c0 * d + coeffs.c1 * d1) + a_t * coeffs.noise_std * z
    ve = a_t * er_sde_step(x / a_s, d, coeffs, d1, None, z)
    assert torch.allclose(vp, ve, atol=1e-14)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_fused_weights_equal_the_paper_form(order):
    """The scheduler's weights on stored outputs are the paper's C0 D + C1 D1 + C2 D2 (Alg. 1-3)."""
    torch.manual_seed(0)
    lams = [2.0, 3.1, 4.5][:order]
    history = [(lam, torch.randn(6, dtype=torch.float64)) for lam in lams]
    coeffs = step_coefficients(NOISE_SCALES["exp-power"], 2.0, 1.2, "gauss-legendre")
    y, z = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    d1, d2 = backward_differences(history[::-1], order)  # oldest first
    paper = er_sde_step(y, history[0][1], coeffs, d1, d2, z)
    weights = history_weights(coeffs, lams)
    fused = (
        coeffs.r * y + sum(w * d for w, (_, d) in zip(weights, history, strict=True)) + coeffs.noise_std * z
    )
    assert torch.allclose(paper, fused, atol=1e-12)
    # what the scheduler runs: the same update through er_sde_multistep
    ran = er_sde_multistep(y, history, coeffs, lambda: z)
    assert torch.allclose(paper, ran, atol=1e-12)
    no_noise = er_sde_step(y, history[0][1], coeffs, d1, d2)
    assert torch.allclose(er_sde_multistep(y, history, coeffs, None), no_noise, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# exactness
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(NOISE_SCALES))
def test_one_step_preserves_the_marginal_of_point_data(name):
    """For data at one point mu the denoiser is constant and the ER-SDE step is exact for every order:
    y_s ~ N(mu, sigma_s^2) goes to exactly N(mu, sigma_t^2) (paper eq. 10)."""
    mu, sigma_s, sigma_t = 0.7, 9.0, 2.5
    coeffs = step_coefficients(NOISE_SCALES[name], sigma_s, sigma_t, "gauss-legendre")
    # analytic moments of r * y_s + c0 * mu + std * z
    assert coeffs.r * mu + coeffs.c0 * mu == pytest.approx(mu, abs=1e-14)
    assert (coeffs.r * sigma_s) ** 2 + coeffs.noise_std**2 == pytest.approx(sigma_t**2, rel=1e-12)
    # and the sampled step (derivative terms vanish for a constant denoiser)
    gen = torch.Generator().manual_seed(0)
    y = mu + sigma_s * torch.randn(200_000, dtype=torch.float64, generator=gen)
    zero = torch.zeros_like(y)
    y_t = er_sde_step(
        y, torch.full_like(y, mu), coeffs, zero, zero, torch.randn(y.shape, generator=gen).double()
    )
    assert y_t.mean().item() == pytest.approx(mu, abs=4 * sigma_t / math.sqrt(len(y)))
    assert y_t.std().item() == pytest.approx(sigma_t, rel=0.01)


def test_constant_denoiser_integral_is_one_minus_r():
    """Sanity of the coefficients: Int phi'/phi^2 dl * phi(lam_t) = 1 - r (C0), and C1 = C2 = 0 for phi = sigma
    in the limit of a step of size 0."""
    for name, log_phi in NOISE_SCALES.items():
        c = step_coefficients(log_phi, 5.0, 5.0 * (1 - 1e-7), "gauss-legendre")
        assert abs(c.c1) < 1e-10 and abs(c.c2) < 1e-10, name


def test_gaussian_data_final_variance_for_every_phi():
    """1-D Gaussian data N(0, c^2): sampling with the exact denoiser ends with the exact marginal variance at
    the last noise level (spec test 8). The run stops at sigma_min (not 0: the final jump to the data
    prediction returns a posterior mean, whose variance is smaller)."""
    c2 = 0.25
    model = OptimalDenoiser.from_gaussian_mixture(torch.zeros(1, 1, 1, 1), torch.tensor([c2]), **SD).double()
    x = torch.randn(10_000, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for name in sorted(NOISE_SCALES):
        scheduler = ERSDEScheduler(
            **SD, noise_scale=name, use_karras_sigmas=True, final_sigmas_type="sigma_min"
        )
        scheduler.set_timesteps(50)
        lam = scheduler.sigmas[-1].item()
        out = run(scheduler, model, x, generator=torch.Generator().manual_seed(1))
        assert out.var().item() == pytest.approx((c2 + lam**2) / (1 + lam**2), rel=0.05), name


@functools.lru_cache
def convergence_errors(order: int, steps=(8, 16, 32, 64)) -> np.ndarray:
    """RMSE of the deterministic ER-SDE (phi = sigma) against the exact PF-ODE solution on geometric grids
    from sigma = 8 to sigma = 0.1 (a final step to 0 would be first order by design)."""
    model = mixture()
    x = torch.randn(16, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    hi, lo = 8.0, 0.1
    ref = solve_probability_flow_ode(model.denoise, x * math.sqrt(1 + hi**2), hi, lo, rtol=1e-10, atol=1e-10)
    errors = []
    for n in steps:
        scheduler = ERSDEScheduler(**SD, noise_scale="ode", solver_order=order)
        scheduler.set_timesteps(sigmas=np.geomspace(hi, lo, n + 1))
        y = run(scheduler, model, x) * math.sqrt(1 + lo**2)
        errors.append((y - ref.sample).pow(2).mean().sqrt().item())
    return np.array(errors)


@pytest.mark.parametrize("order, expected", [(1, 1.0), (2, 2.0), (3, 2.0)])
def test_convergence_order(order, expected):
    """Measured slopes of log2(error) per doubling of steps. Order 3 with the paper's backward-difference
    derivative (a chord slope used as D'(lam_i)) is globally second order (spec Sec. 6.7) but more accurate."""
    errors = convergence_errors(order)
    slopes = -np.diff(np.log2(errors))
    assert np.all(np.abs(slopes[1:] - expected) < 0.3), (errors, slopes)
    if order == 3:
        assert np.all(errors < convergence_errors(2)), errors


# --------------------------------------------------------------------------------------------------
# quadrature
# --------------------------------------------------------------------------------------------------
def test_quadrature_rules():
    from scipy.integrate import quad

    log_phi = NOISE_SCALES["exp-power"]
    rho, lo, hi, n = 7.0, 0.002, 80.0, 20  # the paper's EDM Karras grid
    ramp = np.linspace(0, 1, n)
    sigmas = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    worst = {"riemann-100": [0.0, 0.0], "riemann-200": [0.0, 0.0]}

    def inv_phi(v: float) -> float:  # the default phi, in plain floats for scipy
        return 1 / (v * (math.exp(v**0.3) + 10))

    for s, t in zip(sigmas[:-1], sigmas[1:], strict=True):
        phi_t = 1 / inv_phi(t)
        i1 = quad(inv_phi, t, s, epsabs=0, epsrel=1e-13)[0]
        i2 = quad(lambda v, s=s: (v - s) * inv_phi(v), t, s, epsabs=0, epsrel=1e-13)[0]
        exact_c1, exact_c2 = (t - s) + phi_t * i1, 0.5 * (t - s) ** 2 + phi_t * i2
        gl = step_coefficients(log_phi, s, t, "gauss-legendre")
        assert gl.c1 == pytest.approx(exact_c1, rel=1e-9) and gl.c2 == pytest.approx(exact_c2, rel=1e-9)
        for rule in worst:
            c = step_coefficients(log_phi, s, t, rule)
            worst[rule][0] = max(worst[rule][0], abs(c.c1 / exact_c1 - 1))
            worst[rule][1] = max(worst[rule][1], abs(c.c2 / exact_c2 - 1))
    # the spec's levels: ~0.9 % / 6 % (100 points) and half that with 200 (first-order rule)
    assert 0.003 < worst["riemann-100"][0] < 0.03 and 0.02 < worst["riemann-100"][1] < 0.12
    assert worst["riemann-200"][0] == pytest.approx(worst["riemann-100"][0] / 2, rel=0.2)
    nodes, weights = quadrature_nodes(1.0, 2.0, "riemann-100")
    assert nodes[0] == 1.0 and nodes[-1] < 2.0 and weights.sum() == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------
# admissibility
# --------------------------------------------------------------------------------------------------
def test_admissibility_of_every_official_phi():
    for name, log_phi in NOISE_SCALES.items():
        bad = inadmissible_range(log_phi, 1e-3, 1e5)
        if name == "log-power":
            lo, hi, worst = bad
            assert 900 < lo < 1100 and hi == pytest.approx(1e5) and worst < 1
        else:
            assert bad is None, (name, bad)
        assert inadmissible_range(log_phi, 0.002, 157.0) is None  # EDM and linear-beta ADM ranges


def test_inadmissible_phi_on_the_schedule_is_an_error():
    scheduler = ERSDEScheduler(**SD, noise_scale="log-power", rescale_betas_zero_snr=True)
    scheduler.set_timesteps(sigmas=[14.0, 1.0, 0.0])  # SD's own range (sigma_max ~ 14.6): fine
    # zero terminal SNR trains the model up to sigma = 4096 (clamped), where log-power is inadmissible
    with pytest.raises(ValueError, match=r"not admissible for sigma in \[10\d\d, 4000\]"):
        scheduler.set_timesteps(sigmas=[4000.0, 100.0, 1.0, 0.0])
    assert scheduler.sigmas is None  # no half-built schedule left behind
    cosine = ERSDEScheduler(beta_schedule="squaredcos_cap_v2", noise_scale="log-power")
    with pytest.raises(ValueError, match="elasticity"):
        cosine.set_timesteps(10)
    sqrt_phi = ERSDEScheduler(**SD, noise_scale=lambda s: s**0.5)
    with pytest.raises(ValueError, match="not admissible"):
        sqrt_phi.set_timesteps(10)


def test_custom_callable_phi():
    model = mixture()
    x = torch.randn(4, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    noises = torch.randn(10, 4, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    custom = ERSDEScheduler(**SD, noise_scale=lambda s: s**2)
    named = ERSDEScheduler(**SD, noise_scale="reverse-sde")
    for s in (custom, named):
        s.set_timesteps(10)
    assert (run(custom, model, x, noises=noises) - run(named, model, x, noises=noises)).abs().max() < 1e-10
    assert custom.config.noise_scale == "custom"
    with pytest.raises(ValueError, match="pass it again"):
        ERSDEScheduler.from_config(custom.config)
    with pytest.raises(ValueError, match="same shape"):
        ERSDEScheduler(**SD, noise_scale=lambda s: 1.0).set_timesteps(5)


# --------------------------------------------------------------------------------------------------
# multistep bookkeeping, noise, reproducibility
# --------------------------------------------------------------------------------------------------
def test_warm_up_orders_and_restart():
    model = mixture()
    x = torch.randn(4, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    outs = {}
    for order in (1, 2, 3):
        s = ERSDEScheduler(**SD, noise_scale="ode", solver_order=order)
        s.set_timesteps(10)
        y, seq = x, []
        for t in s.timesteps[:3]:
            y = s.step(model(y, t).sample, t, y).prev_sample
            seq.append(y)
        outs[order] = seq
    assert torch.equal(outs[3][0], outs[1][0])  # step 0: first order
    assert torch.equal(outs[3][1], outs[2][1])  # step 1: second order
    assert not torch.allclose(outs[3][2], outs[2][2])  # step 2: third order
    # a run that starts mid-schedule (img2img) restarts the warm-up
    s = ERSDEScheduler(**SD, noise_scale="ode")
    s.set_timesteps(10)
    s.set_begin_index(4)
    t = s.timesteps[4]
    first = s.step(model(x, t).sample, t, x).prev_sample
    s1 = ERSDEScheduler(**SD, noise_scale="ode", solver_order=1)
    s1.set_timesteps(10)
    s1.set_begin_index(4)
    assert torch.equal(first, s1.step(model(x, t).sample, t, x).prev_sample)


def test_reproducible_and_no_noise_on_the_final_step():
    model = mixture()
    x = torch.randn(4, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = ERSDEScheduler(**SD)
    assert s.stochastic
    s.set_timesteps(10)
    a = run(s, model, x, generator=torch.Generator().manual_seed(5))
    s.set_timesteps(10)
    b = run(s, model, x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    s.set_timesteps(10)
    assert not torch.equal(a, run(s, model, x, generator=torch.Generator().manual_seed(6)))
    # the last step (to sigma = 0) returns the data prediction and draws nothing
    s.set_timesteps(10)
    gen = torch.Generator().manual_seed(5)
    y = x
    for t in s.timesteps[:-1]:
        y = s.step(model(y, t).sample, t, y, generator=gen).prev_sample
    state = gen.get_state()
    t = s.timesteps[-1]
    out = s.step(model(y, t).sample, t, y, generator=gen)
    assert torch.equal(gen.get_state(), state)
    assert torch.allclose(out.prev_sample, out.pred_original_sample)
    sigma = s.sigmas[-2].item()
    assert torch.allclose(out.prev_sample, model.denoise(y * math.sqrt(1 + sigma**2), sigma))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_samples_stay_finite(dtype):
    model = mixture()
    s = ERSDEScheduler(**SD, use_karras_sigmas=True)
    s.set_timesteps(10)
    x = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0)).to(dtype)
    for t in s.timesteps:
        x = s.step(model(x.double(), t).sample.to(dtype), t, x, generator=torch.Generator().manual_seed(0))
        x = x.prev_sample
        assert x.dtype == dtype and torch.isfinite(x).all()


def test_config_round_trip(tmp_path):
    s = ERSDEScheduler(
        **SD, solver_order=2, noise_scale="power-1.5", eta=0.5, s_noise=0.9, quadrature="riemann-200"
    )
    s.save_pretrained(tmp_path)
    loaded = ERSDEScheduler.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(s.config)


def test_bad_input():
    with pytest.raises(ValueError, match="valid names.*exp-power"):
        ERSDEScheduler(noise_scale="er-sde-9")
    for order, error in ((0, ValueError), (4, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match=r"solver_order must be an int in \[1, 3\]"):
            ERSDEScheduler(solver_order=order)
    with pytest.raises(TypeError, match="name or a callable"):
        ERSDEScheduler(noise_scale=3.0)
    with pytest.raises(ValueError, match="eta must be a finite number >= 0"):
        ERSDEScheduler(eta=-0.5)
    with pytest.raises(ValueError, match="s_noise must be a finite number"):
        ERSDEScheduler(s_noise=float("nan"))
    with pytest.raises(ValueError, match="Unknown quadrature"):
        ERSDEScheduler(quadrature="simpson")
