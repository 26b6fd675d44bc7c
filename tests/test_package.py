"""Packaging rules: public exports, stable module names, no clash with diffusers' pipeline folders."""

import os
import pkgutil
import subprocess
import sys
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


def test_saved_pipeline_loads_only_after_importing_diffusers_geo(tmp_path):
    """diffusers >= 0.42.1 refuses to import a module named by model_index.json: users must
    `import diffusers_geo` first (README, "Saved pipelines"). Checked in a fresh interpreter."""
    from diffusers_geo import load_scheduler
    from diffusers_geo.testing import tiny_ddpm_pipeline

    pipe = tiny_ddpm_pipeline()
    pipe.scheduler = load_scheduler("sigma-ddim", pipe.scheduler.config)
    pipe.save_pretrained(tmp_path)
    script = (
        "import sys\n"
        "from diffusers import DiffusionPipeline\n"
        "if sys.argv[2] == 'import':\n"
        "    import diffusers_geo\n"
        "try:\n"
        "    pipe = DiffusionPipeline.from_pretrained(sys.argv[1])\n"
        "except ValueError as err:\n"
        "    print('ValueError', 'diffusers_geo' in str(err))\n"
        "else:\n"
        "    print('loaded', type(pipe.scheduler).__name__)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for mode, expected in (("import", "loaded SigmaDDIMScheduler"), ("no-import", "ValueError True")):
        result = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path), mode],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert result.stdout.strip().splitlines()[-1] == expected, (
            mode,
            result.stdout,
            result.stderr[-2000:],
        )
