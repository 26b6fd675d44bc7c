"""Packaging rules: public exports, stable module names, no clash with diffusers' pipeline folders."""

import pkgutil
from pathlib import Path

import diffusers.pipelines

import diffusers_geo


def test_public_api_is_exported_with_a_stable_module():
    for name in diffusers_geo.__all__:
        assert hasattr(diffusers_geo, name), name
    # diffusers loads a class named in model_index.json only if its module exposes a loadable base class
    assert diffusers_geo.SchedulerMixin is not None and diffusers_geo.ModelMixin is not None
    for cls in (diffusers_geo.SigmaDDIMScheduler, diffusers_geo.OptimalDenoiser):
        assert cls.__module__ == "diffusers_geo"
    for cls in diffusers_geo.SCHEDULERS.values():
        assert cls.__name__.endswith("Scheduler") and cls.__module__ == "diffusers_geo"


def test_no_subpackage_shares_a_name_with_a_diffusers_pipeline_folder():
    pipeline_folders = {m.name for m in pkgutil.iter_modules(diffusers.pipelines.__path__) if m.ispkg}
    ours = {m.name for m in pkgutil.walk_packages(diffusers_geo.__path__) if m.ispkg}
    ours |= {p.name for p in Path(diffusers_geo.__file__).parent.iterdir() if p.is_dir()}
    assert ours and not (ours & pipeline_folders), ours & pipeline_folders
