"""Start sampling from a fitted prior, at sigma_max or at a smaller sigma_T (Franzese et al., arXiv 2206.05173).

Runs offline on the exact optimal denoiser of a Gaussian mixture whose mean is far from 0 (a stand-in for
your model and your latents, where the truth is known so errors can be measured):

1. fit a Gaussian mixture prior to data samples (``TruncatedPrior.fit``);
2. print the prior-mismatch diagnostic over candidate sigma_T and save its plot;
3. sample with the same deterministic scheduler from pure noise at sigma_max, from the prior at sigma_max,
   and from the prior at sigma_T with a truncated schedule, and print the Fréchet distance to the data;
4. with ``--pipeline``: the same calls in a (tiny, random-weight) Stable Diffusion pipeline.

With a real pipeline, fit on your VAE latents (``TruncatedPrior.fit(folder, vae=pipe.vae, image_size=512)``) and:

    schedule = prior.truncated_schedule(pipe.scheduler, num_inference_steps=10)
    pipe.scheduler = schedule.scheduler
    latents = prior.initial_latents(schedule, batch_size=4, generator=torch.Generator().manual_seed(0))
    images = pipe([prompt] * 4, latents=latents, **schedule.pipeline_kwargs).images
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from diffusers_geo import OptimalDenoiser, SigmaDDIMScheduler
from diffusers_geo.bench.quality import frechet_distance
from diffusers_geo.priors import TruncatedPrior, plot_prior_mismatch, prior_mismatch

SD_SCHEDULE = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
)


def run(scheduler, model, latents: torch.Tensor, **set_timesteps_kwargs) -> torch.Tensor:
    """What a pipeline does with ``latents=`` (the model is called like a UNet)."""
    scheduler.set_timesteps(**set_timesteps_kwargs)
    x = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        output = model(scheduler.scale_model_input(x, t), t).sample
        x = scheduler.step(output, t, x).prev_sample
    return x


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", default="5,10,20", help="comma-separated step counts")
    parser.add_argument("--sigma-t", type=float, default=1.0, help="truncated start sigma_T")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=Path("examples-out") / "prior_mismatch.png")
    parser.add_argument("--pipeline", action="store_true", help="also run a tiny Stable Diffusion pipeline")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(args.seed)

    # the "model" and the "data": 4 components in d = 64, mean about 1 per pixel (the noise prior assumes 0)
    means = 1.0 + 1.5 * torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    model = OptimalDenoiser.from_gaussian_mixture(means, 0.05, **SD_SCHEDULE).double()
    data, _ = model.sample_data(2000, g)

    prior = TruncatedPrior.fit(data, num_components=4, rank=2, generator=g)
    gaussian = TruncatedPrior.fit(data, num_components=1, rank=8)
    sigmas = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, model.parameterization.sigma_max]
    rows = prior_mismatch(gaussian, sigmas, reference=prior, num_samples=2000, generator=g)
    print("sigma_T | KL(gaussian || noise) | KL(mixture || noise) | KL(mixture || gaussian)  (nats)")
    for row in rows:
        print(
            f"{row.sigma:7.3f} | {row.kl_noise:21.4f} | {row.kl_reference_noise:9.4f} ± {row.kl_reference_noise_stderr:.4f}"
            f" | {row.kl_remaining:9.4f} ± {row.kl_remaining_stderr:.4f}"
        )
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot_prior_mismatch(rows, args.plot)
    print(f"plot -> {args.plot}")

    def distance(x: torch.Tensor) -> float:
        flat = x.reshape(len(x), -1)
        return frechet_distance(flat.mean(0), torch.cov(flat.T), model.data_mean(), model.data_covariance())

    exact, _ = model.sample_data(args.samples, g)
    results = {"exact data samples": distance(exact)}
    print(
        f"\nFréchet distance to the data ({args.samples} samples; exact data samples: {results['exact data samples']:.4f})"
    )
    print("steps | noise at sigma_max | prior at sigma_max | prior at sigma_T=" + f"{args.sigma_t:g}")
    noise = torch.randn(args.samples, *model.sample_shape, generator=g, dtype=torch.float64)
    truncated_prior = prior.with_sigma(args.sigma_t)
    for steps in (int(s) for s in args.steps.split(",")):
        scheduler = SigmaDDIMScheduler.from_config(SD_SCHEDULE)
        from_noise = distance(run(scheduler, model, noise, num_inference_steps=steps))
        latents = prior.initial_latents(
            scheduler, args.samples, generator=g, dtype=torch.float64, num_inference_steps=steps
        )
        from_prior = distance(run(scheduler, model, latents, num_inference_steps=steps))
        schedule = truncated_prior.truncated_schedule(scheduler, steps)
        latents = truncated_prior.initial_latents(schedule, args.samples, generator=g, dtype=torch.float64)
        truncated = distance(run(schedule.scheduler, model, latents, **schedule.pipeline_kwargs))
        print(f"{steps:5d} | {from_noise:18.4f} | {from_prior:18.4f} | {truncated:.4f}")
        results.update(
            {f"noise/{steps}": from_noise, f"prior/{steps}": from_prior, f"truncated/{steps}": truncated}
        )

    if args.pipeline:
        from diffusers_geo.testing import tiny_sd_pipeline

        pipe = tiny_sd_pipeline(scheduler=SigmaDDIMScheduler)
        latents_data = torch.randn(64, 4, 8, 8, generator=g) * 0.8 + 0.2  # stand-in for VAE latents
        sd_prior = TruncatedPrior.fit(latents_data, num_components=2, rank=4, sigma=args.sigma_t, generator=g)
        schedule = sd_prior.truncated_schedule(pipe.scheduler, 4)
        pipe.scheduler = schedule.scheduler
        latents = sd_prior.initial_latents(schedule, batch_size=2, generator=g)
        images = pipe(
            "a photo", num_images_per_prompt=2, latents=latents, output_type="np", **schedule.pipeline_kwargs
        ).images
        print(f"pipeline: {len(images)} images {images.shape[1:]} from sigma_T={schedule.sigma_start:.3g}")
    return results


if __name__ == "__main__":
    main()
