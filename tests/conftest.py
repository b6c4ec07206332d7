"""Suite-wide settings, defined once here rather than in each test module.

Tests use tiny tensors, where one torch thread is several times faster than many on a shared
2-core CPU (measured: likelihood + guidance tests 39 s -> 6 s; a tiny training step 4.75 s ->
0.09 s under load). The session fixture covers module-scoped fixtures (trained checkpoints);
the per-test one re-pins the count if code under test changed it, and restores it after.
"""

import sys
from pathlib import Path

import pytest
import torch

# tests/contract.py (the command-line contract) is imported by head test modules
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread_session():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def one_thread(_one_torch_thread_session):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
