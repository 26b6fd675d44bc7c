"""``diffusers-geo generate``: per-image seeds, so 2 processes (accelerate launch on the CPU, gloo) write
the same images as 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from diffusers_geo.cli import main
from diffusers_geo.cli.generate import image_seeds
from diffusers_geo.testing import accelerate_launch

ARGS = ["--scheduler", "er-sde", "--steps", "3", "--num-images", "5", "--batch-size", "2", "--seed", "7"]


def _images(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_seeds_are_per_image():
    assert image_seeds(4, 10) == [10, 11, 12, 13]


def test_two_processes_write_the_same_images_as_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["generate", *ARGS, "--out", str(one)]) == 0
    settings = json.loads((one / "generate.json").read_text())
    assert settings["num_processes"] == 1 and settings["seeds"] == [7, 8, 9, 10, 11]
    assert settings["scheduler_class"] == "ERSDEScheduler"
    done = accelerate_launch(["generate", *ARGS, "--out", str(two)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((two / "generate.json").read_text())["num_processes"] == 2
    first, second = _images(one), _images(two)
    assert sorted(first) == [f"{i:05d}.png" for i in range(5)] and sorted(second) == sorted(first)
    # the same seeds give the same images; 8-bit pixels may differ by one level where a float32 value sits at
    # a rounding boundary, since two processes may run the UNet with other thread counts (outputs move ~1e-6)
    for name in first:
        diff = np.abs(first[name].astype(int) - second[name].astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, name
    assert len({a.tobytes() for a in first.values()}) == 5  # different seeds, different images


@pytest.mark.parametrize("bad", [["--num-images", "0"], ["--steps", "0"], ["--batch-size", "0"]])
def test_bad_counts(tmp_path, bad, capsys):
    with pytest.raises(SystemExit, match="must be >= 1") as info:
        main(["generate", *bad, "--out", str(tmp_path)])
    assert info.value.code == 2 and bad[0] in capsys.readouterr().err  # one line naming the flag
