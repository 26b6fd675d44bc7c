"""Argument checks for the Python API beyond scalars: shapes, tensors and plain types.

They complete the scheduler options' vocabulary (:mod:`diffusers_geo.schedulers.options`: ``Int``, ``Real``,
``Bool``, ``Choice``) with the same call, ``check(name, value)``, and the same messages: a ``TypeError`` for
the wrong kind of value and a ``ValueError`` for one out of range, each naming the argument, the value and
what is expected. They live in the lowest layer so that the solvers' own entry points can use them too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_))


def _shown(value: Any) -> str:
    """``repr`` of a value, shortened for tensors and arrays (a message must not print a whole batch)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"a {type(value).__name__} of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Instance:
    """A value of one of ``types`` (``optional=True``: or ``None``); ``what`` says it in words."""

    types: type | tuple[type, ...]
    what: str
    optional: bool = False

    def __call__(self, name: str, value: Any) -> Any:
        if (value is None and self.optional) or (value is not None and isinstance(value, self.types)):
            return value
        valid = self.what + (" or None" if self.optional else "")
        raise TypeError(f"{name} must be {valid}, got {_shown(value)} ({type(value).__name__}).")


@dataclass(frozen=True)
class Shape:
    """A shape: a non-empty sequence of positive ints, e.g. ``(4, 64, 64)`` (numpy ints accepted).

    ``length``: the number of entries it must have; ``single=True`` also takes one int (a square size
    ``8`` for ``(8, 8)``); ``optional=True`` also takes ``None``. Returns a tuple of Python ints (or the int).
    """

    length: int | None = None
    single: bool = False
    optional: bool = False

    def __call__(self, name: str, value: Any) -> tuple[int, ...] | int | None:
        if value is None and self.optional:
            return None
        if self.single and _is_int(value):
            if value < 1:
                raise ValueError(f"{name} must be a positive int{self._also()}, got {value}.")
            return int(value)
        entries = f"{self.length} " if self.length is not None else ""
        valid = f"a sequence of {entries}positive ints" + (" or one int" if self.single else "")
        if isinstance(value, torch.Size):
            value = tuple(value)
        if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
            raise TypeError(
                f"{name} must be {valid}{self._also()}, got {_shown(value)} ({type(value).__name__})."
            )
        bad = next((v for v in value if not _is_int(v)), None)
        if bad is not None:
            raise TypeError(f"{name} must be {valid}, got {_shown(value)} (entry {bad!r} is not an int).")
        if len(value) == 0 or (self.length is not None and len(value) != self.length) or min(value) < 1:
            raise ValueError(f"{name} must be {valid} (no empty or zero-size shape), got {tuple(value)}.")
        return tuple(int(v) for v in value)

    def _also(self) -> str:
        return " or None" if self.optional else ""


@dataclass(frozen=True)
class Numbers:
    """A non-empty sequence of finite real numbers (``ints=True``: of ints), each ``>= low`` when given; a
    1-D tensor or array counts as a sequence. Returns a list of Python numbers."""

    low: float | None = None
    ints: bool = False
    optional: bool = False

    def __call__(self, name: str, value: Any) -> list | None:
        if value is None and self.optional:
            return None
        kind = "ints" if self.ints else "finite numbers"
        valid = f"a non-empty sequence of {kind}" + (f" >= {self.low:g}" if self.low is not None else "")
        if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 1:
            value = value.tolist()
        if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
            raise TypeError(f"{name} must be {valid}, got {_shown(value)} ({type(value).__name__}).")
        ok = _is_int if self.ints else _is_real
        bad = next((v for v in value if not ok(v)), None)
        if bad is not None:
            raise TypeError(f"{name} must be {valid}, got {_shown(value)} (entry {bad!r} is not one).")
        numbers = [int(v) if self.ints else float(v) for v in value]
        wrong = next(
            (v for v in numbers if not np.isfinite(v) or (self.low is not None and v < self.low)), None
        )
        if not numbers or wrong is not None:
            got = "an empty sequence" if not numbers else f"{_shown(list(value))} (entry {wrong})"
            raise ValueError(f"{name} must be {valid}, got {got}.")
        return numbers


@dataclass(frozen=True)
class Tensor:
    """A ``torch.Tensor`` (``arrays=True``: or a numpy array) with ``ndim`` dimensions (an int, a
    ``(low, high)`` range with ``high=None`` for no limit, or ``None`` for any), at least one element, and
    finite values (``finite=True``: NaN or inf would spread through every later step)."""

    ndim: int | tuple[int, int | None] | None = None
    finite: bool = True
    arrays: bool = False
    optional: bool = False
    hint: str = ""

    def __call__(self, name: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        kinds = (torch.Tensor, np.ndarray) if self.arrays else torch.Tensor
        if not isinstance(value, kinds):
            valid = "a torch.Tensor" + (" or numpy array" if self.arrays else "")
            fix = "; pass torch.as_tensor(...)" if isinstance(value, (list, tuple)) else ""
            raise TypeError(
                f"{name} must be {valid}, got {_shown(value)} ({type(value).__name__}){fix}.{_hint(self.hint)}"
            )
        low, high = (self.ndim, self.ndim) if isinstance(self.ndim, int) else (self.ndim or (0, None))
        if value.ndim < low or (high is not None and value.ndim > high):
            dims = f"{low}" if low == high else f"{low} to {high}" if high is not None else f"at least {low}"
            raise ValueError(
                f"{name} must have {dims} dimensions, got shape {tuple(value.shape)}.{_hint(self.hint)}"
            )
        if value.size == 0 if isinstance(value, np.ndarray) else value.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(value.shape)}); pass at least one value.")
        if self.finite and not bool(
            np.isfinite(value).all() if isinstance(value, np.ndarray) else value.isfinite().all()
        ):
            raise ValueError(f"{name} contains NaN or inf; pass finite values.")
        return value


def item(value: Any) -> Any:
    """A 0-d tensor or numpy array as its Python number (a noise level is often passed as ``sigmas[0]``),
    anything else unchanged: so that the scalar checks take what ``float(value)`` took before them."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        return value.item()
    return value


#: the checks most entry points share
GENERATOR = Instance(torch.Generator, "a torch.Generator", optional=True)
PATH = Instance((str, os.PathLike), "a path (str or os.PathLike)")
MAPPING = Instance(Mapping, "a mapping (dict)", optional=True)


def _hint(hint: str) -> str:
    return f" {hint}" if hint else ""
