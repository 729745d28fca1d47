"""gguf-py's constants module (``gguf.constants``) without the rest of gguf-py.

The header reader and the key table take their types and names from gguf-py: GGUFValueType,
GGMLQuantizationType, GGML_QUANT_SIZES, Keys, TENSOR_NAMES, MODEL_ARCH_NAMES.  They all live in
gguf/constants.py, which imports only the standard library; ``import gguf`` also imports gguf-py's
reader, writer, quantizers, tensor mapping, vocabulary (and sentencepiece) and metadata (and yaml)
modules, which cost inspect more than its whole work on a real file (docs/benchmarks.md, "Start-up").

:data:`constants` is ``gguf.constants`` itself: gguf's once gguf is imported; otherwise gguf/constants.py
executed here as that module, under that name in sys.modules, which gguf's own ``from .constants import *``
then reuses.  Either way the process has one GGUFValueType class, whichever import comes first.  The
import system sets a package's attribute for a submodule only when it loads the submodule itself, so
a one-shot finder sets ``gguf.constants`` when gguf is imported after this (code may read
``gguf.constants.X``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

NAME = "gguf.constants"


class _LinkConstants:
    """On the import of gguf (once, then it leaves sys.meta_path): its spec, with ``gguf.constants`` set on
    the package before its ``__init__`` runs.  A meta path finder (not subclassing importlib.abc's, whose
    import costs more than this whole module)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "gguf":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_linked(module: ModuleType) -> None:
            module.constants = sys.modules[NAME]
            exec_module(module)

        spec.loader.exec_module = exec_linked
        return spec


def _load() -> ModuleType:
    if NAME in sys.modules:
        return sys.modules[NAME]
    spec = importlib.util.find_spec("gguf") if "gguf" not in sys.modules else None  # finds, does not import
    path = Path(spec.submodule_search_locations[0]) / "constants.py" if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():  # gguf is (being) imported, or laid out otherwise: the plain import
        import gguf.constants

        return gguf.constants
    cspec = importlib.util.spec_from_file_location(NAME, path)
    module = importlib.util.module_from_spec(cspec)
    sys.modules[NAME] = module
    try:
        cspec.loader.exec_module(module)
    except Exception:  # a gguf-py whose constants need more than the standard library: the plain import
        del sys.modules[NAME]
        import gguf.constants

        return gguf.constants
    sys.meta_path.insert(0, _LinkConstants())
    return module


constants = _load()
