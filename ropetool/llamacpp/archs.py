"""The architectures ropetool converts, as data: names, layout and what llama.cpp loads for each.

Facts about llama.cpp (which archs load ``rope_freqs``, which read ``max_alibi_bias``, rope
pairing) come from llama-cpp-semantics.md and are proved by ``ropetool check``.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf

from ropetool.errors import RopetoolError


@dataclass(frozen=True)
class Arch:
    name: str  # llama.cpp's architecture string
    hf_architectures: tuple[str, ...]
    norm: str  # "rms" or "layer"
    ffn: str  # "swiglu" (separate gate), "swiglu-fused" (gate and up in one tensor), "gelu"
    rope_pairing: str | None  # "normal" (pairs 2i, 2i+1) or "neox" (i, i + d/2) as llama.cpp rotates; None: ALiBi
    permute_qk: bool = False  # HF rotate_half layout -> llama.cpp NORMAL pairs (llama's converter permutes)
    fused_qkv: str | None = None  # "concat" (q;k;v) or "bloom" (per head q,k,v interleaved)
    strip_prefix: str = ""  # prefix llama.cpp's converter removes from HF names
    loads_rope_freqs: bool = False  # rope_freqs.weight divides each pair's frequency
    longrope_tensors: str = "never"  # "always", "if-type-longrope" or "never"
    alibi_max_bias: float | None = None  # hard-coded max_bias (bloom: 8); None: read from the key or no ALiBi
    reads_alibi_key: bool = False
    hf_eps_key: str = "rms_norm_eps"

    @property
    def model_arch(self) -> gguf.MODEL_ARCH:
        return next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == self.name)

    @property
    def is_alibi(self) -> bool:
        return self.rope_pairing is None

    def loads_longrope(self, scaling_type: str | None) -> bool:
        return self.longrope_tensors == "always" or (
            self.longrope_tensors == "if-type-longrope" and scaling_type == "longrope"
        )


ARCHS = {
    a.name: a
    for a in (
        Arch("llama", ("LlamaForCausalLM", "MistralForCausalLM"), "rms", "swiglu", "normal", permute_qk=True,
             loads_rope_freqs=True, longrope_tensors="if-type-longrope"),
        Arch("qwen2", ("Qwen2ForCausalLM",), "rms", "swiglu", "neox"),
        Arch("qwen3", ("Qwen3ForCausalLM",), "rms", "swiglu", "neox"),
        Arch("phi3", ("Phi3ForCausalLM",), "rms", "swiglu-fused", "neox", fused_qkv="concat",
             longrope_tensors="always"),
        Arch("bloom", ("BloomForCausalLM", "BloomModel"), "layer", "gelu", None, fused_qkv="bloom",
             strip_prefix="transformer.", alibi_max_bias=8.0, hf_eps_key="layer_norm_epsilon"),
    )
}


def arch_for_config(config: dict) -> Arch:
    names = config.get("architectures") or []
    if not isinstance(names, list):
        names = [names]
    for arch in ARCHS.values():
        if any(n in arch.hf_architectures for n in names):
            return arch
    model_type = config.get("model_type")
    for arch in ARCHS.values():
        if model_type and any(n.lower().startswith(str(model_type).lower()) for n in arch.hf_architectures):
            return arch
    known = ", ".join(n for a in ARCHS.values() for n in a.hf_architectures)
    raise RopetoolError(f"unknown architecture {names or model_type!r}; ropetool converts: {known}")


def arch_by_name(name: str) -> Arch | None:
    return ARCHS.get(name)


# --- llama.cpp facts beyond the conversion table (llama-cpp-semantics.md §1, §3, §5), used by lint/inspect ---
# Keys added here; nothing above changed.

from ropetool.llamacpp import keys as _K  # noqa: E402

# The rope keys that only a few llama.cpp architectures read; every other architecture ignores them.
RARE_ROPE_KEY_READERS: dict[str, tuple[str, ...]] = {
    _K.ROPE_YARN_EXT_FACTOR: ("grok",),
    _K.ROPE_YARN_ATTN_FACTOR: ("grok",),
    _K.ROPE_YARN_BETA_FAST: ("grok", "mistral3"),
    _K.ROPE_YARN_BETA_SLOW: ("grok", "mistral3"),
    _K.ROPE_YARN_LOG_MUL: ("deepseek2", "deepseek32", "mistral3", "mistral4"),
    _K.ROPE_SCALING_ALPHA: ("hunyuan_vl",),
}
# Architectures whose loader divides yarn_log_multiplier by 0.1 (the converter pre-multiplies it).
YARN_LOG_MUL_PRESCALED = ("deepseek2", "deepseek32", "mistral4")
# YaRN beta defaults where an architecture reads the keys (grok: beta_fast 8); 32/1 everywhere else.
YARN_BETA_DEFAULTS: dict[str, tuple[float, float]] = {"grok": (8.0, 1.0)}
# Architectures that hard-code the ALiBi max_bias (attention.max_alibi_bias is ignored there).
# baichuan hard-codes 8 too, but only for its 13B (40-layer) variant, which uses no RoPE.
HARDCODED_ALIBI_MAX_BIAS: dict[str, float] = {"bloom": 8.0, "refact": 8.0, "jina-bert-v2": 8.0}
BAICHUAN_ALIBI_LAYERS = 40
# Architectures that read attention.max_alibi_bias.
ALIBI_KEY_READERS = ("mpt", "jais")
# Architectures whose loader throws unless rope.dimension_count equals the head dimension.
ROPE_DIM_MUST_EQUAL_HEAD_DIM = ("llama", "deci", "falcon", "llama-embed")
