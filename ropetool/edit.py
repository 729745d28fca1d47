"""Edit an existing GGUF without reconverting: ``set-rope``, ``set``, ``unset``; and ``diff`` two GGUFs.

Every edit rewrites the header (unchanged records byte for byte, see gguf_file.py) and streams the
tensor data across unchanged, into a temporary file renamed over the output only when complete.
The input is never modified unless ``in_place`` is asked for, and then only by that atomic rename;
on any failure no output file is left behind.

``set`` syntax (documented in docs/inspect.md)::

    KEY=TYPE:VALUE      TYPE one of u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool str
    KEY=arr[TYPE]:V1,V2,...       an array; an empty VALUE is an empty array
    KEY=arr[TYPE]:[JSON list]     an array written as a JSON list (strings with commas)
    KEY=str@PATH                  a string read from a UTF-8 file (e.g. a chat template)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ropetool.errors import RopetoolError
from ropetool.io.files import read_text
from ropetool.io.gguf_file import (
    ARRAY_PREVIEW,
    INT_RANGES,
    TYPES_BY_NAME,
    Field,
    GGUFFile,
    NewValue,
    T,
    TensorOut,
    check_output,
    check_value,
    encode_value,
    field_json,
    insert_at,
    plain_value,
    prefix_anchor,
    type_name,
    write_gguf,
)
from ropetool.lint import ERROR
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.lowering import check_options, edit_records
from ropetool.model import ModelFile, lint_gguf
from ropetool.rope import canonical_method

MAX_ALIGNMENT = 1 << 20  # what ropetool writes even with --force: padding is written (and held) per tensor
TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off"}


@dataclass
class EditResult:
    """What an edit did (or, with dry_run, would do)."""

    source: Path
    output: Path | None
    keys: list[dict] = field(default_factory=list)  # {"key", "change": added|removed|changed, "old", "new"}
    tensors: list[dict] = field(default_factory=list)  # {"name", "change": added|removed|changed, ...}
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    written: bool = False
    rope: dict | None = None  # set-rope: the method and how exact it is

    def as_dict(self) -> dict:
        return {
            "source": str(self.source),
            "output": None if self.output is None else str(self.output),
            "written": self.written,
            "keys": self.keys,
            "tensors": self.tensors,
            "warnings": self.warnings,
            "notes": self.notes,
            **({"rope": self.rope} if self.rope is not None else {}),
        }


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
# Shared plumbing


def _resolve_output(path: Path, out, in_place: bool, force: bool, dry_run: bool) -> Path | None:
    if in_place and out is not None:
        raise RopetoolError("give either -o OUT or --in-place, not both")
    if dry_run:
        return None if out is None and not in_place else (path if in_place else Path(out))
    if not in_place and out is None:
        raise RopetoolError("give -o OUT (a new file) or --in-place")
    target = Path(os.path.realpath(path)) if in_place else Path(out)  # in place through a symlink: its target
    check_output(target, source=path, force=force, in_place=in_place)
    return target


def _display(r) -> dict:
    if isinstance(r, Field):
        return field_json(r, full=False)
    value = r.value
    if r.type == T.ARRAY:
        shown = [plain_value(v) for v in value[:ARRAY_PREVIEW]]
        return {"type": r.type_name, "count": len(value), "value": shown, "truncated": len(value) > ARRAY_PREVIEW}
    return {"type": r.type_name, "value": plain_value(value)}


def _value_bytes(r, endian: str) -> bytes:
    if isinstance(r, Field):
        return r.raw_value()
    return encode_value(r.type, r.value, r.sub_type, endian)


def key_changes(gf: GGUFFile, records: list) -> list[dict]:
    """Added / removed / changed keys between ``gf`` and the new record list."""
    e = "<" if gf.endian == "little" else ">"
    new = {r.key: r for r in records}
    out = []
    for k, f in gf.fields.items():
        if k not in new:
            out.append({"key": k, "change": "removed", "old": _display(f), "new": None})
        elif new[k] is not f and _value_bytes(new[k], e) != f.raw_value():
            out.append({"key": k, "change": "changed", "old": _display(f), "new": _display(new[k])})
    for k, r in new.items():
        if k not in gf.fields:
            out.append({"key": k, "change": "added", "old": None, "new": _display(r)})
    return out


def _tensor_entry(t) -> dict:
    return {"type": t.type.name, "shape": list(t.shape), "bytes": t.nbytes}


def tensor_changes(gf: GGUFFile, tensors: list[TensorOut]) -> list[dict]:
    new = {t.name: t for t in tensors}
    out = []
    for t in gf.tensors:
        if t.name not in new:
            out.append({"name": t.name, "change": "removed", "old": _tensor_entry(t), "new": None})
        elif new[t.name].source is not t:
            out.append({"name": t.name, "change": "changed", "old": _tensor_entry(t), "new": _tensor_entry(new[t.name])})
    for name, t in new.items():
        if gf.tensor(name) is None:
            out.append({"name": name, "change": "added", "old": None, "new": _tensor_entry(t)})
    return out


def _alignment_of(records: list, default: int) -> int:
    for r in records:
        if r.key == K.ALIGNMENT:
            v = r.value if isinstance(r, NewValue) else r.scalar
            if r.type != T.UINT32 or not isinstance(v, int) or v <= 0 or v & (v - 1) or v > MAX_ALIGNMENT:
                raise RopetoolError(f"{K.ALIGNMENT} must be a u32 power of two up to {MAX_ALIGNMENT} (ropetool pads "
                                    f"each tensor to it), got {r.type_name}:{v}")
            return v
    return default


def _write(gf: GGUFFile, target: Path, records: list, tensors: list[TensorOut], in_place: bool, force: bool,
           verify=None, **hooks) -> None:
    mode = os.stat(gf.path).st_mode & 0o7777 if in_place else None
    write_gguf(target, records, tensors, source=gf, alignment=_alignment_of(records, 32), version=gf.version,
               endian="<" if gf.endian == "little" else ">", mode=mode, replace=in_place or force, verify=verify,
               **hooks)


def _verify_output(source_findings, force: bool, found: list):
    """The check an edit's complete temporary file passes before it replaces anything: lint it (the one
    model of llama.cpp's semantics) and, unless ``force``, refuse a file in which the edit made something
    llama.cpp refuses or aborts on (a lint error the input did not have).  Errors the input already had are
    kept, with a warning, so a broken file can be repaired one key at a time.  ``found`` collects the
    findings the input did not have."""
    before = {(f.id, f.key) for f in source_findings}

    def verify(tmp: str) -> None:
        findings = lint_gguf(tmp)
        found.extend(f for f in findings if (f.id, f.key) not in before and f.severity != "info")
        errors = [f for f in found if f.severity == ERROR]
        if errors and not force:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise RopetoolError(f"the result would be a file llama.cpp refuses or cannot run: {errors[0].id}: "
                                f"{errors[0].message}{more}; nothing was written (pass --force to write it anyway)")

    return verify


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
    target = _resolve_output(path, out, in_place, force, dry_run)
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
        _alignment_of(records, 32)
        tensors = [TensorOut.copy_of(t) for t in gf.tensors]
        result = EditResult(path, target, key_changes(gf, records), [])
        for v in values:
            f = gf.fields.get(v.key)
            if f is not None and f.type_name != v.type_name:
                result.warnings.append(f"{v.key} changes type from {f.type_name} to {v.type_name}")
        return _finish(model, result, records, tensors, target, in_place, dry_run, _hooks, force)


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
    target = _resolve_output(path, out, in_place, force, dry_run)
    with ModelFile.open(path) as model:
        gf = model.header
        missing = [k for k in keys_ if k not in gf.fields]
        if missing:
            raise RopetoolError(f"{path} has no key {', '.join(missing)}")
        drop = set(keys_)
        records = [f for f in gf.fields.values() if f.key not in drop]
        tensors = [TensorOut.copy_of(t) for t in gf.tensors]
        result = EditResult(path, target, key_changes(gf, records), [])
        return _finish(model, result, records, tensors, target, in_place, dry_run, None, force)


def _finish(model: ModelFile, result: EditResult, records, tensors, target, in_place, dry_run, hooks,
            force=False) -> EditResult:
    if dry_run:
        return result
    found: list = []
    _write(model.header, target, records, tensors, in_place, force, verify=_verify_output(model.findings, force, found),
           **(hooks or {}))
    result.written = True
    result.warnings += [f"the output now has: {f}" for f in found]
    return result


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
    target = _resolve_output(path, out, in_place, force, dry_run)
    with ModelFile.open(path) as model:
        gf = model.header
        edit = model.rope_edit(method, options, approximate=approximate)
        params, lowered, context = edit.params, edit.lowered, edit.context
        records, tensors = edit_records(gf, lowered, context, edit.extra)
        result = EditResult(path, target, key_changes(gf, records), tensor_changes(gf, tensors), edit.warnings)
        result.notes += edit.notes
        if not lowered.exact and approximate and lowered.approx_error:
            result.warnings.append(f"approximate: {'; '.join(lowered.notes)}")
        result.rope = {"method": params.method, "params": params.as_dict(), "exact": lowered.exact,
                       "approx_error": lowered.approx_error, "context_length": context}
        return _finish(model, result, records, tensors, target, in_place, dry_run, _hooks, force)


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
        t_added = [{"name": t.name, **_tensor_entry(t)} for t in B.tensors if A.tensor(t.name) is None]
        t_removed = [{"name": t.name, **_tensor_entry(t)} for t in A.tensors if B.tensor(t.name) is None]
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
