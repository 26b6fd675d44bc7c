"""The pipeline-style sampling loop with counted model calls, for exact denoisers and bare models.

What a diffusers pipeline does between ``set_timesteps`` and the decoder, written once: the initial noise times
``init_noise_sigma``, ``scale_model_input``, the model call and ``step`` (with ``generator=`` where the
scheduler takes it). The benchmark, the demo's unconditional models, ``analyze`` and the tests run it.
"""

from __future__ import annotations

import inspect

import torch


def steps_for_nfe(scheduler, nfe: int) -> int | None:
    """Largest ``num_inference_steps`` whose schedule makes at most ``nfe`` model calls."""
    for steps in range(nfe, 0, -1):
        scheduler.set_timesteps(steps)
        if len(scheduler.timesteps) <= nfe:
            return steps
    return None


def sample(scheduler, model, noise: torch.Tensor, generator: torch.Generator | None):
    """Run one pipeline-style loop; returns ``(final sample, model calls, VP model input at the start, t0)``."""
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    x = noise * scheduler.init_noise_sigma
    calls, start = 0, None
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        if start is None:
            start = (model_input, t)
        output = model(model_input, t).sample
        calls += 1
        kwargs = {"generator": generator} if takes_generator else {}
        x = scheduler.step(output, t, x, **kwargs).prev_sample
    return x, calls, start
