"""Connected-digit speech recognition: espeak-ng synthesised data, log-mel features, a
bidirectional LSTM (or plain RNN) trained with CTC, greedy decoding and word error rate."""
