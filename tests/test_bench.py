"""The benchmark: its metrics against closed forms, NFE accounting, and the CLI end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from diffusers_geo.bench import digits_mixture, frechet_distance, load_config
from diffusers_geo.bench.quality import DistributionScorer
from diffusers_geo.cli import main
from diffusers_geo.registry import is_stochastic, make_scheduler
from diffusers_geo.sampling import sample, steps_for_nfe


def test_frechet_distance_closed_forms():
    mean, cov = (
        torch.zeros(3, dtype=torch.float64),
        torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)),
    )
    assert frechet_distance(mean, cov, mean, cov) == pytest.approx(0.0, abs=1e-9)
    shift = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    assert frechet_distance(mean + shift, cov, mean, cov) == pytest.approx(5.0)
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2
    other = torch.diag(torch.tensor([4.0, 2.0, 12.0], dtype=torch.float64))
    assert frechet_distance(mean, cov, mean, other) == pytest.approx(1.0 + 0.0 + 3.0)


def test_exact_samples_score_near_zero_and_noise_scores_badly():
    model = digits_mixture(load_config("ddpm"), size=8)
    score = DistributionScorer(model)
    data, _ = model.sample_data(4000, torch.Generator().manual_seed(0))
    fd, mode_error = score(data)
    assert fd < 0.2 and mode_error < 0.03
    fd_noise, mode_noise = score(torch.randn(4000, *model.sample_shape, dtype=torch.float64))
    assert fd_noise > 50 * fd and mode_noise > 0.1


@pytest.mark.parametrize("name, nfe, steps, calls", [("heun", 6, 3, 5), ("heun", 5, 3, 5), ("ddim", 6, 6, 6)])
def test_steps_for_nfe_counts_model_calls(name, nfe, steps, calls):
    config = load_config("sd")
    scheduler = make_scheduler(name, config)
    assert steps_for_nfe(scheduler, nfe) == steps
    model = digits_mixture(config, size=8)
    scheduler.set_timesteps(steps)
    _, counted, _ = sample(scheduler, model, torch.randn(4, 1, 8, 8, dtype=torch.float64), None)
    assert counted == calls


def test_sampler_names():
    scheduler = make_scheduler("dpmpp-2m-karras", load_config("sd"))
    assert scheduler.config.use_karras_sigmas and not is_stochastic(scheduler)
    assert is_stochastic(make_scheduler("euler-a", load_config("sd")))
    assert is_stochastic(make_scheduler("dpmpp-2m-sde", load_config("sd")))
    assert is_stochastic(make_scheduler("er-sde", load_config("sd")))
    assert not is_stochastic(make_scheduler("er-sde:noise_scale=ode", load_config("sd")))
    with pytest.raises(ValueError, match="valid names"):
        make_scheduler("ddim-karras", load_config("sd"))  # DDIM has no Karras sigmas
    with pytest.raises(ValueError, match="scheduler_config.json"):
        load_config("/no/such/path")


def test_sampler_options():
    scheduler = make_scheduler(
        "sigma-ddim-karras:timestep_spacing=trailing:sigma_max=None", load_config("sd")
    )
    assert scheduler.config.use_karras_sigmas and scheduler.config.timestep_spacing == "trailing"
    scheduler = make_scheduler("dpmpp-2m:solver_order=3:final_sigmas_type=zero", load_config("sd"))
    assert scheduler.config.solver_order == 3 and scheduler.config.final_sigmas_type == "zero"
    with pytest.raises(ValueError, match="key=value"):
        make_scheduler("sigma-ddim:karras", load_config("sd"))
    with pytest.raises(ValueError, match="Did you mean 'solver_order'"):  # a typo is not ignored
        make_scheduler("dpmpp-2m:solver_ordr=3", load_config("sd"))


def test_bench_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "--schedulers", "sigma-ddim,heun,euler-a", "--nfe", "3,4", "--seeds", "2"]
    assert main(args + ["--samples", "32", "--size", "8", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| sigma-ddim |" in text and "Fréchet" in text and "[3]" in text  # heun at NFE 4 makes 3 calls
    results = json.loads((out / "results.json").read_text())
    assert (out / "quality_vs_nfe.png").stat().st_size > 10_000
    runs = results["runs"]
    assert len(runs) == 3 * 2 * 2
    assert all(r["rmse"] is None for r in runs if r["sampler"] == "euler-a")
    assert all(r["rmse"] > 0 for r in runs if r["sampler"] != "euler-a")
    assert {r["nfe"] for r in runs if r["sampler"] == "heun"} == {3}
    # reproducible: the same command gives the same numbers
    assert (
        main(args + ["--samples", "32", "--size", "8", "--out", str(tmp_path / "again"), "--no-progress"])
        == 0
    )
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert again["runs"] == runs


def test_overhead_mode(tmp_path, capsys):
    assert main(["bench", "--overhead", "--schedulers", "sigma-ddim", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "1x4x64x64" in text and "sigma-ddim" in text
    rows = json.loads((tmp_path / "overhead.json").read_text())["rows"]
    assert {r["sampler"] for r in rows} == {"sigma-ddim"} and all(r["ratio"] > 0 for r in rows)


@pytest.mark.parametrize(
    "argv", [["bench", "--nfe", "0"], ["bench", "--schedulers", "nope"], ["bench", "--seeds", "0"]]
)
def test_bench_bad_arguments(argv, tmp_path):
    with pytest.raises(SystemExit):
        main(argv + ["--out", str(tmp_path)])


def test_the_problem_suite():
    """Three exact problems of different difficulty from the same digits: benign (10 class Gaussians), many
    narrow modes (one per image, unequal weights) and a one-dimensional manifold (strongly anisotropic)."""
    from diffusers_geo.bench import PROBLEMS, make_problem

    config = load_config("sd")
    shares = {}
    for name in PROBLEMS:
        model = make_problem(name, config, size=8)
        assert model.sample_shape == (1, 8, 8) and model.means.dtype == torch.float64
        eig = torch.linalg.eigvalsh(model.data_covariance())
        shares[name] = float(eig[-2:].sum() / eig.sum())
    assert make_problem("images", config, size=8).config.num_components == 512
    assert shares["manifold"] > 0.99 > 0.5 > shares["mixture"]  # all variance in one plane
    w = make_problem("images", config, size=8).weights
    assert w.max() / w.min() > 3  # unequal weights
    with pytest.raises(ValueError, match="Unknown benchmark problem 'moons'"):
        make_problem("moons", config)


def test_bench_runs_the_suite(tmp_path, capsys):
    args = ["bench", "--problem", "all", "--schedulers", "sigma-ddim", "--nfe", "4", "--seeds", "1"]
    args += ["--samples", "16", "--size", "4", "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for name in ("mixture", "images", "manifold"):
        assert f"## problem={name} " in printed
        assert json.loads((tmp_path / name / "results.json").read_text())["settings"]["problem"] == name
    with pytest.raises(SystemExit, match="unknown --problem"):
        main(["bench", "--problem", "moons", "--out", str(tmp_path)])


@pytest.mark.parametrize("config_name", ["sd3", "flux"])
def test_bench_on_flow_configs(config_name, tmp_path, capsys):
    """The flow configs: the exact denoiser answers as a velocity model, 'all' means ours and diffusers' flow
    samplers, and sigma-ddim equals FlowMatchEuler on the same noise (DDIM is the flow Euler step)."""
    args = ["bench", "--config", config_name, "--nfe", "4", "--seeds", "1", "--samples", "32"]
    args += ["--size", "8", "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "prediction=flow_prediction" in printed
    runs = {r["sampler"]: r for r in json.loads((tmp_path / "results.json").read_text())["runs"]}
    assert {"er-sde", "flow-euler", "flow-euler-sde", "flow-dpmpp-2m", "flow-unipc"} <= set(runs)
    assert all(math.isfinite(r["fd"]) for r in runs.values())
    assert runs["sigma-ddim"]["rmse"] == pytest.approx(runs["flow-euler"]["rmse"], rel=1e-5)
    assert runs["flow-euler-sde"]["rmse"] is None  # stochastic_sampling=True is stochastic
    with pytest.raises(SystemExit, match="does not apply to the flow-matching config"):
        main(["bench", "--config", config_name, "--prediction", "v_prediction", "--out", str(tmp_path)])


def test_flow_builtins_are_set_up_for_the_flow_model():
    config = load_config("flux")
    dpm = make_scheduler("flow-dpmpp-2m", config)
    assert dpm.config.use_flow_sigmas and dpm.config.prediction_type == "flow_prediction"
    assert dpm.config.flow_shift == 3.0 and dpm.config.use_dynamic_shifting
    euler = make_scheduler("flow-euler-sde", config)
    assert type(euler).__name__ == "FlowMatchEulerDiscreteScheduler" and euler.config.stochastic_sampling
