"""cellstate: a PyTorch-native LSTM library and long-memory lab.

``cellstate.LSTM`` and ``cellstate.RNN`` are drop-in replacements for ``torch.nn.LSTM`` and
``torch.nn.RNN`` with the cell variants PyTorch lacks (peepholes, layer norm, the 1997 cell,
forget-bias and chrono init, zoneout, recurrent dropout, every step's states).
"""

from cellstate.export import onnx_registration
from cellstate.layers.lstm import LSTM
from cellstate.layers.rnn import RNN
from cellstate.layers.states import RecurrentStates
from cellstate.serialization import safe_globals

onnx_registration.install()  # a plain torch.onnx.export finds the layers' translations

__version__ = "0.1.0"

__all__ = ["LSTM", "RNN", "RecurrentStates", "safe_globals", "__version__"]
