"""``torch.load(weights_only=True)`` of whole models that hold cellstate layers.

A pickled model names the classes of its modules, and ``weights_only`` loading refuses any class
not allowlisted. ``import cellstate`` allowlists its layers (they hold only parameters, numbers
and strings, rebuilt without running code), so code that allowlists ``torch.nn.LSTM`` and its
own model classes loads a model holding ``cellstate.LSTM`` unchanged. For an explicit scope::

    with torch.serialization.safe_globals([MyModel, *cellstate.safe_globals()]):
        model = torch.load(path, weights_only=True)
"""

import torch

from cellstate.layers.lstm import LSTM
from cellstate.layers.rnn import RNN


def safe_globals() -> list[type]:
    """The classes a pickled cellstate layer references."""
    return [LSTM, RNN]


torch.serialization.add_safe_globals(safe_globals())
