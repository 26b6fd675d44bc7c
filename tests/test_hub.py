"""Publishing: every registered scheduler round-trips through save_pretrained / from_pretrained with all its
config values, and through push_to_hub with only huggingface_hub's network calls replaced."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers.utils import hub_utils
from huggingface_hub import ModelCard
from huggingface_hub.errors import RepositoryNotFoundError

import diffusers_geo
from diffusers_geo import SCHEDULERS, GeoScheduler
from diffusers_geo.testing import EXEMPT, OWN_OVERRIDES

BASE_OVERRIDES = dict(
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    prediction_type="v_prediction",
    timestep_spacing="trailing",
    final_sigmas_type="sigma_min",
    jump_step=3,  # ODE-Jump, a shared option of every scheduler
)
BASE_PARAMETERS = inspect.signature(GeoScheduler.__init__).parameters
CLASSES = sorted({cls for cls in SCHEDULERS.values()}, key=lambda c: c.__name__)


def _configured(cls):
    overrides = {**BASE_OVERRIDES, **OWN_OVERRIDES[cls.__name__]}
    scheduler = cls(**overrides)
    for key, value in overrides.items():
        assert scheduler.config[key] == value, key
    return scheduler, overrides


def _public(config) -> dict:
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def test_every_registered_scheduler_has_non_default_test_values():
    missing = [cls.__name__ for cls in CLASSES if cls.__name__ not in OWN_OVERRIDES]
    assert not missing, f"add non-default config values for {missing} to OWN_OVERRIDES"
    for cls in CLASSES:  # every option of the class's own __init__ (not the shared base's)
        own = set(inspect.signature(cls.__init__).parameters) - set(BASE_PARAMETERS) - {"base_config"}
        untested = own - set(OWN_OVERRIDES[cls.__name__]) - EXEMPT.get(cls.__name__, set())
        assert not untested, f"{cls.__name__}: add non-default values for {sorted(untested)} to OWN_OVERRIDES"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_save_and_load_preserve_every_config_value(cls, tmp_path):
    scheduler, overrides = _configured(cls)
    scheduler.save_pretrained(tmp_path)
    on_disk = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert on_disk["_class_name"] == cls.__name__
    for key, value in overrides.items():
        assert on_disk[key] == value, key
    loaded = cls.from_pretrained(tmp_path)
    assert _public(loaded.config) == _public(scheduler.config)
    # the reloaded scheduler runs the same schedule
    scheduler.set_timesteps(7)
    loaded.set_timesteps(7)
    torch.testing.assert_close(loaded.timesteps, scheduler.timesteps)
    torch.testing.assert_close(loaded.sigmas, scheduler.sigmas)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """Replace the three network calls push_to_hub makes (create_repo, ModelCard.load, upload_folder)."""
    calls: dict[str, list] = {"create_repo": [], "upload_folder": []}
    remote = tmp_path / "remote"

    def create_repo(repo_id, private=None, token=None, exist_ok=False, **kwargs):
        calls["create_repo"].append(dict(repo_id=repo_id, private=private, token=token, exist_ok=exist_ok))
        return SimpleNamespace(repo_id=f"user/{repo_id}" if "/" not in repo_id else repo_id)

    def card_load(repo_id_or_path, token=None, **kwargs):
        response = SimpleNamespace(status_code=404, headers={}, request=None)  # what the Hub answers
        raise RepositoryNotFoundError(f"{repo_id_or_path}: no such repository yet", response=response)

    def upload_folder(
        repo_id, folder_path, token=None, commit_message=None, create_pr=False, path_in_repo=None
    ):
        target = remote / repo_id / (path_in_repo or "")
        shutil.copytree(folder_path, target, dirs_exist_ok=True)
        calls["upload_folder"].append(
            dict(repo_id=repo_id, commit_message=commit_message, create_pr=create_pr)
        )
        return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(hub_utils, "create_repo", create_repo)
    monkeypatch.setattr(hub_utils, "upload_folder", upload_folder)
    monkeypatch.setattr(ModelCard, "load", classmethod(lambda cls, *a, **k: card_load(*a, **k)))
    return SimpleNamespace(calls=calls, remote=remote)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_push_to_hub_uploads_the_config(cls, fake_hub):
    scheduler, overrides = _configured(cls)
    scheduler.push_to_hub("my-scheduler", token="hf_test", private=True)
    assert fake_hub.calls["create_repo"] == [
        dict(repo_id="my-scheduler", private=True, token="hf_test", exist_ok=True)
    ]
    (upload,) = fake_hub.calls["upload_folder"]
    assert upload["repo_id"] == "user/my-scheduler" and upload["commit_message"] == "Upload scheduler"
    folder = Path(fake_hub.remote / "user/my-scheduler")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "scheduler_config.json"]
    uploaded = json.loads((folder / "scheduler_config.json").read_text())
    assert uploaded == json.loads(scheduler.to_json_string())
    # what a user downloads loads back into the same scheduler (after `import diffusers_geo`)
    assert _public(diffusers_geo.load_scheduler(cls, uploaded).config) == _public(scheduler.config)
    reloaded = cls.from_pretrained(folder)
    assert _public(reloaded.config) == _public(scheduler.config)


def test_push_to_hub_into_a_subfolder_of_a_pipeline_repo(fake_hub):
    scheduler = SCHEDULERS["er-sde"]()
    scheduler.push_to_hub("user/my-pipeline", subfolder="scheduler")
    folder = fake_hub.remote / "user/my-pipeline" / "scheduler"
    assert sorted(p.name for p in folder.iterdir()) == [
        "scheduler_config.json"
    ]  # no model card in a subfolder
    reloaded = SCHEDULERS["er-sde"].from_pretrained(folder.parent, subfolder="scheduler")
    assert _public(reloaded.config) == _public(scheduler.config)
