"""The checks of a command's arguments that argparse cannot make alone, run before the command loads a
model, imports its heavy modules (diffusers pipelines, Accelerate, transformers, matplotlib) or writes a
file: paths (``--out``, ``--model``, ``--prompts``), devices, sampler names with their ``:key=value``
options, and the optional packages the command needs. Each failure is a ``ValueError`` naming the flag,
the value and the fix; :func:`diffusers_geo.cli.main` prints it as one line and exits with status 2.

Only torch, ``huggingface_hub`` and the registry (which imports diffusers' schedulers, not its pipelines)
are imported here.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache

from ..registry import FLOW_BUILTINS, KARRAS_SUFFIX, make_scheduler, parse_name, resolve_names, split_gits
from ._parsers import BENCH_CONFIGS, BENCH_PROBLEMS, MAIN_BUILTINS

#: a Hub repository id: ``owner/name``
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
#: a flow-matching scheduler config, to check diffusers' flow samplers (and their options) by name
FLOW_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}
#: the import name of each optional package and the name pip knows it by
PACKAGES = {"matplotlib": "matplotlib", "sklearn": "scikit-learn", "scipy": "scipy", "tqdm": "tqdm"}
EXTRA = 'pip install "diffusers-geo[bench]"'


def check(args: argparse.Namespace) -> None:
    """Every check of ``args.command``; a ``ValueError`` for the first that fails."""
    CHECKS[args.command](args)


# --------------------------------------------------------------------------------------------------
# the checks each command composes
# --------------------------------------------------------------------------------------------------
def needs(command: str, *modules: str) -> None:
    """The optional packages ``command`` imports, present (found without importing them)."""
    missing = [PACKAGES[m] for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"{command} needs {', '.join(missing)}, which is not installed: {EXTRA}")


def out_folder(path: Path, flag: str = "--out") -> None:
    """``path`` is a folder or can be made one: not an existing file, below a writable folder."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is an existing file; pass a folder (new or existing) instead")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(
            f"{flag} {path}: {parent} is a file, so the folder cannot be made; pass another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: no permission to write in {parent}; pass a folder you can write")


def model(
    name: str | None, flag: str = "--model", marker: str = "model_index.json", cached: bool = True
) -> None:
    """``name`` is a folder holding ``marker`` or a Hub id ``owner/name`` (in the cache when
    ``HF_HUB_OFFLINE=1`` and ``cached``); ``None`` is the packaged model."""
    if name is None:
        return
    path = Path(name).expanduser()
    if path.exists():
        if not (path / marker).is_file():
            raise ValueError(
                f"{flag} {name} is not a diffusers pipeline folder (it has no {marker}); pass one or a Hub id"
            )
        return
    if not HUB_ID.fullmatch(name):
        raise ValueError(
            f"{flag} {name!r}: no such folder, and not a Hub id (owner/name); pass a pipeline folder or a Hub id"
        )
    if cached and hub_constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(name, marker), str):
        raise ValueError(
            f"{flag} {name}: not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it; "
            "unset HF_HUB_OFFLINE to download it once, or pass a local folder"
        )


def device(text: str | None, flag: str = "--device") -> None:
    """``text`` is ``auto`` (or not given) or a device torch reads that this machine has."""
    if text is None or text == "auto":
        return
    fix = f"pass {flag} cpu, cuda, cuda:N, mps or auto"
    try:
        where = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{flag} {text!r} is not a device; {fix}") from None
    if where.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{flag} {text}: CUDA is not available on this machine; pass {flag} cpu")
        if where.index is not None and where.index >= torch.cuda.device_count():
            raise ValueError(
                f"{flag} {text}: this machine has {torch.cuda.device_count()} CUDA device(s); {fix}"
            )
    elif where.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{flag} {text}: Apple MPS is not available on this machine; pass {flag} cpu")
    elif where.type != "cpu":
        raise ValueError(f"{flag} {text}: the commands run on cpu, cuda or mps; {fix}")


def sampler(name: str, flag: str) -> None:
    """``name`` (with ``:key=value`` options) builds: from a default config of its family (diffusers'
    ``flow-*`` samplers: a flow-matching one), so that unknown names, unknown options and option values the
    scheduler refuses are found before a model is loaded."""
    try:
        base = parse_name(split_gits(name)[0])[0]
        config = FLOW_CONFIG if base.removesuffix(KARRAS_SUFFIX) in FLOW_BUILTINS else {}
        make_scheduler(name, config)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{flag} {name!r}: {err}") from None


def samplers(
    text: str, flag: str = "--schedulers", groups: dict[str, Callable[[], list[str]]] | None = None
) -> list[str]:
    """A comma-separated ``--schedulers`` value: groups and names, each name checked by :func:`sampler`."""
    try:
        names = resolve_names(text, groups)
    except ValueError as err:
        raise ValueError(f"{flag} {text!r}: {err}") from None
    if not names:
        raise ValueError(
            f"{flag} {text!r} selects no scheduler; pass names as in `diffusers-geo bench --list`"
        )
    for name in names:
        sampler(name, flag)
    return names


# --------------------------------------------------------------------------------------------------
# the commands
# --------------------------------------------------------------------------------------------------
def _bench(args: argparse.Namespace) -> None:
    if args.list:
        return
    parts = [p.strip() for p in args.problem.split(",") if p.strip()]
    unknown = [p for p in parts if p not in (*BENCH_PROBLEMS, "all")]
    if unknown or not parts:
        raise ValueError(
            f"unknown --problem {', '.join(unknown) or repr(args.problem)}; choose from {list(BENCH_PROBLEMS)} or all"
        )
    if args.config not in BENCH_CONFIGS:
        path = Path(args.config)
        if not (path.is_file() or (path / "scheduler_config.json").is_file()):
            raise ValueError(
                f"--config {args.config}: no such scheduler_config.json; pass one of {list(BENCH_CONFIGS)} or a path"
            )
    # the names only: their option values are checked against --config by the command, before it samples
    try:
        resolve_names(args.schedulers)
    except ValueError as err:
        raise ValueError(f"--schedulers {args.schedulers!r}: {err}") from None
    device(args.device)  # also without --overhead, so a bad or unavailable device is never silently ignored
    if not args.overhead:
        needs("bench", "matplotlib", "sklearn")
    out_folder(args.out)


def _generate(args: argparse.Namespace) -> None:
    out_folder(args.out)
    model(args.model)
    sampler(args.scheduler, "--scheduler")


def _gits(args: argparse.Namespace) -> None:
    out_folder(args.out)
    model(args.model)
    if args.scheduler is not None:
        sampler(args.scheduler, "--scheduler")
    if args.guidance_scale is not None and args.prompt is None:
        raise ValueError(
            f"--guidance-scale {args.guidance_scale:g} without --prompt: guidance needs a text-to-image "
            "pipeline and a prompt; pass --prompt or drop --guidance-scale"
        )


def _demo(args: argparse.Namespace) -> None:
    out_folder(args.out)
    if args.model is None and args.prompt is not None:
        raise ValueError("--prompt: the packaged digits model is unconditional; --prompt needs --model")
    model(args.model)
    device(args.device)
    for part in args.schedulers.split(","):
        if "+gits" in part:
            raise ValueError(
                f"--schedulers {part.strip()!r}: GITS schedules ('+gits') are searched by `diffusers-geo bench` only"
            )
    samplers(args.schedulers, groups={"main": lambda: list(MAIN_BUILTINS)})


def _analyze(args: argparse.Namespace) -> None:
    out_folder(args.out)
    if args.model not in ("default", "none"):
        model(args.model)
    device(args.device)
    sampler(args.scheduler, "--scheduler")
    needs("analyze", "matplotlib", "sklearn")


def _eval(args: argparse.Namespace) -> None:
    out_folder(args.out)
    model(args.model)
    if args.prompts is not None:
        if not args.prompts.is_file():
            raise ValueError(
                f"--prompts {args.prompts}: no such file; pass a text file with one prompt per line"
            )
        if args.clip_model.lower() != "none":  # not in the cache offline: the score is skipped with a note
            model(args.clip_model, "--clip-model", marker="config.json", cached=False)
    device(args.device)
    samplers(args.schedulers)
    name, sep, steps = args.reference.strip().rpartition(":")
    if not sep or not steps.isdigit() or int(steps) < 1:
        raise ValueError(
            f"--reference {args.reference!r} must be NAME:STEPS with STEPS >= 1 (e.g. dpmpp-2m-karras:100)"
        )
    sampler(name, "--reference")
    needs("eval", "matplotlib")


CHECKS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "bench": _bench,
    "generate": _generate,
    "gits": _gits,
    "demo": _demo,
    "analyze": _analyze,
    "eval": _eval,
}
