"""The one table of GGUF keys ropetool reads or writes: each name, and the type llama.cpp reads it as.

llama.cpp's key names come from gguf-py's ``gguf.Keys`` (never spelled here twice); ``{arch}`` is filled
by :func:`k`.  :data:`TYPES` is the GGUF type llama.cpp's loader requires for each key it reads with a
fixed type (``llama_model_loader::get_key`` compares the stored type exactly and refuses the file
otherwise), so a writer takes the type from here and lint flags a key stored as anything else.
ropetool's own provenance keys (llama.cpp ignores unknown keys) record what the user asked for, so
``inspect`` can name the method rather than only its lowering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.io.gguf_constants import constants as gguf  # gguf-py's gguf.Keys and names, without the rest of gguf-py
from ropetool.io.vocab import LLAMA_CPP_PRE_TOKENIZERS

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
EXPERT_COUNT = L.EXPERT_COUNT
EXPERT_USED_COUNT = L.EXPERT_USED_COUNT
EXPERT_FEED_FORWARD_LENGTH = L.EXPERT_FEED_FORWARD_LENGTH
EXPERT_SHARED_FEED_FORWARD_LENGTH = L.EXPERT_SHARED_FEED_FORWARD_LENGTH
HEAD_COUNT = A.HEAD_COUNT
HEAD_COUNT_KV = A.HEAD_COUNT_KV
KEY_LENGTH = A.KEY_LENGTH
VALUE_LENGTH = A.VALUE_LENGTH
LAYERNORM_EPS = A.LAYERNORM_EPS
LAYERNORM_RMS_EPS = A.LAYERNORM_RMS_EPS
MAX_ALIBI_BIAS = A.MAX_ALIBI_BIAS
CLAMP_KQV = A.CLAMP_KQV  # q, k and v clamped to [-c, c] (mpt's clip_qkv); 0 or absent: not clamped
USE_PARALLEL_RESIDUAL = L.USE_PARALLEL_RESIDUAL  # gptneox: attention and feed-forward from the same input
# Llama 4-style attention temperature: queries x (1 + scale ln(floor(pos / period) + 1)); 0 or absent: none
ATTENTION_TEMPERATURE_SCALE = A.TEMPERATURE_SCALE
SLIDING_WINDOW = A.SLIDING_WINDOW
SLIDING_WINDOW_PATTERN = A.SLIDING_WINDOW_PATTERN  # an array of bools (true: the layer slides), or a u32 period
ATTN_LOGIT_SOFTCAPPING = L.ATTN_LOGIT_SOFTCAPPING
FINAL_LOGIT_SOFTCAPPING = L.FINAL_LOGIT_SOFTCAPPING

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
    EXPERT_COUNT: T.UINT32,
    EXPERT_USED_COUNT: T.UINT32,
    EXPERT_FEED_FORWARD_LENGTH: T.UINT32,
    EXPERT_SHARED_FEED_FORWARD_LENGTH: T.UINT32,
    LAYERNORM_EPS: T.FLOAT32,
    LAYERNORM_RMS_EPS: T.FLOAT32,
    SLIDING_WINDOW: T.UINT32,
    ATTN_LOGIT_SOFTCAPPING: T.FLOAT32,
    FINAL_LOGIT_SOFTCAPPING: T.FLOAT32,
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
    CLAMP_KQV: T.FLOAT32,
    USE_PARALLEL_RESIDUAL: T.BOOL,
    ATTENTION_TEMPERATURE_SCALE: T.FLOAT32,
}


@dataclass(frozen=True)
class Range:
    """The values a key can hold in a model llama.cpp runs: finite, within [lo, hi] (or (lo, hi] when
    ``lo_open``), and, where said, an even number or a power of two.  ``why`` names the limit's source."""

    lo: float
    hi: float
    lo_open: bool = False
    even: bool = False
    power_of_two: bool = False
    array_lo: float | None = None  # a per-layer array may hold this lower value (0: a layer without attention)
    why: str = ""

    def problem(self, value, in_array: bool = False) -> str | None:
        """Why ``value`` is out of range, in words; None when it is in range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{value!r} is not a number"
        lo = self.array_lo if in_array and self.array_lo is not None else self.lo
        if not math.isfinite(value):
            return f"{value} is not a finite number"
        low_ok = value > lo if self.lo_open else value >= lo
        if not (low_ok and value <= self.hi) or (self.even and value % 2) or (
                self.power_of_two and (value != int(value) or int(value) & (int(value) - 1))):
            return f"{_num(value)} is not {self.describe(in_array)}"
        return None

    def describe(self, in_array: bool = False) -> str:
        lo = self.array_lo if in_array and self.array_lo is not None else self.lo
        kind = "an even number" if self.even else "a power of two" if self.power_of_two else "a number"
        bounds = f"above {_num(lo)} and at most {_num(self.hi)}" if self.lo_open else f"from {_num(lo)} to {_num(self.hi)}"
        return f"{kind} {bounds}" + (f" ({self.why})" if self.why else "")


def _num(x) -> str:
    """A bound or value as people write it: integers in full (up to 2^53), others as %g."""
    return str(int(x)) if float(x).is_integer() and abs(x) <= 2**53 else f"{x:g}"


U32_MAX = 2**32 - 1
I32_MAX = 2**31 - 1  # ggml_rope_ext takes the original context as an int: 2^31 and above wrap negative (NaN logits)
F32_MAX = float(np.finfo(np.float32).max)
MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS (llama-hparams.h): per-layer arrays have this many entries
MAX_EXPERTS = 1024  # llama.cpp's LLAMA_MAX_EXPERTS (llama-hparams.h)
# What each key can hold; lint reports a value outside it (implausible-value), set and set-rope refuse to
# write one, convert refuses a config.json or option that would produce one.
RANGES: dict[str, Range] = {
    ALIGNMENT: Range(32, 1 << 16, power_of_two=True,
                     why="ggml needs tensor data aligned to 32 bytes; 64 KiB is the largest page size"),
    CONTEXT_LENGTH: Range(1, I32_MAX, why="llama.cpp passes it to ggml's rope as a signed int"),
    EMBEDDING_LENGTH: Range(1, 1 << 20),
    BLOCK_COUNT: Range(1, MAX_LAYERS, why="llama.cpp's LLAMA_MAX_LAYERS"),
    FEED_FORWARD_LENGTH: Range(1, 1 << 24, array_lo=0),
    HEAD_COUNT: Range(1, 1 << 16, array_lo=0),
    HEAD_COUNT_KV: Range(1, 1 << 16, array_lo=0),
    KEY_LENGTH: Range(1, 1 << 16),
    VALUE_LENGTH: Range(1, 1 << 16),
    VOCAB_SIZE: Range(1, 1 << 24),
    EXPERT_COUNT: Range(0, MAX_EXPERTS, why="llama.cpp's LLAMA_MAX_EXPERTS"),
    EXPERT_USED_COUNT: Range(0, MAX_EXPERTS, array_lo=0),
    EXPERT_FEED_FORWARD_LENGTH: Range(1, 1 << 24, array_lo=0),
    EXPERT_SHARED_FEED_FORWARD_LENGTH: Range(1, 1 << 24),
    LAYERNORM_EPS: Range(0, 1, why="ggml's norm aborts on a negative epsilon"),
    LAYERNORM_RMS_EPS: Range(0, 1, why="ggml's rms_norm aborts on a negative epsilon"),
    SLIDING_WINDOW: Range(0, U32_MAX),
    ATTN_LOGIT_SOFTCAPPING: Range(0, F32_MAX, lo_open=True, why="llama.cpp divides by it"),
    FINAL_LOGIT_SOFTCAPPING: Range(0, F32_MAX, why="0: no cap where the architecture allows that"),
    ROPE_DIMENSION_COUNT: Range(2, 1 << 16, even=True),
    ROPE_FREQ_BASE: Range(1, F32_MAX, lo_open=True),
    ROPE_FREQ_BASE_SWA: Range(1, F32_MAX, lo_open=True),
    ROPE_SCALE_LINEAR: Range(0, 1 << 16, why="0 means no scaling"),
    ROPE_SCALING_FACTOR: Range(0, 1 << 16, why="0 means no scaling"),
    ROPE_SCALING_ALPHA: Range(0, 1 << 16),
    ROPE_SCALING_ATTN_FACTOR: Range(0, 100, lo_open=True),
    ROPE_SCALING_ORIG_CTX: Range(0, I32_MAX, why="0 means context_length; ggml's rope takes it as a signed int"),
    ROPE_YARN_LOG_MUL: Range(0, 100),
    ROPE_YARN_EXT_FACTOR: Range(-1, 1, why="negative means YaRN's default"),
    ROPE_YARN_ATTN_FACTOR: Range(0, 100, lo_open=True),
    ROPE_YARN_BETA_FAST: Range(0, 1 << 16, lo_open=True),
    ROPE_YARN_BETA_SLOW: Range(0, 1 << 16, lo_open=True),
    MAX_ALIBI_BIAS: Range(0, 1000),
    CLAMP_KQV: Range(0, F32_MAX, why="0 means no clamping"),
    ATTENTION_TEMPERATURE_SCALE: Range(0, 100, why="0 means no attention temperature"),
}
TYPES[ALIGNMENT] = T.UINT32  # gguf.cpp refuses any other type

# -- multi-head latent attention and its mixture (deepseek2: src/models/deepseek2.cpp, load_arch_hparams) -----------
Q_LORA_RANK = A.Q_LORA_RANK  # the queries' low-rank width (required but on the "lite" layer counts)
KV_LORA_RANK = A.KV_LORA_RANK  # the compressed key/value latent's width (required)
KEY_LENGTH_MLA = A.KEY_LENGTH_MLA  # a head's key size once decompressed (qk_nope + qk_rope); with value_length_mla: MLA
VALUE_LENGTH_MLA = A.VALUE_LENGTH_MLA
LEADING_DENSE_BLOCK_COUNT = L.LEADING_DENSE_BLOCK_COUNT  # the first layers with a dense feed-forward
EXPERT_SHARED_COUNT = L.EXPERT_SHARED_COUNT  # shared experts, summed into one of n x expert_feed_forward_length (required)
EXPERT_WEIGHTS_SCALE = L.EXPERT_WEIGHTS_SCALE  # routed_scaling_factor (absent or 0: not scaled)
EXPERT_WEIGHTS_NORM = L.EXPERT_WEIGHTS_NORM  # the chosen experts' weights renormalised to sum to 1
EXPERT_GATING_FUNC = L.EXPERT_GATING_FUNC  # 1 softmax (deepseek2's default when absent), 2 sigmoid
EXPERT_GROUP_COUNT = L.EXPERT_GROUP_COUNT  # grouped top-k routing: groups of experts, and how many are kept
EXPERT_GROUP_USED_COUNT = L.EXPERT_GROUP_USED_COUNT
GATING_SOFTMAX, GATING_SIGMOID = int(gguf.ExpertGatingFuncType.SOFTMAX), int(gguf.ExpertGatingFuncType.SIGMOID)
TYPES.update({Q_LORA_RANK: T.UINT32, KV_LORA_RANK: T.UINT32, KEY_LENGTH_MLA: T.UINT32, VALUE_LENGTH_MLA: T.UINT32,
              LEADING_DENSE_BLOCK_COUNT: T.UINT32, EXPERT_SHARED_COUNT: T.UINT32, EXPERT_WEIGHTS_SCALE: T.FLOAT32,
              EXPERT_WEIGHTS_NORM: T.BOOL, EXPERT_GATING_FUNC: T.UINT32, EXPERT_GROUP_COUNT: T.UINT32,
              EXPERT_GROUP_USED_COUNT: T.UINT32})
RANGES.update({Q_LORA_RANK: Range(1, 1 << 20), KV_LORA_RANK: Range(1, 1 << 20), KEY_LENGTH_MLA: Range(1, 1 << 16),
               VALUE_LENGTH_MLA: Range(1, 1 << 16), LEADING_DENSE_BLOCK_COUNT: Range(0, MAX_LAYERS),
               EXPERT_SHARED_COUNT: Range(0, MAX_EXPERTS), EXPERT_WEIGHTS_SCALE: Range(0, 1000),
               EXPERT_GROUP_COUNT: Range(0, MAX_EXPERTS), EXPERT_GROUP_USED_COUNT: Range(0, MAX_EXPERTS)})

# -- hybrid models (issue 25): multi-section rope, linear-attention and short-convolution layers ------------------
# qwen35/qwen35moe (src/models/qwen35*.cpp) and qwen3next read the sections of the multi-section rope (required by
# qwen35: get_key_or_arr(..., 4, true), an i32 array), which layers are recurrent (attention.recurrent_layers, one
# bool per layer, else every layer but each full_attention_interval-th, default 4) and the Gated DeltaNet's sizes
# (ssm.*); lfm2/lfm2moe mark their short-convolution layers by head_count_kv 0 (a per-layer array) and read the
# convolution's length (shortconv.l_cache).
ROPE_DIMENSION_SECTIONS = R.DIMENSION_SECTIONS  # [t, h, w, e] pairs of the multi-section rope
FULL_ATTENTION_INTERVAL = L.FULL_ATTENTION_INTERVAL
RECURRENT_LAYERS = "{arch}.attention.recurrent_layers"  # gguf-py 0.19 does not name it (llama-arch.cpp does)
SSM_CONV_KERNEL = gguf.Keys.SSM.CONV_KERNEL
SSM_INNER_SIZE = gguf.Keys.SSM.INNER_SIZE
SSM_STATE_SIZE = gguf.Keys.SSM.STATE_SIZE
SSM_TIME_STEP_RANK = gguf.Keys.SSM.TIME_STEP_RANK
SSM_GROUP_COUNT = gguf.Keys.SSM.GROUP_COUNT
SHORTCONV_L_CACHE = gguf.Keys.ShortConv.L_CACHE
TYPES.update({ROPE_DIMENSION_SECTIONS: T.ARRAY, FULL_ATTENTION_INTERVAL: T.UINT32, RECURRENT_LAYERS: T.ARRAY,
              SSM_CONV_KERNEL: T.UINT32, SSM_INNER_SIZE: T.UINT32, SSM_STATE_SIZE: T.UINT32,
              SSM_TIME_STEP_RANK: T.UINT32, SSM_GROUP_COUNT: T.UINT32, SHORTCONV_L_CACHE: T.UINT32})
RANGES.update({FULL_ATTENTION_INTERVAL: Range(1, MAX_LAYERS), SSM_CONV_KERNEL: Range(1, 1 << 10),
               SSM_INNER_SIZE: Range(1, 1 << 24), SSM_STATE_SIZE: Range(1, 1 << 16), SSM_TIME_STEP_RANK: Range(1, 1 << 16),
               SSM_GROUP_COUNT: Range(1, 1 << 16), SHORTCONV_L_CACHE: Range(2, 1 << 10, why="llama.cpp's lfm2 asserts > 1")})
MROPE_SECTIONS = 4  # GGML_MROPE_SECTIONS: t, h, w and the extra (e) position of each token

# -- llama4 and gemma4 (issue 24) ---------------------------------------------------------------------------------
# llama4 (src/models/llama4.cpp) requires interleave_moe_layer_step: layer il is a mixture when (il + 1) % step == 0.
# gemma4 (src/models/gemma4.cpp, llama_model_base::load_hparams): the sliding layers' own head size and rotary count
# (attention.key_length_swa / value_length_swa, required by gemma4; rope.dimension_count_swa, else the global
# rope.dimension_count), the per-layer embeddings' width (embedding_length_per_layer_input, required; 0: none) and the
# layers that reuse an earlier layer's keys and values (attention.shared_kv_layers).
INTERLEAVE_MOE_LAYER_STEP = L.INTERLEAVE_MOE_LAYER_STEP
ROPE_DIMENSION_COUNT_SWA = R.DIMENSION_COUNT_SWA
KEY_LENGTH_SWA = A.KEY_LENGTH_SWA
VALUE_LENGTH_SWA = A.VALUE_LENGTH_SWA
EMBEDDING_LENGTH_PER_LAYER = L.EMBD_LENGTH_PER_LAYER_INP
SHARED_KV_LAYERS = A.SHARED_KV_LAYERS
TYPES.update({INTERLEAVE_MOE_LAYER_STEP: T.UINT32, ROPE_DIMENSION_COUNT_SWA: T.UINT32, KEY_LENGTH_SWA: T.UINT32,
              VALUE_LENGTH_SWA: T.UINT32, EMBEDDING_LENGTH_PER_LAYER: T.UINT32, SHARED_KV_LAYERS: T.UINT32})
RANGES.update({INTERLEAVE_MOE_LAYER_STEP: Range(0, MAX_LAYERS, why="0: no mixture layer"),
               ROPE_DIMENSION_COUNT_SWA: Range(2, 1 << 16, even=True), KEY_LENGTH_SWA: Range(1, 1 << 16),
               VALUE_LENGTH_SWA: Range(1, 1 << 16), EMBEDDING_LENGTH_PER_LAYER: Range(0, 1 << 20),
               SHARED_KV_LAYERS: Range(0, MAX_LAYERS)})

# -- the keys llama.cpp's loader reads outside the architecture's own: general.* and the tokenizer -----------
# llama_model_loader reads general.file_type and general.name with get_key (an exact type);
# llama_vocab::impl::load (src/llama-vocab.cpp) reads the tokenizer's keys: the model name (required) and
# pre-tokenizer name as strings, the flags as bools, the special-token ids as u32 (get_key), and the per-token
# arrays by their element type, refusing a scores or token_type array shorter than the token list.
TK = gguf.Keys.Tokenizer
TOKENIZER_MODEL = TK.MODEL
TOKENIZER_PRE = TK.PRE
TOKENIZER_TOKENS = TK.LIST
TOKENIZER_SCORES = TK.SCORES
TOKENIZER_TOKEN_TYPE = TK.TOKEN_TYPE
TOKENIZER_MERGES = TK.MERGES
TOKENIZER_TOKEN_TYPE_COUNT = TK.TOKEN_TYPE_COUNT
# The special-token ids llama.cpp reads (its special_token_types table, deprecated prefix/suffix/middle included).
SPECIAL_TOKEN_IDS = (TK.BOS_ID, TK.EOS_ID, TK.EOT_ID, TK.EOM_ID, TK.UNK_ID, TK.SEP_ID, TK.PAD_ID, TK.MASK_ID,
                     TK.FIM_PRE_ID, TK.FIM_SUF_ID, TK.FIM_MID_ID, TK.FIM_PAD_ID, TK.FIM_REP_ID, TK.FIM_SEP_ID,
                     TK.PREFIX_ID, TK.SUFFIX_ID, TK.MIDDLE_ID)
TOKENIZER_FLAGS = (TK.ADD_BOS, TK.ADD_EOS, TK.ADD_SEP, TK.ADD_PREFIX, TK.REMOVE_EXTRA_WS)
TYPES.update({FILE_TYPE: T.UINT32, NAME: T.STRING, TOKENIZER_MODEL: T.STRING, TOKENIZER_PRE: T.STRING,
              TOKENIZER_TOKEN_TYPE_COUNT: T.UINT32, TOKENIZER_TOKENS: T.ARRAY, TOKENIZER_SCORES: T.ARRAY,
              TOKENIZER_TOKEN_TYPE: T.ARRAY, TOKENIZER_MERGES: T.ARRAY})
TYPES.update({key: T.UINT32 for key in SPECIAL_TOKEN_IDS})
TYPES.update({key: T.BOOL for key in TOKENIZER_FLAGS})
# The element types llama.cpp accepts for the array keys it reads ("invalid gguf type for ..." otherwise).
ELEMENT_TYPES: dict[str, tuple[T, ...]] = {
    TOKENIZER_TOKENS: (T.STRING,),
    TOKENIZER_SCORES: (T.FLOAT32, T.INT32),
    TOKENIZER_TOKEN_TYPE: (T.INT32,),
    TOKENIZER_MERGES: (T.STRING,),
}
ELEMENT_TYPES.update({ROPE_DIMENSION_SECTIONS: (T.INT32,), RECURRENT_LAYERS: (T.BOOL,)})  # hybrid models
PER_TOKEN = (TOKENIZER_SCORES, TOKENIZER_TOKEN_TYPE)  # one entry per token at least
# tokenizer.ggml.model: the names llama_vocab::impl::load knows (src/llama-vocab.cpp); any other throws
# "unknown tokenizer".  "none" and "no_vocab" load no vocabulary at all.
TOKENIZER_MODELS = ("no_vocab", "none", "llama", "bert", "gpt2", "hybriddna", "whitespace", "t5", "rwkv", "test",
                    "plamo2", "gemma4")
NO_VOCAB_MODELS = ("no_vocab", "none")
# The BPE models whose tokenizer.ggml.pre llama.cpp checks against its list ("unknown pre-tokenizer type"
# otherwise; gemma4 sets its own pre-tokenizer), and which need tokenizer.ggml.merges.
BPE_TOKENIZER_MODELS = ("gpt2", "hybriddna", "whitespace")
PRE_TOKENIZERS = LLAMA_CPP_PRE_TOKENIZERS  # what convert's --pre-tokenizer accepts too (io.vocab holds the list)
NO_MERGES_PRE = ("kimi-k2",)  # a BPE vocabulary llama.cpp loads without merges
TOKENIZER_KEYS = ((TOKENIZER_MODEL, TOKENIZER_PRE, TOKENIZER_TOKEN_TYPE_COUNT, TOKENIZER_TOKENS, TOKENIZER_SCORES,
                   TOKENIZER_TOKEN_TYPE, TOKENIZER_MERGES) + SPECIAL_TOKEN_IDS + TOKENIZER_FLAGS)
# Read by every architecture's loader (llama_model_base::load_hparams, gguf.cpp for the alignment): a value
# of another type makes llama.cpp refuse any file.
SHAPE_KEYS = (EMBEDDING_LENGTH, BLOCK_COUNT, FEED_FORWARD_LENGTH, HEAD_COUNT, HEAD_COUNT_KV, KEY_LENGTH, VALUE_LENGTH)
# Read with get_key_or_arr: a scalar, or an array of u32/i32 with one entry per layer.
PER_LAYER = (FEED_FORWARD_LENGTH, HEAD_COUNT, HEAD_COUNT_KV, EXPERT_USED_COUNT, EXPERT_FEED_FORWARD_LENGTH)
REQUIRED = (CONTEXT_LENGTH, EMBEDDING_LENGTH, BLOCK_COUNT)  # load_hparams throws without them

# The keys whose type lint checks (the rope and context keys; the shape keys are checked where they are read).
ROPE_CONTEXT_KEYS = (
    CONTEXT_LENGTH, ROPE_DIMENSION_COUNT, ROPE_FREQ_BASE, ROPE_SCALE_LINEAR, ROPE_SCALING_TYPE, ROPE_SCALING_FACTOR,
    ROPE_SCALING_ALPHA, ROPE_SCALING_ATTN_FACTOR, ROPE_SCALING_ORIG_CTX, ROPE_SCALING_FINETUNED, ROPE_YARN_LOG_MUL,
    ROPE_YARN_EXT_FACTOR, ROPE_YARN_ATTN_FACTOR, ROPE_YARN_BETA_FAST, ROPE_YARN_BETA_SLOW, MAX_ALIBI_BIAS,
)

TYPE_CHECKED = ROPE_CONTEXT_KEYS + SHAPE_KEYS + (ALIGNMENT, FILE_TYPE, NAME) + TOKENIZER_KEYS

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

# -- the KV cache's shapes beyond head_count_kv and key/value_length (ModelFile.kv_cache; llama_model::load_hparams
# reads the _swa lengths for every architecture, the _mla ones where the graph is multi-head latent attention:
# llama_hparams::is_mla is both set, and then the cache holds the compressed keys alone) -------------------------
KEY_LENGTH_SWA = A.KEY_LENGTH_SWA
VALUE_LENGTH_SWA = A.VALUE_LENGTH_SWA
KEY_LENGTH_MLA = A.KEY_LENGTH_MLA  # a head's key size once decompressed (qk_nope + qk_rope); with value_length_mla: MLA
VALUE_LENGTH_MLA = A.VALUE_LENGTH_MLA
TYPES.update({KEY_LENGTH_SWA: T.UINT32, VALUE_LENGTH_SWA: T.UINT32, KEY_LENGTH_MLA: T.UINT32, VALUE_LENGTH_MLA: T.UINT32})

# ropetool's provenance keys.
RT_VERSION = "ropetool.version"
RT_METHOD = "ropetool.rope.method"
RT_PARAMS = "ropetool.rope.params"  # JSON object of the method's parameters
RT_EXACT = "ropetool.rope.exact"
RT_NOTE = "ropetool.rope.note"  # what the lowering did, in words
RT_APPROX_ERROR = "ropetool.rope.approx_max_rel_error"  # largest relative frequency/slope error
RT_SLIDING_BASE = "ropetool.rope.sliding_base"  # the sliding-window layers' base (gemma): what rope.freq_base_swa holds
# gemma4's proportional rope: the pairs at the end of each global head that stay unrotated (rope_freqs 1e30 there)
RT_UNROTATED = "ropetool.rope.unrotated_pairs"
RT_KEYS = (RT_VERSION, RT_METHOD, RT_PARAMS, RT_EXACT, RT_NOTE, RT_APPROX_ERROR, RT_SLIDING_BASE, RT_UNROTATED)
TYPES.update({RT_VERSION: T.STRING, RT_METHOD: T.STRING, RT_PARAMS: T.STRING, RT_EXACT: T.BOOL, RT_NOTE: T.STRING,
              RT_APPROX_ERROR: T.FLOAT32, RT_SLIDING_BASE: T.FLOAT32, RT_UNROTATED: T.UINT32})
UNROTATED_FACTOR = 1e30  # the rope_freqs divisor of a pair that never turns (llama.cpp's converter: Gemma4Model)


def k(template: str, arch: str) -> str:
    """A key name for ``arch``: ``k(ROPE_FREQ_BASE, "llama") == "llama.rope.freq_base"``."""
    return template.format(arch=arch)


def short(template: str) -> str:
    """A key's name without its architecture, as prose names it: ``short(ROPE_FREQ_BASE) == "rope.freq_base"``."""
    return template.removeprefix("{arch}.")


def template_of(key: str, arch: str) -> str | None:
    """The template a full key name was made from (``llama.rope.freq_base`` -> ROPE_FREQ_BASE), if in the table."""
    prefix = arch + "."
    if key.startswith(prefix):
        candidate = "{arch}." + key[len(prefix):]
        if candidate in TYPES:
            return candidate
    return key if key in TYPES else None


def range_of(key: str, arch: str) -> Range | None:
    """The range of values ``key`` can hold in a model llama.cpp runs, when the table knows it."""
    template = template_of(key, arch)
    return None if template is None else RANGES.get(template)


def check_range(template: str, value, where: str) -> None:
    """Raise a one-line RopetoolError when ``value`` is outside the range of the key ``template``;
    ``where`` names what the value came from (a config.json field, an option)."""
    why = RANGES[template].problem(value)
    if why is not None:
        name = template.replace("{arch}.", "")
        raise RopetoolError(f"{where}: {why}; it becomes {name}")


def type_of(key: str, arch: str) -> T | None:
    """The type llama.cpp (or ropetool, for its own keys) reads ``key`` as, when the table knows it."""
    template = template_of(key, arch)
    return None if template is None else TYPES[template]
