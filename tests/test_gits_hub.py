"""A GITS schedule stored next to its scheduler config: save_pretrained into a pipeline's ``scheduler/``
folder, from_pretrained (local folder, subfolder, a Hub download), push_to_hub with only huggingface_hub's
network calls replaced (the ``fake_hub`` fixture of ``test_hub.py``)."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
import torch
from diffusers import DiffusionPipeline, EulerDiscreteScheduler
from test_hub import fake_hub  # noqa: F401  (the fixture)

import diffusers_geo
from diffusers_geo import GITSSchedule, SigmaDDIMScheduler, gits_schedule
from diffusers_geo.gits import GITS_SCHEDULE_NAME
from diffusers_geo.testing import tiny_ddpm_pipeline


@pytest.fixture(scope="module")
def searched():
    """A tiny DDPM pipeline with a diffusers-geo scheduler and a GITS schedule searched on its UNet."""
    pipe = tiny_ddpm_pipeline(scheduler="sigma-ddim", seed=0)
    schedule = gits_schedule(pipe, 3, num_warmup=4, teacher_steps=10, batch_size=2, seed=0, progress=False)
    return pipe, schedule


def _sample(pipe, schedule: GITSSchedule) -> torch.Tensor:
    """Three Euler/DDIM steps of ``pipe``'s UNet on ``schedule`` (DDPMPipeline.__call__ would reset the
    scheduler's schedule with set_timesteps(N))."""
    scheduler = schedule.apply(pipe.scheduler)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(pipe.unet(scheduler.scale_model_input(x, t), t).sample, t, x).prev_sample
    return x


def _assert_same(loaded: GITSSchedule, schedule: GITSSchedule) -> None:
    for f in fields(GITSSchedule):
        assert getattr(loaded, f.name) == getattr(schedule, f.name), f.name
    assert loaded == schedule


def test_schedule_in_a_pipeline_folder_round_trips(searched, tmp_path):
    pipe, schedule = searched
    pipe.save_pretrained(tmp_path)
    path = schedule.save_pretrained(tmp_path / "scheduler")
    assert path == tmp_path / "scheduler" / GITS_SCHEDULE_NAME
    assert sorted(p.name for p in (tmp_path / "scheduler").iterdir()) == [
        GITS_SCHEDULE_NAME,
        "scheduler_config.json",
    ]
    # the pipeline still loads (with its diffusers-geo scheduler), the schedule comes back field by field
    assert diffusers_geo.SigmaDDIMScheduler is SigmaDDIMScheduler
    reloaded = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(reloaded.scheduler) is SigmaDDIMScheduler
    loaded = GITSSchedule.from_pretrained(tmp_path, subfolder="scheduler")
    _assert_same(loaded, schedule)
    assert loaded.info == {"num_processes": 1, "seed": 0}
    assert GITSSchedule.from_pretrained(path) == schedule  # the JSON file itself
    assert GITSSchedule.load(path) == schedule
    # the reloaded pipeline on the reloaded schedule draws what the original does, up to the ~1e-6 that
    # float32 UNet outputs move by between memory alignments of equal weights (safetensors reload), thread
    # counts and CPUs; the schedule itself is compared exactly below
    torch.testing.assert_close(_sample(reloaded, loaded), _sample(pipe, schedule), rtol=1e-4, atol=1e-4)
    assert reloaded.scheduler.sigmas.tolist() == schedule.sigmas


def test_save_pretrained_with_the_scheduler_writes_a_scheduler_folder(searched, tmp_path):
    _, schedule = searched
    euler = EulerDiscreteScheduler.from_config(searched[0].scheduler.config)
    schedule.save_pretrained(tmp_path, scheduler=euler)
    assert sorted(p.name for p in tmp_path.iterdir()) == [GITS_SCHEDULE_NAME, "scheduler_config.json"]
    loaded_scheduler = EulerDiscreteScheduler.from_pretrained(tmp_path)
    assert {k: v for k, v in loaded_scheduler.config.items() if not k.startswith("_")} == {
        k: v for k, v in euler.config.items() if not k.startswith("_")
    }
    applied = GITSSchedule.from_pretrained(tmp_path).apply(loaded_scheduler)
    torch.testing.assert_close(
        applied.sigmas.double(), torch.tensor(schedule.sigmas, dtype=torch.float64), rtol=1e-6, atol=0
    )


def test_push_to_hub_uploads_schedule_and_scheduler_in_one_commit(searched, fake_hub):  # noqa: F811
    pipe, schedule = searched
    url = schedule.push_to_hub(
        "user/my-pipeline", scheduler=pipe.scheduler, subfolder="scheduler", token="hf_x"
    )
    assert url.startswith("https://huggingface.co/user/my-pipeline")
    assert fake_hub.calls["create_repo"] == [
        dict(repo_id="user/my-pipeline", private=None, token="hf_x", exist_ok=True)
    ]
    (upload,) = fake_hub.calls["upload_folder"]  # one commit for both files
    assert upload["commit_message"] == "Upload GITS schedule with SigmaDDIMScheduler"
    folder = fake_hub.remote / "user/my-pipeline" / "scheduler"
    assert sorted(p.name for p in folder.iterdir()) == [GITS_SCHEDULE_NAME, "scheduler_config.json"]
    assert json.loads((folder / GITS_SCHEDULE_NAME).read_text()) == schedule.to_dict()
    assert json.loads((folder / "scheduler_config.json").read_text()) == json.loads(
        pipe.scheduler.to_json_string()
    )
    _assert_same(GITSSchedule.from_pretrained(folder.parent, subfolder="scheduler"), schedule)


def test_push_to_the_repository_root_adds_a_model_card(searched, fake_hub):  # noqa: F811
    _, schedule = searched
    schedule.push_to_hub("my-schedule", private=True, commit_message="GITS 3 steps")
    (upload,) = fake_hub.calls["upload_folder"]
    assert upload == dict(repo_id="user/my-schedule", commit_message="GITS 3 steps", create_pr=False)
    folder = fake_hub.remote / "user/my-schedule"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", GITS_SCHEDULE_NAME]
    _assert_same(GITSSchedule.from_pretrained(folder), schedule)


def test_save_pretrained_push_to_hub_uploads_the_saved_folder(searched, fake_hub, tmp_path):  # noqa: F811
    pipe, schedule = searched
    schedule.save_pretrained(
        tmp_path / "gits-3", scheduler=pipe.scheduler, push_to_hub=True, subfolder="scheduler"
    )
    assert fake_hub.calls["create_repo"][0]["repo_id"] == "gits-3"  # the folder's name
    folder = fake_hub.remote / "user/gits-3" / "scheduler"
    assert sorted(p.name for p in folder.iterdir()) == [GITS_SCHEDULE_NAME, "scheduler_config.json"]
    with pytest.raises(TypeError, match="push_to_hub=True"):
        schedule.save_pretrained(tmp_path / "x", repo_id="user/x")
    with pytest.raises(TypeError, match="Unexpected"):
        schedule.save_pretrained(tmp_path / "x", variant="fp16")


def test_from_pretrained_downloads_from_the_hub(searched, tmp_path, monkeypatch):
    _, schedule = searched
    schedule.save_pretrained(tmp_path / "cache" / "scheduler")
    calls = []

    def download(repo_id, filename, subfolder=None, **kwargs):
        calls.append(dict(repo_id=repo_id, filename=filename, subfolder=subfolder, **kwargs))
        return str(tmp_path / "cache" / (subfolder or "") / filename)

    monkeypatch.setattr(diffusers_geo.gits, "hf_hub_download", download)
    loaded = GITSSchedule.from_pretrained("user/my-pipeline", subfolder="scheduler", revision="v1", token="t")
    _assert_same(loaded, schedule)
    (call,) = calls
    assert call["repo_id"] == "user/my-pipeline" and call["filename"] == GITS_SCHEDULE_NAME
    assert call["subfolder"] == "scheduler" and call["revision"] == "v1" and call["token"] == "t"


def test_clear_errors(searched, tmp_path):
    pipe, schedule = searched
    pipe.scheduler.save_pretrained(tmp_path / "scheduler")  # a scheduler folder without a schedule
    with pytest.raises(FileNotFoundError, match=r"gits_schedule\.json.*save_pretrained"):
        GITSSchedule.from_pretrained(tmp_path, subfolder="scheduler")
    (tmp_path / "scheduler" / GITS_SCHEDULE_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        GITSSchedule.from_pretrained(tmp_path / "scheduler")
    (tmp_path / "scheduler" / GITS_SCHEDULE_NAME).write_text(json.dumps({"sigmas": [1, 0]}))
    with pytest.raises(ValueError, match="not a GITS schedule"):
        GITSSchedule.from_pretrained(tmp_path / "scheduler")
    data = schedule.to_dict()
    del data["sigmas"]
    data["extra"] = 1
    (tmp_path / "scheduler" / GITS_SCHEDULE_NAME).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"unknown \['extra'\], missing \['sigmas'\]"):
        GITSSchedule.from_pretrained(tmp_path / "scheduler")
    (tmp_path / "scheduler" / GITS_SCHEDULE_NAME).write_text(json.dumps({**schedule.to_dict(), "version": 2}))
    with pytest.raises(ValueError, match="version 2"):
        GITSSchedule.from_pretrained(tmp_path / "scheduler")
    with pytest.raises(ValueError, match="is a file"):
        schedule.save_pretrained(tmp_path / "scheduler" / "scheduler_config.json")
    with pytest.raises(TypeError, match="diffusers scheduler"):
        schedule.save_pretrained(tmp_path / "y", scheduler=dict(pipe.scheduler.config))
