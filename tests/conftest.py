import pytest
import torch

# The tests' tensors are tiny: one thread is faster, and immune to the oversubscription stalls
# of OpenMP spin-waiting when the machine is busy. Tests about threading set their own count.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state."""
    torch.manual_seed(0)
