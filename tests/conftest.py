import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def shared_data() -> Path:
    """Root of the real data sets (``GHL_SNN_DATA``), or skip when absent."""
    root = os.environ.get("GHL_SNN_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("real data not available: set GHL_SNN_DATA to the folder holding MNIST/, cifar10-jpeg/, ...")
    return Path(root)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of many tiny ops (faster, and light on a shared CPU); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_autotune():
    """The weight-gradient kernel chosen without timing (as in a process started with ``GHL_SNN_AUTOTUNE=0``), so
    that this process computes to the same bit as another one; restored afterwards."""
    from ghl_snn.ops import autotune

    before = autotune()
    autotune(False)
    yield
    autotune(before)
