"""The largest relative difference between cellstate and torch.nn.LSTM / torch.nn.RNN.

Over every constructor option, dense and packed input, T=100, float64: outputs, final states and
every gradient (inputs and parameters), on copied weights.

    .venv/bin/python benchmarks/compat.py
"""

import itertools
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cellstate  # noqa: E402
from tests.differential import assert_modules_match  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    worst = {"LSTM": 0.0, "RNN": 0.0}
    options = itertools.product((1, 2), (True, False), (False, True), (False, True), (0, 4))
    for layers, bias, batch_first, bidirectional, proj in options:
        args = (3, 16, layers, bias, batch_first, 0.0, bidirectional)
        lstm = nn.LSTM(*args, proj, dtype=torch.float64)
        rnn = nn.RNN(3, 16, layers, "tanh" if proj else "relu", *args[3:], dtype=torch.float64)
        ours_rnn = cellstate.RNN(3, 16, layers, rnn.nonlinearity, *args[3:], dtype=torch.float64)
        ours_rnn.load_state_dict(rnn.state_dict())
        pairs = {"LSTM": (cellstate.LSTM.from_torch(lstm), lstm), "RNN": (ours_rnn, rnn)}
        x = torch.randn((8, 100, 3) if batch_first else (100, 8, 3), dtype=torch.float64)
        lengths = torch.randint(1, 101, (8,))
        packed = pack_padded_sequence(
            torch.randn(100, 8, 3, dtype=torch.float64), lengths, enforce_sorted=False
        )
        for name, (ours, theirs) in pairs.items():
            for data in (x, packed):
                worst[name] = max(worst[name], assert_modules_match(ours, theirs, data))
    for name, value in worst.items():
        print(f"cellstate.{name} vs torch.nn.{name}: largest relative difference {value:.3g}")


if __name__ == "__main__":
    main()
