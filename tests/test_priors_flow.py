"""Truncated starts on flow-matching models (SD3, Flux): the schedule moved to a finite sigma_T (s_T < 1), the
latents a flow pipeline takes there, a fitted prior's draws, and the refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from diffusers_geo import (
    ERSDEScheduler,
    GeometricHeunScheduler,
    OptimalDenoiser,
    SigmaDDIMScheduler,
    TruncatedPrior,
    truncated_schedule,
)
from diffusers_geo.bench.problems import FLUX_CONFIG, SD3_CONFIG
from diffusers_geo.metrics import frechet_distance
from diffusers_geo.priors import schedule_start
from diffusers_geo.sampling import flux_mu, sample
from diffusers_geo.schedules.flow import noise_fraction

SHAPE = (1, 4, 4)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def flow_model() -> OptimalDenoiser:
    """Three well-separated components around 2 per pixel, as a velocity model."""
    means = 2.0 + 1.5 * torch.randn(3, *SHAPE, generator=seeded(0), dtype=torch.float64)
    return OptimalDenoiser.from_gaussian_mixture(
        means, 0.05, num_train_timesteps=1000, prediction_type="flow_prediction"
    ).double()


@pytest.fixture(scope="module")
def prior(flow_model) -> TruncatedPrior:
    data, _ = flow_model.sample_data(2000, seeded(1))
    return TruncatedPrior.fit(data, num_components=3, rank=0, generator=seeded(2))


def schedulers(config):
    return [
        ERSDEScheduler.from_config(config),
        GeometricHeunScheduler.from_config(config, multistep=False),  # two calls per step: repeated levels
        FlowMatchEulerDiscreteScheduler.from_config(config),
        UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=config.get("shift", 1.0),
            use_dynamic_shifting=config.get("use_dynamic_shifting", False),
        ),
    ]


@pytest.mark.parametrize("config", [SD3_CONFIG, FLUX_CONFIG], ids=["sd3", "flux"])
@pytest.mark.parametrize("index", range(4))
def test_schedule_moves_to_sigma_t_with_the_same_spacing(config, index):
    scheduler = schedulers(config)[index]
    mu = flux_mu(config) if config.get("use_dynamic_shifting") else None
    schedule = truncated_schedule(scheduler, 6, 1.5, mu=mu)
    assert schedule.sigma_start == pytest.approx(1.5, rel=1e-6)  # diffusers' store float32
    assert schedule.mu == mu and len(schedule.pipeline_kwargs["sigmas"]) == 6
    # the unshifted fractions are the pipeline's own ones scaled by u_T / u_0 (same spacing, shorter time)
    full = schedulers(config)[index]
    if mu is not None and not isinstance(full, UniPCMultistepScheduler):
        full.set_timesteps(sigmas=np.linspace(1, 1 / 6, 6), mu=mu)
    else:
        full.set_timesteps(6, **({"mu": mu} if mu is not None else {}))
    given = torch.as_tensor(schedule.pipeline_kwargs["sigmas"])
    levels = full.sigmas if not isinstance(full, ERSDEScheduler | GeometricHeunScheduler) else None
    if levels is not None:  # diffusers' schedulers: shifted fractions; un-shift them to compare the spacing
        shift = math.exp(mu) if mu is not None else config.get("shift", 1.0)
        s = torch.unique_consecutive(levels.to(torch.float64))[:6]
        u = s / (shift - (shift - 1) * s)
        np.testing.assert_allclose(given / given[0], u / u[0], rtol=1e-5)
    probe = schedulers(config)[index]
    probe.set_timesteps(**schedule.set_timesteps_kwargs)
    first = float(probe.sigmas[0])
    first = first if isinstance(probe, ERSDEScheduler | GeometricHeunScheduler) else first / (1 - first)
    assert first == pytest.approx(1.5, rel=1e-5)


def test_truncated_start_beats_twice_the_steps_from_pure_noise(flow_model, prior):
    """Measured (SD3 config, 1000 samples): 5 calls from a fitted prior at sigma_T = 0.5 give FD 0.069 (sigma-DDIM)
    / 0.052 (ER-SDE) where 10 calls from s = 1 give 0.18 / 0.22."""
    noise = torch.randn(1000, *SHAPE, generator=seeded(6), dtype=torch.float64)

    def frechet(x: torch.Tensor) -> float:
        flat = x.reshape(len(x), -1)
        return frechet_distance(
            flat.mean(0), torch.cov(flat.T), flow_model.data_mean(), flow_model.data_covariance()
        )

    for cls in (SigmaDDIMScheduler, ERSDEScheduler):
        full = cls.from_config(SD3_CONFIG)
        full.set_timesteps(10)
        from_noise = frechet(sample(full, flow_model, noise, seeded(3))[0])
        scheduler = cls.from_config(SD3_CONFIG)
        at = prior.with_sigma(0.5)
        schedule = at.truncated_schedule(scheduler, 5)
        latents = at.initial_latents(schedule, 1000, generator=seeded(6), dtype=torch.float64)
        scheduler.set_timesteps(**schedule.set_timesteps_kwargs)
        x, calls, (first_input, t0) = sample(scheduler, flow_model, latents, seeded(3))
        assert calls == 5 and float(t0) == pytest.approx(1000 * 0.5 / 1.5)
        assert frechet(x) < 0.6 * from_noise, (cls.__name__, frechet(x), from_noise)


def test_latents_are_the_flow_sample_at_s_t(prior):
    """``latents = (1 - s_T) y``: what FlowMatchEuler's scale_noise gives for ``y = x0 + sigma_T n``."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(SD3_CONFIG)
    schedule = prior.with_sigma(2.0).truncated_schedule(scheduler, 4)
    start = schedule_start(scheduler, **schedule.set_timesteps_kwargs)
    assert start.sigma == pytest.approx(2.0) and start.latent_scale == pytest.approx(1 / 3)
    x0 = torch.randn(2, *SHAPE, generator=seeded(4), dtype=torch.float64)
    n = torch.randn(2, *SHAPE, generator=seeded(5), dtype=torch.float64)
    scheduler.set_timesteps(**schedule.set_timesteps_kwargs)
    noised = scheduler.scale_noise(x0, scheduler.timesteps[:1], n)
    torch.testing.assert_close(noised, start.latent_scale * (x0 + 2.0 * n))
    latents = prior.with_sigma(2.0).initial_latents(schedule, 3, generator=seeded(7), dtype=torch.float64)
    draws = prior.sample(3, 2.0, seeded(7))
    torch.testing.assert_close(latents, draws / 3)


def test_prior_in_sd3_and_flux_pipelines():
    from diffusers_geo.testing import tiny_flux_pipeline, tiny_sd3_pipeline

    call = {"max_sequence_length": 16, "height": 16, "width": 16, "output_type": "latent"}
    seen: list[float] = []
    shapes: list[tuple[int, ...]] = []

    def record(module, args, kwargs):
        shapes.append(tuple(kwargs["hidden_states"].shape[1:]))
        seen.append(float(kwargs["timestep"].reshape(-1)[0]))

    for make in (tiny_sd3_pipeline, tiny_flux_pipeline):
        pipe = make()

        handle = pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
        pipe("a", num_inference_steps=2, **call)
        shape = shapes[-1]
        seen.clear()
        data = 0.5 * torch.randn(40, *shape, generator=seeded(8)) + 0.2
        prior = TruncatedPrior.fit(data, num_components=2, rank=2, sigma=1.5, generator=seeded(8))
        config = pipe.scheduler.config
        mu = None
        if config.get("use_dynamic_shifting"):
            tokens = shape[0]  # Flux packs its latents: one token per 2 x 2 patch
            mu = flux_mu(config, image_seq_len=tokens)
        for scheduler in (
            ERSDEScheduler.from_config(config),
            FlowMatchEulerDiscreteScheduler.from_config(config),
        ):
            pipe.scheduler = scheduler
            schedule = prior.truncated_schedule(scheduler, 3, mu=mu)
            latents = prior.initial_latents(schedule, 2, generator=seeded(9))
            out = pipe("a", num_images_per_prompt=2, latents=latents, **schedule.pipeline_kwargs, **call)
            assert torch.isfinite(out.images).all() and len(seen) == 3
            s_t = 1.5 / 2.5
            assert seen[0] == pytest.approx(1000 * s_t, rel=1e-5) or seen[0] == pytest.approx(s_t, rel=1e-5)
            seen.clear()
        handle.remove()


def test_bad_truncations_are_refused(prior):
    with pytest.raises(ValueError, match="mu="):
        truncated_schedule(ERSDEScheduler.from_config(FLUX_CONFIG), 4, 1.0)
    with pytest.raises(ValueError, match="shift_terminal"):
        truncated_schedule(
            FlowMatchEulerDiscreteScheduler.from_config({**SD3_CONFIG, "shift_terminal": 0.1}), 4, 1.0
        )
    dpm = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    with pytest.raises(ValueError, match="sigmas="):
        truncated_schedule(dpm, 4, 1.0)
    with pytest.raises(ValueError, match="VP one"):
        truncated_schedule(SigmaDDIMScheduler(), 4, 1.0, mu=0.5)
    scheduler = ERSDEScheduler.from_config(SD3_CONFIG)
    with pytest.raises(ValueError, match="pure noise"):  # the untruncated start s = 1 takes no prior draws
        prior.with_sigma(None).initial_latents(scheduler, 2, num_inference_steps=4)
    assert float(noise_fraction(torch.tensor([math.inf]))[0]) == 1.0


def test_bench_truncated_start_on_flow_configs(tmp_path):
    from diffusers_geo.cli import main

    with pytest.raises(SystemExit, match="needs --sigma-start"):
        main(["bench", "--config", "sd3", "--prior", "gmm", "--out", str(tmp_path)])
    # FlowMatchHeun takes no sigmas=: named, it is refused before sampling; in "all", it is left out
    with pytest.raises(SystemExit, match="flow-heun"):
        main(
            [
                "bench",
                "--config",
                "sd3",
                "--schedulers",
                "flow-heun",
                "--sigma-start",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
    options = (
        "--config flux --schedulers er-sde,flow-euler --prior gaussian --sigma-start 2 --nfe 4 --seeds 1"
    )
    main(
        ["bench", *options.split(), "--samples", "16", "--size", "4", "--no-progress", "--out", str(tmp_path)]
    )
    assert (tmp_path / "results.json").is_file()


@pytest.mark.parametrize(
    "shift, mu, kind", [(3.0, None, "exponential"), (1.0, 1.15, "exponential"), (1.0, 2.5, "linear")]
)
def test_unshift_inverts_the_shift(shift, mu, kind):
    from diffusers_geo.schedules.flow import shift_flow_fractions, unshift_flow_fractions

    u = torch.linspace(1.0, 1e-3, 50, dtype=torch.float64)
    shifted = shift_flow_fractions(u, shift, mu, kind)
    assert not torch.allclose(shifted, u)
    torch.testing.assert_close(unshift_flow_fractions(shifted, shift, mu, kind), u, rtol=1e-12, atol=1e-15)
