"""The packaged default model: offline loading, the standard DDPM config, size, package data, and that
50-step DDPM from it draws recognisable digits (a test a broken or untrained model fails)."""

from __future__ import annotations

import glob
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

import diffusers_geo
from diffusers_geo import SigmaDDIMScheduler, default_model_path, load_default_pipeline
from diffusers_geo.data import digits_images
from diffusers_geo.models.default_model import DEFAULT_MODEL_SIZE, score_digits

ROOT = Path(__file__).resolve().parent.parent
MAX_BYTES = 5 * 1024 * 1024


def _public(config) -> dict:
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def pipe() -> DDPMPipeline:
    return DDPMPipeline.from_pretrained(default_model_path())  # HF_HUB_OFFLINE=1 (conftest)


def test_packaged_folder_is_a_small_ddpm_pipeline():
    path = default_model_path()
    assert path == Path(diffusers_geo.__file__).parent / "assets" / "tiny-digits"
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline"
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    assert index["scheduler"] == ["diffusers", "DDPMScheduler"]
    assert (path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(path.rglob("*.bin")), "weights must be safetensors only"
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert total <= MAX_BYTES, f"packaged model is {total / 2**20:.2f} MiB"


def test_pyproject_ships_every_asset_file():
    """The package-data globs of pyproject.toml cover every file of the model folder (so a wheel,
    not only an editable install, contains it)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = Path(diffusers_geo.__file__).parent
    shipped = {p for pattern in patterns["diffusers_geo"] for p in glob.glob(pattern, root_dir=package)}
    files = {str(f.relative_to(package)) for f in default_model_path().rglob("*") if f.is_file()}
    assert files and files <= shipped, f"not shipped: {sorted(files - shipped)}"


def test_loads_offline_with_the_standard_ddpm_config(pipe):
    assert isinstance(pipe.unet, UNet2DModel) and isinstance(pipe.scheduler, DDPMScheduler)
    assert _public(pipe.scheduler.config) == _public(DDPMScheduler().config)
    config = pipe.scheduler.config
    assert (config.num_train_timesteps, config.beta_schedule) == (1000, "linear")
    assert (config.beta_start, config.beta_end, config.prediction_type) == (1e-4, 0.02, "epsilon")
    assert pipe.unet.config.in_channels == pipe.unet.config.out_channels == 1
    assert pipe.unet.config.sample_size == DEFAULT_MODEL_SIZE
    assert sum(p.numel() for p in pipe.unet.parameters()) < 1_000_000


def test_load_default_pipeline_installs_schedulers():
    assert isinstance(load_default_pipeline().scheduler, DDPMScheduler)
    pipe = load_default_pipeline("sigma-ddim", dtype=torch.float64)
    assert isinstance(pipe.scheduler, SigmaDDIMScheduler) and pipe.unet.dtype == torch.float64
    assert pipe.scheduler.config.beta_end == 0.02
    assert isinstance(load_default_pipeline("dpmpp-2m").scheduler, DPMSolverMultistepScheduler)
    assert isinstance(load_default_pipeline(SigmaDDIMScheduler).scheduler, SigmaDDIMScheduler)
    with pytest.raises(ValueError, match="Unknown sampler 'nope'"):
        load_default_pipeline("nope")
    with pytest.raises(TypeError, match="scheduler must be"):
        load_default_pipeline(3)


def _fifty_step_ddpm(unet: UNet2DModel) -> torch.Tensor:
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    images = pipe(batch_size=32, num_inference_steps=50, generator=generator, output_type="pt").images
    return images * 2 - 1


def _looks_like_digits(score) -> bool:
    return score.confidence > 0.8 and score.num_classes >= 7 and score.nn_rms < 1.5 * score.data_nn_rms


def test_fifty_step_ddpm_draws_recognisable_digits(pipe):
    """50-step DDPM samples are classified confidently, cover most digits, and lie about as close to the
    training digits as real digits lie to each other. The same network with its random initial weights,
    and the samples' pixels shuffled (same histogram, no shape), fail: the check can fail. (A linear
    classifier is confident on many non-digits too; the distance to the nearest digit is what separates.)"""
    samples = _fifty_step_ddpm(pipe.unet)
    score = score_digits(samples)
    assert _looks_like_digits(score), score

    torch.manual_seed(0)
    untrained = score_digits(_fifty_step_ddpm(UNet2DModel.from_config(pipe.unet.config).eval()))
    assert not _looks_like_digits(untrained) and untrained.nn_rms > 2.5 * score.nn_rms, untrained

    permutation = torch.randperm(samples[0].numel(), generator=torch.Generator().manual_seed(1))
    shuffled = score_digits(samples.flatten(1)[:, permutation].reshape(samples.shape))
    assert not _looks_like_digits(shuffled) and shuffled.nn_rms > 2 * score.nn_rms, shuffled


def test_score_digits_reference_values():
    """Real digits (as the model sees them) score as digits: the reference the check relies on."""
    data = digits_images()[::40]
    score = score_digits(data)
    assert score.confidence > 0.9 and score.num_classes == 10
    assert score.nn_rms == 0.0  # each is in the training set
    assert 0.05 < score.data_nn_rms < 0.5


def _card_summary(folder: Path) -> dict:
    """The JSON block of a model folder's README.md (what the training script wrote)."""
    text = (folder / "README.md").read_text()
    return json.loads(text.split("```json\n")[1].split("```")[0])


def test_packaged_card_matches_the_packaged_model(pipe):
    """The asset README documents the command that made the weights and numbers that fit them."""
    text = (default_model_path() / "README.md").read_text()
    assert "python examples/train_tiny_model.py" in text
    card = _card_summary(default_model_path())
    assert card["parameters"] == sum(p.numel() for p in pipe.unet.parameters())
    assert card["size"] == pipe.unet.config.sample_size and card["threads"] == 1
    assert card["wall_seconds"] < 20 * 60 and 0 < card["final_loss"] < 0.2
    trained, untrained = card["eval"]["trained"], card["eval"]["random_weights"]
    assert trained["nn_rms"] < untrained["nn_rms"] / 2


def _load_training_script():
    spec = importlib.util.spec_from_file_location(
        "train_tiny_model", ROOT / "examples" / "train_tiny_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_script_is_reproducible(tmp_path):
    """Two runs with the same seed write identical weights, a checkpoint of a longer run equals the shorter
    run (so the packaged model is exactly what its documented command writes), another seed differs, and
    the folder loads like the packaged one: same architecture, standard DDPM scheduler config."""
    train = _load_training_script()
    args = ["--steps", "2", "--batch-size", "4", "--log-every", "1", "--eval-samples", "0"]
    first = train.main([*args, "--out", str(tmp_path / "a")])
    second = train.main([*args, "--out", str(tmp_path / "b")])
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert (first / weights).read_bytes() == (second / weights).read_bytes()
    longer = train.main(
        ["--steps", "3", "--save-every", "2", "--batch-size", "4", "--eval-samples", "0"]
        + ["--out", str(tmp_path / "c")]
    )
    assert (longer / "step-2" / weights).read_bytes() == (first / weights).read_bytes()
    assert (longer / weights).read_bytes() != (first / weights).read_bytes()
    other = train.main([*args, "--seed", "1", "--eval-samples", "2", "--out", str(tmp_path / "d")])
    assert (other / weights).read_bytes() != (first / weights).read_bytes()
    assert "--steps 2" in (first / "README.md").read_text()
    card = _card_summary(other)
    assert card["seed"] == 1 and card["steps"] == 2 and card["final_loss"] > 0
    assert set(card["eval"]) >= {"trained", "random_weights", "real_digits"}

    trained = DDPMPipeline.from_pretrained(first)
    packaged = json.loads((default_model_path() / "unet" / "config.json").read_text())
    assert json.loads(json.dumps(_public(trained.unet.config))) == _public(packaged)
    assert _public(trained.scheduler.config) == _public(DDPMScheduler().config)


def test_training_script_flow_matching(tmp_path):
    """``--flow``: the same network trained as a flow-matching model, saved with FlowMatchEuler in a
    DDPMPipeline that every diffusers-geo scheduler serves as a flow model; it needs its own --out."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from diffusers_geo import load_scheduler

    train = _load_training_script()
    folder = train.main(
        ["--flow", "--steps", "2", "--batch-size", "4", "--eval-samples", "2", "--out", str(tmp_path / "f")]
    )
    card = _card_summary(folder)
    assert card["flow"] is True and "velocity prediction" in (folder / "README.md").read_text()
    pipe = DDPMPipeline.from_pretrained(folder)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    pipe.scheduler = load_scheduler("er-sde", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=4, generator=torch.Generator().manual_seed(0)).images
    assert len(images) == 2
    with pytest.raises(SystemExit):
        train.main(["--flow", "--steps", "1"])


def test_training_script_larger_architecture(tmp_path):
    """``--channels`` / ``--layers-per-block``: a wider, deeper network (the larger second model of
    docs/eval.md), which needs its own --out; bad values are refused before training."""
    train = _load_training_script()
    folder = train.main(
        ["--channels", "32,64,64", "--layers-per-block", "2", "--steps", "1", "--batch-size", "2"]
        + ["--eval-samples", "0", "--out", str(tmp_path / "large")]
    )
    unet = DDPMPipeline.from_pretrained(folder).unet
    assert tuple(unet.config.block_out_channels) == (32, 64, 64) and unet.config.layers_per_block == 2
    assert _card_summary(folder)["parameters"] == sum(p.numel() for p in unet.parameters()) > 10**6
    for bad in (
        ["--channels", "12,24"],
        ["--channels", "32,64,64,64", "--size", "4"],
        ["--layers-per-block", "0"],
    ):
        with pytest.raises(SystemExit):
            train.main([*bad, "--steps", "1", "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit):
        train.main(["--channels", "32,64", "--steps", "1"])  # would overwrite the packaged model
