"""``diffusers-geo demo``: every sampler on the same seeds at a few NFEs, as one labelled PNG grid.

By default it loads the packaged digits model with ``DDPMPipeline.from_pretrained`` (offline, CPU,
seconds), samples with every diffusers_geo scheduler (read from :data:`diffusers_geo.SCHEDULERS` at run
time) and diffusers' main built-ins at NFE 5, 10 and 20, and writes ``demo.png`` (rows: samplers,
columns: NFE, each cell the same seeds) and ``demo.json`` (settings, steps, model calls, timings).
``--model <hub id or folder>`` does the same with any pipeline (Stable Diffusion with ``--prompt``, ...),
on a GPU when there is one.

NFE counts model calls: a sampler gets the largest ``num_inference_steps`` whose schedule makes at most
that many calls (an order-2 scheduler such as Heun makes 2N − 1 calls for N steps), and every call is
counted. Every cell starts from the same initial noise: image ``i`` uses ``torch.Generator().manual_seed
(seeds[i])`` (on the CPU, so the noise does not depend on the device), and stochastic samplers draw their
step noise from the same generators.

``DDPMPipeline.__call__`` applies neither ``init_noise_sigma`` nor ``scale_model_input`` and passes
``generator=`` to every ``step``, so for unconditional ``DDPMPipeline``/``DDIMPipeline`` models the demo
runs the standard pipeline loop itself (:func:`diffusers_geo.bench.quality.sample`, which does both); for
the VP-interface schedulers (ours, DDPM, DDIM) that loop is exactly ``DDPMPipeline.__call__``. Other
pipelines are called as they are.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import diffusers
import numpy as np
import torch
from diffusers import DiffusionPipeline

from .. import __version__
from ..diagnostics.grid import render_grid
from ..models.default_model import default_model_path
from ..registry import SCHEDULERS, is_stochastic, make_scheduler, resolve_names, serves_flow
from ..sampling import run_pipeline, steps_for_nfe, takes
from ._common import load_pipeline, resolve_device, resolve_dtype
from ._parsers import MAIN_BUILTINS as MAIN_BUILTINS  # diffusers' built-ins the demo shows (``main``)
from ._parsers import MAIN_FLOW_BUILTINS as MAIN_FLOW_BUILTINS  # the same for flow-matching pipelines

DEFAULT_PROMPT = "a photograph of an astronaut riding a horse"


# --------------------------------------------------------------------------------------------------
# samplers and pipelines
# --------------------------------------------------------------------------------------------------
def resolve_schedulers(text: str, flow: bool = False) -> list[str]:
    """Expand ``--schedulers`` (groups ``ours``, ``main``, ``builtins``, ``all`` and single names); for a
    flow-matching pipeline ``main``, ``builtins`` and ``all`` mean diffusers' flow samplers."""
    for part in text.split(","):
        if "+gits" in part:
            raise ValueError(
                f"{part.strip()!r}: GITS schedules ('+gits') are searched by `diffusers-geo bench` only"
            )
    if flow:
        text = ",".join(
            {"builtins": "flow-builtins", "all": "flow-all"}.get(p.strip(), p.strip())
            for p in text.split(",")
        )
    names = resolve_names(text, {"main": lambda: list(MAIN_FLOW_BUILTINS if flow else MAIN_BUILTINS)})
    if not names:
        raise ValueError("--schedulers selects no scheduler")
    return names


@dataclass
class Cell:
    """One sampler at one target NFE."""

    scheduler: str
    scheduler_class: str
    stochastic: bool
    nfe_target: int
    steps: int | None  #: ``None`` when no step count fits in ``nfe_target`` calls
    model_calls: int = 0
    seconds: float = 0.0
    images: np.ndarray | None = field(default=None, repr=False)


def compare(
    pipe: DiffusionPipeline,
    names: Sequence[str],
    nfes: Sequence[int],
    seeds: Sequence[int],
    prompt: str | None = None,
    progress: bool = True,
) -> list[Cell]:
    """Run every sampler of ``names`` at every NFE of ``nfes`` on the same ``seeds``."""
    from tqdm.auto import tqdm  # optional dependency, imported when used

    original = pipe.scheduler
    base_config = dict(original.config)
    cells: list[Cell] = []
    with tqdm(total=len(names) * len(nfes), desc="demo", unit="run", disable=not progress) as bar:
        for name in names:
            for nfe in nfes:
                bar.set_postfix_str(f"{name} NFE {nfe}")
                scheduler = make_scheduler(name, base_config)
                stochastic = is_stochastic(scheduler)
                steps = steps_for_nfe(scheduler, nfe)
                cell = Cell(name, type(scheduler).__name__, stochastic, nfe, steps)
                if steps is not None:
                    start = time.perf_counter()
                    prompts = [prompt or DEFAULT_PROMPT] * len(seeds) if takes(pipe, "prompt") else None
                    cell.images, cell.model_calls = run_pipeline(pipe, scheduler, steps, seeds, prompts)
                    cell.seconds = time.perf_counter() - start
                    if cell.model_calls > nfe:
                        raise RuntimeError(f"{name}: {cell.model_calls} model calls for a budget of {nfe}")
                cells.append(cell)
                bar.update()
    pipe.scheduler = original
    return cells


# --------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """``diffusers-geo demo``: compare the samplers, write ``demo.png`` and ``demo.json`` to ``--out``."""
    start = time.perf_counter()
    names = resolve_schedulers(args.schedulers)  # the arguments were checked (cli/_checks.py)
    seeds = list(args.seeds) if args.seeds else list(range(args.num_images))
    packaged = args.model is None
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device, packaged)
    threads = args.threads or (1 if packaged and device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    try:
        pipe = load_pipeline(args.model, device, dtype)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load --model {args.model!r}: {err}") from err
    if args.prompt is not None and not takes(pipe, "prompt"):
        raise ValueError(f"--prompt: {type(pipe).__name__} takes no prompt; drop --prompt")
    if serves_flow(pipe.scheduler.config):
        names = resolve_schedulers(args.schedulers, flow=True)
    model_name = "packaged tiny-digits DDPM" if packaged else args.model

    cells = compare(pipe, names, args.nfe, seeds, args.prompt, progress=not args.no_progress)
    prompt = (args.prompt or DEFAULT_PROMPT) if takes(pipe, "prompt") else None
    title = f"{model_name}" + (f" - {prompt!r}" if prompt else "") + f" - seeds {seeds[0]}..{seeds[-1]}"
    title += " - same initial noise in every cell - blue: diffusers-geo"

    args.out.mkdir(parents=True, exist_ok=True)
    png, report = args.out / "demo.png", args.out / "demo.json"
    render_grid(cells, title, ours=[n for n in names if n.split(":")[0] in SCHEDULERS]).save(png)
    settings = {
        "command": "diffusers-geo " + " ".join(sys.argv[1:])
        if sys.argv[0].endswith("diffusers-geo")
        else None,
        "model": args.model or str(default_model_path()),
        "pipeline": type(pipe).__name__,
        "prompt": prompt,
        "seeds": seeds,
        "nfe": list(args.nfe),
        "schedulers": names,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "versions": _versions(),
    }
    runs = [{f.name: getattr(c, f.name) for f in fields(c) if f.name != "images"} for c in cells]
    for run in runs:
        run["seconds"] = round(run["seconds"], 3)
    settings["total_seconds"] = round(time.perf_counter() - start, 1)
    report.write_text(json.dumps({"settings": settings, "runs": runs}, indent=1))
    print(f"wrote {png} and {report} ({len(names)} samplers x NFE {args.nfe}, {settings['total_seconds']} s)")
    return 0


def _versions() -> dict[str, str]:
    return {"diffusers_geo": __version__, "diffusers": diffusers.__version__, "torch": torch.__version__}
