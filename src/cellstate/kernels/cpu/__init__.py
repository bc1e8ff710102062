"""The fused CPU backend: C++ forward and BPTT kernels (lstm.cpp), built on first use (build.py),
exposed as torch.library custom ops with the reference's backend API (ops.py)."""
