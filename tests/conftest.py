"""Suite-wide settings. Tests use tiny tensors, where one torch thread is several times
faster than many on a shared 2-core CPU (measured: likelihood + guidance tests 39 s -> 6 s)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
