"""The one argument checker of every diffusers-geo scheduler: each config option declares what it accepts.

A scheduler lists its own options in ``options = {"name": Real(...), ...}`` (the base lists the shared
ones); :func:`~diffusers_geo.schedulers.base.scheduler_config` checks every value given to ``__init__``
against its declaration before anything is built, and hands ``__init__`` (and the saved config) the
normalised value: numpy scalars become Python numbers, so ``scheduler_config.json`` is always plain, strict
JSON. A refused value raises a ``TypeError`` (wrong kind) or ``ValueError`` (out of range) whose message
names the option, the value, what is valid and how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from numbers import Real as _Real
from typing import Any

import numpy as np
from diffusers.utils import logging

logger = logging.get_logger(__name__)


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Bool:
    """``True`` or ``False`` (numpy booleans accepted)."""

    def __call__(self, name: str, value: Any) -> bool:
        if not _is_bool(value):
            raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__}).")
        return bool(value)


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]`` (numpy integers accepted; floats such as ``2.0`` refused)."""

    low: int | None = None
    high: int | None = None
    optional: bool = False
    hint: str = ""

    def __call__(self, name: str, value: Any) -> int | None:
        if value is None and self.optional:
            return None
        if _is_bool(value) or not isinstance(value, Integral):
            fix = f"; pass {int(value)}" if isinstance(value, float) and value.is_integer() else ""
            raise TypeError(
                f"{name} must be an int{_range(self.low, self.high)}, got {value!r} "
                f"({type(value).__name__}){fix}."
            )
        value = int(value)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"{name} must be an int{_range(self.low, self.high)}, got {value}.{_hint(self)}")
        return value


@dataclass(frozen=True)
class Real:
    """A finite real number in a range (numpy scalars accepted). ``optional=True`` also takes ``None``
    (e.g. "no limit"); infinite values are always refused, since JSON has no ``Infinity``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    hint: str = ""

    def __call__(self, name: str, value: Any) -> float | None:
        if value is None and self.optional:
            return None
        valid = f"a finite number{self.describe()}" + (" or None" if self.optional else "")
        if _is_bool(value) or not isinstance(value, _Real):
            raise TypeError(f"{name} must be {valid}, got {value!r} ({type(value).__name__}).{_hint(self)}")
        value = float(value)
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if not math.isfinite(value) or below or above:
            raise ValueError(f"{name} must be {valid}, got {value}.{_hint(self)}")
        return value

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f" in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f" {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f" {'<' if self.high_open else '<='} {self.high:g}"
        return ""


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of strings."""

    choices: Sequence[str]
    hint: str = ""

    def __call__(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in self.choices:
            raise ValueError(f"Unknown {name} {value!r}; choose one of {list(self.choices)}.{_hint(self)}")
        return value


@dataclass(frozen=True)
class Betas:
    """Explicit training betas: ``None`` or a 1-D sequence of finite values in (0, 1)."""

    def __call__(self, name: str, value: Any) -> list[float] | None:
        if value is None:
            return None
        if isinstance(value, (str, bytes)) or _is_bool(value):
            raise TypeError(f"{name} must be a sequence of betas in (0, 1) or None, got {value!r}.")
        try:
            betas = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a sequence of betas in (0, 1) or None, got {value!r}.") from err
        if betas.ndim != 1 or len(betas) < 2:
            raise ValueError(f"{name} must be a 1-D sequence of at least 2 betas, got shape {betas.shape}.")
        bad = ~(np.isfinite(betas) & (betas > 0) & (betas < 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{name} must hold betas in (0, 1) (each step adds noise and keeps some signal), got "
                f"{name}[{i}] = {betas[i]}."
            )
        return betas.tolist()


Check = Bool | Int | Real | Choice | Betas


def warn_unused(owner: str, name: str, value: Any, mode: str, fix: str) -> None:
    """Warn that option ``name=value`` has no effect in ``mode``, and how to fix it.

    For a value that only a config carried over from another mode can explain (``X.from_config(saved,
    multistep=False)`` keeps the saved ``corrector``), a combination that can only be a mistake is an error
    in the scheduler's ``__init__`` instead."""
    logger.warning(f"{owner}: {name}={value!r} has no effect {mode}: {fix}.")


def _range(low, high) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def _hint(check) -> str:
    return f" {check.hint}" if check.hint else ""
