"""Names of the samplers the benchmark compares: diffusers' built-ins and ours (the package registry)."""

from __future__ import annotations

import inspect
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

from ..registry import SCHEDULERS

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


def _supports_karras(cls: type) -> bool:
    return "use_karras_sigmas" in inspect.signature(cls.__init__).parameters


def builtin_names(karras: bool = True) -> list[str]:
    """Every built-in name, and its ``-karras`` variant where the class supports Karras sigmas."""
    names = list(BUILTINS)
    if karras:
        names += [n + KARRAS_SUFFIX for n, (cls, _, _) in BUILTINS.items() if _supports_karras(cls)]
    return names


def all_names() -> list[str]:
    return sorted(SCHEDULERS) + builtin_names()


def make_sampler(name: str, config: dict[str, Any]) -> tuple[SchedulerMixin, bool]:
    """``(scheduler, stochastic)`` for a benchmark name, built with ``from_config(config)``."""
    if name in SCHEDULERS:
        cls = SCHEDULERS[name]
        return cls.from_config(config), bool(getattr(cls, "stochastic", False))
    base, karras = (name[: -len(KARRAS_SUFFIX)], True) if name.endswith(KARRAS_SUFFIX) else (name, False)
    if base not in BUILTINS or (karras and not _supports_karras(BUILTINS[base][0])):
        raise ValueError(f"Unknown sampler {name!r}; valid names: {all_names()}.")
    cls, overrides, stochastic = BUILTINS[base]
    overrides = dict(overrides, **({"use_karras_sigmas": True} if karras else {}))
    return cls.from_config(config, **overrides), stochastic
