"""The lab's model at initialisation: which weights the config's init draws, and from where."""

import torch

from cellstate.tasks import make_task
from cellstate.training.config import DEFAULT_INPUT_GATE_BOUND, ModelConfig
from cellstate.training.model import SequenceModel

TORCH_BOUND = 1 / 32**0.5  # torch.nn.LSTM's 1/sqrt(H) at the default hidden size


def _input_weights(config: ModelConfig) -> torch.Tensor:
    torch.manual_seed(0)
    return SequenceModel(config, make_task("temporal-order")).recurrent.weight_ih_l0.detach()


def test_chrono_draws_the_input_gate_weights_from_the_wider_bound():
    weight = _input_weights(ModelConfig(t_max=40.0))
    gate, rest = weight[:32], weight[32:]
    assert gate.abs().max() <= DEFAULT_INPUT_GATE_BOUND
    assert gate.abs().max() > 4 * TORCH_BOUND  # 32 x 8 draws of U(-2, 2)
    assert rest.abs().max() <= TORCH_BOUND  # the f, g, o gates keep torch's init


def test_other_inits_keep_torchs_bound_unless_asked():
    assert _input_weights(ModelConfig(init="default")).abs().max() <= TORCH_BOUND
    asked = _input_weights(ModelConfig(init="default", input_gate_bound=3.0))
    assert asked[:32].abs().max() > 2.0


def test_input_to_output_adds_a_linear_map_of_the_input_to_the_head():
    task = make_task("long-lag", 5)
    torch.manual_seed(0)
    model = SequenceModel(ModelConfig(t_max=10.0, output="linear", input_to_output=True), task)
    inputs = task.batch(3, torch.Generator().manual_seed(0)).inputs  # (5, 3, 6)
    hidden = model.recurrent(inputs)[0]
    expected = model.head(hidden) + inputs @ model.direct.weight.t()
    torch.testing.assert_close(model(inputs), expected)
    assert model.direct.bias is None
    assert SequenceModel(ModelConfig(t_max=10.0), task).direct is None


def test_zero_head_starts_the_heads_weights_at_zero_and_keeps_its_bias():
    task = make_task("long-lag", 5)
    torch.manual_seed(0)
    zero = SequenceModel(ModelConfig(t_max=10.0, zero_head=True), task).head
    torch.manual_seed(0)
    usual = SequenceModel(ModelConfig(t_max=10.0), task).head
    assert zero.weight.abs().max() == 0 < usual.weight.abs().max()
    torch.testing.assert_close(zero.bias, usual.bias)
