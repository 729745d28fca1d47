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

from dataclasses import dataclass

from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import GGUFFile, NewValue, T, type_name
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.archs import loader

WRONG_TYPE, OUT_OF_RANGE, SHAPE, MISSING = "wrong-key-type", "implausible-value", "shape-mismatch", "missing-key"
ROPE_DIM = "rope-dim-mismatch"


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
    out += _expert_problems(gf, arch)
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


def _tensor_problems(gf: GGUFFile, arch: str, n_layer: int | None) -> list[Problem]:
    """The shape keys against the tensors every architecture has: the blocks and the token embeddings."""
    out = []
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


__all__ = ["Problem", "key_problems", "check_new_values", "refuse_problems", "WRONG_TYPE", "OUT_OF_RANGE", "SHAPE", "MISSING"]
