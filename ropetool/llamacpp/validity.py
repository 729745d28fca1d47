"""What llama.cpp refuses, or aborts on, in a file's keys: known before llama.cpp sees the file.

llama.cpp's loader throws (a clean refusal) on a key of the wrong type, a per-layer array of the wrong
length, or a tensor whose shape disagrees with the keys; it aborts the process (GGML_ASSERT) on
block_count 0 or above LLAMA_MAX_LAYERS, and ggml aborts on a negative norm epsilon or on tensor data
aligned to less than 32 bytes.  :func:`key_problems` finds all of these from the header alone, with
the one table of keys, types and ranges (:mod:`ropetool.llamacpp.keys`); lint reports them, ``set`` /
``set-rope`` refuse to write them, ``check`` refuses to run llama.cpp on them, and
:func:`check_new_values` stops ``convert`` from writing a value outside its range.  Which tensors a
family needs and their shapes are the families' (:mod:`ropetool.families`); lint adds those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ropetool.errors import RopetoolError
from ropetool.io.gguf_constants import constants as gguf  # TENSOR_NAMES, without the rest of gguf-py
from ropetool.io.gguf_file import GGUFFile, NewValue, T, type_name
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.archs import loader

WRONG_TYPE, OUT_OF_RANGE, SHAPE, MISSING = "wrong-key-type", "implausible-value", "shape-mismatch", "missing-key"
ROPE_DIM = "rope-dim-mismatch"
UNKNOWN_TENSOR, UNKNOWN_TOKENIZER = "unknown-tensor", "unknown-tokenizer"
TOKEN_ARRAY, SPECIAL_TOKEN = "tokenizer-array-length", "special-token-out-of-range"

# Every tensor name llama.cpp's loader can create: gguf-py's table of llama.cpp's tensor names (LLM_TENSOR_NAMES),
# the block number filled in, and one suffix (weight, bias, scale...).  A file holding any other tensor is refused:
# the loader never creates it, and llama.cpp refuses a file with tensors it did not create ("wrong number of
# tensors").
_TENSOR_STEMS = sorted(re.escape(t).replace(re.escape("{bid}"), r"\d+") for t in set(gguf.TENSOR_NAMES.values()))
_KNOWN_TENSOR = re.compile(r"(?:" + "|".join(_TENSOR_STEMS) + r")\.[A-Za-z0-9_]+"
                           r"|blk\.\d+\.ssm_a")  # the one name llama.cpp creates bare (LLM_TENSOR_SSM_A_NOSCAN)


def known_tensor_name(name: str) -> bool:
    """Whether ``name`` is a tensor name llama.cpp's loader can create (for some architecture)."""
    return _KNOWN_TENSOR.fullmatch(name) is not None


@dataclass(frozen=True)
class Problem:
    rule: str  # the lint rule it is reported under
    key: str  # the key (or tensor) at fault
    why: str


def _array_ok(template: str, f) -> bool:
    return template in K.PER_LAYER and f.sub_type in (T.UINT32, T.INT32)


def key_problems(gf: GGUFFile) -> list[Problem]:
    """Keys llama.cpp requires and lacks, reads as another type, or cannot run with (see the module doc)."""
    arch = gf.architecture
    if arch is None:
        return []
    out: list[Problem] = []
    for template in K.REQUIRED:
        if K.k(template, arch) not in gf.fields and template != K.CONTEXT_LENGTH:  # context: its own lint rule
            out.append(Problem(MISSING, K.k(template, arch), f"no {K.k(template, arch)}: llama.cpp requires it"))
    n_layer = gf.get(K.k(K.BLOCK_COUNT, arch))
    n_layer = n_layer if isinstance(n_layer, int) and not isinstance(n_layer, bool) else None
    for key, f in gf.fields.items():
        template = K.template_of(key, arch)
        if template is None or template in K.RT_KEYS:
            continue
        want = K.TYPES[template]
        if want == T.ARRAY:  # a key llama.cpp reads as an array: its element type
            allowed = K.ELEMENT_TYPES[template]
            if not f.is_array or f.sub_type not in allowed:
                names = " or ".join(type_name(T.ARRAY, t) for t in allowed)
                out.append(Problem(WRONG_TYPE, key, f"{key} is {f.type_name} but llama.cpp reads it as {names} and "
                                                    "refuses the file (invalid gguf type)"))
            continue
        if f.is_array and _array_ok(template, f):
            if n_layer is not None and f.count != n_layer:
                out.append(Problem(SHAPE, key, f"{key} has {f.count} entries but block_count is {n_layer}: "
                                               "llama.cpp needs one per layer and refuses the file"))
                continue
            rng = K.RANGES[template]
            bad = next((w for w in (rng.problem(int(v), in_array=True) for v in f.value) if w), None)
            if bad:
                out.append(Problem(OUT_OF_RANGE, key, f"{key} holds {bad}"))
            continue
        if f.type != want or f.is_array:
            if template in K.TYPE_CHECKED:
                also = " (or a per-layer array of u32)" if template in K.PER_LAYER else ""
                out.append(Problem(WRONG_TYPE, key, f"{key} is {f.type_name} but llama.cpp reads it as "
                                                    f"{type_name(want)}{also} and refuses the file (set it with "
                                                    f"`ropetool set FILE {key}={type_name(want)}:VALUE`)"))
            continue
        rng = K.RANGES.get(template)
        why = rng.problem(f.scalar) if rng is not None else None
        if why:
            out.append(Problem(OUT_OF_RANGE, key, f"{key} = {why}"))
    facts = loader(arch)
    window_key = K.k(K.SLIDING_WINDOW, arch)
    if (facts.sliding is not None and facts.sliding.window_fixed is not None and facts.attn_temperature is not None
            and gf.get(window_key) == 0 and not any(p.key == window_key for p in out)):
        # llama4 (src/models/llama4.cpp): a window of 0 turns the chunked layers off and leaves the temperature's scale
        # 0, which llm_graph_input_attn_temp asserts against (GGML_ASSERT f_attn_temp_scale != 0.0f) on the first decode
        out.append(Problem(OUT_OF_RANGE, window_key, f"{window_key} = 0 turns llama.cpp's {arch} chunked attention off and "
                                                     "leaves its attention temperature's scale 0: llama.cpp aborts on the "
                                                     "first decode (GGML_ASSERT in llm_graph_input_attn_temp)"))
    out += _expert_problems(gf, arch)
    out += _tokenizer_problems(gf, {p.key for p in out if p.rule == WRONG_TYPE})
    out += _tensor_problems(gf, arch, n_layer)
    if not any(p.key == K.k(K.ROPE_DIMENSION_COUNT, arch) for p in out):
        out += _rotary_problems(gf, arch)
    return out


def _rotary_problems(gf: GGUFFile, arch: str) -> list[Problem]:
    """rope.dimension_count against the head dimension: ggml's rope aborts on more; many architectures'
    loaders (a refusal) or graphs (an abort) require them equal."""
    key = K.k(K.ROPE_DIMENSION_COUNT, arch)
    n_rot = gf.get(key)
    n_embd, n_head = gf.get(K.k(K.EMBEDDING_LENGTH, arch)), gf.get(K.k(K.HEAD_COUNT, arch))
    head_dim = gf.get(K.k(K.KEY_LENGTH, arch))
    if not isinstance(head_dim, int) and isinstance(n_embd, int) and isinstance(n_head, int) and n_head > 0:
        head_dim = n_embd // n_head
    if not (isinstance(n_rot, int) and isinstance(head_dim, int)) or isinstance(n_rot, bool) or n_rot == head_dim:
        return []
    if loader(arch).n_rot_is_head_dim:
        return [Problem(ROPE_DIM, key, f"{key} = {n_rot} but the head dimension is {head_dim}: llama.cpp's {arch} "
                                       "refuses the file (its loader) or aborts (its graph) unless they are equal")]
    if n_rot > head_dim:
        return [Problem(OUT_OF_RANGE, key, f"{key} = {n_rot} is more than the head dimension {head_dim}: ggml's rope "
                                           "aborts")]
    return []


def _expert_problems(gf: GGUFFile, arch: str) -> list[Problem]:
    """load_hparams asserts (an abort) that expert_used_count is within expert_count, and above 0 exactly
    when there are experts (src/llama-model.cpp:1354-1366)."""
    n_expert = gf.get(K.k(K.EXPERT_COUNT, arch))
    f = gf.fields.get(K.k(K.EXPERT_USED_COUNT, arch))
    if f is None or not isinstance(n_expert, int) or isinstance(n_expert, bool):
        if isinstance(n_expert, int) and n_expert > 0:
            return [Problem(MISSING, K.k(K.EXPERT_USED_COUNT, arch),
                            f"{K.k(K.EXPERT_COUNT, arch)} = {n_expert} without {K.k(K.EXPERT_USED_COUNT, arch)}: llama.cpp aborts")]
        return []
    values = [int(v) for v in f.value] if f.is_array else [f.scalar]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return []
    used = max(values)
    if used > n_expert or (n_expert > 0) != (used > 0):
        return [Problem(OUT_OF_RANGE, f.key, f"{f.key} = {used} with {K.k(K.EXPERT_COUNT, arch)} = {n_expert}: llama.cpp "
                                             "aborts unless 0 < used <= count (or both are 0)")]
    return []


def _tokenizer_problems(gf: GGUFFile, wrong: set[str]) -> list[Problem]:
    """What llama_vocab::impl::load refuses or ignores (src/llama-vocab.cpp): an unknown tokenizer model, an
    unknown pre-tokenizer for a BPE model, no token list (or, for BPE, no merges), a scores or token_type array
    shorter than the token list; and a special-token id past the vocabulary, which it replaces by its default.
    Keys of the wrong type (``wrong``) are reported as such.  A file with no tokenizer key at all (weights only,
    as tests build them) is not reported here: llama.cpp refuses it, but nothing of a tokenizer was edited."""
    model_key, pre_key, tokens_key = K.TOKENIZER_MODEL, K.TOKENIZER_PRE, K.TOKENIZER_TOKENS
    if not any(key in gf.fields for key in K.TOKENIZER_KEYS) or model_key in wrong:
        return []
    model = gf.get(model_key)
    if model is None:
        return [Problem(MISSING, model_key, f"no {model_key}: llama.cpp requires it (the vocabulary cannot load)")]
    if model not in K.TOKENIZER_MODELS:
        return [Problem(UNKNOWN_TOKENIZER, model_key, f"{model_key} = {model!r}: llama.cpp knows only "
                                                      f"{', '.join(K.TOKENIZER_MODELS)} and refuses the file (unknown tokenizer)")]
    if model in K.NO_VOCAB_MODELS:
        return []
    out = []
    pre = gf.get(pre_key) if pre_key not in wrong else None
    if model in K.BPE_TOKENIZER_MODELS and isinstance(pre, str) and pre and pre not in K.PRE_TOKENIZERS:
        out.append(Problem(UNKNOWN_TOKENIZER, pre_key, f"{pre_key} = {pre!r} is no pre-tokenizer llama.cpp knows: it "
                                                       "refuses the file (unknown pre-tokenizer type)"))
    if model in K.BPE_TOKENIZER_MODELS and pre not in K.NO_MERGES_PRE and K.TOKENIZER_MERGES not in gf.fields:
        out.append(Problem(MISSING, K.TOKENIZER_MERGES, f"no {K.TOKENIZER_MERGES}: llama.cpp's {model} vocabulary "
                                                        "needs them and refuses the file"))
    tokens = gf.fields.get(tokens_key)
    if tokens is None:
        return out + [Problem(MISSING, tokens_key, f"no {tokens_key}: llama.cpp refuses the file (no vocabulary)")]
    if tokens_key in wrong:
        return out
    n = tokens.count
    for key in K.PER_TOKEN:
        f = gf.fields.get(key)
        if f is not None and key not in wrong and f.count < n:
            out.append(Problem(TOKEN_ARRAY, key, f"{key} has {f.count} entries for {n} tokens: llama.cpp refuses the "
                                                 "file (index out of array bounds)"))
    for key in K.SPECIAL_TOKEN_IDS:
        value = gf.get(key) if key not in wrong else None
        if isinstance(value, int) and not isinstance(value, bool) and value >= n:
            out.append(Problem(SPECIAL_TOKEN, key, f"{key} = {value} but the vocabulary has {n} tokens: llama.cpp "
                                                   "ignores it and uses its default id (bad special token)"))
    return out


def _tensor_problems(gf: GGUFFile, arch: str, n_layer: int | None) -> list[Problem]:
    """The shape keys against the tensors every architecture has: the blocks and the token embeddings; and
    names no llama.cpp loader creates."""
    out = []
    unknown = [t.name for t in gf.tensors if not known_tensor_name(t.name)]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        out.append(Problem(UNKNOWN_TENSOR, unknown[0],
                           f"tensor {unknown[0]!r}{more} has a name no llama.cpp loader creates: llama.cpp refuses the "
                           "file (wrong number of tensors)"))
    blocks = {int(t.name.split(".")[1]) for t in gf.tensors if t.name.startswith("blk.") and t.name.split(".")[1].isdigit()}
    if n_layer is not None and blocks and max(blocks) + 1 != n_layer and 1 <= n_layer <= K.MAX_LAYERS:
        out.append(Problem(SHAPE, K.k(K.BLOCK_COUNT, arch),
                           f"{K.k(K.BLOCK_COUNT, arch)} = {n_layer} but the file has tensors for {max(blocks) + 1} "
                           "blocks: llama.cpp refuses the file"))
    embd = gf.tensor("token_embd.weight")
    n_embd = gf.get(K.k(K.EMBEDDING_LENGTH, arch))
    if embd is not None and len(embd.shape) == 2 and isinstance(n_embd, int) and embd.shape[0] != n_embd:
        out.append(Problem(SHAPE, K.k(K.EMBEDDING_LENGTH, arch),
                           f"{K.k(K.EMBEDDING_LENGTH, arch)} = {n_embd} but token_embd.weight has rows of "
                           f"{embd.shape[0]}: llama.cpp refuses the file"))
    tokens = gf.fields.get("tokenizer.ggml.tokens")
    if embd is not None and len(embd.shape) == 2 and tokens is not None and tokens.is_array and tokens.count != embd.shape[1]:
        out.append(Problem(SHAPE, "tokenizer.ggml.tokens",
                           f"tokenizer.ggml.tokens has {tokens.count} tokens but token_embd.weight has {embd.shape[1]} "
                           "rows: llama.cpp refuses the file"))
    return out


def refuse_problems(path, what: str) -> None:
    """Raise a one-line RopetoolError when the GGUF at ``path`` (a file about to be written) has a problem."""
    with GGUFFile(path) as gf:
        problems = key_problems(gf)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RopetoolError(f"refusing to write {what}: {problems[0].rule}: {problems[0].why}{more}")


def check_new_values(values: list[NewValue], arch: str) -> None:
    """Refuse (one line) a value about to be written outside the range of its key."""
    for v in values:
        rng = K.range_of(v.key, arch)
        if rng is None or v.type == T.ARRAY:
            continue
        why = rng.problem(v.value)
        if why:
            raise RopetoolError(f"refusing to write {v.key}: {why}")


__all__ = ["Problem", "key_problems", "known_tensor_name", "check_new_values", "refuse_problems", "WRONG_TYPE", "OUT_OF_RANGE", "SHAPE", "MISSING"]
