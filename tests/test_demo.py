"""``diffusers-geo demo``: the grid and JSON on the packaged model, the same noise for every sampler, NFE
counting, the ``--model`` path on a tiny Stable Diffusion pipeline saved to disk, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_geo import SCHEDULERS, default_model_path, load_default_pipeline, load_scheduler
from diffusers_geo.cli import main
from diffusers_geo.cli.demo import MAIN_BUILTINS, resolve_schedulers
from diffusers_geo.registry import scheduler_names
from diffusers_geo.sampling import run_pipeline
from diffusers_geo.testing import tiny_sd_pipeline


def _run(tmp_path, *args: str) -> tuple[dict, Image.Image]:
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--no-progress", *args]) == 0
    report = json.loads((out / "demo.json").read_text())
    return report, Image.open(out / "demo.png")


def test_demo_on_the_packaged_model_with_every_registered_scheduler(tmp_path):
    """Every diffusers_geo scheduler registered now (whatever other modules added) gets a row and runs
    within its NFE budget; NFE counts model calls (Heun: 2N - 1 calls for N steps)."""
    report, grid = _run(tmp_path, "--schedulers", "ours,dpmpp-2m,heun", "--nfe", "3,5", "--num-images", "2")
    settings, runs = report["settings"], report["runs"]
    rows = scheduler_names() + ["dpmpp-2m", "heun"]
    assert settings["pipeline"] == "DDPMPipeline" and settings["seeds"] == [0, 1]
    assert settings["schedulers"] == rows and settings["nfe"] == [3, 5]
    assert settings["model"] == str(default_model_path()) and settings["dtype"] == "float32"
    assert [(r["scheduler"], r["nfe_target"]) for r in runs] == [(n, k) for n in rows for k in (3, 5)]
    ours = {r["scheduler_class"] for r in runs if r["scheduler"] in SCHEDULERS}
    assert ours == {cls.__name__ for cls in SCHEDULERS.values()}
    for run in runs:
        assert run["steps"] is not None or run["nfe_target"] == 3, run  # NFE 5 fits every scheduler
        if run["steps"] is not None:
            assert 1 <= run["model_calls"] <= run["nfe_target"] and run["seconds"] > 0, run
    calls = {(r["scheduler"], r["nfe_target"]): (r["steps"], r["model_calls"]) for r in runs}
    assert calls["sigma-ddim", 3] == (3, 3) and calls["sigma-ddim", 5] == (5, 5)
    assert calls["dpmpp-2m", 3] == (3, 3) and calls["dpmpp-2m", 5] == (5, 5)
    assert calls["heun", 3] == (2, 3) and calls["heun", 5] == (3, 5)
    # one row per sampler, 2 NFE columns of two 8x8 digits enlarged to 48 px, plus labels
    assert grid.mode == "RGB" and grid.width > 2 * (2 * 48) and grid.height > len(rows) * 48
    assert np.asarray(grid).std() > 20  # not blank


def test_demo_shows_a_progress_bar(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--out", str(out), "--schedulers", "sigma-ddim", "--nfe", "1,2", "--num-images", "1"]
    assert main(["demo", *args]) == 0
    captured = capsys.readouterr()
    assert "demo: 100%" in captured.err and "2/2" in captured.err
    assert f"wrote {out / 'demo.png'}" in captured.out


def test_generate_uses_the_same_noise_as_ddpm_pipeline():
    """For a VP-interface scheduler the demo's loop is DDPMPipeline.__call__ exactly; image i depends only
    on seeds[i], whatever the batch."""
    pipe = load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    scheduler = load_scheduler("sigma-ddim", pipe.scheduler.config)
    images, calls = run_pipeline(pipe, scheduler, 4, [5, 6])
    size = pipe.unet.config.sample_size
    assert calls == 4 and images.shape == (2, size, size, 1)

    pipe.scheduler = load_scheduler("sigma-ddim", pipe.scheduler.config)
    generators = [torch.Generator().manual_seed(s) for s in (5, 6)]
    reference = pipe(batch_size=2, num_inference_steps=4, generator=generators, output_type="np").images
    np.testing.assert_allclose(images, reference, atol=1e-6)

    alone, _ = run_pipeline(pipe, load_scheduler("sigma-ddim", pipe.scheduler.config), 4, [6])
    np.testing.assert_allclose(alone[0], images[1], atol=1e-5)
    other, _ = run_pipeline(pipe, load_scheduler("sigma-ddim", pipe.scheduler.config), 4, [7])
    assert np.abs(other[0] - images[1]).max() > 0.1


def test_scheduler_groups_follow_the_registry(monkeypatch):
    classes = set(SCHEDULERS.values())
    assert len(scheduler_names()) == len(classes) and {SCHEDULERS[n] for n in scheduler_names()} == classes
    assert resolve_schedulers("ours,main") == scheduler_names() + list(MAIN_BUILTINS)
    assert resolve_schedulers("euler,euler,sigma-ddim:timestep_spacing=trailing") == [
        "euler",
        "sigma-ddim:timestep_spacing=trailing",
    ]
    # a scheduler registered later (another module, a plugin) shows up without touching the demo
    monkeypatch.setitem(SCHEDULERS, "zz-new", type("NewScheduler", (SCHEDULERS["sigma-ddim"],), {}))
    assert scheduler_names()[-1] == "zz-new"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--schedulers", "sigma-ddim,nope"], "unknown scheduler 'nope'; use 'ours', 'main'"),
        (["--prompt", "a cat"], "unconditional; --prompt needs --model"),
        (
            ["--model", "/nonexistent/folder"],
            "--model '/nonexistent/folder': no such folder, and not a Hub id",
        ),
        (["--num-images", "0"], "--num-images must be >= 1"),
        (["--threads", "-1"], "--threads must be >= 1"),
        (["--schedulers", "unipc+gits"], "GITS schedules"),
    ],
)
def test_bad_input_gives_a_clear_error(tmp_path, args, message):
    with pytest.raises(SystemExit, match=message):
        main(["demo", "--out", str(tmp_path), "--no-progress", *args])
    assert not (tmp_path / "demo.png").exists()


def test_bad_nfe_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--nfe", "0,5"])
    assert "expected integers >= 1" in capsys.readouterr().err


def test_model_path_with_a_tiny_stable_diffusion_pipeline(tmp_path):
    """``--model <folder>`` loads any saved pipeline with DiffusionPipeline.from_pretrained and passes the
    prompt; classifier-free guidance's batched UNet call counts once per step."""
    folder = tmp_path / "tiny-sd"
    tiny_sd_pipeline().save_pretrained(folder)
    args = ["--model", str(folder), "--prompt", "a cat", "--schedulers", "sigma-ddim,euler,heun"]
    report, grid = _run(tmp_path, *args, "--nfe", "3", "--num-images", "2", "--device", "cpu")
    settings = report["settings"]
    assert settings["pipeline"] == "StableDiffusionPipeline" and settings["prompt"] == "a cat"
    assert settings["dtype"] == "float32" and settings["device"] == "cpu"
    assert [(r["scheduler"], r["steps"], r["model_calls"]) for r in report["runs"]] == [
        ("sigma-ddim", 3, 3),
        ("euler", 3, 3),
        ("heun", 2, 3),
    ]
    assert grid.height > 3 * 16

    with pytest.raises(SystemExit, match="takes no prompt"):
        main(["demo", "--model", str(default_model_path()), "--prompt", "x", "--out", str(tmp_path / "y")])


def test_model_path_with_a_tiny_flux_pipeline(tmp_path):
    """A flow-matching pipeline: 'main' means diffusers' flow samplers, every scheduler of ours serves it, and
    a sampler for the other model family is refused with the names that fit."""
    from diffusers_geo.cli.demo import MAIN_FLOW_BUILTINS
    from diffusers_geo.testing import tiny_flux_pipeline

    folder = tmp_path / "tiny-flux"
    tiny_flux_pipeline().save_pretrained(folder)
    report, _ = _run(tmp_path, "--model", str(folder), "--prompt", "a cat", "--nfe", "3", "--num-images", "1")
    runs = {r["scheduler"]: r for r in report["runs"]}
    assert report["settings"]["pipeline"] == "FluxPipeline"
    assert set(runs) == set(scheduler_names()) | set(MAIN_FLOW_BUILTINS)
    assert all(r["model_calls"] == 3 for r in runs.values())
    with pytest.raises(SystemExit, match="'ddim' is a diffusers sampler for variance-preserving models"):
        main(["demo", "--model", str(folder), "--schedulers", "ddim", "--out", str(tmp_path / "z")])
