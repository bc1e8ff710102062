"""The speed benchmarks, as a library: ``cpu`` (the C++ kernel against torch.nn.LSTM) and ``gpu``
(the Triton backend on a CUDA GPU). ``cellstate bench`` and ``benchmarks/*.py`` run them."""
