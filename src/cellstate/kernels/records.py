"""The names of the per-step records a layer function returns with ``return_states=True``.

Shared by the kernels, which fill them, and the layers, which stack them into
``RecurrentStates``: the carried states first (h, then c), then the LSTM's gates.
"""

LSTM_STATE_NAMES = ("h", "c", "i", "f", "g", "o")
RNN_STATE_NAMES = ("h",)
