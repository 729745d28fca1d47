"""``ropetool extend MODEL --context N``: a model to a file that runs at N tokens in llama.cpp, proven, with its
memory cost and the command lines that run it.

MODEL is a GGUF (then the file is set-rope's edit of it: :meth:`ropetool.model.ModelFile.rope_edit` written by
:func:`ropetool.rewrite.write_rope_edit`) or a Hugging Face folder (a conversion, any ``--outtype``: a
:func:`ropetool.conversion.plan_conversion` written by :func:`ropetool.convert.write_gguf`, the K-quants through
llama.cpp's quantizer).  Either way the file's context_length is N (llama-server and ollama cap a context at it)
and it holds ropetool's record of the setting, as set-rope and convert write it.

The setting, by the rule docs/extend.md states, in this order:

1. N at or below the context the model already runs at (its context_length): nothing to do;
2. the model's own recipe: a model already extended (the file's method, or config.json's) keeps its method and
   parameters, re-targeted at N (factor N / its original context; a dynamic method baked at N);
3. its family's (``Family.extend``: Qwen's model cards ask for YaRN over the original context);
4. ropetool's default (``families.EXTEND_DEFAULT``), chosen from the measurements docs/extend.md states;
5. ``--measure`` (a GGUF): YaRN, NTK-aware and Dynamic NTK baked at N, each at factor N / trained, evaluated by
   :mod:`ropetool.eval` at the trained context and at the longest length this machine's memory allows up to N;
   eval's recommendation is written.

What llama.cpp cannot compute exactly on the architecture is refused, naming the methods it can compute there
(``--approximate`` writes it anyway, as everywhere); ALiBi that llama.cpp hard-codes is refused in one line.

The proof: the probe (:func:`ropetool.probe.probe_gguf`) reads llama.cpp's own rope ops on the complete
temporary file at positions up to N before it is renamed into place.  Without PASS nothing is put at the output
path: the file stays, for inspection, under its temporary name (``.OUT.XXXXXXXX.tmp`` beside it, which the next
write to the same output removes) and the result says FAIL (exit 1).
"""

from __future__ import annotations

import os
import secrets
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.families import EXTEND_DEFAULT, Family
from ropetool.io.gguf_file import check_output
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.archs import LoaderArch
from ropetool.llamacpp.lowering import CannotCompute
from ropetool.model import KV_CACHE_TYPES, Memory, ModelFile, size_words, trained_context
from ropetool.rope import METHOD_TABLE, RopeParams

# The candidates --measure evaluates (issue #26), at factor s = N / trained: YaRN, NTK-aware, Dynamic NTK baked at N.
MEASURED = ("yarn", "ntk", "dynamic-ntk")
# llama.cpp's flags for the keys that have one (common/arg.cpp); every other key goes as --override-kv.
FLAGS = {K.ROPE_FREQ_BASE: "--rope-freq-base", K.ROPE_SCALING_FACTOR: "--rope-scale",
         K.ROPE_SCALING_ORIG_CTX: "--yarn-orig-ctx", K.ROPE_SCALING_TYPE: "--rope-scaling"}
SCALING_FLAG_VALUES = ("none", "linear", "yarn")  # what --rope-scaling accepts
CACHE_FLAGS = "-ctk {t} -ctv {t} -fa on"  # a quantized V cache needs flash attention


@dataclass
class Setting:
    """The setting extend writes, and the rule that chose it."""

    method: str
    options: dict
    rule: str  # "recipe" (the model's own, re-targeted), "family", "default" or "measured"
    why: str

    def words(self) -> str:
        shown = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.options.items())
        return f"{self.method}" + (f" ({shown})" if shown else "")


@dataclass
class ExtendResult:
    """What extend did (module docstring)."""

    source: Path
    context: int
    architecture: str
    trained_context: int
    extended_context: int  # what the source already runs at (its context_length)
    output: Path | None = None
    written: bool = False
    nothing_to_do: str | None = None  # why nothing was needed
    setting: Setting | None = None
    rope: dict | None = None  # the method as written: set-rope's or convert's report of it
    probe: object | None = None  # the ProbeReport on the written file
    kept: Path | None = None  # the unproven file, under its temporary name
    memory: Memory | None = None
    run: dict = field(default_factory=dict)
    measure: object | None = None  # eval's report, with --measure
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.nothing_to_do is not None or (self.written and self.probe is not None and self.probe.passed)

    def as_dict(self) -> dict:
        d = {"source": str(self.source), "context": self.context, "architecture": self.architecture,
             "trained_context": self.trained_context, "extended_context": self.extended_context,
             "output": None if self.output is None else str(self.output), "written": self.written,
             "nothing_to_do": self.nothing_to_do,
             "setting": None if self.setting is None else {"method": self.setting.method, "options": self.setting.options,
                                                           "rule": self.setting.rule, "why": self.setting.why},
             "rope": self.rope,
             "probe": None if self.probe is None else {"verdict": self.probe.verdict, "reason": self.probe.reason,
                                                       "max_position": self.probe.max_position},
             "kept": None if self.kept is None else str(self.kept),
             "memory": None if self.memory is None else self.memory.as_dict(),
             "run": self.run, "warnings": self.warnings, "notes": self.notes}
        if self.measure is not None:
            name, why = self.measure.recommendation()
            d["measure"] = {"lengths": self.measure.lengths, "records": self.measure.to_list(), "recommended": name,
                            "why": why}
        return d

    def summary(self) -> str:
        lines = [f"{self.source}: {self.architecture}, trained on {self.trained_context} tokens, runs at "
                 f"{self.extended_context}; asked for {self.context}"]
        if self.measure is not None:
            lines += ["measured (eval):", *("  " + x for x in self.measure.table().splitlines()),
                      "  " + self.measure.recommendation()[1]]
        if self.nothing_to_do is not None:
            lines.append(f"nothing to do: {self.nothing_to_do}")
        if self.setting is not None:
            lines.append(f"setting: {self.setting.words()}: {self.setting.why}")
        if self.probe is not None:
            lines.append(f"proof (check's probe, positions up to {self.probe.max_position}): "
                         f"{self.probe.verdict.upper()}: {self.probe.reason}")
        if self.written:
            lines.append(f"wrote {self.output} (context_length {self.context})")
        elif self.kept is not None:
            lines.append(f"not written: the probe did not pass; the file is kept for inspection as {self.kept} "
                         f"(the next write to {self.output} removes it)")
        if self.memory is not None:
            lines.append(f"memory: {self.memory.words()}")
        if self.run:
            lines.append("run it:")
            for key in ("llama-server", "llama-cli", "smaller cache"):
                if key in self.run:
                    lines.append(f"  {self.run[key]}")
            if "modelfile" in self.run:
                lines.append("  ollama Modelfile:")
                lines.extend(f"    {x}" for x in self.run["modelfile"].splitlines())
            if self.run.get("flags"):
                lines.append(f"  without writing a file, llama.cpp's flags on {self.source.name}:")
                lines.append(f"    {self.run['flags']}")
            for x in self.run.get("flags_cannot", []):
                lines.append(f"    (flags cannot reach: {x})")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# What the model is


@dataclass
class _Model:
    """The facts the rule reads, from a GGUF or a Hugging Face folder."""

    arch: str
    facts: LoaderArch
    family: Family | None
    encoding: str  # "rope", "alibi" or "none"
    n_layer: int | None
    current: RopeParams | None  # its method as meant (None: unreadable)
    trained: int
    extended: int


def _of_gguf(mf: ModelFile) -> _Model:
    arch = mf.require_architecture()
    st = mf.state
    trained = mf.trained_context
    if trained is None:
        raise RopetoolError(f"{mf.path} has no {mf.key(K.CONTEXT_LENGTH)}: cannot tell the trained context")
    encoding = st.encoding if st.positionless is None else "none"
    return _Model(arch, mf.facts, mf.family, encoding, st.n_layer, mf.meant.rope, trained,
                  max(mf.extended_context or trained, trained))


def _of_plan(plan) -> _Model:
    family = plan.family
    trained = trained_context(plan.rope.original_context, None, plan.hparams.trained_context)
    extended = max(plan.lowered.context_length or trained, trained)
    encoding = "alibi" if plan.rope.is_alibi else "rope"
    return _Model(family.arch, family.loader, family, encoding, plan.hparams.n_layer, plan.rope, trained, extended)


# ------------------------------------------------------------------------------------------
# The rule


def _options_at(method: str, s: float, n: int, keep: dict | None = None) -> dict:
    """``method``'s options for factor ``s`` (N / its original context): factor, or alpha for NTK-aware and the
    ALiBi methods; a dynamic method baked at ``n``.  ``keep``: parameters kept from the model's own setting."""
    uses = set(METHOD_TABLE[method].uses)
    out = {k: v for k, v in (keep or {}).items() if k in uses}
    if "factor" in uses:
        out["factor"] = s
    elif "alpha" in uses:
        out["alpha"] = s
    if METHOD_TABLE[method].dynamic:
        out["target_context"] = n
    return out


def choose(model: _Model, n: int) -> Setting:
    """The setting for ``n`` tokens by the documented rule (module docstring), steps 2 to 4."""
    cur = model.current
    if cur is not None and cur.method not in ("none", "alibi"):
        if cur.method == "longrope":
            raise RopetoolError(f"the model's LongRoPE tables were fitted for up to {model.extended} tokens and cannot be "
                                f"re-targeted at {n}; nothing written (set-rope --rope yarn over the original context is "
                                f"what ropetool can write instead, unproven on the model)")
        original = cur.original_context or model.trained
        keep = {k: v for k, v in cur.as_dict().items()
                if k not in ("method", "factor", "alpha", "target_context", "attention_factor", "original_context")}
        keep["original_context"] = original
        why = f"the model's own {cur.method}, re-targeted at {n} (factor {n / original:g} over {original})"
        return Setting(cur.method, _options_at(cur.method, n / original, n, keep), "recipe", why)
    s = n / model.trained
    if model.family is not None and model.family.extend is not None:
        method, why = model.family.extend
        return Setting(method, _options_at(method, s, n), "family", why)
    method, why = EXTEND_DEFAULT
    return Setting(method, _options_at(method, s, n), "default", why)


def _alibi_refusal(model: _Model, n: int, source: Path) -> None:
    """ALiBi: llama.cpp hard-codes the slopes of most ALiBi graphs (one line: nothing extends them); where it reads
    max_bias (mpt) no ALiBi extension is exact (refused unless --approximate, by the lowering)."""
    bias = model.facts.alibi_bias(model.n_layer, None)
    if bias is not None and bias[1] != "key":
        raise RopetoolError(f"{source}: llama.cpp's {model.arch} hard-codes ALiBi (max_bias {bias[0]:g}), so no "
                            f"setting in the file changes how it reaches {n} tokens; nothing written (ALiBi needs no "
                            f"rope change: raise the cap alone with `ropetool set FILE -o OUT "
                            f"{K.k(K.CONTEXT_LENGTH, model.arch)}=u32:{n}`, unproven on the model)")


def _alternatives(try_edit: Callable[[str, dict], None], model: _Model, n: int) -> str:
    """The methods llama.cpp computes exactly on this architecture, at factor n / trained with their own defaults."""
    s = n / model.trained
    names = ("ntk-alibi", "alibi-interp") if model.encoding == "alibi" else ("yarn", "ntk", "dynamic-ntk", "linear")
    exact = []
    for method in names:
        try:
            try_edit(method, _options_at(method, s, n))
            exact.append(method)
        except RopetoolError:
            continue
    if exact:
        return (f"exact on {model.arch} at factor {s:g} with their default parameters: {', '.join(exact)} (ropetool "
                f"set-rope / convert --rope METHOD); or --approximate")
    if model.encoding == "alibi":
        return (f"no ALiBi extension is exact on {model.arch}: --approximate writes the nearest max_bias, recording its "
                f"error; or plain ALiBi with the cap raised alone: ropetool set FILE -o OUT "
                f"{K.k(K.CONTEXT_LENGTH, model.arch)}=u32:{n}")
    return "no extension is exact there; --approximate writes the nearest, recording its error"


# ------------------------------------------------------------------------------------------
# The command


class _Unproven(Exception):
    def __init__(self, report, kept: Path):
        super().__init__(report.reason)
        self.report, self.kept = report, kept


def _prover(n: int, target: Path, holder: dict, device: str):
    """The check a complete temporary file passes before it is renamed to ``target``: the probe up to ``n``.
    Without PASS the file is linked to a second temporary name beside ``target`` (kept; unlocked, so the next
    write to ``target`` removes it) and the write is abandoned."""
    from ropetool.probe import probe_gguf

    def verify(tmp: str) -> None:
        report = probe_gguf(tmp, positions=n, device=device)
        holder["probe"] = report
        if report.passed:
            return
        prefix = os.path.basename(tmp).rsplit(".", 2)[0]  # ".NAME" of ".NAME.XXXXXXXX.tmp"
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_"
        while True:
            kept = target.parent / f"{prefix}.{''.join(secrets.choice(alphabet) for _ in range(8))}.tmp"
            try:
                os.link(tmp, kept)
                break
            except FileExistsError:
                continue
        raise _Unproven(report, kept)

    return verify


def default_name(source: Path, n: int, type_name: str | None = None) -> str:
    size = f"{n // 1024}k" if n % 1024 == 0 else str(n)
    stem = source.resolve().name if source.is_dir() else source.stem
    return f"{stem}{'-' + type_name if type_name else ''}-{size}.gguf"


def _target(out, source: Path, n: int, force: bool, type_name: str | None = None) -> Path:
    target = Path(default_name(source, n, type_name)) if out is None else Path(out)
    if target.is_dir():
        target = target / default_name(source, n, type_name)
    check_output(target, source=None if source.is_dir() else source, force=force, in_place=False)
    if source.is_dir() and target.resolve().parent == source.resolve() and target.exists() and target.suffix != ".gguf":
        raise RopetoolError(f"refusing to overwrite {target.name}, a file of the source model")
    return target


def _context(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RopetoolError(f"--context must be a positive number of tokens, got {n!r}")
    K.check_range(K.CONTEXT_LENGTH, n, "--context")
    return n


def extend(model, context, out=None, *, outtype: str | None = None, measure: bool = False, force: bool = False,
           approximate: bool = False, device: str = "cpu", progress: Callable[[str], None] | None = None,
           notify: Callable[[str], None] | None = None) -> ExtendResult:
    """Extend ``model`` (a GGUF or a Hugging Face folder) to ``context`` tokens (module docstring); the output
    defaults to ``NAME-32k.gguf`` in the current folder (``out`` a folder: there).  ``progress`` wraps a
    conversion's tensors (convert's progress bar); ``notify`` takes progress messages (eval's, the quantizer's)."""
    n = _context(context)
    source = Path(model)
    if not source.exists():
        raise RopetoolError(f"no such file or folder: {source}")
    if source.is_dir():
        if measure:
            raise RopetoolError("--measure evaluates a GGUF: convert the folder first (ropetool convert DIR -o "
                                "model.gguf), then ropetool extend model.gguf --measure")
        return _extend_folder(source, n, out, outtype or "auto", force, approximate, device, progress, notify)
    if outtype is not None:
        raise RopetoolError("--outtype applies to a Hugging Face folder; a GGUF keeps its tensors (requantize it with "
                            "ropetool quantize)")
    return _extend_gguf(source, n, out, measure, force, approximate, device, notify)


def _nothing(result: ExtendResult, m: _Model) -> bool:
    if result.context > m.extended:
        return False
    how = (f"its {m.current.method} setting reaches {m.extended} tokens" if m.current is not None and m.extended > m.trained
           else f"it was trained on {m.trained} tokens")
    result.nothing_to_do = f"{result.source} already runs at {result.context} tokens ({how}); nothing written"
    return True


def _refuse_positionless(m: _Model, source: Path) -> None:
    if m.encoding == "none":
        raise RopetoolError(f"{source}: llama.cpp's {m.arch} graph applies no position encoding to this model: there "
                            "is nothing to extend; nothing written")


def _extend_gguf(source: Path, n: int, out, measure: bool, force: bool, approximate: bool, device: str,
                 notify) -> ExtendResult:
    from ropetool.rewrite import write_rope_edit

    with ModelFile.open(source) as mf:
        m = _of_gguf(mf)
        result = ExtendResult(source, n, m.arch, m.trained, m.extended)
        if _nothing(result, m):
            result.memory = mf.memory(n)
            result.run = run_lines(source, n, result.memory)
            return result
        _refuse_positionless(m, source)
        if m.encoding == "alibi":
            _alibi_refusal(m, n, source)

        def try_edit(method, options, approx=False):
            return mf.rope_edit(method, options, approximate=approx, context=n)

        target = result.output = _target(out, source, n, force)  # refused before any long work
        if measure:
            setting, result.measure = _measured(mf, m, n, approximate, device, notify)
        else:
            setting = choose(m, n)
        try:
            edit = try_edit(setting.method, setting.options, approximate)
        except CannotCompute as e:
            raise RopetoolError(f"{e}; nothing written ({_alternatives(try_edit, m, n)})") from None
        result.setting = setting
        holder: dict = {}
        try:
            written = write_rope_edit(mf, edit, target, force=force, approximate=approximate,
                                      also_verify=_prover(n, target, holder, device))
        except _Unproven as e:
            result.probe, result.kept = e.report, e.kept
            return result
        result.written, result.probe, result.rope = True, holder.get("probe"), written.rope
        result.warnings += written.warnings
        result.notes += written.notes
        flags = _flags(mf, edit, n)
    with ModelFile.open(target) as written_model:
        result.memory = written_model.memory(n)
    result.run = run_lines(target, n, result.memory, flags)
    return result


def _extend_folder(source: Path, n: int, out, outtype: str, force: bool, approximate: bool, device: str,
                   progress, notify) -> ExtendResult:
    from ropetool.conversion import plan_conversion
    from ropetool.convert import write_gguf

    m = _of_plan(plan_conversion(source, outtype, None, approximate=True, with_vocab=False))
    result = ExtendResult(source, n, m.arch, m.trained, m.extended)
    if _nothing(result, m):
        result.nothing_to_do += f" (convert it as it is: ropetool convert {shlex.quote(str(source))})"
        return result
    _refuse_positionless(m, source)
    if m.encoding == "alibi":
        _alibi_refusal(m, n, source)
    setting = choose(m, n)

    def try_plan(method, options, approx=False):
        return plan_conversion(source, outtype, method, approx, with_vocab=False, context_length=n, **options)

    try:
        plan = plan_conversion(source, outtype, setting.method, approximate, context_length=n, **setting.options)
    except CannotCompute as e:
        raise RopetoolError(f"{e}; nothing written ({_alternatives(try_plan, m, n)})") from None
    result.setting = setting
    target = result.output = _target(out, source, n, force, plan.type_name)
    holder: dict = {}
    try:
        write_gguf(plan, target, force=force, progress=progress, notify=notify, verify=_prover(n, target, holder, device))
    except _Unproven as e:
        result.probe, result.kept = e.report, e.kept
        return result
    result.written, result.probe = True, holder.get("probe")
    result.rope = {"method": plan.rope.method, "params": plan.rope.as_dict(), "exact": plan.lowered.exact,
                   "approx_error": plan.lowered.approx_error, "context_length": n, "outtype": plan.type_name}
    result.warnings += list(plan.lowered.warnings)
    result.notes += list(plan.lowered.notes)
    with ModelFile.open(target) as written_model:
        result.memory = written_model.memory(n)
    result.run = run_lines(target, n, result.memory)
    return result


# ------------------------------------------------------------------------------------------
# --measure


def affordable_length(mf: ModelFile, n: int) -> int:
    """The longest length up to ``n`` (a multiple of 256, or ``n``) whose evaluation fits this machine's memory,
    as eval sizes a run (``runner.llama_bytes``)."""
    from ropetool.llamacpp.runner import RunSizes, available_memory, llama_bytes, padded_context

    have = available_memory()
    sizes = RunSizes(mf.header)

    def fits(length: int) -> bool:
        return have is None or llama_bytes(sizes, padded_context(length + 16)) <= have

    if fits(n):
        return n
    lo, hi = 0, n // 256  # fits(lo * 256) assumed, not fits(hi * 256)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid * 256) else (lo, mid)
    return lo * 256


def candidates(trained: int, n: int) -> list[str]:
    """--measure's settings in eval's language: YaRN, NTK-aware and Dynamic NTK baked at ``n``, at factor n / trained."""
    s = f"{n / trained:.10g}"
    return [f"yarn:factor={s}", f"ntk:alpha={s}", f"dynamic-ntk:factor={s},target_context={n}"]


def _measured(mf: ModelFile, m: _Model, n: int, approximate: bool, device: str, progress):
    from ropetool.eval import Evaluation, parse_setting

    if m.encoding != "rope":
        raise RopetoolError(f"--measure evaluates rope methods; {mf.path} runs {m.encoding}")
    longest = affordable_length(mf, n)
    if longest <= m.trained:
        raise RopetoolError(f"this machine's memory affords an evaluation of {longest} tokens, not past the trained "
                            f"context ({m.trained}): --measure cannot tell the candidates apart here")
    tries = []
    for label in candidates(m.trained, n):
        tried = parse_setting(label)
        try:
            mf.rope_edit(tried.method, tried.options, approximate=approximate, context=n)
            tries.append(label)
        except CannotCompute:
            continue
    report = Evaluation(mf.path, [m.trained, longest], tries, device=device, approximate=approximate,
                        progress=progress).run()
    name, why = report.recommendation()
    if name is None or name == "file":
        raise RopetoolError(f"eval recommends no candidate over the file's own setting ({why}); nothing written")
    tried = parse_setting(name)
    why = why.split("; apply it with:")[0].removeprefix(f"recommended: {name}: ")
    return Setting(tried.method, dict(tried.options), "measured",
                   f"eval's recommendation at {m.trained} and {longest} tokens: {why}"), report


# ------------------------------------------------------------------------------------------
# How to run it


def run_lines(path: Path, n: int, memory: Memory | None, flags: tuple[str, list[str]] | None = None) -> dict:
    """The command lines that run ``path`` at ``n`` tokens: llama-server, llama-cli, the smaller cache, an ollama
    Modelfile; and, given ``flags`` (the line and what it cannot reach), llama.cpp's flags on the source."""
    p = shlex.quote(str(path))
    out = {"llama-server": f"llama-server -m {p} -c {n}", "llama-cli": f"llama-cli -m {p} -c {n}",
           "modelfile": f"FROM {p if os.path.isabs(path) or str(path).startswith('.') else './' + str(path)}\n"
                        f"PARAMETER num_ctx {n}"}
    if memory is not None and "q8_0" in memory.caches and "f16" in memory.caches:
        q8, f16 = memory.caches["q8_0"], memory.caches["f16"]
        out["smaller cache"] = (f"llama-server -m {p} -c {n} {CACHE_FLAGS.format(t='q8_0')}  (KV cache "
                                f"{size_words(q8.bytes)} instead of {size_words(f16.bytes)})")
    if flags is not None:
        out["flags"], out["flags_cannot"] = flags
    return out


def _f32(x: float) -> str:
    """The float32 the file holds, in the shortest decimal that reads back as it (llama.cpp parses flags with stof)."""
    return np.format_float_positional(np.float32(x), unique=True, trim="-")


def _flags(mf: ModelFile, edit, n: int) -> tuple[str, list[str]]:
    """llama.cpp's runtime flags that make the source compute what the written file holds (eval's load-time
    overrides: the same values), and what they cannot reach."""
    from ropetool.eval import overrides

    values, needs_file = overrides(mf, edit)
    if needs_file is not None:
        return "", [f"the edit {needs_file}: no flag or --override-kv does that; use the written file"]
    named = mf.facts.sliding is None  # sliding layers take their rope from the keys; the named flags miss them
    parts, kv = [f"llama-server -m {shlex.quote(str(mf.path))} -c {n}"], []
    for key, value in values.items():
        template = K.template_of(key, mf.arch or "?")
        flag = FLAGS.get(template) if named else None
        if flag == "--rope-scaling" and value not in SCALING_FLAG_VALUES:
            flag = None
        shown = _f32(value) if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)
        if flag is not None:
            parts.append(f"{flag} {shown}")
        else:
            kind = {bool: "bool", int: "int", float: "float", str: "str"}[type(value)]
            kv.append(f"{key}={kind}:{shown}")
    if kv:
        parts.append("--override-kv " + shlex.quote(",".join(kv)))
    cannot = []
    if mf.facts.sliding is not None:
        cannot.append("the sliding-window layers through the named rope flags (they take their rope from the "
                      "file's keys): every key goes by --override-kv")
    return " ".join(parts), cannot


__all__ = ["extend", "ExtendResult", "Setting", "choose", "candidates", "affordable_length", "run_lines",
           "default_name", "KV_CACHE_TYPES"]
