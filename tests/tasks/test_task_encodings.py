"""Each task's encoding rules, checked on generated batches and recomputed independently."""

from __future__ import annotations

import math

import pytest
import torch

from cellstate.tasks import make_task
from cellstate.tasks.reber import SYMBOLS as REBER_SYMBOLS
from cellstate.tasks.temporal_order import SYMBOLS as ORDER_SYMBOLS


def draw(name: str, length: int | None, batch_size: int, seed: int = 0, **kwargs):
    task = make_task(name, length, **kwargs)
    return task, task.batch(batch_size, torch.Generator().manual_seed(seed))


def check_lengths(lengths: torch.Tensor, length: int) -> None:
    """Lengths uniform in [T, T + T // 10]: within the range, and every value drawn."""
    assert sorted(lengths.unique().tolist()) == list(range(length, length + length // 10 + 1))


def check_1997_markers(inputs: torch.Tensor, lengths: torch.Tensor, length: int) -> torch.Tensor:
    """Asserts the 1997 marker layout; returns (B, 2) marked positions (ascending)."""
    markers = inputs[:, :, 1]  # (T, B)
    size = markers.shape[1]
    assert set(markers.unique().tolist()) <= {-1.0, 0.0, 1.0}
    marked = (markers == 1).nonzero()  # rows (t, b), sorted by t
    assert torch.equal((markers == 1).sum(dim=0), torch.full((size,), 2))
    positions = torch.stack([marked[marked[:, 1] == b, 0] for b in range(size)])  # (B, 2)
    last = markers[lengths - 1, torch.arange(size)]
    assert (last == -1).all(), "the last pair of every sequence is marked -1"
    first_marked = positions[:, 0] == 0
    assert (markers[0][~first_marked] == -1).all(), "an unmarked first pair carries -1"
    expected_minus = 2 - first_marked.long()
    assert torch.equal((markers == -1).sum(dim=0), expected_minus), "no other -1 markers"
    # X1 is one of the first 10 pairs, X2 one of the first T/2 - 1 pairs not yet marked: the
    # smaller position is always < 10 and the larger < max(10, T / 2).
    assert (positions[:, 0] < 10).all()
    assert (positions[:, 1] < max(10, length // 2)).all()
    if length // 2 - 1 >= 10:  # X2's window ends after X1's: its last candidate is the maximum
        assert int(positions[:, 1].max()) == length // 2 - 1
    assert first_marked.any(), "the first pair gets picked now and then"
    return positions


def test_adding_encoding_and_target() -> None:
    length = 100
    task, batch = draw("adding", length, 4000)
    check_lengths(batch.lengths, length)
    values = batch.inputs[:, :, 0]
    assert float(values.min()) >= -1 and float(values.max()) <= 1
    positions = check_1997_markers(batch.inputs, batch.lengths, length)
    index = torch.arange(4000)
    marked_values = values[positions.T, index]  # (2, B)
    assert (marked_values[0][positions[:, 0] == 0] == 0).all(), "a marked first pair holds 0"
    assert (marked_values[:, positions[:, 0] > 0] != 0).all()
    target = 0.5 + marked_values.sum(dim=0) / 4
    torch.testing.assert_close(batch.targets[:, 0], target)
    assert float(batch.targets.min()) >= 0 and float(batch.targets.max()) <= 1


def test_adding_mean_prediction_baseline() -> None:
    # Predicting 0.5 scores Var((X1 + X2) / 4) = 1/24 for X ~ U(-1, 1). A marked first pair holds
    # 0, which happens with probability 1/10 + 9/10 * 1/49 at T = 100: (2 - p0) / 3 / 16 = 0.0392.
    task, batch = draw("adding", 100, 40_000)
    outputs = torch.full((*batch.inputs.shape[:2], 1), 0.5)
    loss = float(task.loss(outputs, batch))
    first_marked = 1 / 10 + 9 / 10 / 49
    assert abs(float((batch.inputs[0, :, 1] == 1).float().mean()) - first_marked) < 0.01
    assert abs(loss - (2 - first_marked) / 48) < 0.001
    assert abs(loss - 1 / 24) < 0.004


def test_adding_modern_encoding_target_and_baseline() -> None:
    length = 100
    task, batch = draw("adding-modern", length, 20_000)
    assert (batch.lengths == length).all() and batch.inputs.shape[0] == length
    values, markers = batch.inputs[:, :, 0], batch.inputs[:, :, 1]
    assert float(values.min()) >= 0 and float(values.max()) <= 1
    assert set(markers.unique().tolist()) == {0.0, 1.0}
    assert ((markers[: length // 2] == 1).sum(dim=0) == 1).all(), "one marker in the first half"
    assert ((markers[length // 2 :] == 1).sum(dim=0) == 1).all(), "one marker in the second half"
    torch.testing.assert_close(batch.targets[:, 0], (values * markers).sum(dim=0))
    # Predicting 1 scores Var(X1 + X2) = 2/12.
    loss = float(task.loss(torch.ones(length, 20_000, 1), batch))
    assert abs(loss - 1 / 6) < 0.005


def test_multiplication_encoding_and_target() -> None:
    length = 100
    task, batch = draw("multiplication", length, 4000, seed=1)
    check_lengths(batch.lengths, length)
    values = batch.inputs[:, :, 0]
    assert float(values.min()) >= 0 and float(values.max()) <= 1
    positions = check_1997_markers(batch.inputs, batch.lengths, length)
    marked_values = values[positions.T, torch.arange(4000)]  # (2, B)
    assert (marked_values[0][positions[:, 0] == 0] == 1).all(), "a marked first pair holds 1"
    assert (marked_values[:, positions[:, 0] > 0] != 1).all()
    torch.testing.assert_close(batch.targets[:, 0], marked_values.prod(dim=0))


@pytest.mark.parametrize("name", ["adding", "multiplication"])
def test_shortest_1997_layout(name: str) -> None:
    # At T = 11, X2's window (the first 4 unmarked pairs) can lie before X1 (first 10 pairs) and
    # X1 can sit right before the last pair.
    task, batch = draw(name, 11, 2000, seed=2)
    check_lengths(batch.lengths, 11)
    positions = check_1997_markers(batch.inputs, batch.lengths, 11)
    assert int(positions[:, 1].max()) == 9


@pytest.mark.parametrize(
    ("name", "length", "windows"),
    [
        ("temporal-order", 100, [(10, 20), (50, 60)]),
        ("temporal-order", 200, [(20, 40), (100, 120)]),
        ("temporal-order", 10, [(1, 2), (5, 6)]),
        ("temporal-order-3", 100, [(10, 20), (33, 43), (66, 76)]),
        ("temporal-order-3", 10, [(1, 2), (3, 4), (7, 8)]),
    ],
)
def test_temporal_order_encoding(name: str, length: int, windows: list) -> None:
    task, batch = draw(name, length, 3000)
    check_lengths(batch.lengths, length)
    size = batch.lengths.numel()
    valid = torch.arange(batch.inputs.shape[0])[:, None] < batch.lengths[None, :]
    assert torch.equal(batch.inputs.sum(dim=2), valid.float()), "one-hot on valid steps"
    symbols = batch.inputs.argmax(dim=2)  # (T, B)
    e, b = ORDER_SYMBOLS.index("E"), ORDER_SYMBOLS.index("B")
    x, y = ORDER_SYMBOLS.index("X"), ORDER_SYMBOLS.index("Y")
    assert (symbols[0] == e).all()
    assert (symbols[batch.lengths - 1, torch.arange(size)] == b).all()
    is_xy = ((symbols == x) | (symbols == y)) & valid
    assert (is_xy.sum(dim=0) == len(windows)).all()
    label = torch.zeros(size, dtype=torch.int64)
    seen = []
    for column in range(size):
        steps = is_xy[:, column].nonzero()[:, 0]
        seen.append(steps)
        for step in steps.tolist():
            label[column] = 2 * label[column] + int(symbols[step, column] == y)
    steps = torch.stack(seen)  # (B, K) ascending
    for k, (lo, hi) in enumerate(windows):
        assert int(steps[:, k].min()) == lo and int(steps[:, k].max()) == hi
    filler = valid.clone()
    filler[0] = False
    filler[batch.lengths - 1, torch.arange(size)] = False
    assert (symbols[filler & ~is_xy] < 4).all(), "the rest is drawn from a, b, c, d"
    assert torch.equal(batch.targets.argmax(dim=1), label)
    assert torch.equal(batch.targets.sum(dim=1), torch.ones(size))
    assert len(label.unique()) == 2 ** len(windows), "every class occurs"


def test_long_lag_encoding() -> None:
    p = 30
    task, batch = draw("long-lag", p, 200)
    assert batch.inputs.shape == (p, 200, p + 1) and (batch.lengths == p).all()
    inputs, targets = batch.inputs.argmax(dim=2), batch.targets.argmax(dim=2)  # (p, B)
    assert set(inputs[0].unique().tolist()) == {p - 1, p}, "x and y both start sequences"
    middle = torch.arange(p - 1)[:, None].expand(p - 1, 200)
    assert torch.equal(inputs[1:], middle), "a_1 .. a_(p-1) in order"
    assert torch.equal(targets[:-1], inputs[1:]), "the target is the next symbol"
    assert torch.equal(targets[-1], inputs[0]), "the last symbol repeats the first"
    assert torch.equal(batch.inputs.sum(dim=2), torch.ones(p, 200))


def test_long_lag_correct_uses_the_025_bound() -> None:
    task, batch = draw("long-lag", 10, 4)
    outputs = batch.targets.clone()
    outputs[9, 0, 0] += 0.24
    outputs[9, 1, 0] += 0.26
    assert task.correct(outputs, batch).tolist() == [True, False, True, True]


def test_long_lag_distractors_encoding() -> None:
    q, p = 20, 7
    task, batch = draw("long-lag-distractors", q, 4000, n_distractors=p)
    assert task.input_size == p + 4
    size, steps = 4000, batch.inputs.shape[0]
    valid = torch.arange(steps)[:, None] < batch.lengths[None, :]
    assert torch.equal(batch.inputs.sum(dim=2), valid.float())
    symbols = batch.inputs.argmax(dim=2)
    b, e, x, y = p, p + 1, p + 2, p + 3
    assert (symbols[0] == b).all()
    assert ((symbols[1] == x) | (symbols[1] == y)).all()
    assert (symbols[batch.lengths - 1, torch.arange(size)] == e).all()
    middle = valid.clone()
    middle[:2] = False
    middle[batch.lengths - 1, torch.arange(size)] = False
    assert (symbols[middle] < p).all(), "only distractors between X and e"
    assert set(symbols[middle].unique().tolist()) == set(range(p))
    assert torch.equal(batch.targets.argmax(dim=1), symbols[1] - x)
    # q fixed distractors, then Geometric(1/10) more: mean 9, min 0.
    extra = (batch.lengths - (q + 3)).float()
    assert float(extra.min()) == 0
    assert abs(float(extra.mean()) - 9) < 0.6
    assert abs(float((extra == 0).float().mean()) - 0.1) < 0.02


def test_two_sequence_encoding() -> None:
    length, n = 100, 3
    task, batch = draw("two-sequence", length, 2000, n_informative=n)
    check_lengths(batch.lengths, length)
    signal = batch.inputs[:n, :, 0]  # (N, B)
    sign = 2 * batch.targets[:, 0] - 1
    assert torch.equal(signal, sign.expand(n, -1)), "first N inputs are +1 (class 1) or -1"
    assert set(batch.targets[:, 0].unique().tolist()) == {0.0, 1.0}
    valid = torch.arange(batch.inputs.shape[0])[:, None] < batch.lengths[None, :]
    valid[:n] = False
    noise = batch.inputs[:, :, 0][valid]
    assert abs(float(noise.mean())) < 0.01
    assert abs(float(noise.var()) - 0.2) < 0.01


# The inner Reber grammar as (state, symbol) -> state, written independently of the generator.
REBER_MOVES = {
    (0, "B"): 1,
    (1, "T"): 2,
    (1, "P"): 3,
    (2, "S"): 2,
    (2, "X"): 4,
    (3, "T"): 3,
    (3, "V"): 5,
    (4, "X"): 3,
    (4, "S"): 6,
    (5, "P"): 4,
    (5, "V"): 6,
    (6, "E"): 7,
}


def reber_next_sets(string: str) -> list[set[str]]:
    """The legal next symbols after each prefix of an embedded Reber string (asserts validity)."""
    assert string[0] == "B" and string[1] in "TP" and string[-2] == string[1]
    assert string[-1] == "E"
    sets = [{"T", "P"}, {"B"}]
    state = 0
    for symbol in string[2:-2]:
        assert (state, symbol) in REBER_MOVES, f"{string} breaks the grammar at {symbol}"
        state = REBER_MOVES[(state, symbol)]
        sets.append({s for (at, s) in REBER_MOVES if at == state} if state != 7 else {string[1]})
    assert state == 7, f"{string} ends inside the grammar"
    return sets + [{"E"}]


def test_reber_strings_and_targets() -> None:
    task, batch = draw("reber", None, 500)
    lengths = batch.lengths.tolist()
    branches, sizes = set(), set()
    for column, length in enumerate(lengths):
        steps = batch.inputs[:length, column]
        assert torch.equal(steps.sum(dim=1), torch.ones(length))
        string = "".join(REBER_SYMBOLS[i] for i in steps.argmax(dim=1).tolist()) + "E"
        expected = reber_next_sets(string)
        got = [
            {REBER_SYMBOLS[k] for k in range(7) if batch.targets[t, column, k] == 1}
            for t in range(length)
        ]
        assert got == expected, string
        branches.add(string[1])
        sizes.add(length)
    assert branches == {"T", "P"}
    assert min(sizes) == 8, "the shortest string, B T B T X S E T E, occurs"
    assert len(sizes) > 5
    assert set(batch.targets.unique().tolist()) == {0.0, 1.0}


def test_reber_correct_rule_is_exactly_the_legal_set() -> None:
    task, batch = draw("reber", None, 4)
    outputs = batch.targets * 0.6 + 0.2  # legal 0.8, illegal 0.2
    assert task.correct(outputs, batch).all()
    outputs[0, 1, :] = 0.8  # one extra symbol predicted at one step of sequence 1
    assert task.correct(outputs, batch).tolist() == [True, False, True, True]


@pytest.mark.parametrize("gap", [1, 5, 100])
def test_copy_encoding(gap: int) -> None:
    task, batch = draw("copy", gap, 64)
    steps = gap + 20
    assert batch.inputs.shape == (steps, 64, 10) and task.output_size == 9
    symbols = batch.inputs.argmax(dim=2)  # (T + 20, B)
    data = symbols[:10]
    assert ((data >= 1) & (data <= 8)).all()
    assert len(data.unique()) == 8
    assert (symbols[10 : gap + 9] == 0).all() and (symbols[gap + 9] == 9).all()
    assert (symbols[gap + 10 :] == 0).all()
    assert (batch.targets[: gap + 10] == 0).all()
    assert torch.equal(batch.targets[gap + 10 :], data)


def test_copy_memoryless_baseline() -> None:
    gap = 50
    task, batch = draw("copy", gap, 32)
    # The best memoryless model: blank for sure until the recall, then uniform over the 8 data.
    logits = torch.full((gap + 20, 32, 9), -1e4)
    logits[: gap + 10, :, 0] = 0.0
    logits[gap + 10 :, :, 1:] = 0.0
    expected = 10 * math.log(8) / (gap + 20)
    torch.testing.assert_close(float(task.loss(logits, batch)), expected)
    assert task.baseline_loss == pytest.approx(expected)


def test_copy_symbol_error_counts_the_copied_part_only() -> None:
    gap = 5
    task, batch = draw("copy", gap, 4)
    logits = torch.nn.functional.one_hot(batch.targets, 9).float()  # (T + 20, B, 9): all right
    assert task.test_metrics(logits, batch) == {"symbol_error": 0.0}
    logits[0, :, :] = torch.tensor([0.0, 1.0] + [0.0] * 7)  # blank part wrong: not counted
    logits[-1, 0, :] = 0.0
    logits[-1, 0, (int(batch.targets[-1, 0]) % 8) + 1] = 1.0  # one copied symbol of 40 wrong
    assert task.test_metrics(logits, batch) == {"symbol_error": pytest.approx(1 / 40)}
    assert task.test_metric_names == ("symbol_error",)
    assert draw("adding", 20, 4)[0].test_metrics(torch.zeros(20, 4, 1), batch) == {}


def test_two_sequence_3a_inputs_are_unchanged_by_the_variants_code() -> None:
    """3a's batches are those of the implementation before 3b/3c (same draws, same order): runs
    recorded before stay reproducible. The reference rebuilds them from the generator."""
    task, batch = draw("two-sequence", 20, 64, seed=5, n_informative=3)
    generator = torch.Generator().manual_seed(5)
    lengths = 20 + torch.randint(0, 3, (64,), generator=generator)
    label = torch.randint(0, 2, (64,), generator=generator)
    inputs = torch.randn(int(lengths.max()), 64, generator=generator) * 0.2**0.5
    inputs[:3] = (2 * label - 1).float()
    inputs *= torch.arange(inputs.shape[0])[:, None] < lengths[None, :]
    assert torch.equal(batch.inputs[:, :, 0], inputs)
    assert torch.equal(batch.targets[:, 0], label.float())


@pytest.mark.parametrize("n", [1, 3])
def test_two_sequence_3b_informative_inputs_carry_the_noise_too(n: int) -> None:
    length = 100
    task, batch = draw("two-sequence-3b", length, 4000, n_informative=n)
    check_lengths(batch.lengths, length)
    assert batch.targets.shape == (4000, 1)
    assert set(batch.targets[:, 0].unique().tolist()) == {0.0, 1.0}
    sign = 2 * batch.targets[:, 0] - 1  # (B,)
    signal_noise = batch.inputs[:n, :, 0] - sign  # (N, B): +-1 plus noise
    assert abs(float(signal_noise.mean())) < 0.02
    assert abs(float(signal_noise.var()) - 0.2) < 0.02
    valid = torch.arange(batch.inputs.shape[0])[:, None] < batch.lengths[None, :]
    valid[:n] = False
    noise = batch.inputs[:, :, 0][valid]
    assert abs(float(noise.mean())) < 0.01
    assert abs(float(noise.var()) - 0.2) < 0.01
    # The best rule, the sign of the informative inputs' sum, errs with probability
    # Phi(-sqrt(5 N)): 1.27% at N = 1, 5e-5 at N = 3.
    errs = float((torch.sign(batch.inputs[:n, :, 0].sum(0)) != sign).float().mean())
    expected = 0.5 * math.erfc(math.sqrt(5 * n) / math.sqrt(2))
    assert abs(errs - expected) < 0.006


def test_two_sequence_3c_targets_are_0_2_or_0_8_plus_noise_of_variance_0_1() -> None:
    length, n = 100, 3
    task, batch = draw("two-sequence-3c", length, 8000, n_informative=n)
    _, same_inputs = draw("two-sequence-3b", length, 8000, n_informative=n)
    # 3c's inputs are 3b's (the target noise is drawn after them).
    assert torch.equal(batch.inputs, same_inputs.inputs)
    assert batch.targets.shape == (8000, 2)
    noisy, clean = batch.targets[:, 0], batch.targets[:, 1]
    assert torch.equal(clean, 0.2 + 0.6 * same_inputs.targets[:, 0])  # class 1: 0.8, class 0: 0.2
    assert abs(float((noisy - clean).mean())) < 0.01
    assert abs(float((noisy - clean).var()) - 0.1) < 0.005
    # Scored against the noise-free target, within 0.1; trained on the noisy one.
    outputs = torch.zeros(*batch.inputs.shape[:2], 1)
    last = (batch.lengths - 1, torch.arange(8000))
    outputs[last] = (clean + 0.09).unsqueeze(1)
    assert task.correct(outputs, batch).all()
    assert task.test_metrics(outputs, batch)["clean_abs_error"] == pytest.approx(0.09, abs=1e-6)
    torch.testing.assert_close(task.loss(outputs, batch), ((clean + 0.09 - noisy) ** 2).mean())
    outputs[last] = (clean - 0.11).unsqueeze(1)
    assert not task.correct(outputs, batch).any()
