"""Test-wide settings: one torch thread (tiny tensors run fastest that way on a shared 2-core
machine, and results do not depend on the thread count), and a non-interactive plot backend."""

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
