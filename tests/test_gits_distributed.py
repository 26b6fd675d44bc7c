"""GITS warm-up over several processes: per-sample seeds make the schedule independent of the batch size,
of how prompts and noises are grouped into pipeline calls, and of the number of processes
(``diffusers-geo gits`` under ``accelerate launch --multi_gpu --num_processes 2`` on the CPU, gloo)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from diffusers import EulerDiscreteScheduler

import diffusers_geo.gits
from diffusers_geo import GITSSchedule, OptimalDenoiser, gits_schedule
from diffusers_geo.cli import main
from diffusers_geo.gits import GITS_SCHEDULE_NAME
from diffusers_geo.testing import SD_BETAS, accelerate_launch, tiny_sd_pipeline

ARGS = ["--steps", "3", "--teacher-steps", "8", "--num-warmup", "6", "--batch-size", "2", "--seed", "3"]
ARGS += ["--scheduler", "euler", "--no-progress"]


def gaussian_model() -> OptimalDenoiser:
    mean = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    variances = torch.logspace(-3, 0, 16, dtype=torch.float64).reshape(1, 1, 4, 4)
    return OptimalDenoiser.from_gaussian_mixture(mean, variances, **SD_BETAS).double()


def test_seeded_warmup_does_not_depend_on_the_batch_size():
    model = gaussian_model()
    kwargs = dict(num_warmup=7, teacher_steps=20, seed=11, progress=False)
    one, three, all_ = (gits_schedule(model, 4, batch_size=b, **kwargs) for b in (1, 3, 7))
    for other in (three, all_):
        assert other.grid_indices == one.grid_indices and other.sigmas == one.sigmas
        assert other.cost == pytest.approx(one.cost, rel=1e-12, abs=0)
    assert one.info == {"num_processes": 1, "seed": 11} and one.num_warmup == 7


def test_warmup_sample_i_draws_its_noise_from_seed_plus_i():
    model = gaussian_model()
    starts = []

    def plain(x, t):  # the teacher's first call of every batch sees the batch's initial noise
        if not starts or t == starts[0][0]:
            starts.append((t, x.clone()))
        return model(x, t).sample

    gits_schedule(
        plain,
        2,
        scheduler_config=dict(model.config),
        sample_shape=(1, 4, 4),
        num_warmup=7,
        teacher_steps=5,
        batch_size=3,
        seed=20,
        progress=False,
    )
    assert [len(x) for _, x in starts] == [3, 3, 1]
    noise = torch.cat([x for _, x in starts])
    for i in range(7):
        expected = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(20 + i))
        torch.testing.assert_close(noise[i], expected, rtol=0, atol=0)


def test_each_prompt_keeps_its_noise_however_samples_are_batched():
    pipe = tiny_sd_pipeline("txt2img", prediction_type="epsilon", seed=0)
    kwargs = dict(guidance_scale=5.0, num_warmup=4, teacher_steps=8, seed=0, progress=False)
    by_two = gits_schedule(pipe, 3, prompt=["a cat", "a dog"], batch_size=2, **kwargs)  # one group per call
    by_four = gits_schedule(pipe, 3, prompt=["a cat", "a dog"], batch_size=4, **kwargs)  # two groups
    assert by_four.grid_indices == by_two.grid_indices
    assert by_four.cost == pytest.approx(by_two.cost, rel=1e-6, abs=0)
    # the pairing matters: the same noises with the prompts swapped give another cost
    swapped = gits_schedule(pipe, 3, prompt=["a dog", "a cat"], batch_size=4, **kwargs)
    assert swapped.cost != pytest.approx(by_two.cost, rel=1e-4)


def test_seed_and_generator_and_processes(monkeypatch):
    model = gaussian_model()
    with pytest.raises(ValueError, match="not both"):
        gits_schedule(model, 2, teacher_steps=4, seed=0, generator=torch.Generator(), progress=False)
    with pytest.raises(TypeError, match="seed must be an int"):
        gits_schedule(model, 2, teacher_steps=4, seed=1.5, progress=False)
    assert diffusers_geo.gits._distributed_state() is None  # a plain process
    monkeypatch.setattr(diffusers_geo.gits, "_distributed_state", lambda: SimpleNamespace(num_processes=2))
    with pytest.raises(ValueError, match="2 processes: pass seed=.*generator= cannot be split"):
        gits_schedule(model, 2, teacher_steps=4, generator=torch.Generator(), progress=False)
    with pytest.raises(ValueError, match="2 processes: pass seed="):
        gits_schedule(model, 2, teacher_steps=4, progress=False)


def test_two_processes_search_the_same_schedule_as_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["gits", *ARGS, "--out", str(one)]) == 0
    done = accelerate_launch(["gits", *ARGS, "--out", str(two)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 process(es)" in done.stdout

    first, second = (json.loads((d / GITS_SCHEDULE_NAME).read_text()) for d in (one, two))
    assert first["info"].pop("num_processes") == 1 and second["info"].pop("num_processes") == 2
    assert first["info"] == {"seed": 3, "model": None, "prompt": None, "guidance_scale": None}
    # float64 sums of float32 UNet outputs computed in other processes (other thread counts): ~1e-7 apart
    assert second.pop("cost") == pytest.approx(first.pop("cost"), rel=1e-5, abs=0)
    assert second == first  # sigmas, timesteps, grid indices, teacher grid, settings: identical
    assert first["num_warmup"] == 6 and first["model_calls"] == 6 * 8 and len(first["sigmas"]) == 4
    # --out is a scheduler folder: the chosen scheduler's config next to the schedule
    assert (one / "scheduler_config.json").read_text() == (two / "scheduler_config.json").read_text()
    scheduler = EulerDiscreteScheduler.from_pretrained(two)
    GITSSchedule.from_pretrained(two).apply(scheduler)
    assert scheduler.timesteps.tolist() == pytest.approx(first["timesteps"], abs=0.5)


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--num-warmup", "0"], ["--batch-size", "0"]])
def test_bad_counts(tmp_path, bad, capsys):
    with pytest.raises(SystemExit, match="must be >= 1") as info:
        main(["gits", "--steps", "3", *bad, "--out", str(tmp_path)])
    assert info.value.code == 2 and bad[0] in capsys.readouterr().err  # one line naming the flag


def test_the_command_notes_a_scheduler_that_cannot_take_the_schedule(tmp_path, capsys):
    args = ["gits", "--steps", "2", "--teacher-steps", "4", "--num-warmup", "1", "--no-progress"]
    assert main([*args, "--scheduler", "ddim", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "note: DDIMScheduler takes no custom schedule" in out and "--scheduler" in out
    assert GITSSchedule.from_pretrained(tmp_path).info["num_processes"] == 1
