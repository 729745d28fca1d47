"""The rope core: per-method frequencies, attention factors and ALiBi slopes, one source of truth.

convert, inspect, set-rope and the numpy reference all call these functions.
"""

from .hf import HFRope, rope_from_hf_config
from .methods import (
    alibi_base_slopes,
    alibi_slopes,
    default_inv_freq,
    dynamic_ntk_base,
    ntk_base,
    rope_frequencies,
    yarn_correction_range,
    yarn_mscale,
    yarn_ramp,
)
from .params import ALIBI_METHODS, METHODS, ROPE_METHODS, RopeParams, canonical_method, make_params, validate

__all__ = [
    "HFRope",
    "rope_from_hf_config",
    "RopeParams",
    "make_params",
    "validate",
    "canonical_method",
    "METHODS",
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
