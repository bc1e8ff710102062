"""The one ordered description of what the kernels' custom ops read and write.

A layer's tensors are the fields of ``LSTMLayerParams`` / ``RNNLayerParams`` in declaration
order, then the fields of ``StepNoise``, then ``lengths``; ``tensor_args`` reads them from the
dataclasses, so a new variant is a new field there (and its math in the kernels). Each backend
describes its ops with an ``OpDescription`` built from these lists: the forward and backward
schemas, the saved-tensor list and the argument order of the backward follow from it, and the
fake implementations allocate from its ``Out`` shapes. The CPU ops (``cpu/ops.py``) take the
whole layer; the Triton ops (``triton/layout.py``) take xa = the input side already applied,
so they leave w_ih, the biases and ln_ih out of the same list.

The C++ kernels declare the same order once (``cpu/entry_points.h``) and export it;
tests/kernels/test_opcheck.py asserts that it equals ``OpDescription.forward_args`` and
``backward_args`` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from functools import cached_property

from cellstate.kernels.params import StepNoise


@dataclass(frozen=True)
class Arg:
    """An argument of a forward op."""

    name: str
    kind: str  # schema type: "Tensor", "Tensor?" or "bool"
    grad: bool = False  # differentiable: backward returns its gradient
    saved: bool = True  # backward reads it


@dataclass(frozen=True)
class Out:
    """A result of a forward op: its shape from the backend's dimensions (None: absent, an empty
    tensor), its role for autograd and backward."""

    name: str
    shape: Callable[..., tuple[int, ...] | None]
    grad: bool = False  # differentiable result
    saved: bool = True  # backward reads it
    low: bool = False  # in the weights' dtype (w_hh's), not the compute dtype


@dataclass(frozen=True)
class SequenceDims:
    """The sizes a plain RNN op's result shapes are written in: T time, B batch, H hidden."""

    T: int
    B: int
    H: int


def tensor_args(params: type, leave_out: tuple[str, ...] = ()) -> tuple[Arg, ...]:
    """The tensor fields of a parameter dataclass in declaration order, differentiable: those
    without a default are required ("Tensor"), those defaulting to None optional ("Tensor?")."""
    return tuple(
        Arg(f.name, "Tensor" if f.default is MISSING else "Tensor?", grad=True)
        for f in fields(params)
        if f.default is MISSING or f.default is None
        if f.name not in leave_out
    )


NOISE_ARGS = tuple(Arg(f.name, "Tensor?") for f in fields(StepNoise))  # zoneout, recurrent mask
LENGTHS_ARG = Arg("lengths", "Tensor?")  # (B,) int64


@dataclass(frozen=True)
class OpDescription:
    """A forward op and its backward op.

    forward: ``(*inputs) -> (*outputs)``, the tensor inputs before the flags.
    backward: ``(d_<each differentiable output>, <each saved tensor input>, <each saved
    output>, <each saved flag>, *backward_flags) -> (d_<each differentiable input>)``.
    """

    inputs: tuple[Arg, ...]
    outputs: tuple[Out, ...]
    backward_flags: tuple[str, ...] = ()  # bool arguments of the backward alone

    def __post_init__(self) -> None:
        kinds = [a.kind == "bool" for a in self.inputs]
        if kinds != sorted(kinds):
            raise ValueError("an op's tensor arguments come before its flags")

    @cached_property
    def input_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.inputs)

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @cached_property
    def grad_inputs(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.inputs if a.grad)

    @cached_property
    def grad_outputs(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs if o.grad)

    @cached_property
    def saved(self) -> tuple[str, ...]:
        """What setup_context saves, in the backward's order: tensor inputs, then outputs."""
        tensors = tuple(a.name for a in self.inputs if a.saved and a.kind != "bool")
        return tensors + tuple(o.name for o in self.outputs if o.saved)

    @cached_property
    def saved_flags(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.inputs if a.saved and a.kind == "bool")

    def shapes(self, dims) -> list[tuple[int, ...]]:
        """Each output's shape from the backend's dimensions; (0,) for an absent one."""
        return [shape if (shape := o.shape(dims)) is not None else (0,) for o in self.outputs]

    def forward_args(self) -> list[str]:
        return [f"{a.kind} {a.name}" for a in self.inputs]

    def backward_args(self) -> list[str]:
        kinds = {a.name: a.kind for a in self.inputs}
        args = [f"Tensor? d_{n}" for n in self.grad_outputs]
        args += [f"{kinds.get(n, 'Tensor')} {n}" for n in self.saved]
        return args + [f"bool {n}" for n in self.saved_flags + self.backward_flags]

    @cached_property
    def backward_names(self) -> tuple[str, ...]:
        return tuple(arg.split()[1] for arg in self.backward_args())

    def forward_schema(self) -> str:
        results = ", ".join("Tensor" for _ in self.outputs)
        return f"({', '.join(self.forward_args())}) -> ({results})"

    @cached_property
    def _positions(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Where, in (*inputs, *outputs), the results without gradient, ``saved`` and
        ``saved_flags`` are (an output shadows an input of the same name)."""
        position = {n: k for k, n in enumerate(self.input_names + self.output_names)}
        no_grad = tuple(position[o.name] for o in self.outputs if not o.grad)
        return (
            no_grad,
            tuple(position[n] for n in self.saved),
            tuple(position[n] for n in self.saved_flags),
        )

    def save_for_backward(self, ctx, inputs, outputs) -> dict:
        """An autograd setup_context's work: marks the results without gradient, saves
        ``saved`` (and the flags as ``ctx.flags``); returns the named inputs. (Positions worked
        out once and list comprehensions: this runs on every training call.)"""
        a = dict(zip(self.input_names, inputs, strict=True))
        every = (*inputs, *outputs)
        if len(every) != len(self.input_names) + len(self.output_names):
            raise ValueError(f"{len(outputs)} results; the op has {len(self.output_names)}")
        no_grad, saved, flags = self._positions
        ctx.mark_non_differentiable(*[every[k] for k in no_grad])
        ctx.set_materialize_grads(False)  # unused results get None, not zeros
        ctx.save_for_backward(*[every[k] for k in saved])
        ctx.flags = [every[k] for k in flags]
        return a

    def backward_schema(self) -> str:
        results = ", ".join("Tensor" for _ in self.grad_inputs)
        return f"({', '.join(self.backward_args())}) -> ({results})"
