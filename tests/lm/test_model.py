import pytest
import torch

from cellstate.lm.model import CharLM, CharLMConfig
from tests.differential import EXACT


@pytest.mark.parametrize("lstm", ["cellstate", "torch"])
def test_forward_shapes_and_state_carry(lstm):
    model = CharLM(CharLMConfig(vocab_size=11, hidden=6, layers=2, embed=5, lstm=lstm))
    tokens = torch.randint(0, 11, (7, 3))  # (T, B)
    logits, (h, c) = model(tokens)
    assert logits.shape == (7, 3, 11)
    assert h.shape == c.shape == (2, 3, 6)
    carried, _ = model(tokens, (h, c))
    assert not torch.equal(carried, logits)  # the state is used


def test_cellstate_and_torch_models_are_the_same_model():
    torch.manual_seed(3)
    ours = CharLM(CharLMConfig(vocab_size=9, hidden=8, layers=2, embed=4))
    torch.manual_seed(3)
    theirs = CharLM(CharLMConfig(vocab_size=9, hidden=8, layers=2, embed=4, lstm="torch"))
    for (name, a), (_, b) in zip(
        ours.state_dict().items(), theirs.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, **EXACT, msg=f"initial {name}")
    tokens = torch.randint(0, 9, (12, 2))
    torch.testing.assert_close(ours(tokens)[0], theirs(tokens)[0])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hidden", 0, "hidden must be a positive integer"),
        ("layers", -1, "layers must be a positive integer"),
        ("embed", 2.5, "embed must be a positive integer"),
        ("dropout", 1.0, "dropout must be in"),
        ("lstm", "gru", "lstm must be one of cellstate, torch"),
    ],
)
def test_config_is_validated(field, value, message):
    with pytest.raises(ValueError, match=message):
        CharLMConfig(vocab_size=5, **{field: value})
