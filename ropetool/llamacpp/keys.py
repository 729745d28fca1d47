"""The one table of GGUF key names ropetool reads or writes.

llama.cpp's own keys come from gguf-py's ``gguf.Keys`` (never spelled here twice); ``{arch}`` is
filled by :func:`k`.  ropetool's provenance keys (llama.cpp ignores unknown keys) record what the
user asked for, so ``inspect`` can name the method rather than only its lowering.
"""

from __future__ import annotations

import gguf

R = gguf.Keys.Rope
A = gguf.Keys.Attention
L = gguf.Keys.LLM
G = gguf.Keys.General

ARCHITECTURE = G.ARCHITECTURE
ALIGNMENT = G.ALIGNMENT
FILE_TYPE = G.FILE_TYPE
NAME = G.NAME

CONTEXT_LENGTH = L.CONTEXT_LENGTH
EMBEDDING_LENGTH = L.EMBEDDING_LENGTH
BLOCK_COUNT = L.BLOCK_COUNT
FEED_FORWARD_LENGTH = L.FEED_FORWARD_LENGTH
VOCAB_SIZE = L.VOCAB_SIZE
HEAD_COUNT = A.HEAD_COUNT
HEAD_COUNT_KV = A.HEAD_COUNT_KV
KEY_LENGTH = A.KEY_LENGTH
VALUE_LENGTH = A.VALUE_LENGTH
LAYERNORM_EPS = A.LAYERNORM_EPS
LAYERNORM_RMS_EPS = A.LAYERNORM_RMS_EPS
MAX_ALIBI_BIAS = A.MAX_ALIBI_BIAS

ROPE_DIMENSION_COUNT = R.DIMENSION_COUNT
ROPE_FREQ_BASE = R.FREQ_BASE
ROPE_SCALE_LINEAR = "{arch}.rope.scale_linear"  # legacy; gguf-py no longer names it
ROPE_SCALING_TYPE = R.SCALING_TYPE
ROPE_SCALING_FACTOR = R.SCALING_FACTOR
ROPE_SCALING_ALPHA = R.SCALING_ALPHA
ROPE_SCALING_ATTN_FACTOR = R.SCALING_ATTN_FACTOR
ROPE_SCALING_ORIG_CTX = R.SCALING_ORIG_CTX_LEN
ROPE_SCALING_FINETUNED = R.SCALING_FINETUNED
ROPE_YARN_LOG_MUL = R.SCALING_YARN_LOG_MUL
ROPE_YARN_EXT_FACTOR = R.SCALING_YARN_EXT_FACTOR
ROPE_YARN_ATTN_FACTOR = R.SCALING_YARN_ATTN_FACTOR
ROPE_YARN_BETA_FAST = R.SCALING_YARN_BETA_FAST
ROPE_YARN_BETA_SLOW = R.SCALING_YARN_BETA_SLOW

# Every key that carries rope or ALiBi semantics: set-rope removes these before writing new ones.
ROPE_KEYS = (
    ROPE_FREQ_BASE,
    ROPE_SCALE_LINEAR,
    ROPE_SCALING_TYPE,
    ROPE_SCALING_FACTOR,
    ROPE_SCALING_ALPHA,
    ROPE_SCALING_ATTN_FACTOR,
    ROPE_SCALING_ORIG_CTX,
    ROPE_SCALING_FINETUNED,
    ROPE_YARN_LOG_MUL,
    ROPE_YARN_EXT_FACTOR,
    ROPE_YARN_ATTN_FACTOR,
    ROPE_YARN_BETA_FAST,
    ROPE_YARN_BETA_SLOW,
    MAX_ALIBI_BIAS,
)

# Tensors that carry rope semantics (names as stored in the GGUF).
ROPE_FREQS_TENSOR = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
ROPE_FACTORS_LONG_TENSOR = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight"
ROPE_FACTORS_SHORT_TENSOR = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight"
ROPE_TENSORS = (ROPE_FREQS_TENSOR, ROPE_FACTORS_LONG_TENSOR, ROPE_FACTORS_SHORT_TENSOR)

# ropetool's provenance keys.
RT_VERSION = "ropetool.version"
RT_METHOD = "ropetool.rope.method"
RT_PARAMS = "ropetool.rope.params"  # JSON object of the method's parameters
RT_EXACT = "ropetool.rope.exact"
RT_NOTE = "ropetool.rope.note"  # what the lowering did, in words
RT_APPROX_ERROR = "ropetool.rope.approx_max_rel_error"  # largest relative frequency/slope error
RT_KEYS = (RT_VERSION, RT_METHOD, RT_PARAMS, RT_EXACT, RT_NOTE, RT_APPROX_ERROR)


def k(template: str, arch: str) -> str:
    """A key name for ``arch``: ``k(ROPE_FREQ_BASE, "llama") == "llama.rope.freq_base"``."""
    return template.format(arch=arch)
