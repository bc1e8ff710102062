"""The Triton GPU backend: every LSTM variant and the RNN, forward and a hand-written BPTT.

``backend="triton"`` (and ``backend="auto"`` for CUDA float32/float16/bfloat16 tensors) runs
``backend.lstm_layer`` / ``backend.rnn_layer``. With ``TRITON_INTERPRET=1`` set before the first
call the same kernels run on CPU tensors (any float dtype) through Triton's interpreter: that is
how CPU CI tests them (tests/kernels/test_triton.py).

Design (Stage A of issue 11; ``reference/gpu.md`` for the measurements behind it):

* The input side is one whole-sequence computation before the recurrence:
  ``xa = LN_ih(x W_ih^T) + b_ih + b_hh`` (T, B, G), a single GEMM plus torch ops, so autograd
  gives dW_ih, dx and the biases as whole-sequence GEMMs and sums (``layout``).
* Per step forward: one recurrent GEMM ``h_in W_hh^T`` (torch.mm: cuBLAS on CUDA, whatever the
  shape) and ONE fused Triton kernel (``lstm_kernels.lstm_forward_step``) that does everything
  else: the layer norm of W_hh h, peepholes, the gates, c, the layer norm of c, zoneout, the
  held state of finished sequences (lengths), the recurrent-dropout mask for the next GEMM, the
  output. Each program owns whole batch rows, so the layer-norm reductions stay in the program:
  no atomics, no barrier, every variant costs the same two launches per step (a projection adds
  a GEMM and a small kernel).
* Per step backward: one Triton kernel and one GEMM ``d(hw) W_hh``; after the loop, dW_hh,
  dW_hr, the peephole and layer-norm gains' gradients are whole-sequence GEMMs and sums. Nothing
  accumulates with atomics, so the same inputs give bit-identical gradients run to run.
* Zoneout and recurrent dropout take the masks the layer draws (``kernels.masks``: the same
  hashed bits as the CPU kernel for the same seed).
* State math (c, h, gates, layer-norm statistics) is float32 for 16-bit tensors (float64 for
  float64 under the interpreter); the GEMMs run in the tensors' dtype (TF32 when torch allows).
  float64 on CUDA stays on the reference backend.
* Numerically stable activations (``activations``): no exp overflow, exact saturation.
* Both directions of a layer are two calls; a reverse direction gathers each sequence reversed
  within its length first (as the CPU kernel does).
* The LSTM op's arguments, outputs and saved tensors are declared once (``layout``), from
  ``kernels.params``; its schema, fake, saved list and unpacking follow. The ops are registered
  with torch.library, so torch.compile(fullgraph=True) and torch.export see one node per layer.
  There is no double backward: create_graph=True raises, naming backend="reference".

Chosen because it is the design that runs every variant at the same number of launches per step
with cuBLAS doing the FLOPs at every shape, and that runs unchanged under the interpreter (CPU
CI). Not done yet (needs a GPU to write and measure; see BENCHMARKS.md): the block sizes are
untuned; per-step launches bound small shapes (about 2 launches each way per step from Python,
~10 us each), which CUDA graphs over chunks of steps would remove. Stage B, persistent kernels
running every step of H, P <= 256 in one launch per direction (``persistent_ops``), is written
and tested through the interpreter but unmeasured, so it runs only with
CELLSTATE_TRITON_STAGE=B (``lstm_ops.stage_for``).
"""
