"""ropetool: RoPE/ALiBi context extension for llama.cpp: convert, inspect, edit and check GGUF files."""

from ropetool.errors import RopetoolError
from ropetool.rope import RopeParams, alibi_slopes, make_params, rope_frequencies, rope_from_hf_config
from ropetool.version import __version__

__all__ = ["__version__", "RopetoolError", "RopeParams", "make_params", "rope_frequencies", "alibi_slopes", "rope_from_hf_config"]
