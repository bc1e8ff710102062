"""Makes cellstate's ONNX translations (``cellstate.export.onnx``) visible to a plain
``torch.onnx.export(model, args, dynamo=True)``, without importing onnxscript at
``import cellstate`` (that costs about a second and a half).

The exporter builds its table of translations from onnxscript's torchlib registry
(``REGISTRY_MODULE``) when an export starts, before it captures the model, importing that
module then. ``install`` (run by ``import cellstate``) registers cellstate's translations in it
right after that import (a post-import hook on ``sys.meta_path``), or at once where it has been
imported already. Nothing happens in a process that never exports to ONNX.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

REGISTRY_MODULE = "onnxscript.function_libs.torch_lib.registration"


def install() -> None:
    """Register the translations once ``REGISTRY_MODULE`` is imported (now, if it is)."""
    if REGISTRY_MODULE in sys.modules:
        _register()
    elif not any(isinstance(finder, _AfterRegistryImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterRegistryImport())


def _register() -> None:
    from cellstate.export import onnx

    onnx.register()


class _AfterRegistryImport(importlib.abc.MetaPathFinder):
    """Finds ``REGISTRY_MODULE`` through the other finders and registers cellstate's
    translations after the module has run; then leaves ``sys.meta_path``."""

    def find_spec(self, fullname, path, target=None):
        if fullname != REGISTRY_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def run_then_register(module) -> None:
            run_module(module)
            _register()

        spec.loader.exec_module = run_then_register  # this spec's own loader instance
        return spec
