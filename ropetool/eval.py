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

Perplexity by position: the pass over the longest length scores every position p >= 1 (log p(token p | the
tokens before it), one number a position) and reports them in bins of position (``bins``, default a bin per 1/8
of the longest length), with the trained context marked; each bin's perplexity is exp(-mean) of the
log-probabilities of the tokens whose positions fall in it.  Intervals: a moving-block bootstrap over
positions (blocks of 128, 2000 resamples, percentile 95%) for each perplexity, paired across settings (the
same blocks) for the difference the recommendation rests on; Wilson 95% intervals for retrieval accuracy.

The passkey test follows llama.cpp's examples/passkey: its prefix, filler, key sentence and question,
with the key sentence at given depths of the filler, keys drawn from ``random.Random(seed)``, the prompt
exactly L tokens, greedy decoding, and the key found when the first five digits of the answer are it.
The lines test is LongChat's LongEval "lines" prompt (see ``LINES_HEADER``), sized to exactly L tokens.
"""

from __future__ import annotations

import lzma
import math
import random
import re
import shlex
import tempfile
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import NewValue, T, encode_value, write_gguf
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.lowering import CannotCompute, check_options, edit_records
from ropetool.llamacpp.runner import CACHE_TYPES, LlamaCpp, gib, override_value, padded_context, preflight, refuse_past_memory, ticker
from ropetool.model import ModelFile, RopeEdit
from ropetool.reference import ReferenceModel
from ropetool.rope import METHOD_TABLE, OPTIONS, baked_at, canonical_method, flag, refuse_unused

MARGIN = 0.05  # a recommended setting's perplexity at the shortest length stays within 5% of the file's own
PASSKEY_DEPTHS = (0.1, 0.5, 0.9)
PASSKEY_NEW_TOKENS = 10  # a 5-digit key is up to 5 tokens, a space before it one more
PASSKEY_DIGITS = 5
ENGINES = ("llama.cpp", "reference")
BINS = 8  # perplexity by position: a bin per 1/8 of the longest length
CACHE_DEFAULT = "f16"  # llama.cpp's own tools run with an f16 KV cache (common_params: cache_type_k/v = F16)
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: 95% two-sided intervals
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_BLOCK = 128  # positions per block: the block bootstrap keeps the dependence of neighbouring tokens
MIN_BLOCKS = 20  # a shorter series gets shorter blocks: at least 20 of them
LINES_NEW_TOKENS = 16  # "<", up to five digits, ">" and what follows
LINES_MAX_VALUE = 50000  # LongChat: random.randint(1, 50000)
BUILTIN_TEXT = "tinyshakespeare.txt.xz"
BUILTIN_SOURCE = ("the first 300 KB of Shakespeare's plays as collected in karpathy/char-rnn "
                  "(data/tinyshakespeare/input.txt; public domain), shipped with ropetool")

# llama.cpp's examples/passkey/passkey.cpp
PASSKEY_PREFIX = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
                  "I will quiz you about the important information there.")
PASSKEY_FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
PASSKEY_KEY = " The pass key is {key}. Remember it. {key} is the pass key."
PASSKEY_QUESTION = " What is the pass key? The pass key is"

# LongChat's LongEval "lines" task (DachengLi1/LongChat, longeval/utils.py, generate_lines_testcases and
# test_lines_one_sample): the header, a line, the question, and the cue it appends for a model without a chat
# template (mpt-7b-storywriter: "use next word prediction")
LINES_HEADER = ("Below is a record of lines I want you to remember. Each line begins with 'line <line index>' and "
                "contains a '<REGISTER_CONTENT>' at the end of the line as a numerical value. For each line index, "
                "memorize its corresponding <REGISTER_CONTENT>. At the end of the record, I will ask you to retrieve "
                "the corresponding <REGISTER_CONTENT> of a certain line index. Now the record start:\n\n")
LINES_LINE = "line {name}: REGISTER_CONTENT is <{value}>\n"
LINES_QUESTION = "\nNow the record is over. Tell me what is the <REGISTER_CONTENT> in line {name}? I need the number."
LINES_CUE = "Line <{name}>: <REGISTER_CONTENT> is"
# line names: adjective-noun, as LongChat's LRT-NL option (it draws them with the wonderwords package)
LINES_ADJECTIVES = (
    "able", "acid", "agile", "amber", "ancient", "angry", "arctic", "bitter", "bold", "brave", "brief", "bright",
    "broad", "calm", "candid", "cheap", "civil", "clever", "cold", "cosmic", "crisp", "curious", "damp", "dark",
    "dear", "deep", "dizzy", "dry", "dusty", "eager", "early", "empty", "fair", "fancy", "fast", "fierce", "flat",
    "fond", "formal", "fresh", "gentle", "giant", "glad", "golden", "grand", "green", "grim", "happy", "hard",
    "hidden", "hollow", "humble", "icy", "idle", "jolly", "keen", "kind", "late", "lazy", "lively", "lone", "loud",
    "lucky", "mellow", "mild", "modest", "narrow", "neat", "noble", "odd", "pale", "plain", "polite", "proud",
    "quick", "quiet", "rapid", "rare", "rough", "royal", "rusty", "sacred", "shy", "silent", "silver", "simple",
    "sleek", "slow", "smooth", "solid", "sour", "spare", "steep", "stern", "sudden", "sweet", "swift", "tame",
    "tender", "tidy", "tiny", "urban", "vast", "vivid", "warm", "weary", "wild", "wise", "witty", "young")
LINES_NOUNS = (
    "anchor", "apple", "arrow", "badge", "banner", "barrel", "basket", "beacon", "bell", "bridge", "brook", "bucket",
    "cabin", "camel", "candle", "canyon", "castle", "cedar", "chair", "cliff", "cloud", "comet", "copper", "cottage",
    "crane", "crystal", "desert", "dragon", "drum", "eagle", "engine", "falcon", "feather", "fiddle", "forest",
    "fountain", "garden", "glacier", "harbor", "hammer", "helmet", "island", "jacket", "jungle", "kettle", "ladder",
    "lantern", "lemon", "meadow", "mirror", "monkey", "needle", "orchard", "otter", "oyster", "paddle", "palace",
    "parrot", "pebble", "pencil", "pepper", "pillow", "planet", "pocket", "puzzle", "rabbit", "ribbon", "river",
    "rocket", "saddle", "sailor", "shadow", "shell", "spider", "spoon", "statue", "stone", "summit", "tablet",
    "teapot", "thunder", "ticket", "tiger", "timber", "tower", "tractor", "trumpet", "tunnel", "turtle", "valley",
    "velvet", "violin", "wagon", "walnut", "window", "wizard", "zebra")

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
    parts = ["ropetool set-rope", shlex.quote(str(model)), "-o", shlex.quote(out), "--rope", tried.method]
    options = baked_at(tried.method, tried.options, length)
    for k in OPTIONS:
        if k in options:
            v = options[k]
            parts += [flag(k), f"{v:g}" if isinstance(v, float) else str(v)]
    return " ".join(parts)


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
    lines_found: int | None = None
    lines_trials: int | None = None
    interval: tuple[float, float] | None = None  # the perplexity's block bootstrap 95% interval

    @property
    def passkey_accuracy(self) -> float | None:
        if not self.passkey_trials:
            return None
        return self.passkey_found / self.passkey_trials

    def as_dict(self) -> dict:
        d = {"kind": "window", "setting": self.setting, "length": self.length, "perplexity": self.perplexity, "tokens_scored": self.scored,
             "engine": self.engine, "applied": self.applied, "seconds": round(self.seconds, 3)}
        if self.passkey_trials:
            d["passkey_accuracy"] = self.passkey_accuracy
            d["passkey_found"] = self.passkey_found
            d["passkey_trials"] = self.passkey_trials
            d["passkey_by_depth"] = {f"{k:g}": v for k, v in self.passkey_by_depth.items()}
            d["passkey_95"] = list(wilson_interval(self.passkey_found, self.passkey_trials))
        if self.lines_trials:
            d["lines_accuracy"] = self.lines_found / self.lines_trials
            d["lines_found"], d["lines_trials"] = self.lines_found, self.lines_trials
            d["lines_95"] = list(wilson_interval(self.lines_found, self.lines_trials))
        if self.interval is not None:
            d["perplexity_95"] = list(self.interval)
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
    lines_trials: int = 0
    bins: int = BINS
    cache_type: str = CACHE_DEFAULT
    seed: int = 0
    profiles: dict = field(default_factory=dict)  # setting -> Profile (the pass over the longest length)
    _tried: dict = field(default_factory=dict, repr=False)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def record(self, setting: str, length: int) -> Score | None:
        return next((r for r in self.records if r.setting == setting and r.length == length), None)

    def _window(self, setting: str, length: int) -> np.ndarray | None:
        """The log-probabilities the window score at ``length`` averages, from the setting's longest pass."""
        p = self.profiles.get(setting)
        if p is None or length != max(self.lengths):
            return None
        return p.by_position[length // 2 + 1:length]

    def recommendation(self) -> tuple[str | None, str]:
        """(the setting recommended, a line saying why, whether the next best is distinguishable from it, and how
        to apply it)."""
        if not self.records or not self.lengths:
            return None, "no results"
        short, long_ = min(self.lengths), max(self.lengths)
        own = self.record(self.settings[0], short)
        if own is None or own.perplexity is None:
            return None, "no recommendation: the file's own setting has no result at the shortest length"
        limit = own.perplexity * (1 + MARGIN)
        ranked = []
        for s in self.settings:
            a, b = self.record(s, short), self.record(s, long_)
            if a is None or b is None or a.perplexity is None or b.perplexity is None or a.perplexity > limit:
                continue
            ranked.append((b.perplexity, a.perplexity, s))  # a tie: the better at the shortest
        if not ranked:
            return None, "no recommendation: no setting has results at every length"
        ranked.sort()
        ppl, _, name = ranked[0]
        why = (f"best perplexity at {long_} tokens ({ppl:.4g}) among the settings whose perplexity at {short} tokens "
               f"stays within {MARGIN:.0%} of the file's own ({own.perplexity:.4g})")
        same = [s for p2, _, s in ranked[1:] if p2 == ppl and self._identical(name, s)]
        nxt = next(((p2, s) for p2, _, s in ranked[1:] if s not in same), None)
        if nxt is not None:
            a, b = self._window(name, long_), self._window(nxt[1], long_)
            if a is not None and b is not None:
                lo, hi = difference_interval(a, b, seed=self.seed)  # log(ppl(next) / ppl(best))
                ratio = f"{nxt[0] / ppl:.4g}x, 95% interval {math.exp(lo):.4g}..{math.exp(hi):.4g}"
                if lo <= 0:  # the interval of the ratio reaches 1: the next may be as good
                    why += (f"; NOT distinguishable from the next best, {nxt[1]} ({nxt[0]:.4g}; its perplexity over "
                            f"the best's: {ratio}, a paired block bootstrap over positions)")
                else:
                    why += f"; distinguishable from the next best, {nxt[1]} ({nxt[0]:.4g}; {ratio})"
        if same:
            why += f"; {', '.join(same)} computed the same"
        if name == self.settings[0]:
            return name, f"recommended: keep the file's own setting: {why}"
        command = set_rope_command(self.path, self._tried[name], long_)
        return name, f"recommended: {name}: {why}; apply it with: {command}"

    def _identical(self, a: str, b: str) -> bool:
        """Two settings whose passes gave the same numbers at every position (the same rope, e.g. ``none`` on a
        plain file): said, not compared."""
        pa, pb = self.profiles.get(a), self.profiles.get(b)
        return pa is not None and pb is not None and np.array_equal(pa.by_position, pb.by_position, equal_nan=True)

    def to_list(self) -> list[dict]:
        best, _ = self.recommendation() if not self.partial else (None, "")
        out = []
        for r in self.records:
            d = r.as_dict()
            d["cache_type"] = self.cache_type
            d["recommended"] = r.setting == best
            out.append(d)
        for s, p in self.profiles.items():
            for b in p.bins:
                d = b.as_dict(s)
                d["cache_type"] = self.cache_type
                out.append(d)
        if self.partial:
            for d in out:
                d["partial"] = True
        return out

    def table(self) -> str:
        """The window scores: a row per setting, a column per length (passkey and lines found/trials)."""
        engine_mark = " [reference]" if self.engine == "reference" else ""
        long_ = max(self.lengths)
        head = ["setting"] + [str(L) for L in self.lengths] + [f"95% at {long_}"]
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
                    cell += f" pk {r.passkey_found}/{r.passkey_trials}"
                if r.lines_trials:
                    cell += f" ln {r.lines_found}/{r.lines_trials}"
                row.append(cell)
            r = self.record(s, long_)
            row.append(f"{r.interval[0]:.4g}..{r.interval[1]:.4g}" if r is not None and r.interval else "-")
            rows.append(row)
        return _columns([head] + rows)

    def position_table(self) -> str:
        """Perplexity by position: a row per setting, a column per bin (labelled by its last position + 1), a
        ``|`` between the bins inside the trained context and those past it."""
        profiles = [p for p in self.profiles.values() if p.bins]
        if not profiles:
            return ""
        edges = [(b.start, b.end) for b in profiles[0].bins]
        head = ["setting"] + [f"..{e}" for _, e in edges]
        rows = [[p.setting] + [f"{b.perplexity:.4g}" for b in p.bins] for p in profiles]
        cut = None
        if self.trained_context:
            cut = next((i for i, (_, e) in enumerate(edges) if e > self.trained_context), None)
        return _columns([head] + rows, cut + 1 if cut is not None else None)

    def retrieval_table(self) -> str:
        """Passkey and lines accuracy with Wilson 95% intervals, a row per setting and length."""
        lines = []
        for what, found, trials in (("passkey", "passkey_found", "passkey_trials"),
                                    ("lines", "lines_found", "lines_trials")):
            recs = [r for r in self.records if getattr(r, trials)]
            if not recs:
                continue
            head = ["setting"] + [str(L) for L in self.lengths]
            rows = []
            for s in self.settings:
                row = [s]
                for L in self.lengths:
                    r = self.record(s, L)
                    if r is None or not getattr(r, trials):
                        row.append("-")
                        continue
                    k, n = getattr(r, found), getattr(r, trials)
                    lo, hi = wilson_interval(k, n)
                    row.append(f"{k}/{n} ({lo:.0%}..{hi:.0%})")
                rows.append(row)
            lines += [f"{what} accuracy, found/trials (Wilson 95% interval):", _columns([head] + rows), ""]
        return "\n".join(lines)

    def summary(self) -> str:
        attn = ", flash attention" if self.cache_type == "q8_0" else ""
        run = (f"engine {self.engine} on {self.device}" + (f", KV cache {self.cache_type}{attn}"
                                                            if self.engine == "llama.cpp" else ""))
        lines = [f"{self.path}: {run}" + (f"; trained context {self.trained_context}" if self.trained_context else ""),
                 f"text: {self.text_source}", ""]
        pos = self.position_table()
        if pos:
            lines += [f"perplexity by position (one pass of {max(self.lengths)} tokens per setting; a column per bin "
                      f"of positions, labelled by its end"
                      + (f"; | marks the trained context, {self.trained_context}" if self.trained_context else "")
                      + ")", pos, ""]
        lines += ["perplexity of the window's second half, as llama.cpp's perplexity tool scores a window of L "
                  "tokens (95%: block bootstrap over its positions)"
                  + ("; pk: passkey, ln: lines found/trials" if self.passkey_trials or self.lines_trials else ""),
                  self.table(), ""]
        retrieval = self.retrieval_table()
        if retrieval:
            lines.append(retrieval)
        if self.partial:
            lines.append("PARTIAL: interrupted; the results so far")
        else:
            lines.append(self.recommendation()[1])
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append(f"{self.wall_seconds:.1f} s")
        return "\n".join(lines)


def _columns(rows: list[list[str]], bar: int | None = None) -> str:
    """Aligned columns: the first left, the others right; a ``|`` before column ``bar``."""
    widths = [max(len(x[i]) for x in rows) for i in range(len(rows[0]))]
    out = []
    for x in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths))]
        if bar:
            cells.insert(bar, "|")
        out.append("  ".join(cells))
    return "\n".join(out)


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
# Intervals


def wilson_interval(found: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (E. B. Wilson, JASA 1927; Newcombe, Stat. Med. 1998, method 3):
    (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    if trials <= 0:
        return (float("nan"), float("nan"))
    n, p = trials, found / trials
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n)))


def _block_means(values: np.ndarray, block: int) -> np.ndarray:
    """The mean of every block of ``block`` consecutive values (the moving blocks: one starting at each position)."""
    c = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return (c[block:] - c[:-block]) / block


def block_bootstrap_means(values, block: int = BOOTSTRAP_BLOCK, resamples: int = BOOTSTRAP_RESAMPLES,
                          seed: int = 0) -> np.ndarray:
    """Moving-block bootstrap (Künsch 1989) of the mean of ``values`` (rows: series resampled with the same
    blocks, so that differences stay paired): each resample joins round(n / block) blocks of ``block``
    consecutive values (``block`` at most n / 20, so that a resample has at least 20 blocks), each starting at
    a position drawn uniformly from 0..n-block; its mean is the mean of the blocks' means.  Returns [resamples] (or [resamples, rows]) means."""
    x = np.atleast_2d(np.asarray(values, dtype=np.float64))
    n = x.shape[1]
    block = max(1, min(block, n // MIN_BLOCKS))
    k = max(1, round(n / block))
    starts = np.random.default_rng(seed).integers(0, n - block + 1, size=(resamples, k))
    means = np.stack([_block_means(row, block)[starts].mean(axis=1) for row in x], axis=1)
    return means[:, 0] if np.ndim(values) == 1 else means


def perplexity_interval(logprobs, block: int = BOOTSTRAP_BLOCK, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = 0) -> tuple[float, float]:
    """The 95% percentile interval of exp(-mean) under the block bootstrap of the positions' log-probabilities."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if len(lp) == 0:
        return (float("nan"), float("nan"))
    m = block_bootstrap_means(lp, block, resamples, seed)
    lo, hi = np.percentile(-m, [2.5, 97.5])
    return (float(math.exp(lo)), float(math.exp(hi)))


def difference_interval(a, b, block: int = BOOTSTRAP_BLOCK, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = 0) -> tuple[float, float]:
    """95% interval of mean(a) - mean(b) (log-probabilities at the same positions: the log of the perplexity
    ratio ppl(b) / ppl(a)), by the paired block bootstrap: the same blocks for both."""
    m = block_bootstrap_means(np.stack([np.asarray(a, float), np.asarray(b, float)]), block, resamples, seed)
    lo, hi = np.percentile(m[:, 0] - m[:, 1], [2.5, 97.5])
    return (float(lo), float(hi))


# ------------------------------------------------------------------------------------------
# Perplexity by position


@dataclass
class Bin:
    start: int  # first position in the bin
    end: int  # one past the last
    perplexity: float
    scored: int
    interval: tuple[float, float]

    def as_dict(self, setting: str) -> dict:
        return {"kind": "positions", "setting": setting, "start": self.start, "end": self.end,
                "perplexity": self.perplexity, "tokens_scored": self.scored, "perplexity_95": list(self.interval)}


def bin_edges(length: int, bins: int) -> list[int]:
    """Bin boundaries over positions 0..length-1: round(k * length / bins) for k = 0..bins."""
    return sorted(set(int(round(k * length / bins)) for k in range(bins + 1)))


def position_bins(by_position: np.ndarray, bins: int, seed: int = 0) -> list[Bin]:
    """``by_position[p] = log p(token p | tokens 0..p-1)`` (NaN where not scored: position 0) in ``bins`` bins of
    position: each bin's perplexity exp(-mean) over its scored positions, and its block bootstrap interval."""
    out = []
    edges = bin_edges(len(by_position), bins)
    for a, b in zip(edges, edges[1:]):
        lp = by_position[a:b]
        lp = lp[~np.isnan(lp)]
        if len(lp) == 0:
            continue
        out.append(Bin(a, b, float(math.exp(-lp.mean())), len(lp), perplexity_interval(lp, seed=seed)))
    return out


@dataclass
class Profile:
    """One setting's pass over the longest length: every position's log-probability (one float a position)."""

    setting: str
    by_position: np.ndarray  # [length]: log p(token p | tokens before it); NaN at position 0
    bins: list[Bin]
    seconds: float = 0.0


def by_position(logprobs: np.ndarray) -> np.ndarray:
    """``logprobs[p]`` (the next token's, from the logits at p) as the score of the token at p + 1."""
    out = np.full(len(logprobs), np.nan)
    out[1:] = logprobs[:-1]
    return out


# ------------------------------------------------------------------------------------------
# LongEval lines


@dataclass
class LinesPrompt:
    ids: list[int]
    name: str  # the line asked for
    value: int  # its REGISTER_CONTENT
    line_index: int  # its place among the lines
    lines: int  # lines in the record
    line_start: int  # index of the asked line's first token
    padding: int  # newline tokens between the record and the question, to make the prompt exactly the length


def lines_record(seed: int, length: int, trial: int, count: int) -> list[tuple[str, int]]:
    """``count`` lines (name, value) of trial ``trial`` at ``length``: distinct adjective-noun names, values from
    1..50000, from ``random.Random`` seeded by (seed, length, trial): the same record for every setting."""
    rng = random.Random(f"lines:{seed}:{length}:{trial}")
    pairs = [(a, n) for a in LINES_ADJECTIVES for n in LINES_NOUNS]
    if count > len(pairs):
        raise RopetoolError(f"a lines record of {count} lines needs more names than ropetool has ({len(pairs)})")
    names = rng.sample(pairs, count)
    return [(f"{a}-{n}", rng.randint(1, LINES_MAX_VALUE)) for a, n in names]


def lines_prompt(tokenize: Callable[[str], list[int]], length: int, seed: int, trial: int,
                 bos: int | None = None) -> LinesPrompt:
    """LongChat's lines prompt of exactly ``length`` tokens: the header, as many lines as fit, the question for
    one of them (drawn uniformly, from the same seed), LongChat's answer cue; the tokens the last line would
    overflow are newlines before the question.  ``tokenize`` gives tokens without BOS."""
    head = ([bos] if bos is not None else []) + tokenize(LINES_HEADER)
    newline = tokenize("\n")
    if len(newline) != 1:
        raise RopetoolError("the lines prompt pads with a newline token, and this vocabulary has none")
    # the question and cue for the longest name in the table: about the most they take
    longest = max(LINES_ADJECTIVES, key=len) + "-" + max(LINES_NOUNS, key=len)
    tail_max = len(tokenize(LINES_QUESTION.format(name=longest))) + len(tokenize(LINES_CUE.format(name=longest)))
    budget = length - len(head) - tail_max
    if budget <= 0:
        raise RopetoolError(f"a lines prompt needs more than {length} tokens")
    # lines until the budget is spent (an upper bound on their number first, then the record drawn once)
    record = lines_record(seed, length, trial, min(max(1, budget // 8), len(LINES_ADJECTIVES) * len(LINES_NOUNS)))
    lines, used = [], 0
    for name, value in record:
        t = tokenize(LINES_LINE.format(name=name, value=value))
        if used + len(t) > budget:
            break
        lines.append(t)
        used += len(t)
    if not lines:
        raise RopetoolError(f"a lines prompt needs more than {length} tokens")
    at = random.Random(f"lines-asked:{seed}:{length}:{trial}").randrange(len(lines))  # the asked line: uniform
    name, value = record[at]
    tail = tokenize(LINES_QUESTION.format(name=name)) + tokenize(LINES_CUE.format(name=name))
    pad = length - len(head) - used - len(tail)
    while pad < 0 and len(lines) > at + 1:  # a name that tokenizes longer than the longest: drop a line after it
        pad += len(lines.pop())
    if pad < 0:
        raise RopetoolError(f"a lines prompt of {length} tokens has no room for its question")
    while len(lines) < len(record):  # a shorter question than the longest leaves room: more lines while they fit
        t = tokenize(LINES_LINE.format(name=record[len(lines)][0], value=record[len(lines)][1]))
        if len(t) > pad:
            break
        lines.append(t)
        pad -= len(t)
    body = [t for line in lines for t in line]
    start = len(head) + sum(len(x) for x in lines[:at])
    ids = head + body + newline * pad + tail
    return LinesPrompt(ids, name, value, at, len(lines), start, pad)


def lines_found(answer: str, value: int) -> bool:
    """The first number in the answer is the asked line's value."""
    m = re.search(r"\d+", answer)
    return m is not None and int(m.group()) == value


# ------------------------------------------------------------------------------------------
# Passkey


@dataclass
class PasskeyPrompt:
    ids: list[int]
    key: str
    key_start: int  # index of the key sentence's first token
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
    return PasskeyPrompt(ids, key, len(head) + at, len(head), n_fill)


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
                 progress: Callable[[str], None] | None = None, lines: int = 0, bins: int = BINS,
                 cache_type: str = CACHE_DEFAULT):
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
        if lines < 0:
            raise RopetoolError("--lines: the number of trials cannot be negative")
        if bins < 1 or bins > self.lengths[-1] - 1:
            raise RopetoolError(f"--bins: {bins} bins of position do not fit {self.lengths[-1]} tokens (1 to "
                                f"{self.lengths[-1] - 1})")
        if cache_type not in CACHE_TYPES:
            raise RopetoolError(f"--cache-type: {cache_type!r} is not one of {', '.join(CACHE_TYPES)}")
        self.lines, self.bins, self.cache_type = lines, bins, cache_type
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
            head_k, head_v = self.model.head_sizes
            if cache_type == "q8_0" and engine == "llama.cpp" and (head_k % 32 or head_v % 32):
                raise RopetoolError(f"--cache-type q8_0: llama.cpp stores the cache in blocks of 32 values and this "
                                    f"model's attention heads have {head_k} (keys) and {head_v} (values); use f16 or f32")
            for t in self.tried:  # refuse what cannot run before any long work
                if not t.is_file:
                    rope_edit(self.model, t, self.lengths[-1], approximate or self.engine == "reference")
        except BaseException:
            self.model.close()
            raise
        self.report = EvalReport(str(self.path), self.lengths, labels, self.model.trained_context,
                                 text_source or (BUILTIN_SOURCE if text is None else "the given text"), engine, device,
                                 passkey_trials=passkey, passkey_depths=self.depths, lines_trials=lines, bins=bins,
                                 cache_type=cache_type, seed=seed, _tried={t.label: t for t in self.tried})

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
        self.report.note(f"{tried.label}: written by set-rope to a temporary file (the edit {needs_file}: no load-time override can)")
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
            self._lines = {}
            if self.lines:
                def tok(s):
                    if s not in pieces:
                        pieces[s] = llm.tokenize(s, add_bos=False)
                    return pieces[s]

                for L in self.lengths:
                    for i in range(self.lines):
                        try:
                            self._lines[L, i] = lines_prompt(tok, L, self.seed, i, bos)
                        except RopetoolError as e:
                            self.report.note(f"no lines at {L} tokens: {e}")
                            break
        window = ([bos] if bos is not None else []) + ids
        need = self.lengths[-1]
        if len(window) < need:
            raise RopetoolError(f"the text has {len(window)} tokens; --lengths asks for {need} (give a longer --text)")
        return window[:need], bos, pieces, keys

    def _groups(self, tried: Tried) -> list[list[int]]:
        """The lengths each pass serves: all of them, or one a pass for a setting that depends on the length."""
        return [[L] for L in self.lengths] if length_dependent(tried, self.model) else [self.lengths]

    def _score(self, tried: Tried, group: list[int], lp: np.ndarray, engine: str, applied: str, secs: float) -> None:
        """Window records for ``group`` from one pass's log-probabilities, and the position profile when the pass
        is the longest."""
        longest = self.lengths[-1]
        for L in group:
            ppl, n = window_perplexity(lp, L)
            interval = perplexity_interval(lp[L // 2:L - 1], seed=self.seed) if L == longest else None
            self.report.records.append(Score(tried.label, L, ppl, n, engine, applied=applied,
                                             seconds=secs / len(group), interval=interval))
        if max(group) == longest:
            scores = by_position(lp)
            self.report.profiles[tried.label] = Profile(tried.label, scores, position_bins(scores, self.bins, self.seed),
                                                        secs)

    def _same_as_file(self, tried: Tried, path, values: dict, group: list[int]) -> bool:
        """A tried setting that changes nothing of the file's (no key, no tensor) reuses the file's pass."""
        own = self.tried[0]
        if tried.is_file or path != self.path or values or self._groups(own) != [group]:
            return False
        for L in group:
            r = self.report.record(own.label, L)
            if r is None:
                return False
            self.report.records.append(replace(r, setting=tried.label, applied="file (no key changed)", seconds=0.0))
        if own.label in self.report.profiles:
            self.report.profiles[tried.label] = replace(self.report.profiles[own.label], setting=tried.label)
        self.report.note(f"{tried.label}: changes no key or tensor of the file: the file's own pass is reused")
        return True

    def _run_llama(self) -> None:
        ids, bos, pieces, keys = self._tokenizer()
        new_tokens = max(PASSKEY_NEW_TOKENS if self.passkey else 0, LINES_NEW_TOKENS if self.lines else 0)
        # before the long work: the longest window's memory (the text's length is checked)
        need = self.model.run_bytes(padded_context(self.lengths[-1] + new_tokens), self.cache_type)
        refuse_past_memory(need, f"--lengths {self.lengths[-1]}")
        preflight(self.path, 256, self.device)
        for tried in self.tried:
            per_length = length_dependent(tried, self.model)
            for group in self._groups(tried):
                top = max(group)
                path, values, applied = self._model_for(tried, top if per_length else None)
                if self._same_as_file(tried, path, values, group):
                    continue
                what = f"{tried.label} at {top} tokens" if per_length else f"{tried.label} ({top} tokens)"
                self.progress(f"perplexity: {what}, llama.cpp's context about {gib(need)}")
                t = time.perf_counter()
                n_ctx = padded_context(top + new_tokens)
                first = 0 if top == self.lengths[-1] else min(group) // 2  # every position of the longest pass
                with LlamaCpp(path, n_ctx=n_ctx, device=self.device, verbose=self.verbose, overrides=values,
                              cache_type=self.cache_type) as llm:
                    lp = llama_logprobs(llm, ids[:top], first, ticker(self.progress, f"perplexity: {tried.label}, tokens"))
                    self._score(tried, group, lp, "llama.cpp", applied, time.perf_counter() - t)
                    self._retrieval(tried, group, pieces, keys, bos, lambda prompt, n: llm.detokenize(llm.greedy(prompt, n)))

    def _retrieval(self, tried: Tried, group: list[int], pieces: dict, keys: list[str], bos, answer) -> None:
        """The passkey and lines trials at each length of ``group``; ``answer(prompt, n)``: n tokens decoded after it."""
        for L in group:
            if self.passkey:
                self._passkey(tried, L, pieces, keys, bos, lambda p: answer(p, PASSKEY_NEW_TOKENS))
            if self.lines:
                self._lines_trials(tried, L, lambda p: answer(p, LINES_NEW_TOKENS))

    def _lines_trials(self, tried: Tried, length: int, answer) -> None:
        prompts = [self._lines[length, i] for i in range(self.lines) if (length, i) in self._lines]
        if not prompts:
            return
        found = 0
        for i, p in enumerate(prompts):
            self.progress(f"lines: {tried.label} at {length} tokens, trial {i + 1}/{len(prompts)}")
            found += lines_found(answer(p.ids), p.value)
        rec = self.report.record(tried.label, length)
        rec.lines_found, rec.lines_trials = found, len(prompts)

    def _passkey(self, tried: Tried, length: int, pieces: dict, keys: list[str], bos, answer) -> None:
        rec = self.report.record(tried.label, length)
        try:
            passkey_prompt(lambda s: pieces[s], length, 0.5, keys[0], bos)
        except RopetoolError as e:
            self.report.note(f"no passkey at {length} tokens: {e}")
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
                for group in self._groups(tried):
                    top = max(group)
                    self.progress(f"perplexity (reference): {tried.label} at {top} tokens")
                    t = time.perf_counter()
                    params = None if tried.is_file else rope_edit(self.model, tried, top, True).params
                    first = 0 if top == self.lengths[-1] else min(group) // 2
                    lp = reference_logprobs(model, ids[:top], first, model.setting(top, params))
                    self._score(tried, group, lp, "reference", "reference", time.perf_counter() - t)

                    def answer(prompt, n_new, params=params):
                        seq = list(prompt)
                        for _ in range(n_new):
                            (h,) = model.hidden(seq, [model.setting(len(seq), params)])
                            seq.append(int(np.argmax(model.project(h[-1:], model.output_weight())[0])))
                        return _detokenize(self.path, seq[len(prompt):])

                    self._retrieval(tried, group, pieces, keys, bos, answer)


def _detokenize(path, ids: list[int]) -> str:
    with LlamaCpp(path, n_ctx=256) as llm:
        return llm.detokenize(ids)


def evaluate(path, lengths, tries=(), **kwargs) -> EvalReport:
    """Run an :class:`Evaluation` and return its report."""
    return Evaluation(path, lengths, tries, **kwargs).run()


__all__ = ["Evaluation", "EvalReport", "Score", "Tried", "evaluate", "parse_setting", "overrides", "rope_edit", "passkey_prompt",
           "passkey_found", "passkey_keys", "window_perplexity", "next_token_logprobs", "builtin_text", "MARGIN",
           "set_rope_command", "BUILTIN_SOURCE", "wilson_interval", "block_bootstrap_means", "perplexity_interval",
           "difference_interval", "position_bins", "bin_edges", "by_position", "lines_prompt", "lines_found",
           "lines_record", "Profile", "Bin", "BINS", "CACHE_DEFAULT"]
