"""GPU benchmark: the Triton backend against torch.nn.LSTM (issue 11's shapes and targets).

The same as ``cellstate bench --device cuda``; see cellstate/benchmarking/gpu.py. Examples:

    python benchmarks/gpu.py --out gpu.json     # on a machine with a CUDA GPU
    python benchmarks/gpu.py --smoke            # tiny, on CPU through Triton's interpreter
"""

import sys

from cellstate.benchmarking import gpu

if __name__ == "__main__":
    sys.exit(gpu.main())
