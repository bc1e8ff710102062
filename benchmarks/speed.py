"""CPU kernel benchmark: cellstate (auto) vs its reference, torch.nn.LSTM and a Python loop.

The same as ``cellstate bench``; see cellstate/benchmarking/cpu.py. Example, a quick run:

    python benchmarks/speed.py --shapes 1000,32,2,128 --skip-slow --no-memory --repeats 3
"""

import argparse
import sys

from cellstate.benchmarking import cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cpu.add_arguments(parser)
    return cpu.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
