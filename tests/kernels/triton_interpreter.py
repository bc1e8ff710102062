"""Imported by the test modules that run the Triton kernels on CPU, before any kernel runs:
sets TRITON_INTERPRET=1 (read when a kernel module is first loaded; cellstate loads them
lazily) and skips the importing module where triton is missing or the variable says otherwise."""

import os

import pytest

os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="triton is not installed: the Triton backend is untested")
if os.environ["TRITON_INTERPRET"] != "1":
    pytest.skip("TRITON_INTERPRET is set to something else than 1", allow_module_level=True)
