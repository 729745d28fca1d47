"""ropetool: RoPE/ALiBi context extension for llama.cpp: convert, inspect, edit and check GGUF files."""

from .errors import RopetoolError
from .rope import RopeParams, alibi_slopes, make_params, rope_frequencies, rope_from_hf_config

__version__ = "0.1.0"

__all__ = ["RopetoolError", "RopeParams", "make_params", "rope_frequencies", "alibi_slopes", "rope_from_hf_config"]
