"""Shared test settings.

Threads: the suite runs tiny models (tensors of a few hundred to a few hundred thousand elements): one
intra-op thread is as fast as two for them, and on a busy 2-core runner OpenMP's spin-waiting made pipeline
calls take seconds instead of milliseconds (measured: a 5-step DDPMPipeline run 0.03 s vs 14 s). So one
thread by default; ``OMP_NUM_THREADS`` set in the environment is honoured, so that CI also runs the suite
with 2 (float32 results then move by ~1e-6, which no test may depend on).

Order: ``pytest --shuffle SEED`` runs the modules, and the tests within each module, in an order drawn from
SEED (modules stay together, so module-scoped fixtures are built once), to catch tests that depend on what
ran before them (global RNG state, shared schedulers). ``.ci/run`` runs it once.
"""

import os
import random
from itertools import groupby

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))


def pytest_addoption(parser):
    parser.addoption(
        "--shuffle",
        type=int,
        default=None,
        metavar="SEED",
        help="run test modules, and the tests within each, in an order drawn from SEED",
    )


def pytest_report_header(config):
    seed = config.getoption("--shuffle")
    order = "file order" if seed is None else f"shuffled with seed {seed}"
    return f"diffusers-geo: torch threads {torch.get_num_threads()}, {order}"


def pytest_collection_modifyitems(config, items):
    seed = config.getoption("--shuffle")
    if seed is None:
        return
    rng = random.Random(seed)
    modules = [list(group) for _, group in groupby(items, key=lambda item: item.nodeid.split("::")[0])]
    rng.shuffle(modules)
    for tests in modules:
        rng.shuffle(tests)
    items[:] = [item for tests in modules for item in tests]
