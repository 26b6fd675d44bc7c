"""``step`` is atomic: a call that raises leaves every scheduler exactly as it was, so the step can be retried.

Each case runs a model-free sampling loop (the "model" is a fixed function of the sample and the timestep),
makes the calls at two consecutive indices fail once, retries them correctly and finishes; the final sample
must equal an uninterrupted run's bit for bit, and the scheduler's attributes after each failed call must
equal those before it.
"""

from __future__ import annotations

import copy
import dataclasses
from unittest import mock

import pytest
import torch

from diffusers_geo import (
    ERSDEScheduler,
    GeometricHeunScheduler,
    ProjectionDDIMScheduler,
    SigmaDDIMScheduler,
)
from diffusers_geo.registry import SCHEDULERS
from diffusers_geo.testing import SD_BETAS

VP = dict(SD_BETAS)
FLOW = dict(prediction_type="flow_prediction", shift=3.0)

#: every scheduler class of the registry with its stateful modes: (class, own options, configs it serves)
MODES = [
    (SigmaDDIMScheduler, {}, (VP, FLOW)),
    (SigmaDDIMScheduler, {"jump_step": 3}, (VP, FLOW)),
    (ERSDEScheduler, {"solver_order": 1}, (VP, FLOW)),
    (ERSDEScheduler, {"solver_order": 2}, (VP, FLOW)),
    (ERSDEScheduler, {"solver_order": 3}, (VP, FLOW)),
    (ERSDEScheduler, {"solver_order": 3, "noise_scale": "ode"}, (VP, FLOW)),
    (ProjectionDDIMScheduler, {}, (VP, FLOW)),
    (ProjectionDDIMScheduler, {"mu": 0.3}, (VP, FLOW)),
    (ProjectionDDIMScheduler, {"correction": "velocity"}, (FLOW,)),
    (GeometricHeunScheduler, {}, (VP, FLOW)),
    (GeometricHeunScheduler, {"corrector": False}, (VP, FLOW)),
    (GeometricHeunScheduler, {"multistep": False}, (VP, FLOW)),
    (GeometricHeunScheduler, {"multistep": False, "intermediate_point": 0.5}, (VP, FLOW)),
    (GeometricHeunScheduler, {"jump_step": 3}, (VP,)),
]
CASES = [
    pytest.param(
        cls, own, config, id=f"{cls.__name__}-{own or 'default'}-{'flow' if config is FLOW else 'vp'}"
    )
    for cls, own, configs in MODES
    for config in configs
]
FAILURES = ("nan", "shape", "dtype", "generator", "noise", "observer")
BATCH = 3


def test_every_registered_scheduler_has_a_case():
    assert set(SCHEDULERS.values()) <= {cls for cls, _, _ in MODES}


def fake_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed, model-free prediction: linear in the sample, varying with the timestep."""
    pattern = torch.linspace(-1.0, 1.0, x[0].numel()).reshape(x.shape[1:])
    return 0.7 * x + (float(t) / 1000.0) * pattern - 0.05


def same(a, b) -> bool:
    """Value equality through tensors, containers, dataclasses and plain objects (bit-exact for tensors)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and torch.equal(a, b)
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if dataclasses.is_dataclass(a):
        return same(vars(a), vars(b))
    if callable(a) and not hasattr(a, "__dict__"):
        return a is b
    if hasattr(a, "__dict__") and not isinstance(a, type):
        return a is b or same(vars(a), vars(b))
    return a == b or (a != a and b != b)  # NaN == NaN


def state(scheduler) -> dict:
    # copied deeply, so that an in-place change of a stored tensor or list would show too
    return copy.deepcopy({k: v for k, v in vars(scheduler).items() if k != "on_step"})


def make(cls, own, config):
    scheduler = cls(**own, **config)
    scheduler.set_timesteps(6)
    return scheduler


def run(scheduler, fail_at=(), failure=None):
    """The sampling loop; at each index in ``fail_at`` one call is made to fail first, then retried."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(1)
    x = torch.randn(BATCH, 2, 3, 3)
    for index, t in enumerate(scheduler.timesteps):
        out = fake_model(x, t)
        if index in fail_at:
            before, rng = state(scheduler), generator.get_state()
            with pytest.raises((ValueError, TypeError, RuntimeError)), fail(scheduler, failure):
                bad = {
                    "nan": dict(model_output=torch.full_like(out, float("nan"))),
                    "shape": dict(model_output=out[:, :1]),
                    "dtype": dict(model_output=out.to(torch.complex64)),
                    "generator": dict(generator=[torch.Generator().manual_seed(5)] * (BATCH - 1)),
                }.get(failure, {})
                kwargs = {"model_output": out, "generator": generator, **bad}
                scheduler.step(kwargs.pop("model_output"), t, x, **kwargs)
            assert same(state(scheduler), before), f"{failure} at index {index} changed the scheduler"
            generator.set_state(rng)  # the retry draws the noise the failed call would have drawn
        x = scheduler.step(out, t, x, generator=generator).prev_sample
    return x


class fail:
    """Make the step fail where no input check can: in the noise draw, or in the observer after the
    solver has updated its state."""

    def __init__(self, scheduler, failure):
        self.scheduler, self.failure, self.patch = scheduler, failure, None

    def __enter__(self):
        def boom(*args, **kwargs):
            raise RuntimeError("injected failure")

        if self.failure == "noise":
            self.patch = mock.patch("diffusers_geo.schedulers.base.randn_tensor", boom)
            self.patch.start()
        elif self.failure == "observer":
            self.scheduler.on_step = boom

    def __exit__(self, *exc):
        if self.patch is not None:
            self.patch.stop()
        self.scheduler.on_step = None
        return False


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("cls, own, config", CASES)
def test_a_failed_step_leaves_the_scheduler_as_it_was(cls, own, config, failure):
    scheduler = make(cls, own, config)
    if failure in ("generator", "noise") and not scheduler.stochastic:
        pytest.skip("a deterministic scheduler draws no noise")
    reference = run(make(cls, own, config))
    middle = len(scheduler.timesteps) // 2
    retried = run(scheduler, fail_at=(middle, middle + 1), failure=failure)
    assert torch.equal(retried, reference)


@pytest.mark.parametrize("cls, own, config", CASES)
def test_a_failed_first_step_keeps_no_step_index(cls, own, config):
    """The first call sets the step index (or takes the begin index): a failure there must not keep it."""
    scheduler = make(cls, own, config)
    reference = run(make(cls, own, config))
    retried = run(scheduler, fail_at=(0,), failure="observer")
    assert torch.equal(retried, reference)
    assert scheduler.step_index == len(scheduler.timesteps)


def test_a_short_generator_list_is_refused_before_any_noise_is_drawn():
    scheduler = ERSDEScheduler(**VP)
    scheduler.set_timesteps(4)
    generators = [torch.Generator().manual_seed(3) for _ in range(BATCH - 1)]
    states = [g.get_state() for g in generators]
    x = torch.randn(BATCH, 2, 3, 3)
    t = scheduler.timesteps[0]
    with pytest.raises(ValueError, match="list of 2 generators but the batch has 3"):
        scheduler.step(fake_model(x, t), t, x, generator=generators)
    assert all(torch.equal(g.get_state(), s) for g, s in zip(generators, states, strict=True))
    assert scheduler.step_index is None
