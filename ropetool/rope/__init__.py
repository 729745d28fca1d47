"""The rope math: one record per method (parameters, validation, frequencies or slopes), what ggml computes
from a resolved setting, and the inverse fits that name a method from a setting.  No GGUF, no llama.cpp.

convert, inspect, set-rope, check and the numpy reference all call these functions.
"""

from ropetool.rope.hf import HFRope, rope_from_hf_config
from ropetool.rope.methods import (
    ALIBI_METHODS,
    METHOD_TABLE,
    METHODS,
    OPTIONS,
    ROPE_METHODS,
    RopeParams,
    alibi_base_slopes,
    alibi_slopes,
    baked_at,
    canonical_method,
    default_inv_freq,
    dynamic_ntk_base,
    flag,
    make_params,
    missing_required,
    ntk_base,
    refuse_unused,
    rope_frequencies,
    shown_parameters,
    unused_parameters,
    validate,
    yarn_correction_range,
    yarn_mscale,
    yarn_ramp,
)

__all__ = [
    "HFRope",
    "rope_from_hf_config",
    "RopeParams",
    "make_params",
    "validate",
    "canonical_method",
    "unused_parameters",
    "missing_required",
    "shown_parameters",
    "METHOD_TABLE",
    "METHODS",
    "OPTIONS",
    "flag",
    "refuse_unused",
    "baked_at",
    "ROPE_METHODS",
    "ALIBI_METHODS",
    "rope_frequencies",
    "alibi_slopes",
    "alibi_base_slopes",
    "default_inv_freq",
    "ntk_base",
    "dynamic_ntk_base",
    "yarn_mscale",
    "yarn_correction_range",
    "yarn_ramp",
]
