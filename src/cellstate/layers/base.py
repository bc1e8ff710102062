"""What cellstate.LSTM and cellstate.RNN share with torch.nn.RNNBase.

Constructor checks, parameter names, registration order and initialisation follow torch.nn.RNNBase
exactly (so the same seed gives the same weights, and messages match). Input handling turns every
input form (batched, batch_first, unbatched, PackedSequence) into one time-major padded tensor
plus optional lengths, and turns results back.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from cellstate import validation
from cellstate.init import uniform_bound
from cellstate.kernels.dispatch import check_backend


@dataclass(frozen=True)
class Layout:
    """How the caller's input was laid out, to lay results out the same way."""

    packed: PackedSequence | None
    batch_first: bool
    batched: bool


class RecurrentBase(nn.Module):
    """Arguments, parameters and input handling common to the LSTM and the RNN."""

    _name = "RNN"  # as it appears in torch's messages

    def __init__(
        self,
        gate_size: int,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if (
            not isinstance(dropout, numbers.Number)
            or isinstance(dropout, bool)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an "
                "element being zeroed"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                "dropout expects num_layers greater than 1, but got "
                f"dropout={dropout} and num_layers={num_layers}",
                stacklevel=3,
            )
        if not isinstance(bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError(
                f"batch_first should be of type bool, got: {type(batch_first).__name__}"
            )
        if not isinstance(input_size, int) or isinstance(input_size, bool):
            raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if not isinstance(hidden_size, int) or isinstance(hidden_size, bool):
            raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError(
                "proj_size should be a positive integer or zero to disable projections"
            )
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")

        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.backend = check_backend(backend)

        factory = {"device": device, "dtype": dtype}
        out_size = proj_size or hidden_size
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            for direction in range(self.num_directions):
                layer_input = input_size if layer == 0 else out_size * self.num_directions
                shapes = {
                    "weight_ih": (gate_size, layer_input),
                    "weight_hh": (gate_size, out_size),
                }
                if bias:
                    shapes.update(bias_ih=(gate_size,), bias_hh=(gate_size,))
                if proj_size:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                names = []
                for kind, shape in shapes.items():
                    name = f"{kind}_l{layer}{'_reverse' if direction else ''}"
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(name)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    @property
    def _flat_weights(self) -> list[nn.Parameter]:
        return [getattr(self, name) for name in self._flat_weights_names]

    def flatten_parameters(self) -> None:
        """A no-op, kept so that code written for torch.nn.LSTM runs unchanged."""

    @property
    def qconfig(self):
        """Eager-mode quantization's per-module setting (torch.ao.quantization sets it)."""
        if "_qconfig" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute 'qconfig'")
        return self.__dict__["_qconfig"]

    @qconfig.setter
    def qconfig(self, value) -> None:
        # quantize_dynamic and prepare set it on every module; only torch's own layers are
        # swapped for quantized ones, so say that this one stays in float.
        alternative = (
            " (torch.nn.LSTM has one: see LSTM.to_torch())" if self._name == "LSTM" else ""
        )
        warnings.warn(
            f"cellstate.{self._name} is left in float by torch.ao.quantization (quantize_dynamic "
            f"/ prepare): it has no int8 version{alternative}. The rest of the model is "
            "quantized as asked",
            UserWarning,
            stacklevel=2,
        )
        self.__dict__["_qconfig"] = value

    @qconfig.deleter
    def qconfig(self) -> None:
        self.__dict__.pop("_qconfig", None)

    def __prepare_scriptable__(self):
        """torch.jit.script calls this before compiling (also on submodules): say what works."""
        raise NotImplementedError(
            f"torch.jit.script cannot compile cellstate.{self._name} (its forward chooses a "
            "backend in Python); use torch.jit.trace (records the kernel's ops: any length and "
            "batch size), torch.export.export or torch.compile"
        )

    def reset_parameters(self) -> None:
        """torch.nn.LSTM's initialisation: every standard parameter ~ U(-1/sqrt(H), 1/sqrt(H)).

        Drawn in torch's order, so the same seed gives torch.nn.LSTM's weights.
        """
        stdv = uniform_bound(self.hidden_size)
        with torch.no_grad():
            for weight in self._flat_weights:
                weight.uniform_(-stdv, stdv)

    def _layer_suffix(self, layer: int, direction: int) -> str:
        return f"_l{layer}{'_reverse' if direction else ''}"

    # ---- input handling -------------------------------------------------------------------

    def _prepare_input(self, input) -> tuple[Tensor, Tensor | None, Layout]:
        """Any input form -> (x (T, B, D) time-major, lengths (B,) or None, layout)."""
        if isinstance(input, PackedSequence):
            self._check_input(input.data, expected_dim=2)
            x, lengths = pad_packed_sequence(input)  # (T, B, D), caller's batch order
            return self._autocast(_live(x)), lengths, Layout(input, False, True)
        if not isinstance(input, Tensor):
            raise TypeError(
                f"{self._name}: input must be a Tensor or a PackedSequence, "
                f"got {type(input).__name__}"
            )
        if input.dim() not in (2, 3):
            tail = " tensor" if self._name == "RNN" else ""
            raise ValueError(
                f"{self._name}: Expected input to be 2D or 3D, got {input.dim()}D{tail} instead"
            )
        batched = input.dim() == 3
        time_dim = 1 if batched and self.batch_first else 0
        validation.time_steps(f"{self._name}: input", input.shape, time_dim)
        x = input if batched else input.unsqueeze(0 if self.batch_first else 1)
        self._check_input(x, expected_dim=3)
        if self.batch_first:
            x = x.transpose(0, 1)  # (T, B, D)
        return self._autocast(_live(x)), None, Layout(None, self.batch_first, batched)

    @staticmethod
    def _autocast(t: Tensor | None) -> Tensor | None:
        """t as torch.nn.LSTM runs it under autocast for t's device: floating tensors other than
        float64 in the autocast dtype (inputs, states and weights alike); else t unchanged."""
        if t is None or not _autocast_enabled(t.device.type):
            return t
        if not t.is_floating_point() or t.dtype == torch.float64:
            return t
        return t.to(torch.get_autocast_dtype(t.device.type))

    def _check_input(self, input: Tensor, expected_dim: int) -> None:
        weight = self.weight_ih_l0
        if input.dtype != weight.dtype and not _autocast_enabled(input.device.type):
            raise ValueError(
                f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight.dtype}). "
                f"Convert input: input.to({weight.dtype}), or convert model: "
                f"model.to({input.dtype})"
            )
        if input.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {input.dim()}")
        if input.size(-1) != self.input_size:
            raise RuntimeError(
                "input.size(-1) must be equal to input_size. "
                f"Expected {self.input_size}, got {input.size(-1)}"
            )

    def _prepare_state(
        self, state: Tensor | None, x: Tensor, layout: Layout, size: int, message: str
    ) -> Tensor:
        """A user's initial state -> (L*dirs, B, size), checked; zeros when None."""
        B = x.size(1)
        expected = (self.num_layers * self.num_directions, B, size)
        if state is None:
            return x.new_zeros(expected)
        state = self._autocast(_live(state))
        if not layout.batched:
            state = state.unsqueeze(1)
        if tuple(state.shape) != expected:
            raise RuntimeError(message.format(expected, list(state.shape)))
        if state.dtype != x.dtype or state.device != x.device:
            raise ValueError(
                f"{self._name}: initial state must have the input's dtype and device "
                f"({x.dtype}, {x.device}); got ({state.dtype}, {state.device})"
            )
        return state

    def _check_state_dims(self, states: tuple[Tensor, ...], layout: Layout) -> None:
        """torch's messages for initial states of the wrong number of dimensions."""
        dims = [s.dim() for s in states]
        want = 3 if layout.batched else 2
        if all(d == want for d in dims):
            return
        form = "batched 3-D" if layout.batched else "unbatched 2-D"
        if len(states) == 1:
            raise RuntimeError(
                f"For {form} input, hx should also be {want}-D but got {dims[0]}-D tensor"
            )
        raise RuntimeError(
            f"For {form} input, hx and cx should also be {want}-D but got "
            f"({dims[0]}-D, {dims[1]}-D) tensors"
        )

    def _layer_dropout(self, x: Tensor, layer: int) -> Tensor:
        """Dropout between layers (not after the last), as torch.nn.LSTM applies it."""
        if self.dropout > 0 and self.training and layer < self.num_layers - 1:
            return torch.nn.functional.dropout(x, self.dropout, training=True)
        return x

    @staticmethod
    def _finish_output(output: Tensor, lengths: Tensor | None, layout: Layout):
        """output (T, B, X) -> the caller's layout (packed, batch_first or unbatched)."""
        if layout.packed is not None:
            packed = layout.packed
            order = packed.sorted_indices
            sorted_output = output if order is None else output.index_select(1, order)
            sorted_lengths = lengths if order is None else lengths[order.cpu()]
            data = pack_padded_sequence(sorted_output, sorted_lengths, enforce_sorted=True).data
            return PackedSequence(
                data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
            )
        if layout.batch_first:
            output = output.transpose(0, 1)
        return output if layout.batched else output.squeeze(0 if layout.batch_first else 1)

    @staticmethod
    def _finish_state(state: Tensor, layout: Layout) -> Tensor:
        return state if layout.batched else state.squeeze(1)

    @staticmethod
    def _finish_record(record: Tensor, layout: Layout) -> Tensor:
        """(L, dirs, T, B, X) -> the caller's layout (see RecurrentStates)."""
        if not layout.batched:
            return record.squeeze(3)
        return record.transpose(2, 3) if layout.batch_first else record

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s


def _live(t: Tensor) -> Tensor:
    """t, or the tensor it wraps where t escaped a finished torch.func transform (a dead wrapper,
    which the C++ kernel cannot read), as torch.autograd.Function.apply passes such tensors on."""
    return torch._C._functorch.unwrap_if_dead(t)


def _autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for this device type (False for types autocast does not know, such
    as "meta", where torch.is_autocast_enabled raises)."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
