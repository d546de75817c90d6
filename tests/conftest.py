import os

import pytest
import torch

# deterministic, quiet, and fair to a 2-core machine
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def fmnist():
    """Fashion-MNIST's files, or a skip that says how to get them."""
    from globalctx.train.data import DataError, find_fashion_mnist

    try:
        return find_fashion_mnist()
    except DataError as e:
        pytest.skip(f"Fashion-MNIST is not installed (make test installs dataset-fashion-mnist where apt works): {e}")
