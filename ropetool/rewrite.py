"""An opened model's header rewritten into a new file: the writer set-rope, set, unset and extend share.

Every edit rewrites the header (unchanged records byte for byte, see io/gguf_file.py) and streams the tensor
data across unchanged, into a temporary file renamed over the output only when complete.  Before the rename
the complete temporary file is linted (the one model of llama.cpp's semantics): an edit that would make a file
llama.cpp refuses is refused unless ``force``; a caller may add its own check (extend probes llama.cpp's rope
ops on it).  The input is never modified unless ``in_place`` is asked for, and then only by that atomic
rename; on any failure no output file is left behind.

:func:`write_rope_edit` is set-rope's write of a :class:`ropetool.model.RopeEdit` (the same keys, rope
tensors and ropetool record whichever command asks for it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import (
    ARRAY_PREVIEW,
    Field,
    GGUFFile,
    NewValue,
    T,
    TensorOut,
    check_output,
    encode_value,
    field_json,
    plain_value,
    write_gguf,
)
from ropetool.lint import ERROR
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.lowering import edit_records
from ropetool.model import ModelFile, RopeEdit, lint_gguf

MAX_ALIGNMENT = 1 << 20  # what ropetool writes even with --force: padding is written (and held) per tensor


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


def resolve_output(path: Path, out, in_place: bool, force: bool, dry_run: bool) -> Path | None:
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


def tensor_entry(t) -> dict:
    return {"type": t.type.name, "shape": list(t.shape), "bytes": t.nbytes}


def tensor_changes(gf: GGUFFile, tensors: list[TensorOut]) -> list[dict]:
    new = {t.name: t for t in tensors}
    out = []
    for t in gf.tensors:
        if t.name not in new:
            out.append({"name": t.name, "change": "removed", "old": tensor_entry(t), "new": None})
        elif new[t.name].source is not t:
            out.append({"name": t.name, "change": "changed", "old": tensor_entry(t), "new": tensor_entry(new[t.name])})
    for name, t in new.items():
        if gf.tensor(name) is None:
            out.append({"name": name, "change": "added", "old": None, "new": tensor_entry(t)})
    return out


def alignment_of(records: list, default: int) -> int:
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
    write_gguf(target, records, tensors, source=gf, alignment=alignment_of(records, 32), version=gf.version,
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


def finish(model: ModelFile, result: EditResult, records, tensors, target, in_place, dry_run, hooks,
           force=False, also_verify: Callable[[str], None] | None = None) -> EditResult:
    """Write the edit (unless ``dry_run``): linted before the rename (:func:`_verify_output`), then
    ``also_verify(tmp)`` when given (extend's probe); either raising leaves nothing at ``target``."""
    if dry_run:
        return result
    found: list = []
    verify = _verify_output(model.findings, force, found)
    if also_verify is not None:
        lint_first = verify

        def verify(tmp: str) -> None:
            lint_first(tmp)
            also_verify(tmp)
    _write(model.header, target, records, tensors, in_place, force, verify=verify, **(hooks or {}))
    result.written = True
    result.warnings += [f"the output now has: {f}" for f in found]
    return result


def write_rope_edit(model: ModelFile, edit: RopeEdit, target: Path | None, *, in_place: bool = False,
                    force: bool = False, dry_run: bool = False, approximate: bool = False, hooks: dict | None = None,
                    also_verify: Callable[[str], None] | None = None) -> EditResult:
    """set-rope's write of ``edit`` (:meth:`ModelFile.rope_edit`) into ``target``: the rope keys and tensors
    replaced, ropetool's record, context_length ``edit.context``; see :func:`finish`."""
    gf = model.header
    params, lowered, context = edit.params, edit.lowered, edit.context
    records, tensors = edit_records(gf, lowered, context, edit.extra)
    result = EditResult(Path(model.path), target, key_changes(gf, records), tensor_changes(gf, tensors), list(edit.warnings))
    result.notes += edit.notes
    if not lowered.exact and approximate and lowered.approx_error:
        result.warnings.append(f"approximate: {'; '.join(lowered.notes)}")
    result.rope = {"method": params.method, "params": params.as_dict(), "exact": lowered.exact,
                   "approx_error": lowered.approx_error, "context_length": context}
    return finish(model, result, records, tensors, target, in_place, dry_run, hooks, force, also_verify)


__all__ = ["EditResult", "resolve_output", "key_changes", "tensor_changes", "tensor_entry", "alignment_of", "finish",
           "write_rope_edit", "MAX_ALIGNMENT"]
