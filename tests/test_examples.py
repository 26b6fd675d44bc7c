"""The examples run offline."""

import importlib.util
from pathlib import Path

from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_swap_scheduler_example(tmp_path):
    out = load("swap_scheduler").main(["--steps", "3", "--out", str(tmp_path / "x.png")])
    assert Image.open(out).size == (8, 8)
