"""``diffusers-geo eval`` / ``evaluate_schedulers``: scores against a converged run from the same noise, on the
packaged model and a tiny Stable Diffusion pipeline, over processes, resumable, and bad input refused first."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import diffusers_geo.evaluation as evaluation
from diffusers_geo.cli import main
from diffusers_geo.evaluation import evaluate_schedulers
from diffusers_geo.metrics import PSNR_CAP, feature_frechet_distance, kernel_distance, psnr, ssim
from diffusers_geo.models.default_model import load_default_pipeline
from diffusers_geo.registry import scheduler_names
from diffusers_geo.testing import (
    accelerate_launch,
    save_tiny_clip_model,
    tiny_flux_pipeline,
    tiny_sd_pipeline,
)


@pytest.fixture(scope="module")
def digits():
    pipe = load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_reference_scores_zero_against_itself(digits):
    result = evaluate_schedulers(
        digits, schedulers="sigma-ddim", nfe=[6], reference="sigma-ddim:6", num_images=3, progress=False
    )
    (cell,) = result.cells
    assert cell.per_image["rmse"] == [0.0, 0.0, 0.0] and cell.per_image["rel_rmse"] == [0.0, 0.0, 0.0]
    assert cell.per_image["psnr"] == [PSNR_CAP] * 3
    assert np.allclose(cell.per_image["ssim"], 1.0)
    assert cell.model_calls == 6 and result.reference["model_calls"] == 6


def test_rmse_decreases_with_nfe_for_every_deterministic_scheduler(digits):
    names = "geometric-heun,projection-ddim,sigma-ddim,geometric-heun:multistep=True,dpmpp-2m,unipc"
    result = evaluate_schedulers(
        digits, schedulers=names, nfe=[5, 10, 20], num_images=8, batch_size=8, grid_images=2, progress=False
    )
    for name in names.split(","):
        means = [c.summary()["rmse"][0] for c in result.cells if c.scheduler == name]
        assert len(means) == 3 and means[0] > means[1] > means[2] > 0, (name, means)
    # the same noise for everyone: the first-order samplers DDIM-in-sigma and Euler are the same numbers
    assert result.reference_images.shape == (2, 8, 8, 1)
    assert all(c.images.shape == (2, 8, 8, 1) for c in result.cells)
    assert "fid" in result.skipped and "fid" not in result.cells[0].per_image  # skipped, never faked
    assert any("RMSE within 5%" in line for line in result.recommendations())
    text = result.markdown()
    assert "| sigma-ddim | 10 | 10 |" in text and "Reference: dpmpp-2m-karras with 100 steps" in text


def test_a_tiny_stable_diffusion_pipeline_end_to_end():
    pipe = tiny_sd_pipeline(seed=0)
    result = evaluate_schedulers(
        pipe,
        ["a photo of a cat", "a dog"],
        schedulers="er-sde,sigma-ddim,dpmpp-2m",
        nfe=[2, 4],
        reference="dpmpp-2m:8",
        num_images=3,
        batch_size=2,
        grid_images=2,
        progress=False,
    )
    assert [(c.scheduler, c.nfe_target) for c in result.cells][:2] == [("er-sde", 2), ("er-sde", 4)]
    assert result.cells[0].stochastic and not result.cells[2].stochastic
    for cell in result.cells:
        assert all(np.isfinite(v).all() for v in cell.per_image.values())
        assert cell.images.shape == (2, 16, 16, 3)  # image 0 and 2: the first prompt, decoded by the VAE
    assert result.settings["prompts"] == ["a photo of a cat", "a dog"]
    # offline the default CLIP model cannot be loaded: the score is skipped with the reason, never faked
    assert (
        "is not available" in result.skipped["clip_score"] and "clip_score" not in result.cells[0].per_image
    )


def test_clip_score_per_image_against_its_prompt():
    """Each image is scored against its own prompt (``prompts[i % len(prompts)]``) by the CLIP model, here a
    stand-in that scores the mean brightness for "bright" and its complement otherwise; the reference gets its
    own score, and an unconditional pipeline has no prompt to score against."""
    seen = []

    def brightness(images, prompts):
        seen.append(list(prompts))
        mean = torch.from_numpy(images.reshape(len(images), -1).mean(1))
        return torch.stack(
            [100 * m if p == "bright" else 100 * (1 - m) for m, p in zip(mean, prompts, strict=True)]
        )

    pipe = tiny_sd_pipeline(seed=0)
    result = evaluate_schedulers(
        pipe,
        ["bright", "dark"],
        schedulers="sigma-ddim",
        nfe=[2],
        reference="sigma-ddim:4",
        num_images=3,
        batch_size=2,
        clip_score=brightness,
        progress=False,
    )
    cell = result.cells[0]
    scores = cell.per_image["clip_score"]
    assert len(scores) == 3 and "clip_score" not in result.skipped
    assert seen[0] == ["bright", "dark", "bright"]  # image i against prompts[i % 2]
    # images 0 and 2 (the grid's: the first prompt) scored as "bright": their mean brightness
    assert scores[0] == pytest.approx(100 * cell.images[0].mean()) and scores[2] == pytest.approx(
        100 * cell.images[1].mean()
    )
    assert 0 <= result.reference["clip_score"] <= 100
    assert "clip_score" in result.markdown() and "its CLIP score" in result.markdown()
    digits = evaluate_schedulers(
        load_default_pipeline(),
        schedulers="sigma-ddim",
        nfe=[2],
        reference="sigma-ddim:4",
        num_images=1,
        clip_score=brightness,
        progress=False,
    )
    assert "takes no prompt" in digits.skipped["clip_score"]


def test_a_tiny_flux_pipeline_end_to_end():
    """A flow-matching pipeline: the default schedulers and reference are diffusers' flow samplers, the packed
    latents are scored and decoded, and the reference scores zero against itself."""
    pipe = tiny_flux_pipeline(seed=0)
    result = evaluate_schedulers(
        pipe, ["a photo of a cat"], nfe=[3, 6], num_images=2, batch_size=2, grid_images=1, progress=False
    )
    assert result.settings["reference"] == "flow-dpmpp-2m:100"
    assert result.settings["schedulers"] == [*scheduler_names(), "flow-dpmpp-2m", "flow-unipc", "flow-euler"]
    for cell in result.cells:
        assert all(np.isfinite(v).all() for v in cell.per_image.values())
        assert cell.images.shape == (1, 16, 16, 3)
    reference = evaluate_schedulers(
        pipe,
        ["a photo of a cat"],
        "flow-dpmpp-2m",
        nfe=[8],
        reference="flow-dpmpp-2m:8",
        num_images=2,
        features=None,
        progress=False,
    )
    cell = reference.cells[0]
    assert cell.per_image["rmse"] == [0.0, 0.0] and cell.per_image["rel_rmse"] == [0.0, 0.0]


def test_gits_schedules_are_searched_on_the_pipeline(digits):
    name = "sigma-ddim+gits/num_warmup=4/teacher_steps=12"
    result = evaluate_schedulers(
        digits,
        schedulers=f"sigma-ddim,{name}",
        nfe=[4],
        num_images=4,
        reference="sigma-ddim:12",
        progress=False,
    )
    plain, searched = result.cells
    assert searched.scheduler == name and searched.model_calls == 4 and searched.search_model_calls == 4 * 12
    assert plain.search_model_calls == 0
    assert searched.per_image["rmse"] != plain.per_image["rmse"]  # another schedule, another path
    assert "schedule search: 48 calls" in result.markdown()


def test_distribution_metrics_with_a_feature_extractor(digits):
    """With an extractor (here the raw pixels) every cell gets FID's formula and KID against the reference
    set; the reference sampler itself scores 0. Offline with the default Inception extractor they are
    skipped with the reason, never computed some other way."""

    def pixels(images):
        return torch.from_numpy(images.reshape(len(images), -1))

    result = evaluate_schedulers(
        digits,
        schedulers="sigma-ddim",
        nfe=[2, 12],
        reference="sigma-ddim:12",
        num_images=16,
        features=pixels,
        progress=False,
    )
    few, same = result.cells
    # identical sets: 0 up to the round-off of the covariance square roots (16 images in 64 dimensions)
    assert same.distribution["fid"] == pytest.approx(0.0, abs=1e-5)
    assert (
        few.distribution["kid"] > same.distribution["kid"]
    )  # KID is unbiased: ~0, may be < 0, for equal sets
    assert few.distribution["fid"] > 0.1 and "fid" not in result.skipped and "clip_score" in result.skipped
    assert "| fid | kid |" in result.markdown()
    offline = evaluate_schedulers(digits, schedulers="sigma-ddim", nfe=[2], num_images=2, progress=False)
    assert "Inception features are not available" in offline.skipped["fid"]
    assert offline.cells[0].distribution == {}


def test_frechet_and_kernel_distances():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 3, generator=g), torch.randn(400, 3, generator=g)
    assert feature_frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert feature_frechet_distance(x + 2.0, x) == pytest.approx(12.0, rel=1e-6)  # |shift|^2 = 3 * 4
    assert abs(kernel_distance(x, y)) < 0.05 < kernel_distance(x + 2.0, y)


def test_psnr_and_ssim_on_known_images():
    rng = np.random.default_rng(0)
    image = rng.random((2, 16, 16, 3))
    assert np.allclose(ssim(image, image), 1.0)
    noisy = np.clip(image + 0.1 * rng.standard_normal(image.shape), 0, 1)
    mse = ((noisy - image) ** 2).reshape(2, -1).mean(1)
    assert np.allclose(psnr(noisy, image), 10 * np.log10(1 / mse))
    assert (ssim(noisy, image) < 0.95).all() and (
        ssim(0.5 * noisy + 0.5 * image, image) > ssim(noisy, image)
    ).all()


ARGS = [
    "--schedulers",
    "sigma-ddim,er-sde",
    "--nfe",
    "3,5",
    "--reference",
    "dpmpp-2m:20",
    "--num-images",
    "5",
]
ARGS += ["--batch-size", "2", "--no-progress"]


def _cells(folder) -> dict:
    data = json.loads((folder / "eval.json").read_text())
    return {(c["scheduler"], c["nfe_target"]): c for c in data["cells"]}


def test_command_outputs_and_two_processes_score_like_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["eval", *ARGS, "--out", str(one)]) == 0
    for name in ("eval.json", "eval.md", "quality_vs_nfe.png", "quality_vs_seconds.png", "grid.png"):
        assert (one / name).stat().st_size > 0, name
    done = accelerate_launch(["eval", *ARGS, "--out", str(two)])
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = _cells(one), _cells(two)
    assert json.loads((two / "eval.json").read_text())["settings"]["num_processes"] == 2
    assert sorted(first) == sorted(second)
    for key, cell in first.items():
        for metric, values in cell["per_image"].items():
            # the same images, split over processes: equal up to float32 network round-off between processes
            np.testing.assert_allclose(second[key]["per_image"][metric], values, rtol=1e-5, atol=1e-6)


def test_resume_skips_finished_cells(tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert main(["eval", *ARGS, "--out", str(out)]) == 0
    before = _cells(out)
    calls = []
    original = evaluation.run_pipeline
    monkeypatch.setattr(evaluation, "run_pipeline", lambda *a, **k: calls.append(a[2]) or original(*a, **k))
    more = [*ARGS[:3], "3,5,8", *ARGS[4:]]
    assert main(["eval", *more, "--resume", "--out", str(out)]) == 0
    after = _cells(out)
    assert set(after) == set(before) | {("sigma-ddim", 8), ("er-sde", 8)}
    for key, cell in before.items():
        assert after[key] == cell  # reused as they were, timings included
    assert sorted(set(calls)) == [8, 20]  # only the reference and the new NFE ran
    with pytest.raises(SystemExit, match="other settings \\(num_images\\)"):
        main(["eval", *more, "--num-images", "6", "--resume", "--out", str(out)])


def _refuse_sampling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("sampled before refusing bad input")

    monkeypatch.setattr(evaluation, "run_pipeline", refuse)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(schedulers="sigma-ddim,nope"), "unknown scheduler 'nope'"),
        (dict(prompts=["a cat"]), "unconditional: it takes no prompt"),
        (dict(reference="dpmpp-2m-karras"), "reference must be 'NAME:STEPS'"),
        (dict(reference="nope:10"), "unknown|Unknown"),
        (dict(nfe=[0, 5]), "positive model-call budgets"),
        (dict(num_images=0), "num_images must be an int >= 1, got 0"),
    ],
)
def test_bad_input_is_refused_before_sampling(digits, monkeypatch, kwargs, match):
    _refuse_sampling(monkeypatch)
    with pytest.raises(ValueError, match=match):
        evaluate_schedulers(digits, **{"schedulers": "sigma-ddim", "nfe": [5], "progress": False, **kwargs})


def test_a_budget_below_a_schedulers_minimum_is_refused(digits, monkeypatch):
    _refuse_sampling(monkeypatch)
    monkeypatch.setattr(evaluation, "steps_for_nfe", lambda scheduler, nfe: None if nfe < 3 else nfe)
    with pytest.raises(ValueError, match="NFE 2 is below sigma-ddim's minimum"):
        evaluate_schedulers(digits, schedulers="sigma-ddim", nfe=[2, 5], progress=False)


def test_prompts_are_needed_by_a_text_to_image_pipeline(monkeypatch):
    _refuse_sampling(monkeypatch)
    pipe = tiny_sd_pipeline(seed=0)
    with pytest.raises(ValueError, match="takes a prompt: pass prompts"):
        evaluate_schedulers(pipe, None, schedulers="sigma-ddim", nfe=[2], progress=False)
    with pytest.raises(ValueError, match="prompts are empty"):
        evaluate_schedulers(pipe, ["  ", ""], schedulers="sigma-ddim", nfe=[2], progress=False)


def test_command_bad_input(tmp_path):
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n  \n")
    with pytest.raises(SystemExit, match="has no prompt"):
        main(["eval", "--prompts", str(empty), "--out", str(tmp_path / "a")])
    with pytest.raises(SystemExit, match="is not a diffusers pipeline"):
        main(["eval", "--model", str(tmp_path), "--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="unknown scheduler"):
        main(["eval", "--schedulers", "nope", "--out", str(tmp_path / "c")])


def test_clip_score_with_a_transformers_clip_model_from_a_folder(tmp_path):
    """The real loading path (``CLIPModel.from_pretrained``) on a tiny random CLIP saved locally: every image
    of a text-to-image run gets a score in [0, 100], the same image and prompt the same score."""
    save_tiny_clip_model(tmp_path)
    score = evaluation.clip_scorer(str(tmp_path))
    pictures = np.random.default_rng(0).random((3, 16, 16, 3))
    values = score(pictures[[0, 1, 0]], ["a cat", "a dog", "a cat"])
    assert values.shape == (3,) and bool(((values >= 0) & (values <= 100)).all())
    assert values[0] == pytest.approx(float(values[2]))
    result = evaluate_schedulers(
        tiny_sd_pipeline(seed=0),
        ["a cat"],
        schedulers="sigma-ddim",
        nfe=[2],
        reference="sigma-ddim:4",
        num_images=2,
        clip_score=str(tmp_path),
        progress=False,
    )
    assert len(result.cells[0].per_image["clip_score"]) == 2 and "clip_score" in result.reference
