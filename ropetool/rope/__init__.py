"""The rope math: one record per method (parameters, validation, frequencies or slopes), what ggml computes
from a resolved setting, and the inverse fits that name a method from a setting.  No GGUF, no llama.cpp.

convert, inspect, set-rope, check and the numpy reference all call these functions.
"""

from ropetool.rope import hf, methods
from ropetool.rope.hf import *  # noqa: F403  (the package's names are its modules' __all__)
from ropetool.rope.methods import *  # noqa: F403

__all__ = hf.__all__ + methods.__all__
