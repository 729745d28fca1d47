"""Lint rules for a GGUF's RoPE/ALiBi metadata: what llama.cpp will ignore, refuse or silently default.

Every rule has a stable id, a severity and a one-line message (the table is :data:`RULES`, and
docs/inspect.md lists it).  Severities:

* ``error``: llama.cpp refuses the file, aborts, or computes something other than what the file
  says it holds;
* ``warning``: a setting llama.cpp ignores or defaults in a way the writer probably did not mean;
* ``info``: worth knowing, never a failure.

``ropetool inspect --strict`` exits 1 when there is a finding of severity warning or error.
:func:`lint_file` takes an opened model (:class:`ropetool.model.ModelFile`, whose ``findings`` call it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.families import Dims, family_for_arch
from ropetool.io.gguf_file import GGUFFile
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.state import SCALING_TYPES, RopeState, first_int
from ropetool.llamacpp.validity import key_problems
from ropetool.words import ranges

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True)
class Finding:
    id: str
    severity: str
    message: str
    key: str | None = None  # the key (or tensor name) the finding is about

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.severity} {self.id}: {self.message}"


# id -> (severity, what it checks).  Ids are stable: scripts may match on them.
RULES: dict[str, tuple[str, str]] = {
    "unknown-scaling-type": (ERROR, "rope.scaling.type is not none/linear/yarn/longrope: llama.cpp aborts (GGML_ASSERT)"),
    "wrong-key-type": (ERROR, "a rope/context/shape key, general.file_type/name or a tokenizer key has a GGUF type llama.cpp "
                              "does not accept (it throws 'wrong type')"),
    "missing-architecture": (ERROR, "no general.architecture string: llama.cpp cannot load the file"),
    "missing-context-length": (ERROR, "no {arch}.context_length: llama.cpp refuses to load the model"),
    "missing-key": (ERROR, "no {arch}.embedding_length or {arch}.block_count (or, for the architectures ropetool converts, "
                           "the head count, feed-forward length or norm epsilon): llama.cpp refuses the file"),
    "missing-tensor": (ERROR, "a tensor llama.cpp's loader requires for this architecture is absent"),
    "shape-mismatch": (ERROR, "the shape keys (block_count, embedding_length, head counts, feed_forward_length, key/value "
                              "length, per-layer arrays) disagree with the tensors: llama.cpp refuses the file"),
    "rope-tensor-shape": (ERROR, "rope_freqs / rope_factors_* is not F32 with rope.dimension_count/2 entries"),
    "implausible-value": (ERROR, "a value no model can have, or that llama.cpp aborts on: non-finite numbers, freq_base <= 1, "
                                 "an odd rotary dimension, non-positive factors, a negative norm epsilon, block_count 0 "
                                 "or above 512, an alignment that is not a power of two from 32 to 65536"),
    "rope-dim-mismatch": (ERROR, "rope.dimension_count differs from the head dimension on an arch that requires them equal"),
    "llama3-without-rope-freqs": (ERROR, "ropetool recorded llama3 rope but llama.cpp gets no rope_freqs tensor"),
    "rope-tensor-unused": (ERROR, "a rope tensor this architecture (and scaling type) does not load: llama.cpp refuses "
                                  "files with tensors it does not use ('wrong number of tensors')"),
    "unknown-tensor": (ERROR, "a tensor whose name no llama.cpp loader creates (no dot, a NUL byte, a name of no "
                              "architecture): llama.cpp refuses the file ('wrong number of tensors')"),
    "unknown-tokenizer": (ERROR, "tokenizer.ggml.model, or a BPE vocabulary's tokenizer.ggml.pre, is not a name llama.cpp "
                                 "knows: it refuses the file"),
    "tokenizer-array-length": (ERROR, "tokenizer.ggml.scores or token_type has fewer entries than tokenizer.ggml.tokens: "
                                      "llama.cpp refuses the file"),
    "special-token-out-of-range": (ERROR, "a special-token id past the vocabulary: llama.cpp ignores it and uses its "
                                          "default id instead"),
    "tensor-layout": (ERROR, "tensors are not laid out in order at aligned offsets, as llama.cpp requires"),
    "yarn-no-original-context": (WARNING, "yarn without rope.scaling.original_context_length: llama.cpp uses context_length as the original"),
    "ignored-key": (WARNING, "a key this architecture's llama.cpp loader never reads (e.g. yarn_beta_fast on llama)"),
    "no-position-encoding": (WARNING, "llama.cpp's graph applies neither rope nor ALiBi at this block_count (baichuan: "
                                      "rope only at 32 layers, ALiBi only at 40): the model runs without positions"),
    "alibi-key-ignored": (WARNING, "attention.max_alibi_bias on an architecture that hard-codes the ALiBi bias"),
    "context-length-mismatch": (WARNING, "context_length is not factor x original_context_length (below it, llama-server "
                                         "caps each slot's context at context_length)"),
    "sliding-window-past-training": (WARNING, "the sliding-window layers' window is longer than the trained context "
                                              "while their rope stays unscaled: they see distances they were not trained on"),
    "temperature-period-from-context": (WARNING, "an attention temperature (mistral3) without "
                                                 "rope.scaling.original_context_length: llama.cpp steps it every "
                                                 "context_length tokens, not every trained context"),
    "legacy-scale-linear": (WARNING, "the legacy rope.scale_linear key (read only when rope.scaling.factor is missing)"),
    "factor-without-type": (WARNING, "a scaling factor without rope.scaling.type: llama.cpp defaults the type to linear"),
    "longrope-factors-missing": (WARNING, "scaling type longrope without rope_factors_long/short tensors"),
    "provenance-mismatch": (WARNING, "the method ropetool recorded is not what llama.cpp will compute from the keys and tensors"),
    "runtime-flags-miss-sliding": (INFO, "llama.cpp's runtime rope flags (--rope-freq-base, --rope-freq-scale, "
                                         "--rope-scale) do not reach the sliding-window (or chunked) layers: they keep "
                                         "the file's rope.freq_base_swa and scale; only the file's keys change them"),
    "unknown-architecture": (INFO, "an architecture llama.cpp does not know (as vendored by the pinned llama-cpp-python): "
                                   "some checks are skipped"),
    # Hybrid models (issue 25): what a rope setting cannot reach.
    "sections-leave-pairs-still": (WARNING, "a multi-section rope's rope.dimension_sections put some rotated pairs in "
                                            "ggml's 4th section, which llama.cpp holds at position 0 for text: those "
                                            "pairs never turn (transformers turns every pair by the token's position)"),
    "no-attention-layer": (WARNING, "a hybrid model whose every layer is recurrent (no attention): no rope setting "
                                    "reaches any layer"),
    "extension-reaches-attention-only": (INFO, "a context extension on a hybrid model: it reaches the attention layers "
                                               "only; the recurrent layers (linear attention, short convolution) have no "
                                               "rope, and no setting changes them"),
}


def _hybrid_findings(model) -> list[Finding]:
    st = model.state
    out = []
    if st.encoding != "rope":
        return out
    still = st.unturned_pairs
    if still:
        key = model.key(K.ROPE_DIMENSION_SECTIONS)
        out.append(_f("sections-leave-pairs-still",
                      f"{key} = {list(st.sections)} puts pair{'s' if len(still) > 1 else ''} {ranges(still)} of the "
                      f"{st.n_rot // 2} rotated pairs in the 4th section, which llama.cpp holds at position 0 for text: "
                      f"{'they' if len(still) > 1 else 'it'} never turn{'' if len(still) > 1 else 's'}", key))
    rec = st.recurrent_layers
    if rec and st.n_layer and len(rec) >= st.n_layer:
        out.append(_f("no-attention-layer", f"every one of the {st.n_layer} layers is {st.facts.recurrent.kind} in "
                                            f"llama.cpp's {st.arch}: no rope setting reaches any layer",
                      model.key(K.BLOCK_COUNT)))
    elif rec and model.meant.method not in ("none", "unknown"):
        out.append(_f("extension-reaches-attention-only",
                      f"{model.meant.method} reaches the {len(st.rope_layers)} attention layer"
                      f"{'s' if len(st.rope_layers) != 1 else ''} ({ranges(st.rope_layers)}) only: layers {ranges(list(rec))} "
                      f"are {st.facts.recurrent.kind}, without rope: the setting does not change them"))
    return out


def _f(rule: str, message: str, key: str | None = None) -> Finding:
    return Finding(rule, RULES[rule][0], message, key)


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def lint_file(model) -> list[Finding]:
    """All findings for an opened model (a ModelFile: its ``header``, ``state`` and ``record``), in rule-table order."""
    gf, st, arch = model.header, model.state, model.arch
    out: list[Finding] = []
    if arch is None:
        return [_f("missing-architecture", f"no {K.ARCHITECTURE} string: llama.cpp cannot load this file", K.ARCHITECTURE)]

    key = model.key

    def has(template):
        return key(template) in gf.fields

    # -- errors --------------------------------------------------------------------------
    raw_type = st.scaling_type_raw
    if has(K.ROPE_SCALING_TYPE) and (raw_type is None or raw_type not in SCALING_TYPES):
        shown = raw_type if raw_type is not None else gf.fields[key(K.ROPE_SCALING_TYPE)].type_name
        out.append(_f("unknown-scaling-type",
                      f"{key(K.ROPE_SCALING_TYPE)} = {shown!r}: llama.cpp knows only {', '.join(SCALING_TYPES)} and aborts on anything else",
                      key(K.ROPE_SCALING_TYPE)))
    key_issues = key_problems(gf)
    for p in key_issues:
        out.append(_f(p.rule, p.why, p.key))
    if not has(K.CONTEXT_LENGTH):
        out.append(_f("missing-context-length", f"no {key(K.CONTEXT_LENGTH)}: llama.cpp requires it", key(K.CONTEXT_LENGTH)))
    half = st.n_rot // 2 if st.n_rot else None
    for name in K.ROPE_TENSORS:
        t = gf.tensor(name)
        if t is None:
            continue
        problems = []
        if t.type.name != "F32":
            problems.append(f"type {t.type.name} (must be F32)")
        if len(t.shape) != 1:
            problems.append(f"shape {list(t.shape)} (must be 1-D)")
        if half is not None and t.n_elements != half:
            problems.append(f"{t.n_elements} entries (must be rope.dimension_count/2 = {half})")
        if problems:
            out.append(_f("rope-tensor-shape", f"{name} has {', '.join(problems)}: llama.cpp refuses the file", name))
    for what, why in st.problems:
        if not any(p.key == what for p in key_issues):
            out.append(_f("implausible-value", f"{what}: {why}", what))
    if not any(p.rule in ("wrong-key-type", "implausible-value", "shape-mismatch", "rope-dim-mismatch") for p in key_issues):
        out += _family_findings(gf, arch, st.recurrent_layers)
    record = model.record
    method, params = (record.method, record.params) if record is not None else (None, {})
    if method == "llama3" and not st.rope_freqs_used:
        why = "no rope_freqs tensor" if st.rope_freqs is None else f"a rope_freqs tensor that llama.cpp's {arch} does not load"
        out.append(_f("llama3-without-rope-freqs",
                      f"{K.RT_METHOD} is llama3 but the file has {why}: llama.cpp runs plain RoPE", K.ROPE_FREQS_TENSOR))
    if not gf.layout_is_canonical():
        out.append(_f("tensor-layout", "tensor offsets are not consecutive aligned blocks in tensor-info order: llama.cpp "
                                       "refuses the file (any `ropetool set` rewrite lays them out again)"))

    # -- warnings ------------------------------------------------------------------------
    if st.scaling_type_raw == "yarn" and not has(K.ROPE_SCALING_ORIG_CTX):
        out.append(_f("yarn-no-original-context",
                      f"yarn without {key(K.ROPE_SCALING_ORIG_CTX)}: llama.cpp takes the original context from "
                      f"{key(K.CONTEXT_LENGTH)} ({st.context_length}), which shifts the YaRN ramp", key(K.ROPE_SCALING_ORIG_CTX)))
    if st.encoding == "none" and st.facts.known and st.facts.rope_layer_counts:
        why = st.positionless or f"llama.cpp's {arch} applies no position encoding with {st.n_layer} layers"
        out.append(_f("no-position-encoding", why, key(K.BLOCK_COUNT)))
    for ignored in st.ignored:
        hard_coded = ignored.key == key(K.MAX_ALIBI_BIAS) and not ignored.readers
        out.append(_f("alibi-key-ignored" if hard_coded else "ignored-key", ignored.why, ignored.key))
    factor = st.factor if st.factor_source == "scaling.factor" else None
    orig = st.orig_ctx_key
    ctx = st.context_length
    if (isinstance(factor, float) and factor > 1 and isinstance(orig, int) and not isinstance(orig, bool)
            and isinstance(ctx, int) and st.scaling_type in ("linear", "yarn", "longrope")):
        want = int(round(factor * orig))
        if ctx != want:
            out.append(_f("context-length-mismatch",
                          f"{key(K.CONTEXT_LENGTH)} = {ctx} but factor {factor:g} x original {orig} = {want}: "
                          f"llama.cpp treats {ctx} as the trained context"
                          + (f", and llama-server caps each slot's context at {ctx}" if ctx < want else ""),
                          key(K.CONTEXT_LENGTH)))
    elif isinstance(orig, int) and isinstance(ctx, int) and not isinstance(orig, bool) and ctx < orig:
        out.append(_f("context-length-mismatch",
                      f"{key(K.CONTEXT_LENGTH)} = {ctx} is below the original context {orig}", key(K.CONTEXT_LENGTH)))
    sw = st.sliding
    scaled_by_tensor = st.rope_freqs_used and st.facts.sliding is not None and st.facts.sliding.rope_freqs  # llama4
    if (sw is not None and sw.count and sw.freq_scale == 1 and not scaled_by_tensor and st.n_ctx_orig
            and sw.window > st.n_ctx_orig
            and (st.context_length or 0) > st.n_ctx_orig):
        out.append(_f("sliding-window-past-training",
                      f"{sw.count} sliding-window layers attend over {sw.window} tokens with their rope unscaled (base "
                      f"{sw.freq_base:g}), but the model was trained on {st.n_ctx_orig}: past that distance they run "
                      "untrained", key(K.SLIDING_WINDOW)))
    if sw is not None and sw.count and st.encoding == "rope":
        # llama_model::get_rope_freq_base/scale: a sliding layer takes hparams.rope_freq_base/scale_train_swa (set at load
        # from the file), every other layer cparams' (the runtime flags, else the file's)
        kind = st.facts.sliding.attention if st.facts.sliding is not None else "sliding-window"
        slides = [il for il, s in enumerate(sw.layers) if s]
        others = [il for il in st.rope_layers if il not in set(slides)]
        reach = (f"they reach only the other layers with rope ({ranges(others)})" if others else
                 "no other layer has rope, so the flags change nothing")
        out.append(_f("runtime-flags-miss-sliding",
                      f"llama.cpp's --rope-freq-base/--rope-freq-scale do not reach the {sw.count} {kind} layers "
                      f"({ranges(slides)}): they keep base {sw.freq_base:g} and freq_scale {sw.freq_scale:g} from the file; "
                      f"{reach} (set the rope in the file: ropetool set-rope)", key(K.ROPE_FREQ_BASE_SWA)))
    temp = st.temperature
    if temp is not None and temp.period_source == "context_length":
        out.append(_f("temperature-period-from-context",
                      f"{key(K.ATTENTION_TEMPERATURE_SCALE)} = {temp.scale:g} without {key(K.ROPE_SCALING_ORIG_CTX)}: "
                      f"llama.cpp's {arch} steps the queries' temperature every {temp.period} tokens (context_length); "
                      "transformers steps it every original context, so an extended context_length moves it",
                      key(K.ROPE_SCALING_ORIG_CTX)))
    if has(K.ROPE_SCALE_LINEAR):
        legacy = gf.get(key(K.ROPE_SCALE_LINEAR))
        extra = (f"; {key(K.ROPE_SCALING_FACTOR)} = {factor:g} wins" if isinstance(factor, float) and factor
                 else "; use rope.scaling.type/factor")
        out.append(_f("legacy-scale-linear", f"{key(K.ROPE_SCALE_LINEAR)} = {legacy} is a legacy key{extra}",
                      key(K.ROPE_SCALE_LINEAR)))
    if st.scaling_type_raw is None and st.factor and st.factor != 1:
        out.append(_f("factor-without-type",
                      f"scaling factor {st.factor:g} ({st.factor_source}) without {key(K.ROPE_SCALING_TYPE)}: "
                      "llama.cpp defaults the type to linear", key(K.ROPE_SCALING_TYPE)))
    if st.facts.known:
        for name, present, used in ((K.ROPE_FREQS_TENSOR, st.rope_freqs is not None, st.rope_freqs_loaded),
                                    (K.ROPE_FACTORS_LONG_TENSOR, st.long_factors is not None, st.longrope_loaded),
                                    (K.ROPE_FACTORS_SHORT_TENSOR, st.short_factors is not None, st.longrope_loaded)):
            if present and not used and not any(x.key == name for x in out):
                out.append(_f("rope-tensor-unused",
                              f"{name} is not loaded by llama.cpp's {arch} (scaling type {st.scaling_type}), so llama.cpp "
                              "refuses the file (wrong number of tensors)", name))
        if (st.scaling_type == "longrope" and st.facts.loads_longrope("longrope")
                and st.long_factors is None and st.short_factors is None):
            out.append(_f("longrope-factors-missing",
                          f"scaling type longrope but no {K.ROPE_FACTORS_LONG_TENSOR}/{K.ROPE_FACTORS_SHORT_TENSOR}: "
                          "llama.cpp runs unscaled frequencies", key(K.ROPE_SCALING_TYPE)))
    if method is not None and not any(x.severity == ERROR for x in out):
        out.extend(_provenance_findings(gf, st, method, params))
    if not st.facts.known:
        out.append(_f("unknown-architecture",
                      f"llama.cpp (as ropetool knows it) has no architecture {arch}: rope tensors are assumed loaded "
                      "and set-rope assumes no rope_freqs/longrope support", K.ARCHITECTURE))
    out += _hybrid_findings(model)
    order = list(RULES)
    out.sort(key=lambda x: order.index(x.id))
    return out


def _family_findings(gf: GGUFFile, arch: str, recurrent=()) -> list[Finding]:
    """For an architecture ropetool has a family for: the tensors its llama.cpp loader requires, and each
    tensor's shape against the shape keys (llama.cpp refuses a file where either is wrong)."""
    family = family_for_arch(arch)
    n_layer = gf.get(K.k(K.BLOCK_COUNT, arch))
    if family is None or not isinstance(n_layer, int):
        return []
    names = {t.name for t in gf.tensors}
    n_expert = first_int(gf, K.k(K.EXPERT_COUNT, arch)) or 0
    dense_lead = (first_int(gf, K.k(K.LEADING_DENSE_BLOCK_COUNT, arch)) or 0) if family.dense_lead_key else 0
    step = first_int(gf, K.k(K.INTERLEAVE_MOE_LAYER_STEP, arch)) or 0 if family.moe_step_key else 1
    missing = [n for n in family.required_tensors(n_layer, experts=n_expert > 0, dense_lead=dense_lead, recurrent=recurrent,
                                                  moe_step=step) if n not in names]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return [_f("missing-tensor", f"no {', '.join(missing[:3])}{more}: llama.cpp's {arch} loader requires "
                                     f"{'them' if len(missing) > 1 else 'it'} and refuses the file", missing[0])]

    def get(template):
        return first_int(gf, K.k(template, arch))

    needed = (K.HEAD_COUNT, K.FEED_FORWARD_LENGTH, family.eps_key) + (
        (K.EXPERT_COUNT, K.EXPERT_USED_COUNT) if family.moe == "always" else ()) + family.required_keys
    absent = [K.k(t, arch) for t in needed if K.k(t, arch) not in gf.fields]
    if absent:  # optional to llama.cpp's common loader (some architectures have none), needed by every family's
        return [_f("missing-key", f"no {' or '.join(absent)}: llama.cpp's {arch} loader needs "
                                  f"{'them' if len(absent) > 1 else 'it'} and refuses the file", absent[0])]

    n_embd, n_head, n_ff = get(K.EMBEDDING_LENGTH), get(K.HEAD_COUNT), get(K.FEED_FORWARD_LENGTH)
    tokens = gf.fields.get("tokenizer.ggml.tokens")
    embd = gf.tensor("token_embd.weight")
    if not (n_embd and n_head and n_ff and embd is not None and len(embd.shape) == 2):
        return []
    if any(gf.fields[K.k(t, arch)].is_array for t in K.PER_LAYER if K.k(t, arch) in gf.fields):
        return []  # per-layer sizes: not a family ropetool converts
    head_dim = get(K.KEY_LENGTH) or n_embd // n_head
    head_dim_v = get(K.VALUE_LENGTH) or head_dim
    mla = {}
    if family.mla:  # the decompressed heads (the *_mla sizes; key_length is llama.cpp's MQA view of the latent)
        head_dim, head_dim_v = get(K.KEY_LENGTH_MLA) or head_dim, get(K.VALUE_LENGTH_MLA) or head_dim_v
        mla = {"n_lora_q": get(K.Q_LORA_RANK) or 0, "n_lora_kv": get(K.KV_LORA_RANK) or 0,
               "head_dim_rope": get(K.ROPE_DIMENSION_COUNT) or 0}
    used = get(K.EXPERT_USED_COUNT) or 1
    # llama.cpp's experts: llama sizes them by feed_forward_length; the others by expert_feed_forward_length,
    # else n_ff / expert_used_count; a shared expert by its own length, else n_ff.
    n_ff_exp = n_ff if family.moe == "optional" else (get(K.EXPERT_FEED_FORWARD_LENGTH) or n_ff // used)
    # deepseek2's shared experts: expert_shared_count of n_ff_exp each
    n_ff_shexp = n_ff_exp * (get(K.EXPERT_SHARED_COUNT) or 0) if family.shared_experts_key else (
        n_ff_exp * family.shared_experts if family.shared_experts else get(K.EXPERT_SHARED_FEED_FORWARD_LENGTH) or n_ff)
    hybrid = {}
    if family.linear_attention:  # the Gated DeltaNet's sizes as llama.cpp's loader takes them (ssm.*)
        state = get(K.SSM_STATE_SIZE) or 0
        hybrid = {"n_lin_k_heads": get(K.SSM_GROUP_COUNT) or 0, "n_lin_v_heads": get(K.SSM_TIME_STEP_RANK) or 0,
                  "lin_head_k": state, "lin_head_v": state, "conv_kernel": get(K.SSM_CONV_KERNEL) or 0}
    dims = Dims(n_embd, n_head, get(K.HEAD_COUNT_KV) or n_head, head_dim, n_ff,
                tokens.count if tokens is not None and tokens.is_array else embd.shape[1], head_dim_v,
                n_expert=n_expert, n_ff_exp=n_ff_exp, n_ff_shexp=n_ff_shexp, **mla, **hybrid)
    shapes = family.tensor_shapes(dims)
    # the sliding layers' own head size (attention.key_length_swa, read by llama.cpp for every architecture: gemma4's)
    head_swa, pattern = get(K.KEY_LENGTH_SWA), gf.get(K.k(K.SLIDING_WINDOW_PATTERN, arch))
    swa_shapes, swa = shapes, set()
    if head_swa and head_swa != head_dim and isinstance(pattern, (list, tuple, np.ndarray)):
        from dataclasses import replace

        swa = {il for il, slides in enumerate(pattern) if slides}
        swa_shapes = family.tensor_shapes(replace(dims, head_dim=head_swa, head_dim_v=get(K.VALUE_LENGTH_SWA) or head_swa))
    out = []
    for t in gf.tensors:
        parts = t.name.split(".")
        layer_shapes = swa_shapes if len(parts) > 2 and parts[0] == "blk" and parts[1].isdigit() and int(parts[1]) in swa \
            else shapes
        want = layer_shapes.get(parts[-2]) if len(parts) > 1 else None  # any name: one llama.cpp never loads is its own finding
        if want is None:
            continue
        # a bias has one value per row (per expert's row for a stack of experts); ggml order
        want = tuple(reversed(want[:-1] if t.name.endswith(".bias") and len(want) > 1 else want))
        if tuple(t.shape) != want:
            out.append(_f("shape-mismatch",
                          f"{t.name} has shape {list(t.shape)} but the keys (embedding {n_embd}, {n_head} heads of "
                          f"{head_dim}, {dims.n_head_kv} kv heads, feed-forward {n_ff}) make llama.cpp expect "
                          f"{list(want)}: it refuses the file", t.name))
            break  # one is enough to say the keys are wrong
    return out


def _provenance_findings(gf: GGUFFile, st: RopeState, method: str, params: dict) -> list[Finding]:
    from ropetool.rope import alibi_slopes, attention_scale, ggml, make_params, rope_frequencies

    try:
        p = make_params(method, **params)
    except (RopetoolError, TypeError) as e:
        return [_f("provenance-mismatch", f"{K.RT_PARAMS} cannot be read as {method} parameters: {e}", K.RT_PARAMS)]
    exact = gf.get(K.RT_EXACT)
    approx = gf.get(K.RT_APPROX_ERROR)
    approx = float(approx) if isinstance(approx, float) and math.isfinite(approx) else 0.0
    tol = 1e-4 if exact is not False else 1e-4 + 1.05 * approx
    seq = st.context_length
    if p.is_alibi:
        got = st.alibi_slopes()
        if got is None or not st.n_head:
            return [_f("provenance-mismatch", f"{K.RT_METHOD} is {method} but llama.cpp runs no ALiBi on this file", K.RT_METHOD)]
        want = alibi_slopes(p, st.n_head, seq_len=seq)
        err = _rel(got, want)
        if err > tol:
            return [_f("provenance-mismatch",
                       f"{K.RT_METHOD} is {method} but llama.cpp's ALiBi slopes differ from it by up to {err:.3g} (relative)",
                       K.RT_METHOD)]
        return []
    if st.encoding != "rope" or not st.computable or st.scaling_type not in SCALING_TYPES:
        return []
    unrotated = gf.get(K.RT_UNROTATED)  # gemma4's proportional rope: the record's still pairs
    unrotated = unrotated if isinstance(unrotated, int) and not isinstance(unrotated, bool) else 0
    try:
        want_inv, want_attn = rope_frequencies(p, st.n_rot, seq_len=seq, unrotated=unrotated)
    except (RopetoolError, ValueError) as e:
        return [_f("provenance-mismatch", f"{K.RT_PARAMS} does not fit this file: {e}", K.RT_PARAMS)]
    got_inv = st.inv_freq(seq)
    err = ggml.inv_freq_error(got_inv, want_inv)
    if err > tol:
        return [_f("provenance-mismatch",
                   f"{K.RT_METHOD} is {method} ({p.words('=') or 'defaults'}) but llama.cpp's frequencies differ from it by up to "
                   f"{err:.3g} (relative): a rope key or tensor was changed after ropetool wrote it", K.RT_METHOD)]
    recorded = gf.get(K.RT_SLIDING_BASE)
    if isinstance(recorded, float) and st.sliding is not None and abs(st.sliding.freq_base / recorded - 1) > tol:
        return [_f("provenance-mismatch",
                   f"{K.RT_SLIDING_BASE} is {recorded:g} but llama.cpp gives the sliding-window layers base "
                   f"{st.sliding.freq_base:g} ({st.sliding.freq_base_source}): a key was changed after ropetool wrote it",
                   K.RT_SLIDING_BASE)]
    scale = attention_scale(p)
    if st.facts.kq_scale_mscale and abs(st.attention_scale / scale - 1) > tol:
        return [_f("provenance-mismatch",
                   f"{K.RT_METHOD} is {method} ({p.words('=') or 'defaults'}), which scales attention by {scale:.6g}, but llama.cpp's {st.arch} "
                   f"scales it by {st.attention_scale:.6g}: a rope key was changed after ropetool wrote it", K.RT_METHOD)]
    mag_err = abs(st.magnitude / want_attn - 1)
    if mag_err > tol:
        return [_f("provenance-mismatch",
                   f"{K.RT_METHOD} is {method} with attention factor {want_attn:.6g} but llama.cpp scales cos/sin by "
                   f"{st.magnitude:.6g}", K.RT_METHOD)]
    return []


__all__ = ["Finding", "RULES", "lint_file", "ERROR", "WARNING", "INFO"]
