"""``cellstate bench``: the CPU kernel against torch.nn.LSTM (cellstate.benchmarking.cpu), or with
``--device cuda`` the Triton backend on a GPU (cellstate.benchmarking.gpu)."""

from __future__ import annotations

import argparse

from cellstate.benchmarking import cpu, gpu


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="CPU kernel speed and memory vs torch.nn.LSTM")
    cpu.add_arguments(parser)
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: the Triton backend against torch.nn.LSTM on the GPU",
    )
    gpu.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.device == "cuda" or args.smoke or args.verdicts:
        return gpu.run(args)
    return cpu.run(args)
