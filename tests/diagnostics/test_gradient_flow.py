"""Gradient flow: the measured dL/dh_t and dL/dc_t against finite differences of an independent
implementation, the lag alignment, the RNN's step Jacobian, and the seed's claims on real models."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from cellstate.diagnostics.gradient_flow import gradient_flow, step_gradients
from cellstate.diagnostics.models import build_model, default_config
from cellstate.training.config import ModelConfig, RunConfig, TaskConfig
from tests.differential import EXACT


def tiny(kind: str, task: str = "adding", length: int = 11, hidden: int = 3, seed: int = 0):
    config = RunConfig(
        TaskConfig(task, length), ModelConfig(kind=kind, hidden=hidden, dtype="float64")
    )
    model, task = build_model(config, seed), config.task.build()
    batch = task.batch(3, torch.Generator().manual_seed(seed))
    return model, task, batch


def naive_loss(model, task, batch, start: int, h_start, c_start=None):
    """The task's loss when steps start.. are run from the carried state (h_start, c_start)
    (B, H), written out from the parameters with no cellstate layer; steps before start are
    run the same way from zeros to produce the earlier outputs."""
    p = dict(model.recurrent.named_parameters())
    w_ih, w_hh, b = p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"] + p["bias_hh_l0"]
    x = batch.inputs.double()  # (T, B, D)
    B, H = x.shape[1], model.recurrent.hidden_size
    h, c = x.new_zeros(B, H), x.new_zeros(B, H)
    hidden = []
    for t in range(x.shape[0]):
        a = x[t] @ w_ih.T + h @ w_hh.T + b
        if c_start is None:  # the RNN
            h = torch.tanh(a)
        else:
            i, f, g, o = a.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        if t == start:
            h = h_start
            if c_start is not None:
                c = c_start
        hidden.append(h)
    out = model.head(torch.stack(hidden))
    return task.loss(torch.sigmoid(out) if model.squash else out, batch)


def finite_difference(model, task, batch, t, which: str, eps=1e-6):
    """(B, H) central differences of the loss w.r.t. the state carried from step t."""
    with torch.no_grad():
        # The state carried from step t, perturbed below.
        _, state = model.recurrent(batch.inputs[: t + 1].double())
    h_t, c_t = (state[0][0], state[1][0]) if isinstance(state, tuple) else (state[0], None)
    out = torch.zeros_like(h_t)
    for b in range(h_t.shape[0]):
        for j in range(h_t.shape[1]):
            values = []
            for sign in (1, -1):
                dh, dc = h_t.clone(), None if c_t is None else c_t.clone()
                (dh if which == "h" else dc)[b, j] += sign * eps
                with torch.no_grad():
                    values.append(float(naive_loss(model, task, batch, t, dh, dc)))
            out[b, j] = (values[0] - values[1]) / (2 * eps)
    return out


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_state_gradients_match_finite_differences(kind):
    model, task, batch = tiny(kind)
    h_grad, c_grad, _, _ = step_gradients(model, task, batch)
    T = batch.inputs.shape[0]
    # Against a central difference (eps 1e-6, float64), not a second implementation: its
    # truncation and cancellation errors set the tolerance.
    for t in (0, T // 2, T - 2, T - 1):
        torch.testing.assert_close(
            h_grad[t, 0], finite_difference(model, task, batch, t, "h"), rtol=1e-5, atol=1e-9
        )
        if kind == "lstm":
            torch.testing.assert_close(
                c_grad[t, 0], finite_difference(model, task, batch, t, "c"), rtol=1e-5, atol=1e-9
            )
    # Variable lengths: past a sequence's last step its state no longer reaches the loss.
    for b, length in enumerate(batch.lengths.tolist()):
        assert torch.all(h_grad[length:, 0, b] == 0)
        assert h_grad[length - 1, 0, b].abs().sum() > 0


def test_step_by_step_outputs_are_the_models():
    for kind in ("rnn", "lstm"):
        model, task, batch = tiny(kind)
        *_, outputs = step_gradients(model, task, batch)
        torch.testing.assert_close(outputs, model(batch.inputs.double()).detach())


def test_ratios_align_each_sequence_by_lag():
    model, task, batch = tiny("lstm")
    assert len(set(batch.lengths.tolist())) > 1, "the test needs sequences of different lengths"
    h_grad, c_grad, _, _ = step_gradients(model, task, batch)
    flow = gradient_flow(model, task, batch)
    K = int(batch.lengths.min())
    assert flow.lags == list(range(K))

    def norm_at(grad, k):
        ends = batch.lengths.tolist()
        return math.sqrt(sum(float(grad[n - 1 - k, 0, b].pow(2).sum()) for b, n in enumerate(ends)))

    reference = norm_at(h_grad, 0)
    for k in range(K):
        assert flow.h[k].item() == pytest.approx(norm_at(h_grad, k) / reference, rel=1e-9)
        assert flow.c[k].item() == pytest.approx(norm_at(c_grad, k) / reference, rel=1e-9)
    assert flow.h[0] == 1 and flow.c[0] == 0  # the last cell state is carried nowhere


def test_rnn_jacobian_norms_match_autograd():
    model, task, batch = tiny("rnn")
    flow = gradient_flow(model, task, batch)
    rnn = model.recurrent
    p = dict(rnn.named_parameters())
    x = batch.inputs.double()
    _, _, states = rnn(x, return_states=True)
    h = states.h[0, 0]  # (T, B, H)
    w_hh = p["weight_hh_l0"].detach()
    assert flow.sigma_max[0].item() == pytest.approx(torch.linalg.svdvals(w_hh)[0].item())
    for k in (0, 3, int(batch.lengths.min()) - 1):
        norms = []
        for b, n in enumerate(batch.lengths.tolist()):
            t = n - 1 - k
            h_prev = h[t - 1, b] if t > 0 else torch.zeros_like(h[0, b])

            def step(h_in, t=t, b=b):
                a = p["weight_ih_l0"] @ x[t, b] + p["bias_ih_l0"] + p["bias_hh_l0"] + w_hh @ h_in
                return torch.tanh(a)

            norms.append(torch.linalg.matrix_norm(jacobian(step, h_prev), ord=2))
        assert flow.jacobian[0, k].item() == pytest.approx(torch.stack(norms).mean().item())


def test_rnn_gradient_vanishes_while_lstm_cell_keeps_it():
    """The seed's claim on the lab's default models at initialisation."""
    flows = {}
    for kind in ("rnn", "lstm"):
        config = default_config(kind, "adding", 40)
        task = config.task.build()
        batch = task.batch(16, torch.Generator().manual_seed(0))
        flows[kind] = gradient_flow(build_model(config), task, batch)
    rnn, lstm = flows["rnn"], flows["lstm"]
    K = len(rnn.h)
    assert all(rnn.h[k] < rnn.h[k - 1] for k in range(1, K)), "RNN gradient should shrink"
    # The RNN loses the gradient geometrically; the LSTM's cell state keeps ever more than it
    # as the lag grows, and decays per step at a rate much closer to 1.
    advantage = lstm.c[1:] / rnn.h[1:]
    assert torch.all(advantage[1:] > advantage[:-1])
    assert advantage[-1] > 1000
    rnn_rate = (rnn.h[K - 1] / rnn.h[1]) ** (1 / (K - 2))
    lstm_rate = (lstm.c[K - 1] / lstm.c[1]) ** (1 / (K - 2))
    assert rnn_rate < 0.9 < lstm_rate


def test_model_is_left_as_it_was():
    model, task, batch = tiny("lstm")
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    gradient_flow(model, task, batch)
    assert model.training
    for name, param in model.named_parameters():
        assert param.grad is None, name
        assert torch.equal(param, before[name]), name


def test_frozen_parameters_do_not_change_the_measurement():
    model, task, batch = tiny("rnn")
    before = gradient_flow(model, task, batch)
    model.requires_grad_(False)
    after = gradient_flow(model, task, batch)
    torch.testing.assert_close(after.h, before.h, **EXACT)


def test_per_step_tasks_are_refused():
    config = RunConfig(TaskConfig("copy", 10), ModelConfig(kind="lstm", hidden=4))
    task = config.task.build()
    with pytest.raises(NotImplementedError, match="scored at every step"):
        gradient_flow(build_model(config), task, task.batch(2, torch.Generator()))
