"""``ropetool eval``: is a rope setting any good?  Perplexity by length and passkey retrieval, run by llama.cpp.

The settings evaluated are the file's own and each tried one, written in set-rope's language
(``yarn:factor=2,original_context=8192``).  A tried setting is lowered by exactly the code set-rope runs
(:meth:`ropetool.model.ModelFile.rope_edit`: the same keys, the same rope tensors) and handed to llama.cpp at load time:

* when the edit only adds or changes keys llama.cpp reads as numbers, booleans or short strings, as
  metadata overrides (``llama_model_params.kv_overrides``): nothing of the model is copied;
* when it adds, changes or removes a rope tensor, removes a key llama.cpp reads (no override can remove
  one), or sets an array, set-rope writes the edited file into a temporary directory, which is deleted
  afterwards; the output says so for that setting.

Perplexity at length L is scored as llama.cpp's perplexity tool scores one window (tools/perplexity,
``perplexity()``): the window is the text's first L tokens, its first token replaced by BOS when the
vocabulary adds one, and the tokens at positions L/2+1..L-1 are scored, each from the logits at the
position before it (L/2-1 tokens).  Attention is causal and positions start at 0, so one pass over the
longest window gives every shorter one for a setting that does not depend on the length; a setting that
does (dynamic methods, baked at L; LongRoPE, whose table llama.cpp picks by the context) gets a pass per
length.  Only one log-probability per position is kept, never positions x vocabulary.

The passkey test follows llama.cpp's examples/passkey: its prefix, filler, key sentence and question,
with the key sentence at given depths of the filler, keys drawn from ``random.Random(seed)``, the prompt
exactly L tokens, greedy decoding, and the key found when the first five digits of the answer are it.
"""

from __future__ import annotations

import lzma
import math
import random
import re
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import NewValue, T, encode_value, write_gguf
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.lowering import CannotCompute, check_options, edit_records
from ropetool.llamacpp.runner import override_value
from ropetool.model import ModelFile, RopeEdit
from ropetool.reference import ReferenceModel
from ropetool.rope import METHOD_TABLE, OPTIONS, baked_at, canonical_method, flag, refuse_unused

MARGIN = 0.05  # a recommended setting's perplexity at the shortest length stays within 5% of the file's own
PASSKEY_DEPTHS = (0.1, 0.5, 0.9)
PASSKEY_NEW_TOKENS = 10  # a 5-digit key is up to 5 tokens, a space before it one more
PASSKEY_DIGITS = 5
ENGINES = ("llama.cpp", "reference")
BUILTIN_TEXT = "tinyshakespeare.txt.xz"
BUILTIN_SOURCE = ("the first 300 KB of Shakespeare's plays as collected in karpathy/char-rnn "
                  "(data/tinyshakespeare/input.txt; public domain), shipped with ropetool")

# llama.cpp's examples/passkey/passkey.cpp
PASSKEY_PREFIX = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
                  "I will quiz you about the important information there.")
PASSKEY_FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
PASSKEY_KEY = " The pass key is {key}. Remember it. {key} is the pass key."
PASSKEY_QUESTION = " What is the pass key? The pass key is"

# set-rope's option names, as a SETTING spells them (``yarn:factor=2,original-context=8192``), and other spellings
OPTION_NAMES = {alias: o.name for o in OPTIONS.values() for alias in (o.name, *o.aliases)}


def builtin_text() -> str:
    data = resources.files("ropetool").joinpath("data", BUILTIN_TEXT).read_bytes()
    return lzma.decompress(data).decode("utf-8")


# ------------------------------------------------------------------------------------------
# Settings


@dataclass
class Tried:
    """A setting as the user wrote it: ``None`` method for the file's own."""

    label: str
    method: str | None = None
    options: dict = field(default_factory=dict)

    @property
    def is_file(self) -> bool:
        return self.method is None


def parse_setting(text: str) -> Tried:
    """``METHOD`` or ``METHOD:NAME=VALUE,NAME=VALUE`` (set-rope's method and option names) -> a checked Tried."""
    spec = text.strip()
    if not spec:
        raise RopetoolError("--try: empty setting (e.g. yarn:factor=2,original_context=8192)")
    name, _, rest = spec.partition(":")
    method = canonical_method(name)
    options: dict = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        key = OPTION_NAMES.get(key.strip().lower().replace("-", "_"))
        if not eq or key is None:
            raise RopetoolError(f"--try {text}: {part!r} is not NAME=VALUE with NAME one of {', '.join(OPTIONS)}")
        try:
            number = float(value)
        except ValueError:
            raise RopetoolError(f"--try {text}: {key}={value!r} is not a number") from None
        if OPTIONS[key].kind is int and number != int(number):
            raise RopetoolError(f"--try {text}: {key} must be a whole number of tokens")
        options[key] = int(number) if OPTIONS[key].kind is int else number
    refuse_unused(method, options, f"--try {text}: ")
    check_options(method, options)
    return Tried(spec, method, options)


def set_rope_command(model: str, tried: Tried, length: int | None = None) -> str:
    """The ``ropetool set-rope`` command writing ``tried`` into the model (a dynamic method baked at ``length``)."""
    out = Path(model).with_suffix("").name + f".{tried.method}.gguf"
    parts = ["ropetool set-rope", _quote(model), "-o", _quote(out), "--rope", tried.method]
    options = baked_at(tried.method, tried.options, length)
    for k in OPTIONS:
        if k in options:
            v = options[k]
            parts += [flag(k), f"{v:g}" if isinstance(v, float) else str(v)]
    return " ".join(parts)


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(str(s))


def length_dependent(tried: Tried, model: ModelFile) -> bool:
    """Does the setting change with the length evaluated?  Dynamic methods (baked at the length) unless a
    target context is given, and LongRoPE, whose table llama.cpp chooses by the context."""
    if tried.is_file:
        return model.state.long_factors is not None and model.state.short_factors is not None
    if tried.method == "longrope":
        return True
    return METHOD_TABLE[tried.method].dynamic and "target_context" not in tried.options


def rope_edit(model: ModelFile, tried: Tried, length: int | None, approximate: bool = False) -> RopeEdit:
    """set-rope's edit of the model for ``tried`` (a dynamic method baked at ``length``)."""
    try:
        return model.rope_edit(tried.method, baked_at(tried.method, tried.options, length), approximate=approximate)
    except CannotCompute as e:
        raise RopetoolError(f"{e}; or evaluate it with the numpy reference: --engine reference") from None


def overrides(model: ModelFile, edit: RopeEdit) -> tuple[dict, str | None]:
    """The edit as llama.cpp load-time overrides (``{key: value}``), or why it needs a file written instead
    (it removes a key llama.cpp reads, sets an array or a long string, or changes a rope tensor)."""
    header, lowered = model.header, edit.lowered
    values = list(lowered.values) + [NewValue(model.key(K.CONTEXT_LENGTH), T.UINT32, edit.context)]
    written = {v.key for v in values}
    reasons = [f"removes {key}" for key in (model.key(t) for t in K.ROPE_KEYS) if key in header.fields and key not in written]
    out = {}
    for v in values:
        f = header.fields.get(v.key)
        if f is not None and f.type == v.type and encode_value(v.type, v.value, v.sub_type) == f.raw_value():
            continue
        value = override_value(v)
        if value is None:
            reasons.append(f"sets {v.key} to an array or a long string")
        out[v.key] = value
    for name in K.ROPE_TENSORS:
        if name in lowered.tensors:
            if header.tensor(name) is not None and _same_tensor(model, name, lowered.tensors[name]):
                continue  # gemma4's proportional pattern, kept as it is under a keys-only setting
            reasons.append(f"{'changed' if header.tensor(name) is not None else 'added'} tensor {name}")
        elif header.tensor(name) is not None:
            reasons.append(f"removed tensor {name}")
    return ({}, "; ".join(reasons)) if reasons else (out, None)


def _same_tensor(model: ModelFile, name: str, values) -> bool:
    """Whether the file's rope tensor ``name`` holds ``values`` already (as float32, as llama.cpp loads it)."""
    try:
        have = model.header.read_tensor(name, max_elements=1 << 16).reshape(-1)
    except RopetoolError:
        return False
    want = np.asarray(values, dtype=np.float32).reshape(-1)
    return have.shape == want.shape and bool(np.array_equal(have.astype(np.float32), want))


# ------------------------------------------------------------------------------------------
# Records and the report


@dataclass
class Score:
    """One setting at one length: its perplexity and passkey results, and how llama.cpp ran it."""

    setting: str
    length: int
    perplexity: float | None = None
    scored: int = 0  # tokens scored
    engine: str = "llama.cpp"
    passkey_found: int | None = None
    passkey_trials: int | None = None
    passkey_by_depth: dict = field(default_factory=dict)  # depth -> [found, trials]
    applied: str = ""  # "file", "overrides", "temporary file", "reference"
    seconds: float = 0.0

    @property
    def passkey_accuracy(self) -> float | None:
        if not self.passkey_trials:
            return None
        return self.passkey_found / self.passkey_trials

    def as_dict(self) -> dict:
        d = {"setting": self.setting, "length": self.length, "perplexity": self.perplexity, "tokens_scored": self.scored,
             "engine": self.engine, "applied": self.applied, "seconds": round(self.seconds, 3)}
        if self.passkey_trials:
            d["passkey_accuracy"] = self.passkey_accuracy
            d["passkey_found"] = self.passkey_found
            d["passkey_trials"] = self.passkey_trials
            d["passkey_by_depth"] = {f"{k:g}": v for k, v in self.passkey_by_depth.items()}
        return d


@dataclass
class EvalReport:
    path: str
    lengths: list[int]
    settings: list[str]
    trained_context: int | None
    text_source: str
    engine: str
    device: str
    records: list[Score] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    partial: bool = False
    wall_seconds: float = 0.0
    passkey_trials: int = 0
    passkey_depths: tuple = PASSKEY_DEPTHS
    _tried: dict = field(default_factory=dict, repr=False)

    def record(self, setting: str, length: int) -> Score | None:
        return next((r for r in self.records if r.setting == setting and r.length == length), None)

    def recommendation(self) -> tuple[str | None, str]:
        """(the setting recommended, a line saying why and how to apply it)."""
        if not self.records or not self.lengths:
            return None, "no results"
        short, long_ = min(self.lengths), max(self.lengths)
        own = self.record(self.settings[0], short)
        if own is None or own.perplexity is None:
            return None, "no recommendation: the file's own setting has no result at the shortest length"
        limit = own.perplexity * (1 + MARGIN)
        best = None
        for s in self.settings:
            a, b = self.record(s, short), self.record(s, long_)
            if a is None or b is None or a.perplexity is None or b.perplexity is None or a.perplexity > limit:
                continue
            if best is None or (b.perplexity, a.perplexity) < best[1:]:  # a tie: the better at the shortest
                best = (s, b.perplexity, a.perplexity)
        if best is None:
            return None, "no recommendation: no setting has results at every length"
        name, ppl, _ = best
        why = (f"best perplexity at {long_} tokens ({ppl:.4g}) among the settings whose perplexity at {short} tokens "
               f"stays within {MARGIN:.0%} of the file's own ({own.perplexity:.4g})")
        if name == self.settings[0]:
            return name, f"recommended: keep the file's own setting: {why}"
        command = set_rope_command(self.path, self._tried[name], long_)
        return name, f"recommended: {name}: {why}; apply it with: {command}"

    def to_list(self) -> list[dict]:
        best, _ = self.recommendation() if not self.partial else (None, "")
        out = []
        for r in self.records:
            d = r.as_dict()
            d["recommended"] = r.setting == best
            if self.partial:
                d["partial"] = True
            out.append(d)
        return out

    def table(self) -> str:
        engine_mark = " [reference]" if self.engine == "reference" else ""
        head = ["setting"] + [str(L) for L in self.lengths]
        rows = []
        for s in self.settings:
            row = [s + engine_mark]
            for L in self.lengths:
                r = self.record(s, L)
                if r is None or r.perplexity is None:
                    row.append("-")
                    continue
                cell = f"{r.perplexity:.4g}"
                if r.passkey_trials:
                    cell += f" ({r.passkey_found}/{r.passkey_trials})"
                row.append(cell)
            rows.append(row)
        widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths)))
                 for x in [head] + rows]
        return "\n".join(lines)

    def summary(self) -> str:
        lines = [f"{self.path}: perplexity by length (the second half of the text's first L tokens, as llama.cpp's "
                 f"perplexity tool scores a window)"
                 + (", passkey found/trials in parentheses" if self.passkey_trials else "")
                 + f"; engine {self.engine} on {self.device}"
                 + (f"; trained context {self.trained_context}" if self.trained_context else ""),
                 f"text: {self.text_source}", "", self.table(), ""]
        if self.partial:
            lines.append("PARTIAL: interrupted; the results so far")
        else:
            lines.append(self.recommendation()[1])
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append(f"{self.wall_seconds:.1f} s")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Scoring


def next_token_logprobs(rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p(target) under each row of logits: log-softmax row by row, float64 sums."""
    out = np.empty(len(rows), dtype=np.float64)
    step = 64
    for i in range(0, len(rows), step):
        x = rows[i:i + step]
        m = x.max(axis=1)
        s = np.exp(x - m[:, None]).sum(axis=1, dtype=np.float64)
        out[i:i + step] = x[np.arange(len(x)), targets[i:i + step]].astype(np.float64) - m - np.log(s)
    return out


def window_perplexity(logprobs: np.ndarray, length: int) -> tuple[float, int]:
    """Perplexity of a window of ``length`` tokens from ``logprobs[p] = log p(token p+1 | tokens 0..p)``:
    positions length/2 .. length-2 (llama.cpp's ``first = n_ctx/2``, ``n_ctx - 1 - first`` tokens)."""
    first = length // 2
    lp = logprobs[first:length - 1]
    if np.isnan(lp).any():
        raise RopetoolError(f"internal: positions {first}..{length - 2} were not scored")
    return float(math.exp(-lp.mean())), len(lp)


def llama_logprobs(llm, ids: list[int], first: int, progress=None) -> np.ndarray:
    """``logprobs[p]`` for p in first..len(ids)-2 (NaN before), from llama.cpp's logits batch by batch."""
    target = np.asarray(ids, dtype=np.int64)
    out = np.full(len(ids), np.nan)
    for start, rows in llm.logits(ids, first=first, copy=False, progress=progress):
        n = min(len(rows), len(ids) - 1 - start)
        if n <= 0:
            continue
        out[start:start + n] = next_token_logprobs(rows[:n], target[start + 1:start + 1 + n])
    return out


def reference_logprobs(model, ids: list[int], first: int, setting) -> np.ndarray:
    """The same from the numpy reference: final hidden states, projected a chunk of positions at a time."""
    (h,) = model.hidden(ids, [setting])
    w = model.output_weight()
    target = np.asarray(ids, dtype=np.int64)
    out = np.full(len(ids), np.nan)
    step = 256
    for start in range(first, len(ids) - 1, step):
        stop = min(start + step, len(ids) - 1)
        rows = model.project(h[start:stop], w)
        out[start:stop] = next_token_logprobs(rows, target[start + 1:stop + 1])
    return out


# ------------------------------------------------------------------------------------------
# Passkey


@dataclass
class PasskeyPrompt:
    ids: list[int]
    key: str
    key_start: int  # index of the key sentence's first token
    key_tokens: int
    filler_start: int  # index of the first filler token
    filler_tokens: int  # filler tokens in all (before and after the key)

    @property
    def depth(self) -> float:
        return (self.key_start - self.filler_start) / self.filler_tokens if self.filler_tokens else 0.0


def passkey_keys(trials: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [str(rng.randint(10 ** (PASSKEY_DIGITS - 1), 10 ** PASSKEY_DIGITS - 1)) for _ in range(trials)]


def passkey_prompt(tokenize: Callable[[str], list[int]], length: int, depth: float, key: str,
                   bos: int | None = None) -> PasskeyPrompt:
    """llama.cpp's passkey prompt of exactly ``length`` tokens: prefix, filler (repeated and cut to fit, by
    tokens), the key sentence starting at ``depth`` of the filler, filler, question.  ``tokenize`` gives
    tokens without BOS; ``bos`` starts the prompt when the vocabulary adds one."""
    if not 0 <= depth <= 1:
        raise RopetoolError(f"passkey depth {depth:g} is not between 0 and 1")
    head = ([bos] if bos is not None else []) + tokenize(PASSKEY_PREFIX)
    filler = tokenize(PASSKEY_FILLER)
    sentence = tokenize(PASSKEY_KEY.format(key=key))
    question = tokenize(PASSKEY_QUESTION)
    n_fill = length - len(head) - len(sentence) - len(question)
    if n_fill < 0 or not filler:
        raise RopetoolError(f"a passkey prompt needs at least {length - n_fill} tokens; {length} is too short")
    fill = (filler * (n_fill // len(filler) + 1))[:n_fill]
    at = int(round(depth * n_fill))
    ids = head + fill[:at] + sentence + fill[at:] + question
    return PasskeyPrompt(ids, key, len(head) + at, len(sentence), len(head), n_fill)


def passkey_found(answer: str, key: str) -> bool:
    """Digit-only scoring: the first five digits of the answer are the key."""
    digits = "".join(re.findall(r"\d", answer))
    return digits[:PASSKEY_DIGITS] == key


# ------------------------------------------------------------------------------------------
# The run


class Evaluation:
    """Evaluate settings of a GGUF; :meth:`run` fills :attr:`report` record by record (so an interrupted run
    keeps the results so far)."""

    def __init__(self, path, lengths: list[int], tries: list[str] = (), text: str | None = None,
                 text_source: str | None = None, passkey: int = 0, depths=PASSKEY_DEPTHS, seed: int = 0,
                 device: str = "cpu", engine: str = "llama.cpp", approximate: bool = False, verbose: bool = False,
                 progress: Callable[[str], None] | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise RopetoolError(f"no such file: {self.path}")
        lengths = list(dict.fromkeys(int(L) for L in lengths))
        if not lengths:
            raise RopetoolError("--lengths: give at least one length")
        bad = [L for L in lengths if L < 4]
        if bad:
            raise RopetoolError(f"--lengths: {bad[0]} is too short (at least 4 tokens: half of the window is scored)")
        self.lengths = sorted(lengths)
        if engine not in ENGINES:
            raise RopetoolError(f"unknown engine {engine!r}; choose {' or '.join(ENGINES)}")
        if passkey < 0:
            raise RopetoolError("--passkey: the number of trials cannot be negative")
        self.depths = tuple(float(d) for d in depths)
        if any(not 0 <= d <= 1 for d in self.depths):
            raise RopetoolError("passkey depths are fractions between 0 and 1")
        self.tried = [Tried("file")] + [parse_setting(t) for t in tries]
        labels = [t.label for t in self.tried]
        dup = next((x for x in labels if labels.count(x) > 1), None)
        if dup:
            raise RopetoolError(f"--try {dup} is given twice")
        self.text, self.passkey, self.seed = text, passkey, seed
        self.device, self.engine, self.approximate, self.verbose = device, engine, approximate, verbose
        self.progress = progress or (lambda message: None)
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.model = ModelFile.open(self.path)  # closed by run()
        try:
            self.model.require_architecture()
            for t in self.tried:  # refuse what cannot run before any long work
                if not t.is_file:
                    rope_edit(self.model, t, self.lengths[-1], approximate or self.engine == "reference")
        except BaseException:
            self.model.close()
            raise
        self.report = EvalReport(str(self.path), self.lengths, labels, self.model.trained_context,
                                 text_source or (BUILTIN_SOURCE if text is None else "the given text"), engine, device,
                                 passkey_trials=passkey, passkey_depths=self.depths,
                                 _tried={t.label: t for t in self.tried})

    # --- llama.cpp
    def _model_for(self, tried: Tried, length: int | None) -> tuple[Path, dict, str]:
        if tried.is_file:
            return self.path, {}, "file"
        edit = rope_edit(self.model, tried, length, self.approximate)
        values, needs_file = overrides(self.model, edit)
        if needs_file is None:
            return self.path, values, "overrides"
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ropetool-eval-")
        out = Path(self._tmp.name) / "setting.gguf"
        header = self.model.header
        records, tensors = edit_records(header, edit.lowered, edit.context, edit.extra)
        write_gguf(out, records, tensors, source=header, alignment=header.alignment, version=header.version, replace=True)
        note = f"{tried.label}: written by set-rope to a temporary file (the edit {needs_file}: no load-time override can)"
        if note not in self.report.notes:
            self.report.notes.append(note)
        return out, {}, "temporary file"

    def run(self) -> EvalReport:
        t0 = time.perf_counter()
        try:
            if self.engine == "reference":
                self._run_reference()
            else:
                self._run_llama()
        finally:
            self.report.wall_seconds = time.perf_counter() - t0
            self.model.close()
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
        return self.report

    def _tokenizer(self):
        """llama.cpp's tokenizer of the file, and its BOS (when the vocabulary adds one)."""
        from ropetool.llamacpp.runner import LlamaCpp

        with LlamaCpp(self.path, n_ctx=256, device="cpu", verbose=self.verbose) as llm:
            text = self.text if self.text is not None else builtin_text()
            need = self.lengths[-1]
            # a prefix first (a token is rarely more than 16 characters), the whole text when it falls short
            head = text[:need * 16 + 1024]
            ids = llm.tokenize(head, add_bos=False)
            if len(ids) < need + 2 and len(head) < len(text):  # the last token of a cut text may be cut too
                ids = llm.tokenize(text, add_bos=False)
            bos = llm.bos
            pieces = {s: llm.tokenize(s, add_bos=False) for s in
                      (PASSKEY_PREFIX, PASSKEY_FILLER, PASSKEY_QUESTION)}
            keys = passkey_keys(self.passkey, self.seed)
            for k in keys:
                s = PASSKEY_KEY.format(key=k)
                pieces[s] = llm.tokenize(s, add_bos=False)
        window = ([bos] if bos is not None else []) + ids
        need = self.lengths[-1]
        if len(window) < need:
            raise RopetoolError(f"the text has {len(window)} tokens; --lengths asks for {need} (give a longer --text)")
        return window[:need], bos, pieces, keys

    def _run_llama(self) -> None:
        from ropetool.llamacpp.runner import LlamaCpp, RunSizes, gib, llama_bytes, padded_context, preflight, refuse_past_memory, ticker

        ids, bos, pieces, keys = self._tokenizer()
        # before the long work: the longest window's memory (the text's length is checked)
        need = llama_bytes(RunSizes(self.model.header), padded_context(self.lengths[-1] + PASSKEY_NEW_TOKENS))
        refuse_past_memory(need, f"--lengths {self.lengths[-1]}")
        preflight(self.path, 256, self.device)
        for tried in self.tried:
            per_length = length_dependent(tried, self.model)
            groups = [[L] for L in self.lengths] if per_length else [self.lengths]
            for group in groups:
                top = max(group)
                path, values, applied = self._model_for(tried, top if per_length else None)
                what = f"{tried.label} at {top} tokens" if per_length else f"{tried.label} ({len(ids[:top])} tokens)"
                self.progress(f"perplexity: {what}, llama.cpp's context about {gib(need)}")
                t = time.perf_counter()
                n_ctx = padded_context(top + (PASSKEY_NEW_TOKENS if self.passkey else 0))
                with LlamaCpp(path, n_ctx=n_ctx, device=self.device, verbose=self.verbose, overrides=values) as llm:
                    lp = llama_logprobs(llm, ids[:top], min(group) // 2,
                                        ticker(self.progress, f"perplexity: {tried.label}, tokens"))
                    secs = time.perf_counter() - t
                    for L in group:
                        ppl, n = window_perplexity(lp, L)
                        self.report.records.append(Score(tried.label, L, ppl, n, "llama.cpp", applied=applied,
                                                         seconds=secs / len(group)))
                    if self.passkey:
                        for L in group:
                            self._passkey(tried, L, pieces, keys, bos,
                                          lambda prompt: llm.detokenize(llm.greedy(prompt, PASSKEY_NEW_TOKENS)))

    def _passkey(self, tried: Tried, length: int, pieces: dict, keys: list[str], bos, answer) -> None:
        rec = self.report.record(tried.label, length)
        try:
            passkey_prompt(lambda s: pieces[s], length, 0.5, keys[0], bos)
        except RopetoolError as e:
            note = f"no passkey at {length} tokens: {e}"
            if note not in self.report.notes:
                self.report.notes.append(note)
            return
        found = trials = 0
        by_depth = {}
        for depth in self.depths:
            k_found = 0
            for i, key in enumerate(keys):
                self.progress(f"passkey: {tried.label} at {length} tokens, depth {depth:.0%}, trial {i + 1}/{len(keys)}")
                prompt = passkey_prompt(lambda s: pieces[s], length, depth, key, bos)
                ok = passkey_found(answer(prompt.ids), key)
                k_found += ok
            by_depth[depth] = [k_found, len(keys)]
            found += k_found
            trials += len(keys)
        rec.passkey_found, rec.passkey_trials, rec.passkey_by_depth = found, trials, by_depth

    # --- the numpy reference
    def _run_reference(self) -> None:
        ids, bos, pieces, keys = self._tokenizer()
        with ReferenceModel.from_model(self.model) as model:
            self.report.notes.append("engine reference: ropetool's numpy forward pass (float32), not llama.cpp")
            for tried in self.tried:
                per_length = length_dependent(tried, self.model)
                groups = [[L] for L in self.lengths] if per_length else [self.lengths]
                for group in groups:
                    top = max(group)
                    self.progress(f"perplexity (reference): {tried.label} at {top} tokens")
                    t = time.perf_counter()
                    params = None if tried.is_file else rope_edit(self.model, tried, top, True).params
                    lp = reference_logprobs(model, ids[:top], min(group) // 2, model.setting(top, params))
                    secs = time.perf_counter() - t
                    for L in group:
                        ppl, n = window_perplexity(lp, L)
                        self.report.records.append(Score(tried.label, L, ppl, n, "reference", applied="reference",
                                                          seconds=secs / len(group)))
                    if self.passkey:
                        for L in group:
                            def answer(prompt, params=params):
                                seq = list(prompt)
                                for _ in range(PASSKEY_NEW_TOKENS):
                                    (h,) = model.hidden(seq, [model.setting(len(seq), params)])
                                    seq.append(int(np.argmax(model.project(h[-1:], model.output_weight())[0])))
                                return _detokenize(self.path, seq[len(prompt):])
                            self._passkey(tried, L, pieces, keys, bos, answer)


def _detokenize(path, ids: list[int]) -> str:
    from ropetool.llamacpp.runner import LlamaCpp

    with LlamaCpp(path, n_ctx=256) as llm:
        return llm.detokenize(ids)


def evaluate(path, lengths, tries=(), **kwargs) -> EvalReport:
    """Run an :class:`Evaluation` and return its report."""
    return Evaluation(path, lengths, tries, **kwargs).run()


__all__ = ["Evaluation", "EvalReport", "Score", "Tried", "evaluate", "parse_setting", "overrides", "rope_edit", "passkey_prompt",
           "passkey_found", "passkey_keys", "window_perplexity", "next_token_logprobs", "builtin_text", "MARGIN",
           "set_rope_command", "BUILTIN_SOURCE"]
