"""What the commands share: integer-list options, device and dtype choice, pipeline loading (the packaged
model or any pipeline), the Accelerate process start, count checks and the settings record."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from diffusers import DDPMPipeline, DiffusionPipeline

from ..models.default_model import default_model_path

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def int_list(minimum: int):
    """An argparse type: comma-separated integers, each at least ``minimum``."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(f"expected integers >= {minimum}, got {text!r}")
        return values

    return parse


def check_counts(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """ValueError unless every option in ``names`` (argparse dest names) is at least 1."""
    for name in names:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA, else Apple MPS, else the CPU; anything else as torch reads it."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device, packaged: bool) -> torch.dtype:
    """``"auto"``: float16 for a pipeline on CUDA, float32 otherwise (and always for the packaged model)."""
    if dtype != "auto":
        return DTYPES[dtype]
    return torch.float16 if device.type == "cuda" and not packaged else torch.float32


def load_pipeline(model: str | None, device: torch.device, dtype: torch.dtype) -> DiffusionPipeline:
    """The packaged digits ``DDPMPipeline`` (``model=None``) or any pipeline from the Hub or a folder."""
    if model is None:
        pipe = DDPMPipeline.from_pretrained(default_model_path(), dtype=dtype)
    else:
        pipe = DiffusionPipeline.from_pretrained(model, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def start_and_load(model: str | None, device: str | None = None, dtype: str = "auto"):
    """This process's :class:`accelerate.PartialState` and the pipeline (the packaged model, or ``model`` in
    float16 on CUDA unless ``dtype`` says otherwise) on ``device`` (default: the process's device). Without a
    GPU, processes started by ``accelerate launch --multi_gpu`` / torchrun talk over gloo on the CPU."""
    state = PartialState(cpu=not torch.cuda.is_available())
    where = resolve_device(device) if device else state.device
    pipe = load_pipeline(model, where, resolve_dtype(dtype, where, packaged=model is None))
    return state, pipe


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The command's options as JSON values (paths as strings), for the record the command writes."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
