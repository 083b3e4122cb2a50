"""Shared by the inference tests: torch runs on one thread (the machine's cores are shared, and one-core
timings are what the benchmarks promise)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
