"""What the pipeline matrices share (tests/test_pipelines.py for VP pipelines, tests/test_flow_pipelines.py for
SD3 / Flux): the schedulers under test as cases, and a trace of the model calls and scheduler steps of a run."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import SchedulerMixin

from diffusers_geo import load_scheduler
from diffusers_geo.registry import scheduler_names


@dataclass(frozen=True)
class Case:
    """A scheduler to test: ours (from the registry) or a diffusers built-in control."""

    name: str
    make: Callable[[Mapping[str, Any]], SchedulerMixin]
    ours: bool

    def __call__(self, config: Mapping[str, Any]) -> SchedulerMixin:
        return self.make(dict(config))


# one case per class: a class registered under several names (an alias) runs under its first name
OURS = [Case(name, functools.partial(load_scheduler, name), ours=True) for name in scheduler_names()]
# non-default modes that change the step's state handling run the whole matrix too
OURS.append(
    Case(  # the two-call Heun step: diffusers' order-2 layout (the default is the one-call multistep)
        "geometric-heun-two-call",
        functools.partial(load_scheduler, "geometric-heun", multistep=False),
        ours=True,
    )
)


def control(cls: type[SchedulerMixin]) -> Case:
    """A diffusers built-in, made from the pipeline's config as a user swapping schedulers makes it."""
    return Case(cls.__name__, cls.from_config, ours=False)


def cases(*controls: Case) -> list:
    """Every scheduler of ours, then the given built-in controls, as pytest params with readable ids."""
    return [pytest.param(c, id=("geo-" if c.ours else "ctl-") + c.name) for c in (*OURS, *controls)]


@dataclass
class Trace:
    """What one pipeline call did: the timesteps the denoising network saw, and whether every step stayed
    finite."""

    model_timesteps: list[float] = field(default_factory=list)
    steps: int = 0
    nonfinite_steps: list[int] = field(default_factory=list)

    @property
    def model_calls(self) -> int:
        return len(self.model_timesteps)


@contextlib.contextmanager
def traced(pipe, model: str = "unet") -> Iterator[Trace]:
    """Record the calls of ``pipe``'s denoising network (``pipe.unet`` or ``pipe.transformer``) and its
    scheduler's steps (wrappers keep the signatures pipelines inspect)."""
    trace = Trace()
    network, scheduler = getattr(pipe, model), pipe.scheduler
    forward, step = network.forward, scheduler.step

    @functools.wraps(forward)
    def counting_forward(*args, **kwargs):
        timestep = kwargs["timestep"] if "timestep" in kwargs else args[1]
        trace.model_timesteps.append(float(torch.as_tensor(timestep).reshape(-1)[0]))
        return forward(*args, **kwargs)

    @functools.wraps(step)
    def checking_step(*args, **kwargs):
        out = step(*args, **kwargs)
        prev_sample = out[0] if isinstance(out, tuple) else out.prev_sample
        if not torch.isfinite(prev_sample).all():
            trace.nonfinite_steps.append(trace.steps)
        trace.steps += 1
        return out

    shadowed = {obj: name in vars(obj) for obj, name in ((network, "forward"), (scheduler, "step"))}
    network.forward, scheduler.step = counting_forward, checking_step
    try:
        yield trace
    finally:  # restore exactly: drop our instance attribute, or put back one that was there before
        for obj, name, original in ((network, "forward", forward), (scheduler, "step", step)):
            if shadowed[obj]:
                setattr(obj, name, original)
            else:
                delattr(obj, name)


def install(pipe, case: Case, config: Mapping[str, Any]) -> SchedulerMixin:
    """Give ``pipe`` a fresh scheduler built from a copy of its original ``config``."""
    pipe.scheduler = case(config)
    return pipe.scheduler


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def assert_finite(trace: Trace, output: Any = None) -> None:
    assert trace.steps > 0, "the scheduler was never stepped"
    assert not trace.nonfinite_steps, f"non-finite prev_sample at steps {trace.nonfinite_steps}"
    if output is not None:
        output = np.asarray(output, dtype=np.float32)
        assert torch.isfinite(torch.as_tensor(output)).all(), "non-finite pipeline output"
