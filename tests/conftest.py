"""Shared test settings.

The suite runs tiny models (tensors of a few hundred to a few hundred thousand elements): one intra-op
thread is as fast as two for them, and on a busy 2-core runner OpenMP's spin-waiting made pipeline calls
take seconds instead of milliseconds (measured: a 5-step DDPMPipeline run 0.03 s vs 14 s).
"""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)
