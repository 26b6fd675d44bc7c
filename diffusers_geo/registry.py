"""Readable names for diffusers-geo schedulers: ``load_scheduler("sigma-ddim", pipe.scheduler.config)``."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any

from .schedulers import (
    ERSDEScheduler,
    GeometricHeunScheduler,
    GeoScheduler,
    ProjectionDDIMScheduler,
    SigmaDDIMScheduler,
)

SCHEDULERS: dict[str, type[GeoScheduler]] = {
    "er-sde": ERSDEScheduler,
    "geometric-heun": GeometricHeunScheduler,
    "projection-ddim": ProjectionDDIMScheduler,
    "gradient-estimation": ProjectionDDIMScheduler,  # the paper's name for the same class (an alias)
    "sigma-ddim": SigmaDDIMScheduler,
}


def scheduler_names() -> list[str]:
    """One name per scheduler class, sorted: an alias (a second name of a class, e.g. ``gradient-estimation``
    for ``projection-ddim``) gives way to the name registered first. Read at call time, so schedulers
    registered later are included."""
    first: dict[type, str] = {}
    for name, cls in SCHEDULERS.items():
        first.setdefault(cls, name)
    return sorted(first.values())


def load_scheduler(
    name_or_class: str | type[GeoScheduler], config: Mapping[str, Any] | None = None, **overrides: Any
) -> GeoScheduler:
    """Build a diffusers-geo scheduler from another scheduler's config.

    Args:
        name_or_class: a name from :data:`SCHEDULERS` (case-insensitive, ``_`` or ``-``) or a class.
        config: e.g. ``pipe.scheduler.config``; keys the scheduler does not take are kept as hidden
            config (so switching back loses nothing). ``None`` uses the class defaults.
        **overrides: config values to change, e.g. ``use_karras_sigmas=True``. A name the scheduler does
            not take is a ``ValueError`` listing the valid ones (diffusers' ``from_config`` only warns: a typo
            such as ``gama=1.5`` would otherwise sample with the default silently).
    """
    if isinstance(name_or_class, str):
        key = name_or_class.strip().lower().replace("_", "-")
        if key not in SCHEDULERS:
            raise ValueError(f"Unknown scheduler {name_or_class!r}; valid names: {sorted(SCHEDULERS)}.")
        cls = SCHEDULERS[key]
    elif isinstance(name_or_class, type) and issubclass(name_or_class, GeoScheduler):
        cls = name_or_class
    else:
        raise TypeError(f"Expected a scheduler name or a GeoScheduler subclass, got {name_or_class!r}.")
    valid = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        guesses = {name: difflib.get_close_matches(name, valid, n=1) for name in unknown}
        hints = "".join(f" Did you mean {g[0]!r} for {n!r}?" for n, g in guesses.items() if g)
        raise ValueError(
            f"{cls.__name__} has no option {', '.join(map(repr, unknown))}.{hints} Valid options: {sorted(valid)}."
        )
    return cls.from_config(dict(config or {}), **overrides)
