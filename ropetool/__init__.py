"""ropetool: RoPE/ALiBi context extension for llama.cpp: convert, inspect, edit and check GGUF files."""

from ropetool.errors import RopetoolError
from ropetool.version import __version__

__all__ = ["__version__", "RopetoolError", "RopeParams", "make_params", "rope_frequencies", "alibi_slopes", "rope_from_hf_config"]

# The rope math's names are imported on first use: importing ropetool (and so the command line, before it
# has parsed anything) does not import numpy.
_ROPE_NAMES = ("RopeParams", "make_params", "rope_frequencies", "alibi_slopes", "rope_from_hf_config")


def __getattr__(name: str):
    if name in _ROPE_NAMES:
        from ropetool import rope

        return getattr(rope, name)
    raise AttributeError(f"module 'ropetool' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
