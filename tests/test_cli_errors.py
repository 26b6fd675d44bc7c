"""The command line's contract for user errors (issue 24): a bad argument of any command is refused before
any work, as one line on stderr naming the flag (``diffusers-geo <command>: error: --flag ...``), with exit
status 2, no traceback and no file written; ``--debug`` shows the traceback; ``--help`` and ``--version``
import none of the heavy dependencies.

Most cases run ``main`` in-process from an empty working directory (which must stay empty); a few
subprocesses check the same contract end to end and the import-lightness of ``--help``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffusers_geo.cli import COMMANDS, _checks, _parsers, build_parser, main

#: what a command needs besides the value under test
REQUIRED = {"gits": ["--steps", "2"]}
#: every numeric option of every command: an integer's minimum, or "positive" / "non-negative" (floats)
NUMERIC = {
    "bench": {"--seeds": 1, "--samples": 2, "--size": 2, "--threads": 1, "--sigma-start": "positive"},
    "generate": {"--steps": 1, "--num-images": 1, "--batch-size": 1, "--seed": 0},
    "gits": {
        "--steps": 1,
        "--num-warmup": 1,
        "--teacher-steps": 2,
        "--coeff": "positive",
        "--guidance-scale": "non-negative",
        "--seed": 0,
        "--batch-size": 1,
    },
    "demo": {"--num-images": 1, "--threads": 1},
    "analyze": {"--steps": 2, "--samples": 1, "--eps": "positive", "--size": 2, "--seed": 0, "--threads": 1},
    "eval": {"--num-images": 1, "--batch-size": 1, "--seed": 0, "--threads": 1},
}
#: every integer-list option
LISTS = {"bench": ["--nfe"], "demo": ["--nfe", "--seeds"], "eval": ["--nfe"]}
HEAVY = ("torch", "diffusers", "accelerate", "transformers", "matplotlib")


def _bad_values(kind: int | str) -> list[str]:
    """Values below the minimum, not finite, or not numbers at all."""
    if isinstance(kind, int):
        below = sorted({str(kind - 1), "-1"})
        return [*below, "nan", "abc", "1.5"]
    return ["-1", "nan", "inf", "abc", *(["0"] if kind == "positive" else [])]


NUMERIC_CASES = [
    (command, flag, value)
    for command, flags in NUMERIC.items()
    for flag, kind in flags.items()
    for value in _bad_values(kind)
]
LIST_CASES = [
    (command, flag, value)
    for command, flags in LISTS.items()
    for flag in flags
    for value in ("-1", "5,x", ",", "nan", *(["0,5"] if flag == "--nfe" else []))
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory that must stay empty (no --out folder made, nothing written)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield cwd
    assert not list(cwd.iterdir()), list(cwd.iterdir())


def refused(capsys, argv: list[str], flag: str) -> str:
    """Run ``main(argv)``: exit status 2, one stderr line naming ``flag``, no traceback; returns the line."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"diffusers-geo {argv[0]}: error: "), lines[0]
    assert flag in lines[0] and "Traceback" not in captured.err, lines[0]
    assert not captured.out
    return lines[0]


def _numeric_actions(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = {}
    for command, subparser in sub.choices.items():
        found[command] = sorted(
            a.option_strings[-1]
            for a in subparser._actions
            if getattr(a.type, "__name__", None) in ("integer", "number", "list")
        )
    return found


def test_the_tables_name_every_numeric_option_of_every_command():
    """A new numeric option fails here until it has its bad-value cases below."""
    expected = {c: sorted([*NUMERIC.get(c, {}), *LISTS.get(c, [])]) for c in COMMANDS}
    assert _numeric_actions(build_parser()) == expected


@pytest.mark.parametrize(("command", "flag", "value"), NUMERIC_CASES)
def test_bad_numbers_are_refused_naming_the_flag(command, flag, value, capsys, workdir):
    line = refused(capsys, [command, *REQUIRED.get(command, []), flag, value], flag)
    assert repr(value) in line  # the value as given
    assert "pass" in line or "must be" in line


@pytest.mark.parametrize(("command", "flag", "value"), LIST_CASES)
def test_bad_integer_lists_are_refused_naming_the_flag(command, flag, value, capsys, workdir):
    refused(capsys, [command, flag, value], flag)


@pytest.mark.parametrize(
    ("argv", "flag", "message"),
    [
        (["generate", "--scheduler", "nope"], "--scheduler", "Unknown sampler 'nope'"),
        (["generate", "--scheduler", "er-sde:solver_order=9"], "--scheduler", "solver_order"),
        (["generate", "--scheduler", "er-sde:gamma=2"], "--scheduler", "no option 'gamma'"),
        (["generate", "--scheduler", "er-sde:solver_order"], "--scheduler", "key=value"),
        (["gits", "--steps", "2", "--scheduler", "nope"], "--scheduler", "Unknown sampler"),
        (["gits", "--steps", "2", "--metric", "nope"], "--metric", "invalid choice"),
        (["gits", "--steps", "2", "--jump", "nope"], "--jump", "invalid choice"),
        (["gits", "--steps", "2", "--grid", "nope"], "--grid", "invalid choice"),
        (["gits", "--steps", "2", "--guidance-scale", "5"], "--guidance-scale", "--prompt"),
        (["gits"], "--steps", "required"),
        (["bench", "--schedulers", "nope"], "--schedulers", "unknown scheduler 'nope'"),
        (["bench", "--schedulers", "er-sde:solver_order=9"], "--schedulers", "solver_order"),
        (["bench", "--schedulers", "sigma-ddim,er-sde:gamma=2"], "--schedulers", "no option 'gamma'"),
        (["bench", "--config", "sd3", "--schedulers", "ddim"], "--schedulers", "flow-matching"),
        (["bench", "--problem", "nope"], "--problem", "unknown --problem"),
        (["bench", "--config", "missing.json"], "--config", "missing.json"),
        (["bench", "--prediction", "nope"], "--prediction", "invalid choice"),
        (["bench", "--prior", "nope"], "--prior", "invalid choice"),
        (["bench", "--overhead", "--device", "banana"], "--device", "not a device"),
        (["demo", "--schedulers", "sigma-ddim,nope"], "--schedulers", "unknown scheduler 'nope'"),
        (["demo", "--schedulers", "er-sde:solver_order=9"], "--schedulers", "solver_order"),
        (["demo", "--schedulers", "unipc+gits"], "--schedulers", "GITS schedules"),
        (["demo", "--device", "banana"], "--device", "not a device"),
        (["demo", "--device", "cuda:x"], "--device", "not a device"),
        (["demo", "--device", "meta"], "--device", "cpu, cuda or mps"),
        (["demo", "--dtype", "float8"], "--dtype", "invalid choice"),
        (["demo", "--prompt", "a cat"], "--prompt", "unconditional"),
        (["analyze", "--scheduler", "nope"], "--scheduler", "Unknown sampler"),
        (["analyze", "--device", "banana"], "--device", "not a device"),
        (["eval", "--schedulers", "nope"], "--schedulers", "unknown scheduler"),
        (["eval", "--reference", "dpmpp-2m"], "--reference", "NAME:STEPS"),
        (["eval", "--reference", "dpmpp-2m:0"], "--reference", "NAME:STEPS"),
        (["eval", "--reference", "nope:10"], "--reference", "Unknown sampler"),
        (["eval", "--prompts", "missing.txt"], "--prompts", "no such file"),
        (["eval", "--device", "banana"], "--device", "not a device"),
        (["eval", "--dtype", "float8"], "--dtype", "invalid choice"),
        (["eval", "--bogus"], "--bogus", "unrecognized"),
    ],
)
def test_bad_names_choices_and_options_are_refused(argv, flag, message, capsys, workdir):
    assert message in refused(capsys, argv, flag)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["demo", "analyze", "eval", "bench"])
def test_cuda_without_cuda_is_refused(command, capsys, workdir):
    assert "CUDA is not available" in refused(capsys, [command, "--device", "cuda"], "--device")


@pytest.mark.skipif(
    getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
    reason="needs a machine without MPS",
)
def test_mps_without_mps_is_refused(capsys, workdir):
    assert "MPS is not available" in refused(capsys, ["demo", "--device", "mps"], "--device")


@pytest.mark.parametrize(
    ("command", "flag"), [(c, "--model") for c in ("generate", "gits", "demo", "eval", "analyze")]
)
def test_a_missing_model_folder_that_is_no_hub_id_is_refused(command, flag, capsys, workdir):
    line = refused(capsys, [command, *REQUIRED.get(command, []), flag, "./no-such-model"], flag)
    assert "no such folder" in line and "Hub id" in line


@pytest.mark.parametrize("command", ["generate", "demo", "eval"])
def test_a_folder_that_is_no_pipeline_is_refused(command, tmp_path, capsys, workdir):
    assert "is not a diffusers pipeline folder" in refused(
        capsys, [command, "--model", str(tmp_path)], "--model"
    )


def test_a_hub_id_not_in_the_cache_is_refused_offline(monkeypatch, capsys, workdir):
    monkeypatch.setattr(_checks.hub_constants, "HF_HUB_OFFLINE", True)
    line = refused(capsys, ["generate", "--model", "diffusers-geo-tests/no-such-model"], "--model")
    assert "not in the Hugging Face cache" in line and "HF_HUB_OFFLINE" in line


def test_a_clip_model_that_does_not_exist_is_refused(tmp_path, capsys, workdir):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    argv = ["eval", "--prompts", str(prompts), "--clip-model", "./no-clip"]
    assert "no such folder" in refused(capsys, argv, "--clip-model")


@pytest.mark.parametrize("command", COMMANDS)
def test_out_naming_an_existing_file_is_refused_and_left_alone(command, tmp_path, capsys, workdir):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    line = refused(capsys, [command, *REQUIRED.get(command, []), "--out", str(existing)], "--out")
    assert "existing file" in line and existing.read_text() == "keep me"
    below = refused(capsys, [command, *REQUIRED.get(command, []), "--out", str(existing / "sub")], "--out")
    assert "cannot be made" in below and existing.read_text() == "keep me"


@pytest.mark.parametrize(
    ("command", "module"),
    [("analyze", "matplotlib"), ("analyze", "sklearn"), ("eval", "matplotlib"), ("bench", "matplotlib")],
)
def test_a_missing_optional_package_is_named_with_the_extra(command, module, monkeypatch, capsys, workdir):
    find_spec = _checks.importlib.util.find_spec
    monkeypatch.setattr(
        _checks.importlib.util, "find_spec", lambda name, *a: None if name == module else find_spec(name, *a)
    )
    line = refused(capsys, [command], _checks.PACKAGES[module])
    assert 'pip install "diffusers-geo[bench]"' in line


def test_library_errors_during_a_run_are_one_line_and_debug_shows_the_traceback(monkeypatch, capsys, workdir):
    """A ValueError / OSError raised by the library while the command runs is a user error (one line, status
    2); with --debug, before or after the command, it propagates with its traceback."""
    from diffusers_geo.cli import generate

    def refuse(*args, **kwargs):
        raise OSError("model weights are missing\nsecond line of the message")

    monkeypatch.setattr(generate, "start_and_load", refuse)
    line = refused(capsys, ["generate"], "model weights are missing")
    assert line.endswith("model weights are missing second line of the message")
    for argv in (["--debug", "generate"], ["generate", "--debug"]):
        with pytest.raises(OSError, match="model weights are missing"):
            main(argv)


def test_the_light_modules_agree_with_the_library():
    """``_parsers`` writes out the library's defaults so that ``--help`` imports nothing heavy."""
    import diffusers_geo
    from diffusers_geo import evaluation, schedulers
    from diffusers_geo.bench import problems

    assert (_parsers.EVAL_SCHEDULERS, _parsers.EVAL_NFE) == (
        evaluation.DEFAULT_SCHEDULERS,
        evaluation.DEFAULT_NFE,
    )
    assert (_parsers.EVAL_REFERENCE, _parsers.CLIP_MODEL) == (evaluation.REFERENCE, evaluation.CLIP_MODEL)
    assert _parsers.BENCH_PROBLEMS == problems.PROBLEMS and _parsers.BENCH_CONFIGS == tuple(problems.CONFIGS)
    assert sorted(diffusers_geo._SCHEDULER_NAMES) == sorted(schedulers.__all__)


# --------------------------------------------------------------------------------------------------
# end to end, in fresh interpreters
# --------------------------------------------------------------------------------------------------
def _python(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def test_help_and_version_import_no_heavy_dependency():
    script = (
        "import sys\n"
        "from diffusers_geo.cli import COMMANDS, build_parser\n"
        "for argv in (['--help'], ['--version'], *([c, '--help'] for c in COMMANDS)):\n"
        "    try:\n"
        "        build_parser().parse_args(argv)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, (argv, exit.code)\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    done = _python("-c", script)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-3000:]


def test_version_and_python_m_diffusers_geo():
    import diffusers_geo

    for module in ("diffusers_geo", "diffusers_geo.cli"):
        done = _python("-m", module, "--version")
        assert done.returncode == 0 and done.stdout.strip() == f"diffusers-geo {diffusers_geo.__version__}", (
            done
        )
    done = _python("-m", "diffusers_geo", "generate", "--help")
    assert done.returncode == 0 and "--num-images" in done.stdout


def test_end_to_end_a_user_error_is_one_line_and_exit_2_and_debug_shows_the_traceback(tmp_path):
    for argv, flag in ((["generate", "--steps", "0"], "--steps"), (["analyze", "--eps", "nan"], "--eps")):
        done = _python("-m", "diffusers_geo", *argv, cwd=tmp_path)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert flag in done.stderr and "Traceback" not in done.stderr
    done = _python("-m", "diffusers_geo", "generate", "--model", "./no-such-model", "--debug", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" in done.stderr and "no such folder" in done.stderr
    assert not list(tmp_path.iterdir())
