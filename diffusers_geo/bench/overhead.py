"""Scheduler step overhead: time per ``step`` call, as a ratio to DPMSolverMultistepScheduler in the same run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..registry import make_scheduler

SHAPES: tuple[tuple[int, ...], ...] = ((1, 4, 64, 64), (1, 3, 256, 256))
BASELINE = "dpmpp-2m"


def time_steps(
    name: str, config: dict[str, Any], shape: Sequence[int], steps: int, repeats: int, device: str
) -> float:
    """Median over ``repeats`` of the mean wall time of one ``step`` (no model: a fixed random output)."""
    scheduler = make_scheduler(name, config)
    gen = torch.Generator(device).manual_seed(0)
    sample = torch.randn(*shape, generator=gen, device=device)
    output = torch.randn(*shape, generator=gen, device=device)
    times = []
    for _ in range(repeats + 1):  # the first pass warms up
        scheduler.set_timesteps(steps, device=device)
        x = sample
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for t in scheduler.timesteps:
            x = scheduler.step(output, t, x, return_dict=False)[0]
        if device != "cpu":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / len(scheduler.timesteps))
    return statistics.median(times[1:])


def run_overhead(
    names: Sequence[str], config: dict[str, Any], steps: int = 20, repeats: int = 5, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Rows ``{sampler, shape, us_per_step, ratio}``; the ratio is to :data:`BASELINE` on the same shape."""
    rows = []
    for shape in SHAPES:
        base = time_steps(BASELINE, config, shape, steps, repeats, device)
        for name in names:
            t = base if name == BASELINE else time_steps(name, config, shape, steps, repeats, device)
            rows.append(
                {
                    "sampler": name,
                    "shape": "x".join(map(str, shape)),
                    "us_per_step": t * 1e6,
                    "ratio": t / base,
                }
            )
    return rows


def overhead_table(rows: list[dict[str, Any]]) -> str:
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    names = list(dict.fromkeys(r["sampler"] for r in rows))
    by = {(r["sampler"], r["shape"]): r for r in rows}
    header = "| sampler | " + " | ".join(f"{s}: µs/step (ratio to {BASELINE})" for s in shapes) + " |"
    lines = ["**Scheduler step overhead**", "", header, "|" + "---|" * (len(shapes) + 1)]
    for name in names:
        cells = [f"{by[name, s]['us_per_step']:.0f} ({by[name, s]['ratio']:.2f}×)" for s in shapes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
