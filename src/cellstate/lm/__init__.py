"""A character-level LSTM language model: corpus, model, training loop and sampling."""
