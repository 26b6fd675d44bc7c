"""Trajectory recorder and geometry (Chen et al., arXiv 2305.19947, §3–4) on exact denoisers and tiny pipelines."""

import inspect
import json
import math

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
)
from PIL import Image

from diffusers_geo import OptimalDenoiser, SigmaDDIMScheduler, TrajectoryRecorder, solve_probability_flow_ode
from diffusers_geo.bench import digits_mixture, load_config
from diffusers_geo.cli import main
from diffusers_geo.cli.analyze import pipeline_decoder, plot_curves, plot_denoised_grid, plot_trajectory_plane
from diffusers_geo.diagnostics.trajectory import (
    chord_deviation,
    chord_length,
    convergence_step,
    distance_to_final,
    euler_trajectory,
    score_deviation,
    sigma_at_step,
    summarize,
    supports_step_end_callback,
    trajectory_length,
)
from diffusers_geo.parameterization import DiscreteVP
from diffusers_geo.schedules import karras_sigmas
from diffusers_geo.testing import tiny_ddpm_pipeline, tiny_sd_pipeline

DDPM_CONFIG = {k: v for k, v in load_config("ddpm").items() if k != "_class_name"}


def _ode_trajectory(model, noise, sigmas, rtol=1e-9):
    """Record the *exact* PF-ODE solution at the checkpoints ``sigmas`` (ending in 0)."""
    recorder = TrajectoryRecorder()
    y = sigmas[0] * noise
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        recorder.record(sigma, y, model.denoise(y, sigma))
        y = solve_probability_flow_ode(model.denoise, y, sigma, sigma_next, rtol=rtol, atol=rtol).sample
    recorder.record_final(y, sigmas[-1])
    return recorder.trajectory()


def _karras(n, sigma_max=80.0):
    return karras_sigmas(0.002, sigma_max, n).tolist() + [0.0]


# -------------------------------------------------------------------------------------------------
# metrics: closed forms
# -------------------------------------------------------------------------------------------------
def test_metrics_on_a_hand_made_polyline():
    # sampling trajectory (0,0) -> (1,1) -> (2,0): chord length 2, the middle point 1 off it
    recorder = TrajectoryRecorder()
    recorder.record(4.0, torch.tensor([[0.0, 0.0]]), torch.tensor([[5.0, 5.0]]))
    recorder.record(1.0, torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 0.01]]))
    recorder.record_final(torch.tensor([[2.0, 0.0]]), 0.0)
    traj = recorder.trajectory()
    assert traj.num_steps == 2 and traj.dim == 2 and traj.points.shape == (3, 1, 2)
    torch.testing.assert_close(chord_deviation(traj)[:, 0], torch.tensor([0.0, 0.5, 0.0]))
    torch.testing.assert_close(chord_deviation(traj, relative=False)[:, 0], torch.tensor([0.0, 1.0, 0.0]))
    assert float(chord_length(traj)) == pytest.approx(2.0)
    assert float(trajectory_length(traj) / chord_length(traj)) == pytest.approx(math.sqrt(2))
    rms = distance_to_final(traj, "denoised")[:, 0]
    torch.testing.assert_close(rms, torch.tensor([math.sqrt(34 / 2), 0.01 / math.sqrt(2)]))
    # D_1 is within 0.05 RMS of the end, y_1 is not: the denoising trajectory "arrives" one step earlier
    assert convergence_step(traj, 0.05, "denoised").tolist() == [1]
    assert convergence_step(traj, 0.05, "samples").tolist() == [2]  # only at the end
    assert convergence_step(traj, 10.0, "samples").tolist() == [0]
    assert sigma_at_step(traj, torch.tensor([1, 2])).tolist() == [1.0, 0.0]
    summary = summarize(traj, 0.05)
    assert summary["denoised_step"] == 1 and summary["samples_step"] == 2
    assert summary["chord_deviation"] == pytest.approx(0.5)


# -------------------------------------------------------------------------------------------------
# paper A's observations on exact denoisers
# -------------------------------------------------------------------------------------------------
def test_exact_ode_trajectory_of_a_gaussian_is_a_straight_line():
    g = torch.Generator().manual_seed(0)
    mean = 0.5 * torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64)
    variance = 0.3
    model = OptimalDenoiser.from_gaussian_mixture(mean, variance).double()
    noise = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    sigmas = _karras(8)
    traj = _ode_trajectory(model, noise, sigmas, rtol=1e-8)
    assert chord_deviation(traj).max() < 1e-9
    assert (trajectory_length(traj) / chord_length(traj) - 1).abs().max() < 1e-9
    # closed form: y(s) - mu = (y_T - mu) sqrt((v + s^2) / (v + s_T^2))
    flat_mean = mean.flatten()
    start = traj.samples[0] - flat_mean
    for s, y in zip(traj.point_sigmas.tolist(), traj.points, strict=True):
        expected = flat_mean + start * math.sqrt((variance + s**2) / (variance + sigmas[0] ** 2))
        torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)
    # the metric is not vacuous: an anisotropic Gaussian bends its trajectories
    variances = 2 * torch.rand(1, 1, 4, 4, generator=g, dtype=torch.float64)
    curved = euler_trajectory(OptimalDenoiser.from_gaussian_mixture(mean, variances).double(), noise, sigmas)
    assert chord_deviation(curved).amax(0).min() > 1e-3


def test_mixture_trajectory_is_quasi_linear_and_its_denoising_trajectory_converges_first():
    model = digits_mixture(load_config("ddpm"), size=8)  # d = 64, 10 components
    noise = torch.randn(
        4, *model.sample_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    scheduler = SigmaDDIMScheduler.from_config(DDPM_CONFIG)
    scheduler.set_timesteps(50)
    sigma_max = float(scheduler.sigmas[0])

    exact = _ode_trajectory(model, noise, _karras(8, sigma_max), rtol=1e-5)
    deviation = chord_deviation(exact).amax(0)
    assert (deviation > 1e-4).all() and (deviation < 0.05).all(), deviation  # small but positive
    assert ((trajectory_length(exact) / chord_length(exact) - 1) < 0.01).all()

    traj = euler_trajectory(model, noise, scheduler.sigmas)
    denoised = convergence_step(traj, 0.05, "denoised")
    samples = convergence_step(traj, 0.05, "samples")
    assert (denoised < samples).all(), (denoised, samples)
    summary = summarize(traj, 0.05)
    assert summary["denoised_sigma"] > 2 * summary["samples_sigma"], summary
    # the Euler trajectory of a mixture is just as quasi-linear as the exact one
    assert abs(summary["chord_deviation"] - float(deviation.mean())) < 0.5 * float(deviation.mean())


# -------------------------------------------------------------------------------------------------
# recording pipelines and scheduler loops
# -------------------------------------------------------------------------------------------------
def test_recorder_matches_a_manual_loop_in_ddpm_pipeline():
    pipe = tiny_ddpm_pipeline(SigmaDDIMScheduler)
    assert not supports_step_end_callback(pipe)  # diffusers 0.42.1: recorded through scheduler.step
    recorder = TrajectoryRecorder()
    output = recorder.run(
        pipe,
        batch_size=2,
        num_inference_steps=6,
        output_type="np",
        generator=torch.Generator().manual_seed(3),
    )
    traj = recorder.trajectory()
    assert "step" not in vars(pipe.scheduler)  # restored

    manual = TrajectoryRecorder()
    scheduler = SigmaDDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(6)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            sigma = float(scheduler.sigmas[i])
            out = scheduler.step(pipe.unet(x, t).sample, t, x)
            manual.record(sigma, x / DiscreteVP.alpha(sigma), out.pred_original_sample)
            x = out.prev_sample
    manual.record_final(x, 0.0)
    expected = manual.trajectory()

    assert traj.num_steps == 6 and traj.sample_shape == (3, 8, 8)
    torch.testing.assert_close(traj.sigmas, expected.sigmas, rtol=0, atol=0)
    torch.testing.assert_close(traj.samples, expected.samples, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(traj.denoised, expected.denoised, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(traj.final_sample, expected.final_sample, rtol=1e-5, atol=1e-5)
    image = (traj.final_sample.reshape(2, 3, 8, 8) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(output.images, image, atol=1e-5)


SCHEDULERS = [
    (SigmaDDIMScheduler, {}),
    (DDIMScheduler, {"clip_sample": False}),
    (DDPMScheduler, {"clip_sample": False}),
    (EulerDiscreteScheduler, {}),
    (EulerDiscreteScheduler, {"use_karras_sigmas": True}),
    (DPMSolverMultistepScheduler, {}),
    (HeunDiscreteScheduler, {}),
]


@pytest.mark.parametrize(("cls", "options"), SCHEDULERS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_watch_records_sigma_y_and_the_denoiser_for_every_kind_of_scheduler(cls, options):
    """With the exact denoiser as the model, every recorded D must be D*(y, sigma): this checks the noise
    level, the VE/VP units of the sample and the prediction-type conversion for each scheduler family."""
    means = 0.5 * torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = OptimalDenoiser.from_gaussian_mixture(means, 0.05).double()
    scheduler = cls.from_config(DDPM_CONFIG, **options)
    scheduler.set_timesteps(6)
    recorder = TrajectoryRecorder()
    x = scheduler.init_noise_sigma * torch.randn(
        2, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    signature = inspect.signature(scheduler.step)
    kwargs = {"generator": torch.Generator().manual_seed(2)} if "generator" in signature.parameters else {}
    with recorder.watch(scheduler):
        assert inspect.signature(scheduler.step) == signature  # pipelines inspect it for eta / generator
        for t in scheduler.timesteps:
            output = model(scheduler.scale_model_input(x, t), t).sample
            x = scheduler.step(output, t, x, **kwargs).prev_sample
    assert "step" not in vars(scheduler)
    traj = recorder.trajectory()
    assert traj.num_steps == len(scheduler.timesteps)
    assert score_deviation(traj, model, rms=False).max() < 1e-4
    expected_sigmas = model.parameterization.sigma_of(scheduler.timesteps.double())
    torch.testing.assert_close(traj.sigmas, expected_sigmas, rtol=1e-5, atol=0)
    assert traj.final_sigma == 0.0
    torch.testing.assert_close(traj.final_sample, x.flatten(1))


def test_callback_on_step_end_in_a_latent_pipeline(tmp_path):
    pipe = tiny_sd_pipeline()  # DDIMScheduler, SD config, classifier-free guidance
    assert supports_step_end_callback(pipe)
    seen = []
    recorder = TrajectoryRecorder()
    output = recorder.run(
        pipe,
        prompt="a",
        num_inference_steps=4,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=lambda p, i, t, kw: seen.append(i) or kw,  # a user callback still runs
    )
    traj = recorder.trajectory()
    assert seen == [0, 1, 2, 3] and traj.num_steps == 4 and traj.sample_shape == (4, 8, 8)
    latents = output.images
    torch.testing.assert_close(traj.final_sample * DiscreteVP.alpha(traj.final_sigma), latents.flatten(1))
    # DDIM (eta = 0) is the Euler step in sigma (paper A, Prop. 1): the recorded sigma, y and D must satisfy
    # y_next = (s'/s) y + (1 - s'/s) D, with the guided model output.
    points, sigmas = traj.points, traj.point_sigmas
    for n in range(4):
        ratio = float(sigmas[n + 1] / sigmas[n])
        predicted = ratio * points[n] + (1 - ratio) * traj.denoised[n]
        torch.testing.assert_close(points[n + 1], predicted, rtol=1e-4, atol=1e-4)
    path = plot_denoised_grid(traj, tmp_path / "grid.png", pipeline_decoder(pipe), columns=3, rows=1)
    assert Image.open(path).size[0] > 0


def test_plots(tmp_path):
    model = digits_mixture(load_config("ddpm"), size=8)
    noise = torch.randn(
        3, *model.sample_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    traj = euler_trajectory(model, noise, _karras(10, 150.0))
    gaussian = OptimalDenoiser.from_gaussian_mixture(model.means[:1].reshape(1, 1, 8, 8), 0.2).double()
    for path in (
        plot_trajectory_plane(traj, tmp_path / "plane.png"),
        plot_curves(
            {"mixture": traj}, tmp_path / "curves.png", 0.05, {"mixture": score_deviation(traj, gaussian)}
        ),
        plot_denoised_grid(traj, tmp_path / "grid.png"),
    ):
        assert Image.open(path).size[0] > 100


# -------------------------------------------------------------------------------------------------
# memory bounds
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["projection", "subsample"])
def test_memory_bounds_hold_for_long_runs(reduction):
    max_dim, max_records, batch, shape = 16, 32, 2, (3, 32, 32)
    recorder = TrajectoryRecorder(max_dim=max_dim, reduction=reduction, max_records=max_records)
    g = torch.Generator().manual_seed(0)
    start, end = 80 * torch.randn(batch, *shape, generator=g), torch.randn(batch, *shape, generator=g)
    sigmas = torch.linspace(80, 0, 5001).tolist()
    for sigma in sigmas[:-1]:  # a straight trajectory, 5000 steps
        recorder.record(sigma, end + (sigma / 80) * (start - end), end)
        assert recorder.num_records <= max_records
    recorder.record_final(end)
    traj = recorder.trajectory()
    assert recorder.nbytes <= (2 * max_records + 1) * batch * max_dim * 4
    assert traj.samples.device.type == "cpu" and traj.samples.shape[-1] == max_dim
    assert traj.num_steps == 5000 and traj.steps[0] == 0 and (traj.steps.diff() > 0).all()
    assert len(traj.steps) > max_records // 2  # thinning halves at most once per overflow
    assert traj.reduction == reduction and traj.dim == 3 * 32 * 32
    # a fixed linear reduction maps a straight line to a straight line
    assert chord_deviation(traj).max() < 1e-5
    with pytest.raises(ValueError, match="max_dim=None"):
        score_deviation(traj, lambda y, s: y)
    # and keeps norms in data units on average
    wide = TrajectoryRecorder(max_dim=1024, reduction=reduction)
    wide.record(1.0, start, end)
    wide.record_final(end)
    ratio = wide.trajectory().samples[0].norm(dim=-1) / start.flatten(1).norm(dim=-1)
    assert ((ratio - 1).abs() < 0.2).all(), ratio


def test_long_pipeline_run_is_thinned():
    pipe = tiny_ddpm_pipeline(SigmaDDIMScheduler)
    recorder = TrajectoryRecorder(max_records=4, max_dim=32)
    recorder.run(pipe, num_inference_steps=40, output_type="np", generator=torch.Generator().manual_seed(0))
    traj = recorder.trajectory()
    assert recorder.num_records <= 4 and traj.num_steps == 40 and traj.final_sigma == 0.0
    assert traj.steps.tolist() == [0, 16, 32]  # thinned four times (strides 2, 4, 8, 16)


# -------------------------------------------------------------------------------------------------
# bad input
# -------------------------------------------------------------------------------------------------
def test_clear_errors():
    pipe = tiny_ddpm_pipeline()
    recorder = TrajectoryRecorder()
    with pytest.raises(RuntimeError, match="outside watch"):
        recorder(pipe, 0, 999, {"latents": torch.zeros(1, 3, 8, 8)})
    with pytest.raises(ValueError, match="does not accept callback_on_step_end"):
        recorder.run(pipe, num_inference_steps=2, callback_on_step_end=lambda p, i, t, kw: kw)
    with pytest.raises(TypeError, match="needs a diffusers pipeline"):
        with recorder.watch(object()):
            pass
    with pytest.raises(TypeError, match="not a discrete VP scheduler"):
        with recorder.watch(FlowMatchEulerDiscreteScheduler()):
            pass
    with recorder.watch(pipe):
        with pytest.raises(RuntimeError, match="already"):
            with TrajectoryRecorder().watch(pipe.scheduler):
                pass
    assert "step" not in vars(pipe.scheduler)
    ours = SigmaDDIMScheduler.from_config(pipe.scheduler.config)  # watched through its on_step observer
    with recorder.watch(ours):
        with pytest.raises(RuntimeError, match="already has an on_step observer"):
            with TrajectoryRecorder().watch(ours):
                pass
    assert ours.on_step is None
    with pytest.raises(ValueError, match="Nothing recorded"):
        recorder.trajectory()
    with pytest.raises(ValueError, match="same shape"):
        recorder.record(1.0, torch.zeros(1, 4), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="batch first"):
        recorder.record(1.0, torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="one number per step"):
        recorder.record(torch.ones(2), torch.zeros(2, 4), torch.zeros(2, 4))
    recorder.record(1.0, torch.zeros(1, 4), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="final sample"):
        recorder.trajectory()
    with pytest.raises(ValueError, match="shape changed"):
        recorder.record(0.5, torch.zeros(1, 5), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="reduction"):
        TrajectoryRecorder(reduction="pca")


# -------------------------------------------------------------------------------------------------
# the CLI
# -------------------------------------------------------------------------------------------------
def test_analyze_command(tmp_path, capsys):
    out = tmp_path / "analyze"
    code = main(
        ["analyze", "--model", "default", "--steps", "8", "--samples", "3", "--size", "8", "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| trajectory | d | steps | chord deviation" in printed
    rows = {row["key"]: row for row in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {"gaussian", "mixture", "mean-shift", "model"}
    assert rows["gaussian"]["chord_deviation"] < 1e-8 < rows["mixture"]["chord_deviation"]
    assert rows["mixture"]["denoised_step"] <= rows["mixture"]["samples_step"]
    assert "score_deviation" in rows["mixture"]["curves"] and "score_deviation" in rows["model"]["curves"]
    for name in ("curves", "mixture_plane", "model_denoised"):
        assert Image.open(out / f"{name}.png").size[0] > 100
