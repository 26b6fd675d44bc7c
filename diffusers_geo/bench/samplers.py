"""Names of the samplers the benchmark compares: diffusers' built-ins and ours (the package registry)."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..registry import SCHEDULERS, load_scheduler, scheduler_names

# name -> (class, overrides, stochastic)
BUILTINS: dict[str, tuple[type, dict[str, Any], bool]] = {
    "ddim": (DDIMScheduler, {}, False),
    "euler": (EulerDiscreteScheduler, {}, False),
    "heun": (HeunDiscreteScheduler, {}, False),
    "dpmpp-2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}, False),
    "dpmpp-3m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 3}, False),
    "dpmpp-2m-sde": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        True,
    ),
    "unipc": (UniPCMultistepScheduler, {}, False),
    "deis": (DEISMultistepScheduler, {}, False),
    "euler-a": (EulerAncestralDiscreteScheduler, {}, True),
    "ddpm": (DDPMScheduler, {}, True),
}
KARRAS_SUFFIX = "-karras"
GITS_SUFFIX = "+gits"


def _supports_karras(cls: type) -> bool:
    return "use_karras_sigmas" in inspect.signature(cls.__init__).parameters


def builtin_names(karras: bool = True) -> list[str]:
    """Every built-in name, and its ``-karras`` variant where the class supports Karras sigmas."""
    names = list(BUILTINS)
    if karras:
        names += [n + KARRAS_SUFFIX for n, (cls, _, _) in BUILTINS.items() if _supports_karras(cls)]
    return names


def all_names() -> list[str]:
    """Every name ``--schedulers`` takes (without options): ours, ours with ``-karras``, the built-ins."""
    return sorted(SCHEDULERS) + [n + KARRAS_SUFFIX for n in sorted(SCHEDULERS)] + builtin_names()


def resolve_names(text: str, extra_groups: dict[str, Callable[[], list[str]]] | None = None) -> list[str]:
    """Expand a comma-separated ``--schedulers`` value: the groups ``ours`` (one name per diffusers-geo
    scheduler class), ``builtins`` and ``all``, any ``extra_groups``, and single names (with options).
    Duplicates are dropped; an unknown name is a ValueError listing the valid ones."""
    groups: dict[str, Callable[[], list[str]]] = {"ours": scheduler_names, **(extra_groups or {})}
    groups.update(builtins=builtin_names, all=lambda: scheduler_names() + builtin_names())
    names: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part in groups:
            names += groups[part]()
        elif is_known(part):
            names.append(part)
        else:
            choices = ", ".join(repr(g) for g in groups)
            raise ValueError(f"unknown scheduler {part!r}; use {choices} or one of {all_names()}")
    return list(dict.fromkeys(names))


def parse_name(name: str) -> tuple[str, dict[str, Any]]:
    """Split ``"er-sde:solver_order=2:use_karras_sigmas=True"`` into ``("er-sde", {...})``.

    Options after ``:`` are config overrides; values are Python literals (``2``, ``0.5``, ``True``,
    ``None``) or else plain strings (``noise_scale=ode``). A ``-karras`` suffix on one of our names is
    ``use_karras_sigmas=True``.
    """
    base, *options = name.strip().split(":")
    overrides = _key_values(options, name, "key=value")
    if base not in SCHEDULERS and base.endswith(KARRAS_SUFFIX) and base[: -len(KARRAS_SUFFIX)] in SCHEDULERS:
        base = base[: -len(KARRAS_SUFFIX)]
        overrides = {"use_karras_sigmas": True, **overrides}
    return base, overrides


def split_gits(name: str) -> tuple[str, dict[str, Any] | None]:
    """Split ``"unipc+gits/coeff=1.15/metric=dev"`` into ``("unipc", {"coeff": 1.15, "metric": "dev"})``.

    A ``+gits`` suffix runs the sampler on a GITS schedule that the benchmark searches for its own model
    (:func:`diffusers_geo.gits_schedule`; options after ``/`` are its keyword arguments, e.g. ``coeff``,
    ``metric``, ``grid``, ``num_warmup``). Without the suffix the options are ``None``.
    """
    base, sep, rest = name.strip().partition(GITS_SUFFIX)
    if not sep:
        return name.strip(), None
    return base, _key_values([o for o in rest.split("/") if o], name, "+gits/key=value")


def _key_values(options: list[str], name: str, form: str) -> dict[str, Any]:
    """``["k=v", ...]`` as a dict; values are Python literals, or else plain strings."""
    values: dict[str, Any] = {}
    for option in options:
        key, sep, text = option.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Bad option {option!r} in sampler {name!r}; write {form}.")
        try:
            values[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            values[key.strip()] = text.strip()
    return values


def is_known(name: str) -> bool:
    """Whether :func:`make_sampler` accepts ``name`` (with options)."""
    try:
        base, _ = parse_name(split_gits(name)[0])
    except ValueError:
        return False
    return base in SCHEDULERS or base in builtin_names()


def make_sampler(name: str, config: dict[str, Any]) -> tuple[SchedulerMixin, bool]:
    """``(scheduler, stochastic)`` for a benchmark name, built with ``from_config(config)``.

    ``name`` is a built-in (``"dpmpp-2m-karras"``) or one of ours, with optional config overrides:
    ``"er-sde:solver_order=2"`` (see :func:`parse_name`). Our schedulers say whether they are stochastic
    through their ``stochastic`` attribute (a property where it depends on the config). A ``+gits`` suffix
    (:func:`split_gits`) is ignored here: the benchmark sets the schedule.
    """
    base, options = parse_name(split_gits(name)[0])
    if base in SCHEDULERS:  # load_scheduler refuses an option name the scheduler does not take
        scheduler = load_scheduler(base, config, **options)
        return scheduler, bool(getattr(scheduler, "stochastic", False))
    name = base
    if name.endswith(KARRAS_SUFFIX):
        base, karras = name[: -len(KARRAS_SUFFIX)], True
    else:
        base, karras = name, False
    if base not in BUILTINS or (karras and not _supports_karras(BUILTINS[base][0])):
        raise ValueError(f"Unknown sampler {name!r}; valid names: {all_names()}.")
    cls, overrides, stochastic = BUILTINS[base]
    overrides = dict(overrides, **({"use_karras_sigmas": True} if karras else {}), **options)
    return cls.from_config(config, **overrides), stochastic
