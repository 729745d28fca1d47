"""The one table of GGUF keys ropetool reads or writes: each name, and the type llama.cpp reads it as.

llama.cpp's key names come from gguf-py's ``gguf.Keys`` (never spelled here twice); ``{arch}`` is filled
by :func:`k`.  :data:`TYPES` is the GGUF type llama.cpp's loader requires for each key it reads with a
fixed type (``llama_model_loader::get_key`` compares the stored type exactly and refuses the file
otherwise), so a writer takes the type from here and lint flags a key stored as anything else.
ropetool's own provenance keys (llama.cpp ignores unknown keys) record what the user asked for, so
``inspect`` can name the method rather than only its lowering.
"""

from __future__ import annotations

import gguf

T = gguf.GGUFValueType
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
SLIDING_WINDOW = A.SLIDING_WINDOW

ROPE_DIMENSION_COUNT = R.DIMENSION_COUNT
ROPE_FREQ_BASE = R.FREQ_BASE
ROPE_FREQ_BASE_SWA = R.FREQ_BASE_SWA
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

# The GGUF type llama.cpp's loader accepts for each key (it compares types exactly).
TYPES: dict[str, T] = {
    CONTEXT_LENGTH: T.UINT32,
    EMBEDDING_LENGTH: T.UINT32,
    BLOCK_COUNT: T.UINT32,
    FEED_FORWARD_LENGTH: T.UINT32,
    HEAD_COUNT: T.UINT32,
    HEAD_COUNT_KV: T.UINT32,
    KEY_LENGTH: T.UINT32,
    VALUE_LENGTH: T.UINT32,
    VOCAB_SIZE: T.UINT32,
    LAYERNORM_EPS: T.FLOAT32,
    LAYERNORM_RMS_EPS: T.FLOAT32,
    SLIDING_WINDOW: T.UINT32,
    ROPE_DIMENSION_COUNT: T.UINT32,
    ROPE_FREQ_BASE: T.FLOAT32,
    ROPE_FREQ_BASE_SWA: T.FLOAT32,
    ROPE_SCALE_LINEAR: T.FLOAT32,
    ROPE_SCALING_TYPE: T.STRING,
    ROPE_SCALING_FACTOR: T.FLOAT32,
    ROPE_SCALING_ALPHA: T.FLOAT32,
    ROPE_SCALING_ATTN_FACTOR: T.FLOAT32,
    ROPE_SCALING_ORIG_CTX: T.UINT32,
    ROPE_SCALING_FINETUNED: T.BOOL,
    ROPE_YARN_LOG_MUL: T.FLOAT32,
    ROPE_YARN_EXT_FACTOR: T.FLOAT32,
    ROPE_YARN_ATTN_FACTOR: T.FLOAT32,
    ROPE_YARN_BETA_FAST: T.FLOAT32,
    ROPE_YARN_BETA_SLOW: T.FLOAT32,
    MAX_ALIBI_BIAS: T.FLOAT32,
}
# The keys whose type lint checks (the rope and context keys; the shape keys are checked where they are read).
ROPE_CONTEXT_KEYS = (
    CONTEXT_LENGTH, ROPE_DIMENSION_COUNT, ROPE_FREQ_BASE, ROPE_SCALE_LINEAR, ROPE_SCALING_TYPE, ROPE_SCALING_FACTOR,
    ROPE_SCALING_ALPHA, ROPE_SCALING_ATTN_FACTOR, ROPE_SCALING_ORIG_CTX, ROPE_SCALING_FINETUNED, ROPE_YARN_LOG_MUL,
    ROPE_YARN_EXT_FACTOR, ROPE_YARN_ATTN_FACTOR, ROPE_YARN_BETA_FAST, ROPE_YARN_BETA_SLOW, MAX_ALIBI_BIAS,
)

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
TYPES.update({RT_VERSION: T.STRING, RT_METHOD: T.STRING, RT_PARAMS: T.STRING, RT_EXACT: T.BOOL, RT_NOTE: T.STRING,
              RT_APPROX_ERROR: T.FLOAT32})


def k(template: str, arch: str) -> str:
    """A key name for ``arch``: ``k(ROPE_FREQ_BASE, "llama") == "llama.rope.freq_base"``."""
    return template.format(arch=arch)


def template_of(key: str, arch: str) -> str | None:
    """The template a full key name was made from (``llama.rope.freq_base`` -> ROPE_FREQ_BASE), if in the table."""
    prefix = arch + "."
    if key.startswith(prefix):
        candidate = "{arch}." + key[len(prefix):]
        if candidate in TYPES:
            return candidate
    return key if key in TYPES else None


def type_of(key: str, arch: str) -> T | None:
    """The type llama.cpp (or ropetool, for its own keys) reads ``key`` as, when the table knows it."""
    template = template_of(key, arch)
    return None if template is None else TYPES[template]
