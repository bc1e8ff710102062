"""Gradient flow through time: how much of a last-step loss's gradient reaches the state k steps
back (the seed's vanishing gradient), measured on a real model and a real batch.

BPTT multiplies dL/dh_t by the step Jacobian dh_t/dh_{t-1} once per step back. For the plain RNN
that is diag(act'(a_t)) W_hh: with W_hh's eigenvalues inside the unit circle the product shrinks
geometrically (vanishing); scaled outside it, it can grow (exploding). The LSTM's cell state adds
the path c_{t-1} -> c_t scaled only by the forget gate f_t, so dL/dc_t survives while f_t stays
near 1: the conveyor belt.

Shapes: T time, B batch, K lags (the shortest sequence's length), L layers, H hidden, O output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cellstate.layers.lstm import LSTM
from cellstate.layers.rnn import RNN
from cellstate.tasks.base import Batch, FinalStepTask, Task
from cellstate.training.model import SequenceModel


@dataclass(frozen=True)
class GradientFlow:
    """What reaches each lag k = (last step) - t of a loss at each sequence's last step.

    The state is what one step hands the next: h_t (every layer's) and, for the LSTM, c_t.
    dL/dh_t and dL/dc_t are the gradients with respect to that carried state; norms are taken
    over the batch, the layers and the units, at the same lag in every sequence.

    h: (K,) ||dL/dh_t|| / ||dL/dh_last||; 1 at lag 0.
    c: (K,) ||dL/dc_t|| / ||dL/dh_last||, on the same scale as ``h``; 0 at lag 0, since the last
        cell state is carried nowhere (the loss reads it through h). None for the RNN.
    jacobian: (L, K) RNN only: ||dh_t/dh_{t-1}||_2, the spectral norm of each layer's own
        recurrence diag(act'(a_t)) W_hh, at lag k, averaged over the batch.
    sigma_max: (L,) RNN only: the largest singular value of each layer's W_hh.
    radius: (L,) RNN only: the spectral radius (largest |eigenvalue|) of each layer's W_hh,
        which sets the geometric rate of the product over many steps.
    """

    h: Tensor
    c: Tensor | None = None
    jacobian: Tensor | None = None
    sigma_max: Tensor | None = None
    radius: Tensor | None = None

    @property
    def lags(self) -> list[int]:
        return list(range(len(self.h)))


def _check(model: SequenceModel, task: Task) -> None:
    recurrent = model.recurrent
    if not isinstance(recurrent, LSTM | RNN):
        raise TypeError(f"gradient flow needs a cellstate.LSTM or cellstate.RNN, got {recurrent}")
    if recurrent.bidirectional or recurrent.batch_first:
        raise NotImplementedError(
            "gradient flow supports unidirectional, time-major models (the lab's); got "
            f"bidirectional={recurrent.bidirectional}, batch_first={recurrent.batch_first}"
        )
    if not isinstance(task, FinalStepTask):
        raise NotImplementedError(
            "gradient flow needs a task scored at the last step (adding, multiplication, "
            f"temporal-order, two-sequence, ...); {task.name} is scored at every step"
        )


def step_gradients(
    model: SequenceModel, task: FinalStepTask, batch: Batch
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """The true dL/dh_t (and dL/dc_t) at every step, for L = task.loss at the last step.

    The recurrent layer is called once per step with the carried state and the head reads the
    h it returns, so each step's (h_t, c_t) is the one tensor every later computation uses, and
    autograd.grad with respect to it is the gradient with respect to the state step t hands on.
    Parameter gradients are left untouched. Returns h_grad (T, L, B, H), c_grad (T, L, B, H) or
    None, the states h (T, L, B, H) (detached) and the outputs (T, B, O) (detached).
    """
    _check(model, task)
    recurrent = model.recurrent
    is_lstm = isinstance(recurrent, LSTM)
    inputs = batch.inputs.to(model.head.weight)  # (T, B, D)
    # A zero initial state that requires grad: every later state then carries a graph, even for
    # a model whose parameters are frozen.
    h0 = inputs.new_zeros(recurrent.num_layers, inputs.shape[1], recurrent.hidden_size)
    h0.requires_grad_()
    state = (h0, torch.zeros_like(h0).requires_grad_()) if is_lstm else h0
    hs, cs = [], []
    for t in range(inputs.shape[0]):
        _, state = recurrent(inputs[t : t + 1], state)  # h, c each (L, B, H)
        hs.append(state[0] if is_lstm else state)
        if is_lstm:
            cs.append(state[1])
    # The top layer's h_t is the layer's output at step t.
    outputs = model.readout(torch.stack([h[-1] for h in hs]), inputs)  # (T, B, O)
    loss = task.loss(outputs, batch.to(inputs.device))
    # The last step's c reaches the loss only through h: it gets a zero gradient.
    grads = torch.autograd.grad(loss, hs + cs, allow_unused=True, materialize_grads=True)
    T = len(hs)
    h_grad = torch.stack(grads[:T])  # (T, L, B, H)
    c_grad = torch.stack(grads[T:]) if is_lstm else None  # (T, L, B, H)
    return h_grad, c_grad, torch.stack(hs).detach(), outputs.detach()


def _by_lag(per_step: Tensor, lengths: Tensor) -> Tensor:
    """per_step (T, B, ...) -> (K, B, ...): row k is each sequence's step lengths[b] - 1 - k."""
    K = int(lengths.min())
    steps = (lengths - 1)[None, :] - torch.arange(K)[:, None]  # (K, B)
    index = steps.view(K, -1, *([1] * (per_step.dim() - 2))).expand(K, *per_step.shape[1:])
    return per_step.gather(0, index)


def _lag_norms(grad: Tensor, lengths: Tensor) -> Tensor:
    """grad (T, L, B, H) -> (K,): its norm over layers, batch and units at each lag."""
    squared = grad.pow(2).sum(dim=(1, 3))  # (T, B)
    return _by_lag(squared, lengths).sum(1).sqrt()


def rnn_jacobian_norms(rnn: RNN, h: Tensor, lengths: Tensor) -> Tensor:
    """(L, K): batch mean of ||diag(act'(a_t)) W_hh||_2 at each lag, from states h (T, L, B, H)."""
    norms = []
    for layer in range(rnn.num_layers):
        h_l = _by_lag(h[:, layer], lengths)  # (K, B, H)
        # act'(a_t) from h_t = act(a_t): tanh' = 1 - h^2, relu' = [h > 0].
        slope = 1 - h_l**2 if rnn.nonlinearity == "tanh" else (h_l > 0).to(h_l.dtype)
        w_hh = getattr(rnn, f"weight_hh_l{layer}").detach().to(h_l)  # (H, H)
        jacobian = slope.unsqueeze(-1) * w_hh  # (K, B, H, H): row j scaled by act'_j
        norms.append(torch.linalg.matrix_norm(jacobian, ord=2).mean(1))  # (K,)
    return torch.stack(norms)


def gradient_flow(model: SequenceModel, task: FinalStepTask, batch: Batch) -> GradientFlow:
    """Measure how the gradient of a last-step loss flows back through a model's state.

    The model is evaluated in evaluation mode (no dropout noise), restored afterwards.
    Example::

        >>> config = default_config("rnn", "adding", 100)
        >>> model, task = build_model(config), config.task.build()
        >>> flow = gradient_flow(model, task, task.batch(32, torch.Generator().manual_seed(0)))
        >>> flow.h[50]   # fraction of the last step's gradient norm left 50 steps back
    """
    training = model.training
    model.eval()
    try:
        h_grad, c_grad, h, _ = step_gradients(model, task, batch)
    finally:
        model.train(training)
    lengths = batch.lengths.cpu()
    h_norm = _lag_norms(h_grad.cpu(), lengths)
    # Both states are measured against what the loss sends into h at the last step, so that
    # the two curves share one scale.
    if isinstance(model.recurrent, LSTM):
        return GradientFlow(h=h_norm / h_norm[0], c=_lag_norms(c_grad.cpu(), lengths) / h_norm[0])
    rnn = model.recurrent
    w_hh = [getattr(rnn, f"weight_hh_l{k}").detach().cpu() for k in range(rnn.num_layers)]
    return GradientFlow(
        h=h_norm / h_norm[0],
        jacobian=rnn_jacobian_norms(rnn, h.cpu(), lengths),
        sigma_max=torch.stack([torch.linalg.matrix_norm(w, ord=2) for w in w_hh]),
        radius=torch.stack([torch.linalg.eigvals(w).abs().max() for w in w_hh]),
    )
