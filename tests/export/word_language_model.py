"""pytorch/examples' word_language_model (``model.py``'s RNNModel), with torch.nn.LSTM swapped
for cellstate.LSTM: Embedding, LSTM, Linear, log-softmax over the vocabulary. Its
``--onnx-export`` is a plain ``torch.onnx.export(model, (tokens, hidden), path)``.

No import of ``cellstate.export``: a fresh process exporting this model relies on
``import cellstate`` alone (tests/export/test_onnx.py).
"""

import torch
from torch import nn

import cellstate


class WordLanguageModel(nn.Module):
    def __init__(self, vocabulary: int = 11, embedding: int = 4, hidden: int = 6, layers: int = 2):
        super().__init__()
        self.encoder = nn.Embedding(vocabulary, embedding)
        self.rnn = cellstate.LSTM(embedding, hidden, layers, dropout=0.2)
        self.decoder = nn.Linear(hidden, vocabulary)
        self.drop = nn.Dropout(0.2)
        self.layers, self.hidden = layers, hidden

    def forward(self, tokens, hidden):
        """tokens (T, B) int64, hidden (h, c) each (layers, B, hidden) -> log-probabilities
        (T * B, vocabulary), (h_n, c_n)."""
        output, hidden = self.rnn(self.drop(self.encoder(tokens)), hidden)
        decoded = self.decoder(self.drop(output)).flatten(0, 1)
        return torch.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = self.decoder.weight.new_zeros(self.layers, batch, self.hidden)
        return zeros, zeros.clone()
