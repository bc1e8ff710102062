"""``cellstate info``: what a bug report needs (versions, threads, CPU ISA, backends)."""

from __future__ import annotations

import platform

import torch

import cellstate
from cellstate.kernels.dispatch import backend_status


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="versions, threads, CPU ISA and backends")
    parser.set_defaults(func=run)


def run(args) -> int:
    print(f"cellstate       {cellstate.__version__}")
    print(f"torch           {torch.__version__}")
    print(f"python          {platform.python_version()} ({platform.machine()})")
    print(f"platform        {platform.platform()}")
    print(f"threads         {torch.get_num_threads()} (torch.get_num_threads)")
    print(f"cpu capability  {torch.backends.cpu.get_cpu_capability()}")
    print(f"cuda            {torch.cuda.is_available()}")
    print("backends:")
    for name, state in backend_status().items():
        print(f"  {name:<12}  {state}")
    return 0
