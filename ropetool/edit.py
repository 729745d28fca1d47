"""Edit an existing GGUF without reconverting: ``set-rope``, ``set``, ``unset``; and ``diff`` two GGUFs.

Every edit is written by :mod:`ropetool.rewrite`: the header rewritten (unchanged records byte for byte),
the tensor data streamed across unchanged, into a temporary file linted and renamed over the output only when
complete.  The input is never modified unless ``in_place`` is asked for, and then only by that atomic rename;
on any failure no output file is left behind.

``set`` syntax (documented in docs/inspect.md)::

    KEY=TYPE:VALUE      TYPE one of u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool str
    KEY=arr[TYPE]:V1,V2,...       an array; an empty VALUE is an empty array
    KEY=arr[TYPE]:[JSON list]     an array written as a JSON list (strings with commas)
    KEY=str@PATH                  a string read from a UTF-8 file (e.g. a chat template)
"""

from __future__ import annotations

import json
from pathlib import Path

from ropetool.errors import RopetoolError
from ropetool.io.files import read_text
from ropetool.io.gguf_file import (
    INT_RANGES,
    TYPES_BY_NAME,
    Field,
    GGUFFile,
    NewValue,
    T,
    TensorOut,
    check_value,
    field_json,
    insert_at,
    prefix_anchor,
    type_name,
)
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.lowering import check_options
from ropetool.model import ModelFile
from ropetool.rewrite import (
    EditResult,
    alignment_of,
    finish,
    key_changes,
    resolve_output,
    tensor_entry,
    write_rope_edit,
)
from ropetool.rope import canonical_method

TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off"}


# ------------------------------------------------------------------------------------------
# Parsing ``KEY=TYPE:VALUE``


def _parse_scalar(vtype: T, text: str, key: str):
    text = text.strip() if vtype != T.STRING else text
    if vtype == T.STRING:
        return text
    if vtype == T.BOOL:
        low = text.lower()
        if low in TRUE_WORDS:
            return True
        if low in FALSE_WORDS:
            return False
        raise RopetoolError(f"{key}: {text!r} is not a bool (true/false/1/0/yes/no)")
    if vtype in INT_RANGES:
        try:
            return int(text, 0)
        except ValueError:
            raise RopetoolError(f"{key}: {text!r} is not an integer") from None
    try:
        return float(text)
    except ValueError:
        raise RopetoolError(f"{key}: {text!r} is not a number") from None


def parse_assignment(text: str) -> NewValue:
    """``KEY=TYPE:VALUE`` (see the module docstring) -> a checked NewValue."""
    if "=" not in text:
        raise RopetoolError(f"{text!r}: expected KEY=TYPE:VALUE (e.g. llama.rope.freq_base=f32:1000000)")
    key, spec = text.split("=", 1)
    key = key.strip()
    if not key:
        raise RopetoolError(f"{text!r}: the key is empty")
    if len(key.encode("utf-8")) > 65535:
        raise RopetoolError(f"key {key[:40]!r}...: longer than 65535 bytes")
    if spec.startswith("str@"):
        return NewValue(key, T.STRING, read_text(spec[4:], f"the file for {key}"))
    if ":" not in spec:
        raise RopetoolError(f"{key}: expected TYPE:VALUE after '=', got {spec!r} "
                            f"(types: {', '.join(n for n in TYPES_BY_NAME if n != 'arr')}, arr[TYPE])")
    tname, raw = spec.split(":", 1)
    tname = tname.strip()
    if tname.startswith("arr[") and tname.endswith("]"):
        sub_name = tname[4:-1].strip()
        sub = TYPES_BY_NAME.get(sub_name)
        if sub is None or sub == T.ARRAY:
            raise RopetoolError(f"{key}: unknown array element type {sub_name!r}")
        stripped = raw.strip()
        if stripped.startswith("["):
            try:
                items = json.loads(stripped)
            except ValueError as e:
                raise RopetoolError(f"{key}: the array is not valid JSON ({e})") from None
            if not isinstance(items, list):
                raise RopetoolError(f"{key}: expected a JSON list")
            values = []
            for v in items:
                if sub == T.STRING and not isinstance(v, str):
                    raise RopetoolError(f"{key}: arr[str] elements must be JSON strings, got {v!r}")
                values.append(v if sub == T.STRING or not isinstance(v, str) else _parse_scalar(sub, v, key))
        elif stripped == "":
            values = []
        else:
            values = [_parse_scalar(sub, v, key) for v in raw.split(",")]
        return NewValue(key, T.ARRAY, check_value(T.ARRAY, values, sub, key), sub)
    vtype = TYPES_BY_NAME.get(tname)
    if vtype is None or vtype == T.ARRAY:
        raise RopetoolError(f"{key}: unknown type {tname!r}; use one of "
                            f"{', '.join(n for n in TYPES_BY_NAME if n != 'arr')} or arr[TYPE]")
    return NewValue(key, vtype, check_value(vtype, _parse_scalar(vtype, raw, key), None, key))


# ------------------------------------------------------------------------------------------
# set / unset


def set_keys(path, assignments: list[str | NewValue], out=None, *, in_place: bool = False, force: bool = False,
             dry_run: bool = False, _hooks: dict | None = None) -> EditResult:
    """Set (add or replace) typed keys; ``assignments`` are ``KEY=TYPE:VALUE`` strings or NewValues."""
    path = Path(path)
    if not assignments:
        raise RopetoolError("nothing to set: give KEY=TYPE:VALUE arguments")
    values = [a if isinstance(a, NewValue) else parse_assignment(a) for a in assignments]
    seen = set()
    for v in values:
        if v.key in seen:
            raise RopetoolError(f"{v.key} is given twice")
        seen.add(v.key)
    target = resolve_output(path, out, in_place, force, dry_run)
    with ModelFile.open(path) as model:
        gf = model.header
        _refuse_wrong_types(values, gf.architecture or "?", force)
        records: list = list(gf.fields.values())
        for v in values:
            idx = next((i for i, r in enumerate(records) if r.key == v.key), None)
            if idx is not None:
                records[idx] = v
            else:
                records = insert_at(records, prefix_anchor(records, v.key), [v])
        alignment_of(records, 32)
        tensors = [TensorOut.copy_of(t) for t in gf.tensors]
        result = EditResult(path, target, key_changes(gf, records), [])
        for v in values:
            f = gf.fields.get(v.key)
            if f is not None and f.type_name != v.type_name:
                result.warnings.append(f"{v.key} changes type from {f.type_name} to {v.type_name}")
        return finish(model, result, records, tensors, target, in_place, dry_run, _hooks, force)


def _refuse_wrong_types(values: list[NewValue], arch: str, force: bool) -> None:
    """A key llama.cpp reads with a fixed type gets that type: another makes llama.cpp refuse the file
    (``llama_model_loader::get_key`` compares types exactly).  --force writes it anyway."""
    for v in values:
        want = K.type_of(v.key, arch)
        per_layer = K.template_of(v.key, arch) in K.PER_LAYER and v.type == T.ARRAY and v.sub_type in (T.UINT32, T.INT32)
        if want is not None and v.type != want and not per_layer and not force:
            want_name = type_name(want)
            raise RopetoolError(f"{v.key} is read by llama.cpp as {want_name}, so {v.type_name} would make it refuse the "
                                f"file; write {v.key}={want_name}:VALUE (or pass --force to write {v.type_name} anyway)")


def unset_keys(path, keys_: list[str], out=None, *, in_place: bool = False, force: bool = False,
               dry_run: bool = False) -> EditResult:
    """Remove keys; a key that is not in the file is an error."""
    path = Path(path)
    if not keys_:
        raise RopetoolError("nothing to unset: give KEY arguments")
    target = resolve_output(path, out, in_place, force, dry_run)
    with ModelFile.open(path) as model:
        gf = model.header
        missing = [k for k in keys_ if k not in gf.fields]
        if missing:
            raise RopetoolError(f"{path} has no key {', '.join(missing)}")
        drop = set(keys_)
        records = [f for f in gf.fields.values() if f.key not in drop]
        tensors = [TensorOut.copy_of(t) for t in gf.tensors]
        result = EditResult(path, target, key_changes(gf, records), [])
        return finish(model, result, records, tensors, target, in_place, dry_run, None, force)


# ------------------------------------------------------------------------------------------
# set-rope


def set_rope(path, method: str | None, out=None, *, in_place: bool = False, force: bool = False,
             dry_run: bool = False, approximate: bool = False, _hooks: dict | None = None, **options) -> EditResult:
    """Replace the position-encoding method of a GGUF (keys, rope tensors, context length, provenance).

    ``options`` are convert's rope options (factor, alpha, original_context, target_context, beta_fast,
    beta_slow, attention_factor, base).  Defaults come from the file (:meth:`ModelFile.rope_edit`): the
    original base from ropetool's record (else ``rope.freq_base``), the trained context
    (:attr:`ModelFile.trained_context`).
    """
    path = Path(path)
    if not method:
        raise RopetoolError("set-rope needs --rope METHOD")
    method = canonical_method(method)
    check_options(method, options)
    target = resolve_output(path, out, in_place, force, dry_run)
    with ModelFile.open(path) as model:
        edit = model.rope_edit(method, options, approximate=approximate)
        return write_rope_edit(model, edit, target, in_place=in_place, force=force, dry_run=dry_run,
                               approximate=approximate, hooks=_hooks)


# ------------------------------------------------------------------------------------------
# diff


def _same_value(fa: Field, fb: Field, same_endian: bool) -> bool:
    if fa.type != fb.type or fa.sub_type != fb.sub_type:
        return False
    if same_endian:
        return fa.raw_value() == fb.raw_value()
    va, vb = fa.value, fb.value
    try:
        import numpy as np

        if isinstance(va, np.ndarray):
            return bool(np.array_equal(va, vb))
    except Exception:  # pragma: no cover
        pass
    return va == vb


def diff_gguf(a, b, tensor_data: bool = True) -> dict:
    """Differences between two GGUFs: file layout, metadata (added/removed/changed), tensors (and their bytes)."""
    with GGUFFile(a) as A, GGUFFile(b) as B:
        same_endian = A.endian == B.endian
        file_diff = {}
        for attr in ("version", "endian", "alignment"):
            if getattr(A, attr) != getattr(B, attr):
                file_diff[attr] = [getattr(A, attr), getattr(B, attr)]
        added = {k: field_json(f, False) for k, f in B.fields.items() if k not in A.fields}
        removed = {k: field_json(f, False) for k, f in A.fields.items() if k not in B.fields}
        changed = {}
        for k, fa in A.fields.items():
            fb = B.fields.get(k)
            if fb is not None and not _same_value(fa, fb, same_endian):
                changed[k] = {"old": field_json(fa, False), "new": field_json(fb, False)}
        t_added = [{"name": t.name, **tensor_entry(t)} for t in B.tensors if A.tensor(t.name) is None]
        t_removed = [{"name": t.name, **tensor_entry(t)} for t in A.tensors if B.tensor(t.name) is None]
        t_changed = []
        same = 0
        for ta in A.tensors:
            tb = B.tensor(ta.name)
            if tb is None:
                continue
            entry = {"name": ta.name}
            if ta.type != tb.type:
                entry["type"] = [ta.type.name, tb.type.name]
            if ta.shape != tb.shape:
                entry["shape"] = [list(ta.shape), list(tb.shape)]
            if len(entry) == 1 and tensor_data and same_endian:
                ha, hb = A.tensor_hash(ta), B.tensor_hash(tb)
                if ha != hb:
                    entry["data"] = "differs"
                    entry["sha256"] = [ha, hb]
            if len(entry) > 1:
                t_changed.append(entry)
            else:
                same += 1
        a_order = [t.name for t in A.tensors if B.tensor(t.name) is not None]
        b_order = [t.name for t in B.tensors if A.tensor(t.name) is not None]
        report = {
            "schema_version": 1,
            "a": str(A.path),
            "b": str(B.path),
            "file": file_diff,
            "metadata": {"added": added, "removed": removed, "changed": changed},
            "tensors": {"added": t_added, "removed": t_removed, "changed": t_changed, "unchanged": same,
                        "order_changed": a_order != b_order, "data_compared": bool(tensor_data and same_endian)},
        }
        report["identical"] = not (file_diff or added or removed or changed or t_added or t_removed or t_changed
                                   or a_order != b_order)
        return report


__all__ = ["EditResult", "parse_assignment", "set_keys", "unset_keys", "set_rope", "diff_gguf", "key_changes"]
