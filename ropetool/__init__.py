"""ropetool: RoPE/ALiBi context extension for llama.cpp: convert, inspect, edit and check GGUF files."""

from importlib.metadata import PackageNotFoundError, version

from .errors import RopetoolError
from .rope import RopeParams, alibi_slopes, make_params, rope_frequencies, rope_from_hf_config

try:
    __version__ = version("ropetool")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

__all__ = ["RopetoolError", "RopeParams", "make_params", "rope_frequencies", "alibi_slopes", "rope_from_hf_config"]
