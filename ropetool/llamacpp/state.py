"""The one reader of a GGUF's rope settings: what llama.cpp will compute for the file.

:func:`read_state` resolves the keys and rope tensors the way llama.cpp's loader (``load_hparams``,
``load_tensors``) and context (``llama_context``'s constructor) do, per architecture (see
:mod:`ropetool.llamacpp.archs`): the scaling type and its default, freq_base and freq_scale, the
original context, YaRN's ext and attention factors, the betas where the architecture reads them, the
per-pair divisors of the rope tensors it loads, the ALiBi bias it reads or hard-codes, and the keys it
ignores.  docs/llama-cpp.md cites the llama.cpp code behind each rule; tests/test_state.py proves the
defaults by running llama.cpp.

Two readings of the same file:

* ``reading="llama.cpp"``: exactly what llama.cpp computes (a key the architecture does not read has
  no effect);
* ``reading="keys"``: what the keys say, every key taken with the meaning llama.cpp gives it where it
  is read (a ``yarn_beta_fast`` on a llama file counts).  Where the two differ, llama.cpp ignores
  something the file asks for; ``check`` uses the second as the setting a file without ropetool's
  record means.

inspect, lint, edit, check and the reference all read rope settings through this module; nothing else
interprets a rope key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import GGUFFile, T
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.archs import ARCHS, LoaderArch, loader
from ropetool.rope import ggml, make_params, ntk_base
from ropetool.words import number

LLAMA_CPP = "llama.cpp"
KEYS = "keys"
SCALING_TYPES = ("none", "linear", "yarn", "longrope")  # LLAMA_ROPE_SCALING_TYPES; any other string aborts
DEFAULT_SCALING_TYPE = "linear"  # load_hparams: std::string rope_scaling("linear")
DEFAULT_FREQ_BASE = 10000.0  # llama_hparams::rope_freq_base_train's default
MAX_ROT = 1 << 16  # sanity bounds: larger values are corrupt, and would make huge arrays
# A rope_freqs divisor this large leaves its pair unrotated at every position llama.cpp takes (2^31 x 1 / 1e20 < 1e-10
# rad): gemma4's proportional rope (llama.cpp's converter writes 1e30 there).
FROZEN_FACTOR = 1e20
MAX_HEADS = 1 << 16


@dataclass(frozen=True)
class IgnoredKey:
    key: str
    value: object
    readers: tuple[str, ...]  # the architectures whose loader reads it (empty: none, or hard-coded here)
    why: str


@dataclass(frozen=True)
class SlidingState:
    """The sliding-window layers as llama.cpp runs them (``LoaderArch.sliding``): which layers slide, their
    window, and the base and scale of their rope (the rest of the rope settings are the global ones)."""

    window: int
    layers: tuple[bool, ...]  # per layer: it slides
    pattern_source: str  # "key" or "default"
    freq_base: float
    freq_base_source: str  # "key" (rope.freq_base_swa), "default" or "global"
    freq_scale: float
    # Their own head size and rotated dims (attention.key_length_swa, rope.dimension_count_swa: llama_model_base::
    # load_hparams reads both for every architecture; without them, the global ones); None: not read.
    head_dim: int | None = None
    n_rot: int | None = None

    @property
    def count(self) -> int:
        return sum(self.layers)


@dataclass(frozen=True)
class TemperatureState:
    """The queries' attention temperature as llama.cpp applies it (``LoaderArch.attn_temperature``): position p's
    queries are multiplied by ``1 + scale * ln(floor((p + offset) / period) + 1)``."""

    scale: float  # attention.temperature_scale (or the architecture's hard-coded scale)
    period: int  # n_ctx_orig_yarn: rope.scaling.original_context_length, else context_length (or hard-coded)
    period_source: str  # "original_context_length", "context_length" or "hard-coded"
    offset: float
    no_rope_only: bool = False  # applied only in the layers without rope (llama4)

    def factors(self, positions) -> np.ndarray:
        p = np.asarray(positions, dtype=np.float64)
        return 1.0 + self.scale * np.log(np.floor((p + self.offset) / self.period) + 1.0)


@dataclass
class RopeState:
    """A GGUF's position-encoding settings resolved as llama.cpp does (or, reading "keys", as the keys say)."""

    arch: str | None
    facts: LoaderArch
    reading: str
    encoding: str  # "rope", "alibi" or "none" (the graph applies neither)
    n_head: int | None
    n_layer: int | None
    head_dim: int | None
    n_rot: int | None
    context_length: int | None  # n_ctx_train
    freq_base: float
    freq_base_source: str  # "key" or "default"
    scaling_type_raw: str | None
    scaling_type: str  # what llama.cpp uses (the key, or "linear" when it is missing)
    factor: float | None  # the scale factor llama.cpp read (rope.scaling.factor, else rope.scale_linear); None: none
    factor_source: str | None  # "scaling.factor" or "scale_linear"
    freq_scale: float
    orig_ctx_key: int | None
    n_ctx_orig: int | None
    ext_factor: float
    beta_fast: float
    beta_slow: float
    rope_attn_factor: float
    log_mul: float
    attn_factor: float  # what ggml_rope_ext receives
    magnitude: float  # the effective cos/sin multiplier (attn_factor, times ggml's YaRN term)
    rope_freqs: np.ndarray | None = None
    rope_freqs_used: bool = False  # llama.cpp divides the frequencies by it
    # The pairs rope_freqs divides by so much (>= FROZEN_FACTOR) that they never turn at any position llama.cpp takes:
    # gemma4's proportional rope leaves the end of each global head unrotated so (1e30, llama.cpp's converter).
    frozen_pairs: tuple[int, ...] = ()
    rope_freqs_loaded: bool = False  # llama.cpp's loader asks for it (a tensor it does not ask for makes it refuse the file)
    long_factors: np.ndarray | None = None
    short_factors: np.ndarray | None = None
    longrope_used: bool = False
    longrope_loaded: bool = False
    alibi_max_bias: float | None = None
    alibi_source: str | None = None
    ignored: list[IgnoredKey] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (key or tensor, why llama.cpp cannot use it)
    sliding: SlidingState | None = None  # sliding-window layers with a rope of their own (gemma2, gemma3)
    positionless: str | None = None  # why llama.cpp's graph applies no position encoding at this layer count
    no_rope_layers: tuple[int, ...] = ()  # layers the graph never rotates, whatever the keys (smollm3: every 4th)
    temperature: TemperatureState | None = None  # the queries' attention temperature (mistral3), if any
    attention_scale: float = 1.0  # the factor on the 1/sqrt(head_dim) softmax scale (deepseek2 folds YaRN's mscale^2)
    key_length_mla: int | None = None  # multi-head latent attention: a decompressed key head (the rope is its last n_rot)
    # Hybrid models (LoaderArch.recurrent): the layers without attention, so without rope (also in no_rope_layers);
    # and a multi-section rope's sections [t, h, w, e] as llama.cpp reads rope.dimension_sections (mrope, imrope).
    recurrent_layers: tuple[int, ...] = ()
    sections: tuple[int, int, int, int] | None = None

    @property
    def unturned_pairs(self) -> list[int]:
        """A multi-section rope's pairs in ggml's 4th section, which llama.cpp holds at position 0 for a text token:
        they never turn (transformers rotates every pair of a text token by its position)."""
        from ropetool.rope.rotate import section_rows

        if self.sections is None or not self.n_rot or not any(self.sections[:3]) or min(self.sections) < 0:
            return []
        rows = section_rows(self.n_rot // 2, self.sections, self.facts.rope_type == "imrope")
        return [int(i) for i in np.nonzero(rows == K.MROPE_SECTIONS - 1)[0]]

    @property
    def unrotated_pairs(self) -> int:
        """How many pairs at the end of each head rope_freqs leaves unrotated (``frozen_pairs``, when they are the last
        ones: gemma4's proportional rope); 0 otherwise."""
        frozen, half = self.frozen_pairs, (self.n_rot or 0) // 2
        return len(frozen) if frozen and list(frozen) == list(range(half - len(frozen), half)) else 0

    @property
    def rope_layers(self) -> list[int]:
        """The layers whose q and k llama.cpp rotates (every layer but ``no_rope_layers``), for a rope file."""
        if self.encoding != "rope" or not self.n_layer or self.n_layer > K.MAX_LAYERS:
            return []
        return [il for il in range(self.n_layer) if il not in self.no_rope_layers]

    def of_sliding_layers(self) -> "RopeState":
        """This state as the sliding-window layers compute rope: their base and scale, the rest the same."""
        sw = self.sliding
        if sw is None:
            return self
        try:
            magnitude = ggml.magnitude(self.attn_factor, sw.freq_scale, self.ext_factor)
        except (ValueError, ZeroDivisionError, OverflowError):
            magnitude = math.nan
        own = {}
        if not self.facts.sliding.rope_freqs:  # gemma4: the global layers' rope_freqs does not reach these layers
            own = {"rope_freqs_used": False, "frozen_pairs": ()}
        return replace(self, freq_base=sw.freq_base, freq_scale=sw.freq_scale, magnitude=magnitude, sliding=None,
                       head_dim=sw.head_dim or self.head_dim, n_rot=sw.n_rot or self.n_rot, **own)

    @property
    def computable(self) -> bool:
        """Whether the rope math can be evaluated (no implausible values)."""
        return not self.problems and bool(self.n_rot)

    @property
    def yarn_active(self) -> bool:
        return self.ext_factor != 0

    def correction_range(self) -> tuple[int, int] | None:
        if not self.yarn_active or not self.n_rot or not self.n_ctx_orig:
            return None
        return ggml.corr_dims(self.n_rot, self.n_ctx_orig, self.beta_fast, self.beta_slow, self.freq_base)

    def uses_long_factors(self, n_ctx: int | None) -> bool:
        """get_rope_factors: the long table when the context exceeds the original context."""
        return n_ctx is not None and self.n_ctx_orig is not None and n_ctx > self.n_ctx_orig

    def freq_factors(self, n_ctx: int | None) -> np.ndarray | None:
        """The per-pair divisor llama.cpp passes to ggml_rope_ext at context ``n_ctx`` (get_rope_factors)."""
        if self.rope_freqs_used:
            return self.rope_freqs
        if self.longrope_used:
            return self.long_factors if self.uses_long_factors(n_ctx) else self.short_factors
        return None

    def inv_freq(self, n_ctx: int | None = None) -> np.ndarray:
        """The inverse frequency of every rotated pair as ggml computes it (float64); ``n_ctx`` picks the
        LongRoPE table (default: context_length)."""
        ff = self.freq_factors(n_ctx if n_ctx is not None else self.context_length)
        if ff is not None and len(ff) < self.n_rot // 2:
            ff = None
        return ggml.inv_freq(self.n_rot, self.freq_base, self.freq_scale, self.ext_factor,
                             self.correction_range(), ff)

    def frequencies(self, n_tokens: int, n_ctx: int | None = None) -> tuple[np.ndarray, float]:
        """(inverse frequency per pair, cos/sin magnitude) for a sequence of ``n_tokens``.

        The LongRoPE table: llama.cpp picks it by the context it allocates (``n_ctx``); the "keys"
        reading, like transformers, by the sequence length."""
        if self.encoding != "rope" or not self.computable:
            raise RopetoolError("the file's rope settings cannot be evaluated (see ropetool inspect)")
        pick = n_ctx if (self.reading == LLAMA_CPP and n_ctx is not None) else n_tokens
        return self.inv_freq(pick), self.magnitude

    def scaling_params(self):
        """The method the scaling keys alone name (none, linear, yarn or longrope; tensors and
        rope.scaling.attn_factor aside), as RopeParams; a RopetoolError for a type llama.cpp does not know."""
        key = K.k(K.ROPE_SCALING_TYPE, self.arch or "?")
        kind = self.scaling_type
        try:
            if kind == "none":
                return make_params("none", base=self.freq_base)
            if kind == "linear":  # factor 1 (as llama.cpp defaults it) is plain RoPE; readback names it "none"
                return make_params("linear", base=self.freq_base, factor=1 / self.freq_scale)
            if kind == "yarn":
                # deepseek2: yarn_log_multiplier is DeepSeek's mscale_all_dim (and mscale, which llama.cpp takes as equal)
                mla = self.facts.kq_scale_mscale and self.log_mul
                return make_params("yarn", base=self.freq_base, factor=1 / self.freq_scale,
                                   original_context=self.n_ctx_orig, beta_fast=self.beta_fast, beta_slow=self.beta_slow,
                                   extrapolation_factor=self.ext_factor, mscale=self.log_mul if mla else None,
                                   mscale_all_dim=self.log_mul if mla else None)
            if kind == "longrope":
                if self.short_factors is None or self.long_factors is None:
                    raise RopetoolError(f"scaling type longrope needs {K.ROPE_FACTORS_SHORT_TENSOR} and "
                                        f"{K.ROPE_FACTORS_LONG_TENSOR}")
                return make_params("longrope", base=self.freq_base, original_context=self.n_ctx_orig,
                                   short_factor=self.short_factors.tolist(), long_factor=self.long_factors.tolist())
        except RopetoolError as e:
            raise RopetoolError(f"GGUF rope settings: {e}") from None
        raise RopetoolError(f"unknown {key} {kind!r} ({', '.join(SCALING_TYPES)})")

    def alibi_slopes(self) -> np.ndarray | None:
        """The per-head ALiBi slopes ggml derives from max_bias (ggml_soft_max_ext)."""
        if self.encoding != "alibi" or not self.n_head or not self.alibi_max_bias or self.n_head > MAX_HEADS:
            return None
        return ggml.alibi_slopes(self.n_head, self.alibi_max_bias)


# ------------------------------------------------------------------------------------------
# Reading


def scalar(gf: GGUFFile, key: str, kinds=(int, float)):
    """A key's scalar value when it has one of ``kinds`` (bools are not numbers here); else None."""
    f = gf.fields.get(key)
    if f is None or f.is_array:
        return None
    v = f.scalar
    if isinstance(v, bool) or not isinstance(v, kinds):
        return None
    return v


def first_int(gf: GGUFFile, key: str) -> int | None:
    """A per-model count stored as a scalar or (some archs) as a per-layer array: its largest value."""
    f = gf.fields.get(key)
    if f is None:
        return None
    if f.is_array:
        if f.sub_type in (T.STRING, T.ARRAY, T.FLOAT32, T.FLOAT64) or f.count == 0:
            return None
        vals = [int(v) for v in f.value if int(v) > 0]
        return max(vals) if vals else None
    return int(f.scalar) if isinstance(f.scalar, int) and not isinstance(f.scalar, bool) else None


def _read_rope_tensor(gf: GGUFFile, name: str, notes: list[str]) -> np.ndarray | None:
    if gf.tensor(name) is None:
        return None
    try:
        return gf.read_tensor(name, max_elements=1 << 16).reshape(-1)
    except RopetoolError as e:
        notes.append(f"{name} not read: {e}")
        return None


def read_state(gf: GGUFFile, reading: str = LLAMA_CPP) -> RopeState:
    """Resolve the file's rope/ALiBi settings as llama.cpp's loader and context do (see the module doc)."""
    if reading not in (LLAMA_CPP, KEYS):
        raise ValueError(f"reading must be {LLAMA_CPP!r} or {KEYS!r}")
    arch = gf.architecture
    facts = loader(arch)
    a = arch or "?"

    def key(template):
        return K.k(template, a)

    notes: list[str] = []
    ignored: list[IgnoredKey] = []
    n_head = first_int(gf, key(K.HEAD_COUNT))
    n_embd = first_int(gf, key(K.EMBEDDING_LENGTH))
    n_layer = scalar(gf, key(K.BLOCK_COUNT), int)
    head_dim = first_int(gf, key(K.KEY_LENGTH))
    if head_dim is None and n_embd and n_head:
        head_dim = n_embd // n_head
    n_rot = scalar(gf, key(K.ROPE_DIMENSION_COUNT), int)
    if n_rot is None:
        n_rot = head_dim
    ctx = scalar(gf, key(K.CONTEXT_LENGTH), int)

    base = scalar(gf, key(K.ROPE_FREQ_BASE))
    base_source = "key"
    if base is None:
        base, base_source = DEFAULT_FREQ_BASE, "default"
    raw_type = gf.get(key(K.ROPE_SCALING_TYPE))
    raw_type = raw_type if isinstance(raw_type, str) else None
    stype = raw_type if raw_type is not None else DEFAULT_SCALING_TYPE

    # load_hparams: rope.scaling.factor when the key is present (0 means 1); the legacy scale_linear only
    # when it is absent.
    if key(K.ROPE_SCALING_FACTOR) in gf.fields:
        factor, factor_source = scalar(gf, key(K.ROPE_SCALING_FACTOR)), "scaling.factor"
    else:
        factor, factor_source = scalar(gf, key(K.ROPE_SCALE_LINEAR)), "scale_linear"
        if key(K.ROPE_SCALE_LINEAR) not in gf.fields:
            factor_source = None
    if not factor:
        factor = None
    freq_scale = 1.0 / factor if factor else 1.0
    if stype == "none":
        freq_scale = 1.0  # llama_context: never scale if scaling type is none

    orig_key = scalar(gf, key(K.ROPE_SCALING_ORIG_CTX), int)
    n_ctx_orig = orig_key or ctx

    def rare(template, default):
        """A key only some loaders read: its value where this reading takes it, else the default."""
        if key(template) not in gf.fields:
            return default
        v = scalar(gf, key(template))
        if facts.reads_key(template) or reading == KEYS:
            return default if v is None else float(v)
        readers = tuple(sorted(n for n, _ in _readers(template)))
        ignored.append(IgnoredKey(key(template), gf.get(key(template)), readers,
                                  f"{key(template)} is ignored by llama.cpp's {a} loader"
                                  + (f" (read only by {', '.join(readers)})" if readers else "")
                                  + (f": it uses {default:g}" if default > 0 else "")))
        return default

    ext = rare(K.ROPE_YARN_EXT_FACTOR, -1.0)
    if ext < 0:
        ext = 1.0 if stype == "yarn" else 0.0
    beta_fast = rare(K.ROPE_YARN_BETA_FAST, facts.beta_fast_default)
    beta_slow = rare(K.ROPE_YARN_BETA_SLOW, facts.beta_slow_default)
    yarn_attn = rare(K.ROPE_YARN_ATTN_FACTOR, 1.0)
    log_mul = rare(K.ROPE_YARN_LOG_MUL, 0.0)
    if facts.log_mul_prescaled and log_mul:
        log_mul = log_mul / 0.1
    alpha = rare(K.ROPE_SCALING_ALPHA, 0.0)
    if alpha > 0 and head_dim and head_dim > 2:
        base = ntk_base(base, alpha, head_dim)  # hunyuan: NTK-aware alpha over the head dim
        notes.append(f"rope.scaling.alpha {alpha:g} raises the base to {base:g}")
    temp_scale = rare(K.ATTENTION_TEMPERATURE_SCALE, 0.0)
    temperature = temperature_state(facts, temp_scale, orig_key, ctx)
    rope_attn = scalar(gf, key(K.ROPE_SCALING_ATTN_FACTOR))
    rope_attn = 1.0 if rope_attn is None else float(rope_attn)

    # llama_context: YaRN's attention factor replaces yarn_attn_factor when ext_factor != 0.
    attn = yarn_attn
    if ext != 0 and freq_scale > 0 and math.isfinite(freq_scale):
        attn = ggml.yarn_context_attn_factor(freq_scale, log_mul, deepseek2=facts.mscale_is_log_mul)
        if log_mul and facts.log_mul_prescaled:
            notes.append(f"{arch} folds YaRN scaling into the attention scale (kq_scale); the magnitude shown is "
                         "ggml's rope only")
    attn *= rope_attn
    try:
        magnitude = ggml.magnitude(attn, freq_scale, ext)
    except (ValueError, ZeroDivisionError, OverflowError):
        magnitude = math.nan
    if reading == KEYS and ext != 0 and key(K.ROPE_YARN_ATTN_FACTOR) in gf.fields and scalar(gf, key(K.ROPE_YARN_ATTN_FACTOR)):
        # llama.cpp's converter writes Hugging Face's attention_factor (the whole cos/sin magnitude) here;
        # llama.cpp itself overwrites it whenever YaRN is active, even on the one architecture that reads it.
        magnitude = yarn_attn * rope_attn

    attention_scale = 1.0
    if facts.kq_scale_mscale and freq_scale > 0 and math.isfinite(freq_scale) and math.isfinite(attn):
        attention_scale = ggml.mla_attention_scale(attn, freq_scale, log_mul)
    st = RopeState(
        arch=arch, facts=facts, reading=reading, encoding="rope", attention_scale=attention_scale,
        key_length_mla=first_int(gf, key(K.KEY_LENGTH_MLA)), n_head=n_head, n_layer=n_layer, head_dim=head_dim,
        n_rot=n_rot, context_length=ctx, freq_base=float(base),
        freq_base_source=base_source, scaling_type_raw=raw_type, scaling_type=stype,
        factor=float(factor) if factor else None, factor_source=factor_source if factor else None,
        freq_scale=freq_scale, orig_ctx_key=orig_key, n_ctx_orig=n_ctx_orig, ext_factor=ext, beta_fast=beta_fast,
        beta_slow=beta_slow, rope_attn_factor=rope_attn, log_mul=log_mul,
        attn_factor=attn, magnitude=magnitude, ignored=ignored, notes=notes, no_rope_layers=facts.no_rope_layers(n_layer),
        temperature=temperature,
    )
    if temp_scale and facts.attn_temperature is not None and facts.attn_temperature.period is None and temperature is None:
        st.problems.append((key(K.ROPE_SCALING_ORIG_CTX), f"{key(K.ATTENTION_TEMPERATURE_SCALE)} needs an original context "
                                                         "above 0: llama.cpp refuses the file"))
    _read_hybrid(gf, st, key)
    _read_alibi(gf, st, key, reading)
    _read_rope_tensors(gf, st, reading)
    _read_sliding(gf, st, key)
    _check_plausible(st, a)
    return st


def temperature_state(facts: LoaderArch, scale, orig_key, context_length) -> TemperatureState | None:
    """The queries' attention temperature llama.cpp applies (``LoaderArch.attn_temperature``), from
    attention.temperature_scale (``scale``; 0 or None: none), rope.scaling.original_context_length as stored
    (``orig_key``; None: absent) and context_length: the period is hparams.n_ctx_orig_yarn, the key, else
    n_ctx_train.  None also when the period is 0 (llama.cpp refuses such a file).  Where the architecture hard-codes
    the scale and the period (llama4), the keys do not matter."""
    temp = facts.attn_temperature
    if temp is None:
        return None
    if temp.scale is not None and temp.period is not None:
        return TemperatureState(temp.scale, temp.period, "hard-coded", temp.offset, temp.no_rope_only)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale:
        return None
    period = orig_key if orig_key is not None else context_length
    if isinstance(period, bool) or not isinstance(period, int) or period <= 0:
        return None
    return TemperatureState(float(scale), period, "original_context_length" if orig_key is not None else
                            "context_length", temp.offset, temp.no_rope_only)


def _read_sliding(gf: GGUFFile, st: RopeState, key) -> None:
    if st.encoding == "rope" and st.n_layer:
        st.sliding = sliding_state(st.facts, st.n_layer, st.freq_base, st.freq_scale, lambda t: gf.get(key(t)))
    if st.sliding is not None:
        head = scalar(gf, key(K.KEY_LENGTH_SWA), int)
        n_rot = scalar(gf, key(K.ROPE_DIMENSION_COUNT_SWA), int)
        st.sliding = replace(st.sliding, head_dim=head or st.head_dim, n_rot=n_rot or st.n_rot)
        if n_rot is not None and not (2 <= n_rot <= MAX_ROT and n_rot % 2 == 0):
            st.problems.append((key(K.ROPE_DIMENSION_COUNT_SWA), f"rotary dimension {n_rot} is not an even number in "
                                                                  f"2..{MAX_ROT}"))


def sliding_state(facts: LoaderArch, n_layer: int, freq_base: float, freq_scale: float, get) -> SlidingState | None:
    """Which layers slide and the base and scale of their rope (``LoaderArch.sliding``), from the keys as
    ``get(template)`` returns their values (None when absent).  Both readings: the keys involved are read
    by every architecture that has such layers."""
    facts_sw = facts.sliding
    if facts_sw is None or not 0 < n_layer <= K.MAX_LAYERS:
        return None
    window = get(K.SLIDING_WINDOW)
    window = window if isinstance(window, int) and not isinstance(window, bool) else None
    if facts_sw.window_fixed is not None:  # llama4: the graph's chunk whatever the key says; 0 turns the layers off
        if window == 0:
            return None
        window = facts_sw.window_fixed
    if not window:
        if facts_sw.window_default is None:
            return None  # gemma3 without a window: every layer is global
        window = facts_sw.window_default
    pattern = get(K.SLIDING_WINDOW_PATTERN)
    if isinstance(pattern, (list, tuple, np.ndarray)) and len(pattern) <= n_layer:
        flags = [bool(v) for v in pattern]
        layers, source = tuple(flags + [False] * (n_layer - len(flags))), "key"
    else:
        given = isinstance(pattern, int) and not isinstance(pattern, bool)
        period = pattern if given else facts_sw.period
        layers = tuple(period == 0 or il % period < period - 1 for il in range(n_layer))
        source = "key" if given else "default"
    base = get(K.ROPE_FREQ_BASE_SWA)
    if isinstance(base, (int, float)) and not isinstance(base, bool):
        base_source = "key"
    elif facts_sw.base_default is not None:
        base, base_source = facts_sw.base_default, "default"
    else:
        base, base_source = freq_base, "global"
    scale = freq_scale if facts_sw.scale_follows_global else 1.0
    return SlidingState(int(window), layers, source, float(base), base_source, scale)


def _read_hybrid(gf: GGUFFile, st: RopeState, key) -> None:
    """The recurrent layers of a hybrid model (no rope op there: added to ``no_rope_layers``) and a multi-section
    rope's sections, as llama.cpp's loader reads them (both readings: the keys involved are read by every
    architecture that has them)."""
    facts = st.facts
    if facts.rope_type in ("mrope", "imrope"):
        raw = gf.get(key(K.ROPE_DIMENSION_SECTIONS))
        if isinstance(raw, (list, tuple, np.ndarray)) and len(raw) <= K.MROPE_SECTIONS and all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in raw):
            st.sections = tuple(int(v) for v in raw) + (0,) * (K.MROPE_SECTIONS - len(raw))
            # ggml_compute_forward_rope_flt asserts one of t, h, w > 0; ggml_mrope_cache_init that they sum to at
            # most the head size
            if (any(v < 0 for v in st.sections) or not any(st.sections[:3])
                    or (st.head_dim and sum(st.sections) > st.head_dim)):
                st.problems.append((key(K.ROPE_DIMENSION_SECTIONS), f"sections {list(st.sections)}: each must be >= 0, "
                                                                    f"one of the first three > 0, and they sum to at most "
                                                                    f"the head size {st.head_dim} (ggml aborts otherwise)"))
        elif key(K.ROPE_DIMENSION_SECTIONS) in gf.fields:
            st.problems.append((key(K.ROPE_DIMENSION_SECTIONS), f"{key(K.ROPE_DIMENSION_SECTIONS)} must be an array "
                                                                f"of at most {K.MROPE_SECTIONS} integers"))
    layers = recurrent_layers(facts, st.n_layer, lambda t: gf.get(key(t)))
    if layers is None:
        st.problems.append((key(K.FULL_ATTENTION_INTERVAL), "a full_attention_interval of 0: llama.cpp divides by it"))
        return
    if layers:
        st.recurrent_layers = layers
        st.no_rope_layers = tuple(sorted(set(st.no_rope_layers) | set(layers)))


def recurrent_layers(facts: LoaderArch, n_layer: int | None, get) -> tuple[int, ...] | None:
    """The layers of a hybrid model llama.cpp builds without attention (``LoaderArch.recurrent``), from the keys
    as ``get(template)`` returns their values (None when absent); None when the keys make llama.cpp divide by 0."""
    rec = facts.recurrent
    if rec is None or not n_layer or not 0 < n_layer <= K.MAX_LAYERS:
        return ()
    if rec.marked_by == "kv-heads":
        kv = get(K.HEAD_COUNT_KV)
        if isinstance(kv, (list, tuple, np.ndarray)):
            return tuple(il for il, v in enumerate(list(kv)[:n_layer]) if int(v) == 0)
        return ()
    flags = get(K.RECURRENT_LAYERS)
    if isinstance(flags, (list, tuple, np.ndarray)) and len(flags) >= n_layer:
        return tuple(il for il in range(n_layer) if bool(flags[il]))
    interval = get(K.FULL_ATTENTION_INTERVAL)
    if not isinstance(interval, int) or isinstance(interval, bool):
        interval = rec.interval_default
    if interval == 0:
        return None
    return tuple(il for il in range(n_layer) if (il + 1) % interval != 0)


def _readers(template: str):
    return ((name, rec) for name, rec in ARCHS.items() if rec.reads_key(template))


def _read_alibi(gf: GGUFFile, st: RopeState, key, reading: str) -> None:
    """ALiBi: hard-coded by some graphs, read from attention.max_alibi_bias by others (0 means off)."""
    bias_key = key(K.MAX_ALIBI_BIAS)
    bias_present = bias_key in gf.fields
    bias_value = scalar(gf, bias_key)
    facts = st.facts
    resolved = facts.alibi_bias(st.n_layer, bias_value)
    if resolved is not None:
        bias, source = resolved
        if bias_present and source != "key":
            if reading == KEYS and bias_value is not None and bias_value > 0:
                bias, source = float(bias_value), "key"
            else:
                st.ignored.append(IgnoredKey(bias_key, gf.get(bias_key), (),
                                             f"{bias_key} = {gf.get(bias_key)} is ignored: llama.cpp hard-codes "
                                             f"max_bias {bias:g} for {st.arch}"))
        st.encoding, st.alibi_max_bias, st.alibi_source = "alibi", bias, source
        if not bias:
            st.encoding = "none"
            st.notes.append(f"{bias_key} is missing or 0: llama.cpp runs {st.arch} without ALiBi")
        return
    if bias_present:
        if reading == KEYS and bias_value is not None and bias_value > 0:
            st.encoding, st.alibi_max_bias, st.alibi_source = "alibi", float(bias_value), "key"
            return
        readers = tuple(sorted(n for n, _ in _readers(K.MAX_ALIBI_BIAS)))
        st.ignored.append(IgnoredKey(bias_key, bias_value, readers,
                                     f"{bias_key} is ignored by llama.cpp's {st.arch} loader (read only by "
                                     f"{', '.join(readers)})"))
    if not facts.uses_rope(st.n_layer) and facts.known:
        st.encoding = "none"
        if facts.rope_layer_counts:
            st.positionless = (f"llama.cpp's {st.arch} applies rope only at {'/'.join(map(str, facts.rope_layer_counts))} "
                               f"layers and ALiBi only at {'/'.join(str(n) for n, _ in facts.alibi_by_layers)}: with "
                               f"{st.n_layer} layers it runs without any position encoding")
            st.notes.append(st.positionless)


def _read_rope_tensors(gf: GGUFFile, st: RopeState, reading: str) -> None:
    """Which rope tensors llama.cpp loads for this architecture and scaling type (load_tensors)."""
    notes = st.notes
    st.rope_freqs = _read_rope_tensor(gf, K.ROPE_FREQS_TENSOR, notes)
    st.long_factors = _read_rope_tensor(gf, K.ROPE_FACTORS_LONG_TENSOR, notes)
    st.short_factors = _read_rope_tensor(gf, K.ROPE_FACTORS_SHORT_TENSOR, notes)
    facts = st.facts
    has_longrope = st.long_factors is not None or st.short_factors is not None
    if facts.known and reading == LLAMA_CPP:
        st.longrope_loaded = facts.loads_longrope(st.scaling_type) and has_longrope
        st.rope_freqs_loaded = facts.loads_rope_freqs(st.scaling_type) and st.rope_freqs is not None
        st.longrope_used = st.longrope_loaded and facts.applies_rope_factors
        st.rope_freqs_used = st.rope_freqs_loaded and facts.applies_rope_factors
        if (st.longrope_loaded or st.rope_freqs_loaded) and not facts.applies_rope_factors:
            notes.append(f"llama.cpp's {st.arch} loads the rope tensors but its graph never applies them")
    else:  # the keys' reading (or an architecture llama.cpp does not know): every rope tensor present counts
        st.rope_freqs_used = st.rope_freqs is not None and not (st.scaling_type == "longrope" and has_longrope)
        st.longrope_used = not st.rope_freqs_used and has_longrope
        st.rope_freqs_loaded, st.longrope_loaded = st.rope_freqs_used, st.longrope_used
        if not facts.known and (st.rope_freqs is not None or has_longrope):
            notes.append(f"ropetool has no facts about {st.arch}: assuming llama.cpp loads the rope tensors present")
    if st.rope_freqs_used and st.rope_freqs is not None:
        st.frozen_pairs = tuple(int(i) for i in np.nonzero(st.rope_freqs >= FROZEN_FACTOR)[0])
    n_rot = st.n_rot
    for name, arr in ((K.ROPE_FREQS_TENSOR, st.rope_freqs if st.rope_freqs_used else None),
                      (K.ROPE_FACTORS_LONG_TENSOR, st.long_factors if st.longrope_used else None),
                      (K.ROPE_FACTORS_SHORT_TENSOR, st.short_factors if st.longrope_used else None)):
        if arr is not None and n_rot and len(arr) != n_rot // 2:
            notes.append(f"{name} has {len(arr)} entries, not rope.dimension_count/2 = {n_rot // 2}: "
                         "llama.cpp refuses the file")
            if name == K.ROPE_FREQS_TENSOR:
                st.rope_freqs_used = st.rope_freqs_loaded = False
                st.frozen_pairs = ()
            else:
                st.longrope_used = st.longrope_loaded = False


def _check_plausible(st: RopeState, a: str) -> None:
    """Values no real model has (and that would break the rope math): recorded as problems."""
    bad = st.problems
    if st.n_rot is not None and not (2 <= st.n_rot <= MAX_ROT and st.n_rot % 2 == 0):
        bad.append((K.k(K.ROPE_DIMENSION_COUNT, a), f"rotary dimension {st.n_rot} is not an even number in 2..{MAX_ROT}"))
        st.n_rot = None
    if st.n_head is not None and not 1 <= st.n_head <= MAX_HEADS:
        bad.append((K.k(K.HEAD_COUNT, a), f"head count {st.n_head} is implausible"))
        st.n_head = None
    if st.encoding == "rope":
        if not (math.isfinite(st.freq_base) and st.freq_base > 1):
            bad.append((K.k(K.ROPE_FREQ_BASE, a), f"freq_base {st.freq_base} must be a finite number > 1"))
        if st.sliding is not None and not (math.isfinite(st.sliding.freq_base) and st.sliding.freq_base > 1):
            bad.append((K.k(K.ROPE_FREQ_BASE_SWA, a), f"the sliding layers' base {st.sliding.freq_base} must be a "
                                                       "finite number > 1"))
        if not (math.isfinite(st.freq_scale) and st.freq_scale > 0):
            bad.append((K.k(K.ROPE_SCALING_FACTOR, a), f"scaling factor {st.factor} gives freq_scale {st.freq_scale}"))
        if not (math.isfinite(st.rope_attn_factor) and math.isfinite(st.magnitude)):
            bad.append((K.k(K.ROPE_SCALING_ATTN_FACTOR, a), f"attention factor {st.rope_attn_factor} is not finite"))
        if st.yarn_active and not (st.n_ctx_orig and st.n_ctx_orig > 0):
            bad.append((K.k(K.ROPE_SCALING_ORIG_CTX, a), "YaRN needs a positive original context"))
        if st.yarn_active and not (st.beta_fast > 0 and st.beta_slow > 0):
            bad.append((K.k(K.ROPE_YARN_BETA_FAST, a), "YaRN betas must be > 0"))
    for name, arr in ((K.ROPE_FREQS_TENSOR, st.rope_freqs), (K.ROPE_FACTORS_LONG_TENSOR, st.long_factors),
                      (K.ROPE_FACTORS_SHORT_TENSOR, st.short_factors)):
        if arr is not None and not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
            bad.append((name, "holds values that are not finite and positive"))


@dataclass(frozen=True)
class KeyEdit:
    """A nearby misreading of a file: some keys set or removed, some rope tensors hidden."""

    kind: str  # what moves: "no-extension", "factor", "base", "original-context", "max-bias", ...
    label: str
    set: dict = field(default_factory=dict)
    remove: tuple = ()
    hide: tuple = ()


def key_misreadings(st: RopeState) -> list[KeyEdit]:
    """The nearest wrong readings of a file's keys (check's alternatives): each key that matters moved x2
    and /2, the extension removed, a rope tensor or the attention factor dropped; ALiBi's bias moved or off."""
    a = st.arch or "?"
    out: list[KeyEdit] = []

    def add(kind, label, set_=None, remove=(), hide=()):
        out.append(KeyEdit(kind, label, dict(set_ or {}), tuple(remove), tuple(hide)))

    def key(template):
        return K.k(template, a)

    if st.encoding == "alibi":
        for f, word in ((2.0, "x2"), (0.5, "/2")):
            add("max-bias", f"{key(K.MAX_ALIBI_BIAS)} = {number(st.alibi_max_bias * f)} ({word})",
                {key(K.MAX_ALIBI_BIAS): st.alibi_max_bias * f})
        add("alibi-off", "no ALiBi at all")
        return out
    scaling = [key(t) for t in (K.ROPE_SCALING_TYPE, K.ROPE_SCALING_FACTOR, K.ROPE_SCALE_LINEAR, K.ROPE_SCALING_ATTN_FACTOR,
                                K.ROPE_YARN_EXT_FACTOR, K.ROPE_YARN_ATTN_FACTOR, K.ROPE_YARN_LOG_MUL)]
    extended = st.freq_scale != 1 or st.yarn_active or st.rope_freqs_used or st.longrope_used or st.magnitude != 1
    if extended:
        add("no-extension", f"plain RoPE (base {number(st.freq_base)}): no scaling keys, no rope tensors",
            {key(K.ROPE_SCALING_TYPE): "none"}, remove=scaling[1:], hide=K.ROPE_TENSORS)
    for f, word in ((2.0, "x2"), (0.5, "/2")):
        if st.factor and st.freq_scale != 1 and st.factor * f >= 1:
            add("factor", f"{key(K.ROPE_SCALING_FACTOR)} = {number(st.factor * f)} ({word})",
                {key(K.ROPE_SCALING_FACTOR): st.factor * f})
        add("base", f"{key(K.ROPE_FREQ_BASE)} = {number(st.freq_base * f)} ({word})", {key(K.ROPE_FREQ_BASE): st.freq_base * f})
        if (st.yarn_active or st.longrope_used) and st.n_ctx_orig:
            add("original-context", f"{key(K.ROPE_SCALING_ORIG_CTX)} = {int(st.n_ctx_orig * f)} ({word})",
                {key(K.ROPE_SCALING_ORIG_CTX): int(st.n_ctx_orig * f)})
    if not extended:
        add("factor", f"linear interpolation x2 ({key(K.ROPE_SCALING_TYPE)} = linear, factor 2)",
            {key(K.ROPE_SCALING_TYPE): "linear", key(K.ROPE_SCALING_FACTOR): 2.0})
    if st.sliding is not None and st.sliding.freq_base_source != "global":
        for f, word in ((2.0, "x2"), (0.5, "/2")):
            add("sliding-base", f"{key(K.ROPE_FREQ_BASE_SWA)} = {number(st.sliding.freq_base * f)} ({word}): the "
                                f"sliding-window layers' base", {key(K.ROPE_FREQ_BASE_SWA): st.sliding.freq_base * f})
    if st.rope_freqs_used:
        add("rope-tensor", f"without {K.ROPE_FREQS_TENSOR} (the tensor ignored)", hide=[K.ROPE_FREQS_TENSOR])
    if abs(st.rope_attn_factor - 1) > 1e-9:
        add("attention-factor", f"without {key(K.ROPE_SCALING_ATTN_FACTOR)}", remove=[key(K.ROPE_SCALING_ATTN_FACTOR)])
    return out


__all__ = ["recurrent_layers", "TemperatureState", "temperature_state", "KeyEdit", "key_misreadings", "RopeState", "SlidingState",
           "sliding_state", "IgnoredKey", "read_state", "scalar", "first_int", "LLAMA_CPP", "KEYS", "SCALING_TYPES"]
