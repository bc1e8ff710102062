import os

import pytest
import torch

# Triton's interpreter needs TRITON_INTERPRET=1 before anything imports triton (its own @jit
# functions are made interpreted or compiled then), and some test modules import it at
# collection (torch.testing._internal.common_modules does): set here, before any of them, on a
# machine where the Triton kernels can only run interpreted.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The tests' tensors are tiny: one thread is faster, and immune to the oversubscription stalls
# of OpenMP spin-waiting when the machine is busy. Tests about threading set their own count.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state."""
    torch.manual_seed(0)
