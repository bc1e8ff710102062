"""The embedded Reber grammar (1997 experiment 1)."""

from __future__ import annotations

import torch
from torch import Tensor

from cellstate.tasks.base import Batch, Task, check_int, masked_mse, one_hot
from cellstate.tasks.criterion import StoppingCriterion

SYMBOLS = "BTPSXVE"  # one-hot index of each symbol

# The Reber grammar: per state, its two equally likely (symbol, next state) transitions.
# State 7 is "after the closing E".
_REBER = (
    (("B", 1), ("B", 1)),
    (("T", 2), ("P", 3)),
    (("S", 2), ("X", 4)),
    (("T", 3), ("V", 5)),
    (("X", 3), ("S", 6)),
    (("P", 4), ("V", 6)),
    (("E", 7), ("E", 7)),
)


def _embedded_tables() -> tuple[Tensor, Tensor, Tensor]:
    """Tables of the embedded grammar B (T|P) <Reber string> (the same T|P) E.

    The Reber grammar is copied once per branch (T, P) so that the state itself remembers the
    branch and generation is a plain table lookup. Returns emit (S, 2) symbol indices (-1 at the
    end), follow (S, 2) next states, legal (S, 7) float multi-hot of the symbols a state can emit.
    The last state is the absorbing end.
    """
    size = len(_REBER) + 2  # states per copy: the grammar, the repeated branch, the closing E
    end = 2 + 2 * size
    rows = [(("B", 1), ("B", 1)), (("T", 2), ("P", 2 + size))]  # leading B, branch choice
    for copy, branch in enumerate("TP"):
        base = 2 + copy * size
        rows += [tuple((symbol, base + state) for symbol, state in row) for row in _REBER]
        rows += [((branch, base + size - 1),) * 2, (("E", end),) * 2]
    emit = torch.tensor([[SYMBOLS.index(s) for s, _ in row] for row in rows] + [[-1, -1]])
    follow = torch.tensor([[n for _, n in row] for row in rows] + [[end, end]])
    legal = torch.zeros(end + 1, len(SYMBOLS))
    for state, row in enumerate(rows):
        for symbol, _ in row:
            legal[state, SYMBOLS.index(symbol)] = 1.0
    return emit, follow, legal


_EMIT, _FOLLOW, _LEGAL = _embedded_tables()
_END = _EMIT.shape[0] - 1


class ReberTask(Task):
    """1997 experiment 1: predict the legal next symbols of embedded Reber grammar strings.

    A string is B, T or P, a Reber grammar string (B ... E), the same T or P again, E; every
    branch of the grammar is taken with probability 1/2. The model reads the string without its
    final E and, at every step, predicts the set of symbols that may legally come next. Only the
    second T/P needs memory: it repeats the one seen right after the leading B.

    inputs (T, B, 7) one-hot over "BTPSXVE", zero-padded; targets (T, B, 7) multi-hot of the legal
    next symbols; lengths (B,) = string length - 1; mask (T, B) valid steps.
    Loss: MSE over every output of every valid step (the paper's).
    Correct: at every valid step, the outputs above 0.5 are exactly the legal next symbols.
    Criterion: no error on 256 test strings (the paper also required its 256 fixed training
    strings correct; a trainer drawing fresh strings has no fixed training set).
    There is no length parameter: `length` is None.

    Example, the string B T B P V V E T E (inputs are all but the last E):
        inputs  B    T    B    P    V    V    E    T
        targets T|P  B    T|P  T|V  P|V  E    T    E
    """

    name = "reber"
    summary = "1997 exp. 1: predict the legal next symbols of embedded Reber grammar strings"
    default_length = None

    def __init__(self) -> None:
        self.length = None
        self.input_size = len(SYMBOLS)
        self.output_size = len(SYMBOLS)

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        check_int(self.name, "batch_size", batch_size, 1)
        device = generator.device
        emit, follow, legal = _EMIT.to(device), _FOLLOW.to(device), _LEGAL.to(device)
        state = torch.zeros(batch_size, dtype=torch.int64, device=device)
        symbols, states = [], []  # per step: (B,) symbol emitted, (B,) state reached
        # All strings advance together; finished ones sit in the end state emitting -1.
        while not bool((state == _END).all()):
            choice = torch.randint(0, 2, (batch_size,), generator=generator, device=device)
            symbols.append(emit[state, choice])
            state = follow[state, choice]
            states.append(state)
        lengths = (torch.stack(symbols) >= 0).sum(dim=0) - 1  # the final E is not an input
        steps = len(symbols) - 1
        mask = torch.arange(steps, device=device)[:, None] < lengths[None, :]  # (T, B)
        inputs = one_hot(torch.stack(symbols[:-1]).masked_fill(~mask, -1), self.input_size)
        targets = legal[torch.stack(states[:-1])] * mask.unsqueeze(2)  # (T, B, 7)
        return Batch(inputs, targets, lengths, mask)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """MSE over every output of every valid step."""
        self._check_outputs(outputs, batch)
        return masked_mse(outputs, batch.targets, batch.mask)

    def correct(self, outputs: Tensor, batch: Batch) -> Tensor:
        """(B,) bool: at every valid step, output > 0.5 exactly for the legal next symbols."""
        self._check_outputs(outputs, batch)
        agree = ((outputs > 0.5) == (batch.targets > 0.5)).all(dim=2)  # (T, B)
        return (agree | ~batch.mask).all(dim=0)

    @property
    def criterion(self) -> StoppingCriterion:
        return StoppingCriterion("test", test_size=256)

    @property
    def paper_sequences(self) -> int:
        """8,440: the paper's best LSTM (3 blocks of 2 cells, learning rate 0.5)."""
        return 8_440
