import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Run each engine test on one thread: its tensors are tiny, and on a shared CPU the
    synchronization of several threads costs more than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
