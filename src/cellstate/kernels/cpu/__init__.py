"""The fused CPU backend: C++ forward and BPTT kernels (lstm.cpp and the headers it includes,
one translation unit; entry_points.h declares the entry points' arguments), built on first use
(build.py) into a cache that prunes itself (cache.py), exposed as torch.library custom ops with
the reference's backend API (ops.py)."""
