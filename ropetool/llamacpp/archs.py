"""What llama.cpp's loader does for each architecture name: which rope keys and tensors it reads.

One record per architecture llama.cpp knows, built from tables that mirror llama.cpp's own code
(``llama_model_rope_type``'s switch, the ``load_tensors`` cases that create ``rope_freqs`` or
``rope_factors_long/short``, the ``load_hparams`` cases that read the rarer rope keys, the graphs that
hard-code ALiBi).  An architecture llama.cpp does not know gets a safe reading (:func:`loader`): it reads
only the common keys and loads no rope tensor.  docs/llama-cpp.md cites the source of every table.

The shape of the forward pass (norms, feed-forward) is not here: :mod:`ropetool.families` holds it for
the architectures ropetool converts and runs in its reference.
"""

from __future__ import annotations

from dataclasses import dataclass

from ropetool.llamacpp import keys as K

# Every architecture name llama.cpp knows (LLM_ARCH_NAMES in src/llama-arch.cpp; "clip" and "gptj" are names
# it cannot load).
NAMES = frozenset({
    "afmoe", "apertus", "arcee", "arctic", "arwkv7", "baichuan", "bailingmoe", "bailingmoe2", "bailingmoe3",
    "bert", "bitnet", "bloom", "chameleon", "chatglm", "clip", "codeshell", "cogvlm", "cohere2", "cohere2moe",
    "command-r", "dbrx", "deci", "deepseek", "deepseek2", "deepseek2-ocr", "deepseek32", "deepseek4", "dflash",
    "dots1", "dots3note", "dream", "eagle3", "ernie4_5", "ernie4_5-moe", "eurobert", "exaone", "exaone-moe",
    "exaone4", "falcon", "falcon-h1", "gemma", "gemma-embedding", "gemma2", "gemma3", "gemma3n", "gemma4",
    "gemma4-assistant", "glm-dsa", "glm4", "glm4moe", "glm5-next", "gpt-oss", "gpt2", "gptj", "gptneox",
    "granite", "granite_swa", "granitehybrid", "granitemoe", "graniteswitch", "grok", "grovemoe", "hrm_text",
    "hunyuan-dense", "hunyuan-moe", "hunyuan_vl", "hy_v3", "hy_v4", "internlm2", "jais", "jais2", "jamba",
    "jina-bert-v2", "jina-bert-v3", "kimi-k3", "kimi-linear", "laguna", "lfm2", "lfm2moe", "llada", "llada-moe",
    "llama", "llama-embed", "llama4", "maincoder", "mamba", "mamba2", "maple", "mellum", "mimo2", "minicpm",
    "minicpm3", "minimax-01", "minimax-m2", "minimax-m3", "mistral3", "mistral4", "modern-bert", "mpt",
    "muse-glimmer", "nanbeige", "nemotron", "nemotron_h", "nemotron_h_moe", "neo-bert", "nomic-bert",
    "nomic-bert-moe", "olmo", "olmo2", "olmoe", "openelm", "orion", "paddleocr", "pangu-embedded", "phi2",
    "phi3", "phimoe", "plamo", "plamo2", "plamo3", "plm", "pockettts", "qwen", "qwen2", "qwen2moe", "qwen2vl",
    "qwen3", "qwen35", "qwen35moe", "qwen3moe", "qwen3next", "qwen3tts", "qwen3vl", "qwen3vlmoe", "qwen4exp",
    "refact", "rnd1", "rwkv6", "rwkv6qwen2", "rwkv7", "seed_oss", "smallthinker", "smollm3", "spark2_5",
    "stablelm", "starcoder", "starcoder2", "step35", "t5", "t5encoder", "talkie", "wavtokenizer-dec", "xverse",
})

# --- llama_model_rope_type (src/llama-model.cpp); every other name is NORM (pairs 2i, 2i+1) ----------------------
ROPE_NONE = frozenset({
    "arwkv7", "bloom", "clip", "glm5-next", "gpt2", "gptj", "jais", "jamba", "jina-bert-v2", "kimi-k3",
    "kimi-linear", "mamba", "mamba2", "mpt", "nemotron_h", "nemotron_h_moe", "refact", "rwkv6", "rwkv6qwen2",
    "rwkv7", "t5", "t5encoder", "wavtokenizer-dec",
})
ROPE_NEOX = frozenset({
    "afmoe", "apertus", "bailingmoe2", "bert", "bitnet", "codeshell", "cogvlm", "dbrx", "dflash", "dots1",
    "dream", "eurobert", "exaone", "exaone-moe", "exaone4", "falcon", "falcon-h1", "gemma", "gemma-embedding",
    "gemma2", "gemma3", "gemma3n", "gemma4", "gemma4-assistant", "glm4moe", "gpt-oss", "gptneox", "grok",
    "grovemoe", "hrm_text", "hunyuan-dense", "hunyuan-moe", "hunyuan_vl", "hy_v3", "jais2", "jina-bert-v3",
    "laguna", "lfm2", "lfm2moe", "llada-moe", "maple", "mellum", "mimo2", "minicpm3", "minimax-01",
    "minimax-m2", "minimax-m3", "modern-bert", "nemotron", "nomic-bert", "nomic-bert-moe", "olmo2", "olmoe",
    "openelm", "orion", "pangu-embedded", "phi2", "phi3", "phimoe", "plamo", "plamo2", "plamo3", "qwen",
    "qwen2", "qwen2moe", "qwen3", "qwen3moe", "qwen3next", "rnd1", "seed_oss", "smallthinker", "spark2_5",
    "stablelm", "starcoder2", "step35", "talkie",
})
ROPE_MROPE = frozenset({
    "paddleocr", "qwen2vl",
})
ROPE_IMROPE = frozenset({
    "qwen35", "qwen35moe", "qwen3tts", "qwen3vl", "qwen3vlmoe", "qwen4exp",
})

# --- load_tensors: the cases that create rope_freqs, and rope_factors_long/short (always, or only when
# rope.scaling.type is longrope, in which case rope_freqs is not created) --------------------------------------------
LOADS_ROPE_FREQS = frozenset({
    "apertus", "arcee", "cogvlm", "deci", "dflash", "eagle3", "exaone", "exaone-moe", "exaone4", "falcon-h1",
    "gemma4", "gemma4-assistant", "granite", "granite_swa", "granitehybrid", "granitemoe", "llada", "llama",
    "llama-embed", "llama4", "minicpm", "mistral3", "nanbeige", "pangu-embedded", "refact", "step35",
})
LONGROPE_ALWAYS = frozenset({
    "minicpm3", "phi3", "phimoe",
})
LONGROPE_IF_TYPE = frozenset({
    "apertus", "deci", "granite", "granite_swa", "granitemoe", "llama", "llama-embed", "minicpm", "mistral3",
    "pangu-embedded", "refact", "step35",
})

# Loaded (so a file may hold them) but never passed to ggml_rope_ext by the graph.
ROPE_FACTORS_NOT_APPLIED = frozenset({"refact", "cogvlm", "falcon-h1", "llada", "pangu-embedded"})

# --- hparams (load_hparams): the rarer rope keys and who reads them ----------------------------------------
READS: dict[str, frozenset[str]] = {
    K.ROPE_YARN_EXT_FACTOR: frozenset({"grok"}),
    K.ROPE_YARN_ATTN_FACTOR: frozenset({"grok"}),
    K.ROPE_YARN_BETA_FAST: frozenset({"grok", "mistral3"}),
    K.ROPE_YARN_BETA_SLOW: frozenset({"grok", "mistral3"}),
    K.ROPE_YARN_LOG_MUL: frozenset({"deepseek2", "deepseek32", "mistral3", "mistral4"}),
    K.ROPE_SCALING_ALPHA: frozenset({"hunyuan-dense", "hunyuan_vl"}),
    K.MAX_ALIBI_BIAS: frozenset({"mpt", "jais"}),
    K.CLAMP_KQV: frozenset({"mpt", "olmo", "dbrx"}),  # q, k, v clamped in build_qkv (not a rope key)
    # the queries' position-dependent temperature (not a rope key; src/models/mistral3.cpp, deepseek2.cpp, whose
    # loader mistral4 reuses)
    K.ATTENTION_TEMPERATURE_SCALE: frozenset({"deepseek2", "mistral3", "mistral4"}),
}
LOG_MUL_PRESCALED = frozenset({"deepseek2", "deepseek32", "mistral4"})  # the loader divides the key by 0.1
# llama_context: YaRN's mscale is yarn_log_multiplier itself when it is not 1 ([TAG_DEEPSEEK2_YARN_LOG_MUL_FIX])
MSCALE_IS_LOG_MUL = frozenset({"deepseek2"})
# The graph multiplies the attention scale by mscale^2, mscale = attn_factor (ggml's YaRN term cancelled) x (1 + 0.1
# log_mul ln s), whatever the scaling type (src/models/deepseek2.cpp, kq_scale): transformers' DeepSeek V3 does so for
# YaRN with mscale_all_dim alone.
KQ_SCALE_MSCALE = frozenset({"deepseek2"})
BETA_FAST_DEFAULT = {"grok": 8.0}  # yarn_beta_fast where it is read; 32 elsewhere
ALIBI_FIXED = {"bloom": 8.0, "refact": 8.0, "jina-bert-v2": 8.0}  # the graph hard-codes max_bias
ALIBI_BY_LAYERS = {"baichuan": ((40, 8.0),)}  # block_count -> max_bias; RoPE at 32 layers, nothing otherwise
ROPE_BY_LAYERS = {"baichuan": (32,)}  # archs whose graph applies rope only at these block counts
# The graph skips rope on every n-th layer ((il + 1) % n == 0), n hard-coded by the loader (hparams.n_no_rope_layer_step:
# src/models/smollm3.cpp sets 4 whatever the file says; no key changes it).
NO_ROPE_LAYER_STEP = {"smollm3": 4, "llama4": 4}  # llama4: hparams.n_no_rope_layer_step's default (src/models/llama4.cpp)
N_ROT_IS_HEAD_DIM = frozenset({"llama", "deci", "falcon", "llama-embed"})  # the loader throws otherwise
# The graph asserts it (GGML_ASSERT(n_embd_head == n_rot) in src/models/*.cpp): the process aborts otherwise.
N_ROT_IS_HEAD_DIM_GRAPH = frozenset({
    "apertus", "arcee", "arctic", "baichuan", "chameleon", "codeshell", "cogvlm", "cohere2moe", "dbrx", "deci",
    "deepseek", "dots1", "dream", "ernie4_5", "ernie4_5-moe", "exaone", "exaone-moe", "exaone4", "falcon", "granite",
    "granite_swa", "graniteswitch", "grok", "grovemoe", "hunyuan-moe", "hunyuan_vl", "hy_v3", "internlm2", "jais2",
    "llada", "llada-moe", "llama", "llama4", "maincoder", "mellum", "minimax-01", "minimax-m2", "mistral3", "nemotron",
    "olmo", "olmo2", "olmoe", "orion", "paddleocr", "pangu-embedded", "plamo", "pockettts", "qwen2", "qwen2moe",
    "qwen2vl", "qwen3", "qwen3moe", "qwen3vl", "qwen3vlmoe", "rnd1", "seed_oss", "smallthinker", "smollm3", "starcoder2",
    "talkie", "xverse",
})


@dataclass(frozen=True)
class SlidingWindow:
    """llama.cpp's sliding-window layers for an architecture: which layers slide, their window, and the rope
    they use (``load_swa_pattern``, ``get_rope_freq_base/scale`` in src/llama-model.cpp; src/models/gemma*.cpp).

    Layer ``il`` slides iff ``il % period < period - 1``, unless ``attention.sliding_window_pattern`` says
    otherwise (an array: one flag per layer; a u32: another period)."""

    period: int  # gemma2: every other layer slides (2); gemma3: five of every six (6)
    window_default: int | None  # the window without the key; None: without the key no layer slides
    base_default: float | None  # the sliding layers' base without rope.freq_base_swa; None: the global base
    scale_follows_global: bool  # the sliding layers' freq_scale is the global one (gemma2) or 1 (gemma3)
    # The window the graph uses whatever attention.sliding_window says (llama4's chunk, 8192), the key turning the
    # layers off only at 0; None: the key's window.
    window_fixed: int | None = None
    attention: str = "sliding-window"  # what those layers' attention is: "sliding-window", or "chunked" (llama4)
    rope_freqs: bool = True  # the rope_freqs tensor reaches those layers' rope (gemma4: only the global layers')
    # config.json (transformers 5): the window's field and the layer type of those layers in layer_types
    hf_window: str = "sliding_window"
    hf_layer_type: str = "sliding_attention"
    pattern_required: bool = False  # the loader requires attention.sliding_window_pattern as an array (gemma4)


SLIDING_WINDOWS = {
    "gemma2": SlidingWindow(period=2, window_default=4096, base_default=None, scale_follows_global=True),
    "gemma3": SlidingWindow(period=6, window_default=None, base_default=10000.0, scale_follows_global=False),
}
# gpt-oss (src/models/openai-moe.cpp, load_arch_hparams): attention.sliding_window required, load_swa_pattern(ml, 2)
# (layer 0 slides, 1 is full, ...); the sliding layers' base is freq_base unless rope.freq_base_swa says otherwise, and
# their freq_scale the file's (rope_freq_scale_train_swa = rope_freq_scale_train): one rope for every layer, as
# transformers' GptOssRotaryEmbedding computes it.
SLIDING_WINDOWS["gpt-oss"] = SlidingWindow(period=2, window_default=None, base_default=None, scale_follows_global=True)
# llama4 (src/models/llama4.cpp, load_arch_hparams): chunked attention of 8192 whatever attention.sliding_window says
# (0 turns it off), load_swa_pattern(ml, 4) (three chunked layers, then one full: the full ones are the layers without
# rope); the chunked layers' base is freq_base unless rope.freq_base_swa says otherwise, their freq_scale the file's.
# gemma4 (src/models/gemma4.cpp): attention.sliding_window and the per-layer sliding_window_pattern array required; the
# sliding layers' base rope.freq_base_swa (else 10000), unscaled (rope_freq_scale_train_swa keeps its 1), their own head
# size and rotary count (key_length_swa, rope.dimension_count_swa), and no rope_freqs (only the global layers take it).
SLIDING_WINDOWS["gemma4"] = SlidingWindow(period=6, window_default=None, base_default=10000.0, scale_follows_global=False,
                                          rope_freqs=False, pattern_required=True)
SLIDING_WINDOWS["llama4"] = SlidingWindow(period=4, window_default=8192, base_default=None, scale_follows_global=True,
                                          window_fixed=8192, attention="chunked", hf_window="attention_chunk_size",
                                          hf_layer_type="chunked_attention")


@dataclass(frozen=True)
class AttnTemperature:
    """llama.cpp's Llama 4-style attention temperature for an architecture (llm_graph_input_attn_temp,
    src/llama-graph.cpp): after rope, the queries at position p are multiplied by
    ``1 + scale * ln(floor((p + offset) / period) + 1)``, where ``scale`` is attention.temperature_scale (0 or
    absent: no temperature) and ``period`` is llama.cpp's n_ctx_orig_yarn (rope.scaling.original_context_length,
    else context_length: src/models/mistral3.cpp), so a rope key moves it; or both hard-coded (``scale``, ``period``:
    llama4's 0.1 and 8192, src/models/llama4.cpp), and applied only in the layers without rope (``no_rope_only``)."""

    offset: float = 0.0
    scale: float | None = None  # hard-coded; None: attention.temperature_scale
    period: int | None = None  # hard-coded; None: n_ctx_orig_yarn
    no_rope_only: bool = False


# deepseek2/mistral4 take the period from a key: not modelled.  llama4: the queries of its no-rope layers only, with
# offset 1 (hparams.f_attn_temp_offset) as transformers' Llama4TextAttention (log1p(floor((p + 1) / floor_scale))).
ATTN_TEMPERATURES = {"mistral3": AttnTemperature(offset=0.0),
                     "llama4": AttnTemperature(offset=1.0, scale=0.1, period=8192, no_rope_only=True)}


@dataclass(frozen=True)
class LoaderArch:
    """llama.cpp's loader and graph for one architecture name, as far as rope and ALiBi go."""

    name: str
    known: bool
    rope_type: str  # "none", "norm" (pairs 2i, 2i+1), "neox" (i, i + d/2), "mrope", "imrope"
    rope_freqs: bool = False  # loads rope_freqs.weight (a per-pair divisor)
    longrope: str = "never"  # rope_factors_long/short: "always", "if-type-longrope" (then no rope_freqs), "never"
    reads: frozenset[str] = frozenset()  # rarer rope keys (templates) this loader reads
    beta_fast_default: float = 32.0
    beta_slow_default: float = 1.0
    log_mul_prescaled: bool = False
    mscale_is_log_mul: bool = False
    kq_scale_mscale: bool = False  # YaRN's mscale^2 folded into the attention scale (KQ_SCALE_MSCALE)
    alibi_fixed: float | None = None
    alibi_by_layers: tuple[tuple[int, float], ...] = ()
    rope_layer_counts: tuple[int, ...] = ()  # non-empty: rope only at these block counts
    applies_rope_factors: bool = True  # False: the graph loads the rope tensors but never uses them
    n_rot_is_head_dim: bool = False
    sliding: SlidingWindow | None = None  # sliding-window layers with a rope of their own (None: not modelled)
    no_rope_step: int = 0  # > 0: the graph applies no rope in layers il with (il + 1) % no_rope_step == 0
    attn_temperature: AttnTemperature | None = None  # the queries' temperature whose period is the original context
    recurrent: "Recurrent | None" = None  # hybrid models: layers without attention (so without rope), and how marked

    def reads_key(self, template: str) -> bool:
        return template in self.reads

    def loads_rope_freqs(self, scaling_type: str | None) -> bool:
        return self.rope_freqs and not (self.longrope == "if-type-longrope" and scaling_type == "longrope")

    def loads_longrope(self, scaling_type: str | None) -> bool:
        return self.longrope == "always" or (self.longrope == "if-type-longrope" and scaling_type == "longrope")

    def alibi_bias(self, n_layer: int | None, key_value: float | None) -> tuple[float, str] | None:
        """(max_bias, where it comes from) when this architecture runs ALiBi, else None."""
        if self.alibi_fixed is not None:
            return self.alibi_fixed, "hard-coded"
        for layers, bias in self.alibi_by_layers:
            if n_layer == layers:
                return bias, f"hard-coded for {layers} layers"
        if K.MAX_ALIBI_BIAS in self.reads:
            return (float(key_value) if key_value else 0.0), "key"
        return None

    def uses_rope(self, n_layer: int | None) -> bool:
        """Whether the graph rotates q and k at all (baichuan only at 32 layers)."""
        if self.rope_type == "none":
            return False
        return not self.rope_layer_counts or n_layer in self.rope_layer_counts

    def no_rope_layers(self, n_layer: int | None) -> tuple[int, ...]:
        """The layers whose q and k the graph never rotates (smollm3: 3, 7, 11, ...), whatever the rope keys say."""
        step = self.no_rope_step
        if not step or not n_layer or n_layer > K.MAX_LAYERS:
            return ()
        return tuple(il for il in range(n_layer) if (il + 1) % step == 0)

    @property
    def pairing(self) -> str | None:
        """How ggml pairs the rotated dims: "normal" (2i, 2i+1) or "neox" (i, i + d/2)."""
        return {"norm": "normal", "neox": "neox", "mrope": "neox", "imrope": "neox"}.get(self.rope_type)

    @property
    def ggml_mode(self) -> str | None:
        """The rope mode the graph's rope ops carry (ggml's GGML_ROPE_TYPE_*): "normal", "neox", "mrope" (multi-section,
        contiguous sections) or "imrope" (multi-section, interleaved); None without rope."""
        return {"norm": "normal", "neox": "neox", "mrope": "mrope", "imrope": "imrope"}.get(self.rope_type)


def _record(name: str, known: bool = True) -> LoaderArch:
    if name in ROPE_NONE:
        rope_type = "none"
    elif name in ROPE_NEOX:
        rope_type = "neox"
    elif name in ROPE_MROPE:
        rope_type = "mrope"
    elif name in ROPE_IMROPE:
        rope_type = "imrope"
    else:
        rope_type = "norm"
    longrope = "always" if name in LONGROPE_ALWAYS else "if-type-longrope" if name in LONGROPE_IF_TYPE else "never"
    return LoaderArch(
        name=name,
        known=known,
        rope_type=rope_type,
        rope_freqs=name in LOADS_ROPE_FREQS,
        longrope=longrope,
        reads=frozenset(t for t, readers in READS.items() if name in readers),
        beta_fast_default=BETA_FAST_DEFAULT.get(name, 32.0),
        log_mul_prescaled=name in LOG_MUL_PRESCALED,
        mscale_is_log_mul=name in MSCALE_IS_LOG_MUL,
        kq_scale_mscale=name in KQ_SCALE_MSCALE,
        alibi_fixed=ALIBI_FIXED.get(name),
        alibi_by_layers=ALIBI_BY_LAYERS.get(name, ()),
        rope_layer_counts=ROPE_BY_LAYERS.get(name, ()),
        applies_rope_factors=name not in ROPE_FACTORS_NOT_APPLIED,
        n_rot_is_head_dim=name in N_ROT_IS_HEAD_DIM | N_ROT_IS_HEAD_DIM_GRAPH,
        sliding=SLIDING_WINDOWS.get(name),
        no_rope_step=NO_ROPE_LAYER_STEP.get(name, 0),
        attn_temperature=ATTN_TEMPERATURES.get(name),
        recurrent=RECURRENT.get(name),
    )


@dataclass(frozen=True)
class Recurrent:
    """Hybrid models' layers without attention (issue 25): recurrent layers that carry position through their
    state or convolution, so the graph builds no rope op there, whatever the rope keys say.

    ``marked_by``: "interval" (qwen35, qwen35moe, qwen3next: attention.recurrent_layers, one bool per layer, else
    every layer il with (il + 1) % full_attention_interval != 0, the interval 4 without the key: load_arch_hparams in
    src/models/qwen35.cpp, qwen35moe.cpp, qwen3next.cpp); "kv-heads" (lfm2, lfm2moe: the layers whose head_count_kv,
    a per-layer array, is 0: src/models/lfm2.cpp, lfm2moe.cpp)."""

    marked_by: str
    kind: str  # what those layers are, in words
    interval_default: int = 4


RECURRENT = {
    "qwen35": Recurrent("interval", "Gated DeltaNet linear attention"),
    "qwen35moe": Recurrent("interval", "Gated DeltaNet linear attention"),
    "qwen3next": Recurrent("interval", "Gated DeltaNet linear attention"),
    "lfm2": Recurrent("kv-heads", "short convolution"),
    "lfm2moe": Recurrent("kv-heads", "short convolution"),
}


ARCHS: dict[str, LoaderArch] = {name: _record(name) for name in sorted(NAMES)}
def loader(name: str | None) -> LoaderArch:
    """The record for an architecture name.  One llama.cpp does not know (or a newer one) gets a safe reading:
    only the common keys, no rope tensors, rope paired as llama does (llama.cpp itself refuses such a file;
    ropetool still reads and edits it)."""
    if name in ARCHS:
        return ARCHS[name]
    return LoaderArch(name=name or "?", known=False, rope_type="norm")


__all__ = ["LoaderArch", "ARCHS", "loader", "READS", "Recurrent"]
