"""One place that turns a name into a scheduler: ``load_scheduler("er-sde", pipe.scheduler.config)``.

Names are ours (:data:`SCHEDULERS`) or diffusers' built-ins as the benchmark and the commands call them
(:data:`BUILTINS`), with options: ``"er-sde:solver_order=2"`` (config overrides after colons), a ``-karras``
suffix (``use_karras_sigmas=True``) and a ``+gits`` suffix (run on a GITS schedule searched for the model, see
:func:`split_gits`). :func:`make_scheduler` is the one factory every feature and command uses.
"""

from __future__ import annotations

import ast
import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import diffusers
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .schedulers import (
    ERSDEScheduler,
    GeometricHeunScheduler,
    GeoScheduler,
    ProjectionDDIMScheduler,
    SigmaDDIMScheduler,
)
from .schedulers.base import is_flow_match_config, unknown_options

SCHEDULERS: dict[str, type[GeoScheduler]] = {
    "er-sde": ERSDEScheduler,
    "geometric-heun": GeometricHeunScheduler,
    "projection-ddim": ProjectionDDIMScheduler,
    "gradient-estimation": ProjectionDDIMScheduler,  # the paper's name for the same class (an alias)
    "sigma-ddim": SigmaDDIMScheduler,
}

#: diffusers' built-ins by name: (class name, config overrides); the classes are imported when used (some
#: of diffusers' scheduler modules import scipy.stats, which would double the cost of importing this package)
BUILTINS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp-2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp-3m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}),
    "dpmpp-2m-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
}
#: diffusers' flow-matching samplers, each as a user swapping schedulers on SD3 / Flux sets it up: the FlowMatch
#: classes from the pipeline's config, DPM-Solver / UniPC with flow sigmas and velocity prediction (their
#: ``flow_shift`` and dynamic shifting taken from the config, see :func:`_flow_options`)
FLOW_BUILTINS: dict[str, tuple[str, dict[str, Any]]] = {
    "flow-euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "flow-euler-sde": ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}),
    "flow-heun": ("FlowMatchHeunDiscreteScheduler", {}),
    "flow-dpmpp-2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "flow-dpmpp-2m-sde": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
    ),
    "flow-unipc": ("UniPCMultistepScheduler", {}),
}
#: built-ins whose ``step`` draws noise whatever their config
STOCHASTIC_BUILTINS = ("EulerAncestralDiscreteScheduler", "DDPMScheduler")
KARRAS_SUFFIX = "-karras"
GITS_SUFFIX = "+gits"

#: What :func:`make_scheduler` accepts: an instance, a class, a ``config -> scheduler`` callable, or a name.
SchedulerSpec = SchedulerMixin | type | Callable[[Mapping[str, Any]], SchedulerMixin] | str


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
        name_or_class: a name from :data:`SCHEDULERS` (case-insensitive, ``_`` or ``-``) with the registry's
            options (``"er-sde:solver_order=2"``, ``"er-sde-karras"``, see :func:`parse_name`), or a class.
            A ``+gits`` schedule is searched for a model, which this function has none of: it is refused
            (:func:`make_scheduler` and the commands take it).
        config: e.g. ``pipe.scheduler.config``; keys the scheduler does not take are kept as hidden
            config (so switching back loses nothing). ``None`` uses the class defaults.
        **overrides: config values to change, e.g. ``use_karras_sigmas=True`` (they win over options in the
            name). A name the scheduler does not take is a ``ValueError`` listing the valid ones (diffusers'
            ``from_config`` only warns: a typo such as ``gama=1.5`` would otherwise sample with the default
            silently).
    """
    config = _checked_config(config, "load_scheduler")
    if isinstance(name_or_class, str):
        base, gits = split_gits(name_or_class)
        if gits is not None:
            raise ValueError(
                f"{name_or_class!r} asks for a GITS schedule, which is searched for a model: load_scheduler has "
                "no model. Load the scheduler without '+gits' and set its schedule with "
                "diffusers_geo.gits_schedule(model, steps, scheduler_config=...), or pass the name to "
                "make_scheduler / the commands (bench, eval), which run the search."
            )
        base, options = parse_name(base)
        if base not in SCHEDULERS:
            raise ValueError(
                f"Unknown scheduler {name_or_class!r}; valid names: {sorted(SCHEDULERS)}."
                + _name_hint(base, sorted(SCHEDULERS) + [n + KARRAS_SUFFIX for n in sorted(SCHEDULERS)])
            )
        cls = SCHEDULERS[base]
        overrides = {**options, **overrides}
    elif isinstance(name_or_class, type) and issubclass(name_or_class, GeoScheduler):
        cls = name_or_class
    else:
        raise TypeError(f"Expected a scheduler name or a GeoScheduler subclass, got {name_or_class!r}.")
    _check_overrides(cls, overrides)
    return cls.from_config(config, **overrides)


def _checked_config(config: Any, where: str) -> dict[str, Any]:
    """``config`` as a dict; anything but a mapping (or ``None``, the defaults) is a ``TypeError`` naming
    what to pass."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    if isinstance(config, SchedulerMixin):
        got = f"a {type(config).__name__} instance"
        fix = f"pass its config: {where}(..., scheduler.config) (e.g. pipe.scheduler.config)"
    else:
        got = f"{type(config).__name__} {config!r:.60}"
        fix = f"pass a scheduler's config, e.g. {where}(..., pipe.scheduler.config)"
    raise TypeError(
        f"{where} takes a scheduler config (a mapping) as `config`, got {got}: {fix}; options go as keywords "
        "or in the name ('er-sde:solver_order=2')."
    )


def _name_hint(base: str, valid: list[str]) -> str:
    """What to write instead of the unknown scheduler name ``base``: its closest valid name and the syntax."""
    close = difflib.get_close_matches(base, valid, n=1) or difflib.get_close_matches(base, all_names(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    if base not in valid and base in all_names():
        hint = (
            f" {base!r} is a diffusers built-in: make_scheduler({base!r}, pipe.scheduler.config) builds it."
        )
    return (
        f"{hint} Options are written 'name:key=value:...' (e.g. 'er-sde:solver_order=2'), Karras sigmas "
        "'name-karras' and, in make_scheduler and the commands, a GITS schedule 'name+gits'."
    )


def _check_overrides(cls: type, overrides: Mapping[str, Any]) -> None:
    valid = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(unknown_options(cls.__name__, unknown, valid))


def make_scheduler(
    spec: SchedulerSpec, config: Mapping[str, Any] | None = None, **overrides: Any
) -> SchedulerMixin:
    """The one factory: a scheduler for ``spec`` given the pipeline's scheduler ``config``.

    An instance is returned as is; a class is built with ``from_config(config)``; a callable is called with
    ``config``; a name is ours or a built-in with options (``"er-sde:solver_order=2"``, ``"dpmpp-2m-karras"``;
    see :func:`parse_name`; a ``+gits`` suffix is ignored here, the caller sets the schedule). Option names
    the scheduler does not take are a ``ValueError``.
    """
    config = _checked_config(config, "make_scheduler")
    if isinstance(spec, SchedulerMixin):
        return spec
    if isinstance(spec, type):
        return spec.from_config(config, **overrides)
    if isinstance(spec, str):
        base, options = parse_name(split_gits(spec)[0])
        options = {**options, **overrides}
        if base in SCHEDULERS:
            return load_scheduler(SCHEDULERS[base], config, **options)
        cls, defaults = _builtin(base, config)
        _check_family(base, config)
        _check_overrides(cls, options)
        if base.removesuffix(KARRAS_SUFFIX) in FLOW_BUILTINS:
            # a FlowMatch config's keys that this class does not take (the FlowMatch classes take no
            # prediction_type, DPM-Solver / UniPC no shift): dropped here, not warned about by diffusers
            accepted = set(inspect.signature(cls.__init__).parameters)
            config = {k: v for k, v in config.items() if k in accepted or k.startswith("_")}
        return cls.from_config(config, **{**defaults, **options})
    if callable(spec):
        return spec(config)
    raise TypeError(
        f"scheduler must be a scheduler instance, a scheduler class, a callable or a name, got {spec!r}."
    )


def serves_flow(config: Mapping[str, Any]) -> bool:
    """Whether ``config`` is a flow-matching model's (a FlowMatch scheduler's, or ``flow_prediction``)."""
    return is_flow_match_config(config) or config.get("prediction_type") == "flow_prediction"


def is_stochastic(scheduler: SchedulerMixin) -> bool:
    """Whether ``step`` draws noise: ours say so themselves (``stochastic``, which may depend on the config);
    of the built-ins, ancestral Euler, DDPM and the SDE variants of DPM-Solver."""
    if isinstance(scheduler, GeoScheduler):
        return bool(scheduler.stochastic)
    if type(scheduler).__name__ in STOCHASTIC_BUILTINS or scheduler.config.get("stochastic_sampling"):
        return True
    return str(scheduler.config.get("algorithm_type", "")).startswith("sde")


def _builtin(name: str, config: Mapping[str, Any]) -> tuple[type[SchedulerMixin], dict[str, Any]]:
    base, karras = (name[: -len(KARRAS_SUFFIX)], True) if name.endswith(KARRAS_SUFFIX) else (name, False)
    table = {**BUILTINS, **FLOW_BUILTINS}
    if base not in table or (karras and not _supports_karras(table[base][0])):
        raise ValueError(
            f"Unknown sampler {name!r}; valid names: {all_names()}." + _name_hint(name, all_names())
        )
    class_name, defaults = table[base]
    if base in FLOW_BUILTINS:
        defaults = {**_flow_options(class_name, config), **defaults}
    return getattr(diffusers, class_name), {**defaults, **({"use_karras_sigmas": True} if karras else {})}


def _check_family(name: str, config: Mapping[str, Any]) -> None:
    """A built-in for the other model family would sample noise: refused, naming the ones that fit."""
    flow_name = name.removesuffix(KARRAS_SUFFIX) in FLOW_BUILTINS
    if serves_flow(config) and not flow_name:
        raise ValueError(
            f"{name!r} is a diffusers sampler for variance-preserving models, but this is a flow-matching model "
            f"(SD3, Flux): use one of {flow_builtin_names()} or a diffusers-geo scheduler."
        )
    if flow_name and not serves_flow(config):
        raise ValueError(
            f"{name!r} is a diffusers sampler for flow-matching models, but this is a variance-preserving "
            f"model: use one of {builtin_names(karras=False)} or a diffusers-geo scheduler."
        )


def _flow_options(class_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """What a DPM-Solver / UniPC needs to serve the flow model of ``config`` (a FlowMatch config)."""
    if class_name.startswith("FlowMatch"):
        return {}
    return {
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
        "flow_shift": config.get("flow_shift", config.get("shift", 1.0)),
        "use_dynamic_shifting": bool(config.get("use_dynamic_shifting", False)),
    }


def _supports_karras(class_name: str) -> bool:
    return "use_karras_sigmas" in inspect.signature(getattr(diffusers, class_name).__init__).parameters


def builtin_names(karras: bool = True) -> list[str]:
    """Every built-in name for variance-preserving models, and its ``-karras`` variant where the class supports
    Karras sigmas."""
    names = list(BUILTINS)
    if karras:
        names += [n + KARRAS_SUFFIX for n, (cls, _) in BUILTINS.items() if _supports_karras(cls)]
    return names


def flow_builtin_names() -> list[str]:
    """diffusers' samplers for flow-matching models (:data:`FLOW_BUILTINS`)."""
    return list(FLOW_BUILTINS)


def all_names() -> list[str]:
    """Every name a ``--schedulers`` list takes (without options): ours, ours with ``-karras``, the built-ins."""
    return (
        sorted(SCHEDULERS)
        + [n + KARRAS_SUFFIX for n in sorted(SCHEDULERS)]
        + builtin_names()
        + flow_builtin_names()
    )


def resolve_names(text: str, extra_groups: dict[str, Callable[[], list[str]]] | None = None) -> list[str]:
    """Expand a comma-separated ``--schedulers`` value: the groups ``ours`` (one name per diffusers-geo
    scheduler class), ``builtins`` and ``all``, any ``extra_groups``, and single names (with options).
    Duplicates are dropped; an unknown name is a ValueError listing the valid ones."""
    groups: dict[str, Callable[[], list[str]]] = {"ours": scheduler_names, **(extra_groups or {})}
    groups.update(
        builtins=builtin_names,
        all=lambda: scheduler_names() + builtin_names(),
        **{"flow-builtins": flow_builtin_names, "flow-all": lambda: scheduler_names() + flow_builtin_names()},
    )
    names: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part in groups:
            names += groups[part]()
        elif is_known(part):
            names.append(part)
        else:
            choices = ", ".join(repr(g) for g in groups)
            raise ValueError(
                f"unknown scheduler {part!r}; use {choices} or one of {all_names()}."
                + _name_hint(_base_name(part), all_names())
            )
    return list(dict.fromkeys(names))


def parse_name(name: str) -> tuple[str, dict[str, Any]]:
    """Split ``"er-sde:solver_order=2:use_karras_sigmas=True"`` into ``("er-sde", {...})``.

    Options after ``:`` are config overrides; values are Python literals (``2``, ``0.5``, ``True``,
    ``None``) or else plain strings (``noise_scale=ode``). A ``-karras`` suffix on one of our names is
    ``use_karras_sigmas=True``. The name is case-insensitive and takes ``_`` for ``-``.
    """
    base, *options = name.strip().split(":")
    base = _normal(base)
    overrides = _key_values(options, name, "key=value")
    if base not in SCHEDULERS and base.endswith(KARRAS_SUFFIX) and base[: -len(KARRAS_SUFFIX)] in SCHEDULERS:
        base = base[: -len(KARRAS_SUFFIX)]
        overrides = {"use_karras_sigmas": True, **overrides}
    return base, overrides


def _normal(base: str) -> str:
    return base.strip().lower().replace("_", "-")


def _base_name(name: str) -> str:
    """The bare name of ``name`` (without options or ``+gits``), for messages; never raises."""
    return _normal(split_gits(name)[0].split(":")[0])


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
    """Whether :func:`make_scheduler` accepts ``name`` (with options)."""
    try:
        base, _ = parse_name(split_gits(name)[0])
    except ValueError:
        return False
    return base in SCHEDULERS or base in builtin_names() or base in FLOW_BUILTINS
