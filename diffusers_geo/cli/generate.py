"""``diffusers-geo generate``: N images for an evaluation set, split over processes with 🤗 Accelerate.

Image ``i`` is drawn with its own generator seeded ``seed + i`` (initial noise and, for stochastic
schedulers, every noise draw of the run), so the images do not depend on how many processes share the
work: ``accelerate launch --multi_gpu --num_processes K -m diffusers_geo.cli generate ...`` (or ``torchrun
--nproc_per_node K``; add ``--num_machines`` / ``--machine_rank`` / ``--main_process_ip`` for several machines)
writes the same files as a single process. Without a GPU the processes run on the CPU over gloo (use
``--multi_gpu`` there too: accelerate's ``--cpu`` flag starts a single process unless MPI is configured). Work is split with ``PartialState().split_between_processes``; each process writes its own
images, and the main process writes ``generate.json`` with the settings once every process is done.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from ..registry import make_scheduler
from ._common import settings as command_settings
from ._common import start_and_load

__all__ = ["image_seeds", "run"]


def image_seeds(num_images: int, seed: int) -> list[int]:
    """The seed of every image: ``seed + i`` (independent of processes and batches)."""
    return [seed + i for i in range(num_images)]


def _images(pipe, seeds: list[int], steps: int, prompt: str | None) -> list:
    """One pipeline call for ``seeds`` (one generator per image); returns PIL images."""
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    kwargs: dict[str, Any] = {"num_inference_steps": steps, "generator": generators}
    if prompt is not None:
        kwargs["prompt"] = [prompt] * len(seeds)
    else:
        kwargs["batch_size"] = len(seeds)
    return pipe(**kwargs).images


def run(args: argparse.Namespace) -> int:
    state, pipe = start_and_load(args.model)
    pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
    seeds = image_seeds(args.num_images, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    with state.split_between_processes(list(enumerate(seeds))) as mine:
        for start in range(0, len(mine), args.batch_size):
            batch = mine[start : start + args.batch_size]
            images = _images(pipe, [s for _, s in batch], args.steps, args.prompt)
            for (index, _), image in zip(batch, images, strict=True):
                image.save(args.out / f"{index:05d}.png")
    state.wait_for_everyone()
    if state.is_main_process:
        settings = command_settings(args)
        settings.update(
            num_processes=state.num_processes, seeds=seeds, scheduler_class=type(pipe.scheduler).__name__
        )
        (args.out / "generate.json").write_text(json.dumps(settings, indent=2))
        print(
            f"wrote {args.num_images} images with {args.scheduler} on {state.num_processes} process(es) to {args.out}"
        )
    return 0
