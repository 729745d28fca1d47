"""``ropetool check``: which rope setting does llama.cpp compute for this file?

llama.cpp's next-token distributions are compared, position by position, with the numpy reference's
under the setting the file means (ropetool's record, or the keys as they document it) and under the
nearest wrong readings: no extension; each parameter that matters moved (factor, base, original
context: x2 and /2); and what llama.cpp is known to fall back to (a key it ignores, a rope tensor it does
not load, the attention factor dropped).  For each alternative *i*, with P llama.cpp's distribution,
R0 the meant setting's and Ri the alternative's, per position:

* ``gap_i = KL(P || Ri) - KL(P || R0)``: how much better the meant setting explains llama.cpp's output
  (a log-likelihood ratio; it equals KL(R0 || Ri) when llama.cpp computes R0 exactly, and
  -KL(Ri || R0) when it computes Ri);
* ``separation_i = KL(R0 || Ri)``: how far apart the two settings are.

The verdict (docs/check.md derives the margins):

* PASS: for every alternative the mean gap is at least half the separation, and at least
  ``SIGNIFICANCE`` standard errors of its per-position noise (standard error from blocks of positions);
* FAIL: for some alternative the mean gap is negative by at least ``SIGNIFICANCE`` standard errors:
  llama.cpp computes something closer to it (the report names the closest);
* INCONCLUSIVE otherwise: a setting moves the output by less than llama.cpp's own rounding at this
  length; the report says which, and what would separate them.

The same rule holds for every weight type and length: no per-type tolerance.  Everything is streamed:
the reference reads one layer at a time, llama.cpp's logits come a batch at a time, and the divergences
are computed a chunk of positions at a time, never positions x vocabulary for the whole sequence.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import Report
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.runner import LlamaCpp, gib, padded_context, preflight, refuse_past_memory, ticker
from ropetool.llamacpp.state import RopeState, key_misreadings
from ropetool.model import ModelFile
from ropetool.reference import QUERY_BLOCK, ReferenceModel, Setting, log_softmax
from ropetool.rope import METHOD_TABLE, RopeParams, make_params, rope_frequencies
from ropetool.words import number

MAX_DEFAULT_TOKENS = 2048
# A toy model's few positions make a noisy average: a mixture of experts' routing flips at a handful of them
# (where two experts score alike and llama.cpp's rounding tips the choice), which 128 positions cannot outvote.
MIN_DEFAULT_TOKENS = 256
SIGNIFICANCE = 4.0  # standard errors a gap must clear
MIN_RATIO = 0.5  # a pass needs llama.cpp at least half-way closer to the meant setting than the separation
CHUNK_ELEMENTS = 1 << 22  # logits values per chunk of the divergence computation (float64: 32 MB)
FULL_LENGTH_ALTERNATIVES = 512  # up to this many tokens every alternative runs over all of them; beyond, over the first half


@dataclass
class Comparison:
    """llama.cpp against the meant setting: plain distances, for information."""

    max_abs_diff: float
    rel_error: float  # max |diff| / max |reference logit|
    top1_agreement: float
    kl_mean: float
    kl_max: float


@dataclass
class Alternative:
    label: str  # what the setting is, in words
    kind: str  # "no-extension", "factor", "base", "original-context", "alpha", "max-bias", "rope-tensor",
    #            "attention-factor", "longrope-table", "llama.cpp-reading", "keys-vs-record", "alibi-off", "sliding-base"
    separation: float  # mean KL(R0 || Ri), nats per position
    separation_reverse: float  # mean KL(Ri || R0)
    llama_distance: float  # mean KL(P || Ri)
    gap: float  # mean KL(P || Ri) - KL(P || R0)
    ratio: float  # gap / separation: 1 when llama.cpp computes the meant setting, about -1 when it computes this one
    noise: float  # standard error of the mean of (gap - separation): llama.cpp's rounding if it computes the meant setting
    noise_alt: float  # standard error of the mean of (gap + separation_reverse): its rounding if it computes this one
    outcome: str = ""  # "farther", "closer" or "unresolved"


@dataclass
class CheckReport(Report):
    path: str
    architecture: str
    weight_type: str
    method: str
    method_source: str  # "ropetool" (the record) or "inferred" (the keys)
    meant: str  # the setting checked, in words
    rope: dict
    device: str
    n_tokens: int
    n_ctx: int
    positions: list[int]  # first and last position compared with the meant setting
    alternative_positions: list[int]  # first and last position the alternatives are compared on
    original_context: int | None
    llama_vs_meant: Comparison
    alternatives: list[Alternative]
    verdict: str  # "pass", "fail" or "inconclusive"
    reason: str
    closest: str | None = None  # the alternative llama.cpp computes instead, when it fails
    settings: dict = field(default_factory=dict)  # how llama.cpp was run
    notes: list[str] = field(default_factory=list)
    lint: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0

    def summary(self) -> str:
        m = self.llama_vs_meant
        lines = [
            f"{self.path}: {self.architecture}, {self.weight_type} weights, rope {self.method} "
            f"({'recorded by ropetool' if self.method_source == 'ropetool' else 'read from the keys'}), "
            f"{self.n_tokens} tokens on {self.device} in {self.wall_seconds:.1f} s",
            f"meant setting: {self.meant}",
            f"llama.cpp vs the meant setting: KL mean {m.kl_mean:.3g} max {m.kl_max:.3g} nats, top-1 agreement "
            f"{m.top1_agreement:.1%}, max |diff| {m.max_abs_diff:.3g} (relative {m.rel_error:.3g})",
            f"alternatives, over positions {self.alternative_positions[0]}..{self.alternative_positions[1]} (separation = "
            "KL(meant || alt); gap = KL(llama.cpp || alt) - KL(llama.cpp || meant), in nats per position):",
        ]
        width = max((len(a.label) for a in self.alternatives), default=0)
        for a in self.alternatives:
            noise = a.noise_alt if a.outcome == "closer" else a.noise
            lines.append(f"  {a.label:<{width}}  separation {a.separation:.3g}, gap {a.gap:.3g} ({a.ratio:+.2f} of it, "
                         f"noise {noise:.2g}): {a.outcome}")
        lines.append(f"{self.verdict.upper()}: {self.reason}")
        if self.verdict == "fail":
            for f in self.lint:
                lines.append(f"  likely cause: {f['message']}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# The settings: the meant one and its alternatives


@dataclass
class _Candidate:
    setting: Setting
    kind: str


def default_tokens(n_vocab: int, original_context: int | None, n: int | None) -> tuple[list[int], list[str]]:
    """A deterministic token sequence: the original context plus a quarter (at least 64 more, and at least 256
    in all), at most 2048."""
    notes = []
    if n is None:
        L0 = original_context or 256
        n = _default_count(L0)
        if L0 + max(64, L0 // 4) > MAX_DEFAULT_TOKENS:
            notes.append(f"{n} tokens (the default) stay within the original context of {L0}; the alternatives are "
                         f"told apart there, pass --tokens to go past it")
    if n < 2:
        raise RopetoolError("--tokens must be at least 2")
    rng = np.random.default_rng(0)
    low = min(4, n_vocab - 1)
    return [int(t) for t in rng.integers(low, n_vocab, size=n)], notes


def _default_count(original_context: int) -> int:
    return min(MAX_DEFAULT_TOKENS, max(MIN_DEFAULT_TOKENS, original_context + max(64, original_context // 4)))


CHECK_SETTINGS = 16  # the meant setting and its alternatives, at most: what the memory estimate counts


def bound_tokens(mf: ModelFile, n: int | None) -> None:
    """Refuse, before any work, a --tokens past what the file's context allows (its context_length, or the
    default count where that is more) or past this machine's memory (llama.cpp's context, the reference's
    hidden states and attention block for every setting, the per-position tallies), saying how much it needs."""
    if n is None:
        return
    if n < 2:
        raise RopetoolError("--tokens must be at least 2")
    st = mf.state
    context = st.context_length if isinstance(st.context_length, int) else 0
    limit = max(context, _default_count(st.n_ctx_orig or context or 256))
    ref = CHECK_SETTINGS * n * (6 * (mf.count(K.EMBEDDING_LENGTH) or 1) * 4 + 3 * 8) + 2 * (st.n_head or 1) * min(n, QUERY_BLOCK) * n * 4
    need = mf.run_bytes(padded_context(min(n, 2**40))) + ref
    if n > limit:
        raise RopetoolError(f"--tokens {n}: at most {limit} for this file (its context_length is {context}; check's "
                            f"default count is {_default_count(st.n_ctx_orig or context or 256)}); {n} tokens would "
                            f"need about {gib(need)} of memory")
    refuse_past_memory(need, f"--tokens {n}")


def _state_setting(st: RopeState, n_tokens: int, n_ctx: int, label: str) -> Setting:
    if st.encoding == "alibi":
        return Setting(label, slopes=st.alibi_slopes())
    if st.encoding == "none":
        return Setting(label)
    inv, mag = st.frequencies(n_tokens, n_ctx)  # LongRoPE's table: by n_ctx as llama.cpp reads, by n_tokens as the keys
    sliding = st.of_sliding_layers().frequencies(n_tokens, n_ctx) if st.sliding is not None else None
    return Setting(label, inv_freq=inv, magnitude=mag, sliding=sliding)


def _param_alternatives(p: RopeParams, model: ReferenceModel, seq_len: int) -> list[_Candidate]:
    """The record's method with each parameter that matters moved, and with the extension removed."""
    out = []
    uses = set(METHOD_TABLE[p.method].uses)

    def add(kind, label, **changes):
        try:
            q = make_params(changes.pop("method", p.method), **{**p.values(), **changes})
            out.append(_Candidate(model.setting(seq_len, q, label), kind))
        except RopetoolError:
            pass

    if p.is_alibi:
        if p.method != "alibi":
            add("no-extension", f"plain ALiBi (max_bias {number(p.max_bias)}) instead of {p.method}", method="alibi", alpha=None)
        for f, word in ((2.0, "x2"), (0.5, "/2")):
            add("max-bias", f"max_bias {number(p.max_bias * f)} ({word})", max_bias=p.max_bias * f)
            if p.alpha is not None and "alpha" in uses and p.alpha * f >= 1:
                add("alpha", f"alpha {number(p.alpha * f)} ({word})", alpha=p.alpha * f)
        out.append(_Candidate(Setting("no ALiBi at all"), "alibi-off"))
        return out
    if p.method != "none":
        add("no-extension", f"plain RoPE (base {number(p.base)}) instead of {p.method}", method="none",
            **{k: None for k in p.values() if k != "base"})
    for f, word in ((2.0, "x2"), (0.5, "/2")):
        if "factor" in uses and p.factor > 1 and p.factor * f >= 1:
            add("factor", f"factor {number(p.factor * f)} ({word})", factor=p.factor * f)
        if "alpha" in uses and p.alpha is not None and p.alpha * f >= 1:
            add("alpha", f"alpha {number(p.alpha * f)} ({word})", alpha=p.alpha * f)
        add("base", f"base {number(p.base * f)} ({word})", base=p.base * f)
        if p.method in ("yarn", "ntk-by-parts", "llama3", "dynamic-ntk", "dynamic-yarn") and p.original_context:
            add("original-context", f"original context {int(p.original_context * f)} ({word})",
                original_context=int(p.original_context * f))
    if p.method in ("yarn", "dynamic-yarn", "longrope") and (p.attention_factor is None or p.attention_factor != 1):
        add("attention-factor", "without the attention factor (cos/sin magnitude 1)", attention_factor=1.0)
    if p.method == "none":
        add("factor", f"linear interpolation x2 (base {number(p.base)})", method="linear", factor=2.0)
    if model.sliding is not None and model.sliding_base is not None:
        inv, mag = rope_frequencies(p, model.shapes.n_rot, seq_len=seq_len)
        for f, word in ((2.0, "x2"), (0.5, "/2")):
            out.append(_Candidate(Setting(f"the sliding-window layers' base {number(model.sliding_base * f)} ({word})",
                                          inv_freq=inv, magnitude=mag,
                                          sliding=model.sliding_frequencies(seq_len, p, base=model.sliding_base * f)),
                                  "sliding-base"))
    return out


def _key_alternatives(mf: ModelFile, st: RopeState, n: int, n_ctx: int) -> list[_Candidate]:
    """The keys' reading with each key that matters moved (x2, /2), removed, or a rope tensor hidden."""
    out = []
    for edit in key_misreadings(st):
        if edit.kind == "alibi-off":
            out.append(_Candidate(Setting(edit.label), edit.kind))
            continue
        try:
            edited = mf.edited(edit.set, edit.remove, edit.hide).keys_state
            if edited.encoding == "rope" and not edited.computable:
                continue
            out.append(_Candidate(_state_setting(edited, n, n_ctx, edit.label), edit.kind))
        except RopetoolError:
            pass
    return out


def _settings(mf: ModelFile, model: ReferenceModel, n: int, n_ctx: int) -> tuple[Setting, list[_Candidate], dict, list[str]]:
    """(the meant setting, the alternatives, how the method is named, notes)."""
    notes: list[str] = []
    st_llama, st_keys, record, meant_named = mf.state, mf.keys_state, mf.record, mf.meant
    naming = {"method": meant_named.method, "source": meant_named.source, "params": meant_named.params}
    params = meant_named.rope if meant_named.source == "ropetool" else None
    candidates: list[_Candidate] = []
    if params is not None and record is not None and record.exact is False:
        notes.append(f"the file approximates {params.method} (ropetool recorded a relative error of up to "
                     f"{record.approx_error:.3g}); it is checked against what its keys say")
        params = None
    if params is not None:
        method = METHOD_TABLE[params.method]
        seq_len = n
        if method.dynamic:
            seq_len = params.target_context or mf.extended_context or n
            dynamic = model.setting(n, params, "dynamic")
            baked = model.setting(seq_len, params, "baked")
            a, b = (dynamic.inv_freq, baked.inv_freq) if dynamic.inv_freq is not None else (dynamic.slopes, baked.slopes)
            if a is not None:
                notes.append(f"{params.method} is baked for {seq_len} tokens (what llama.cpp can compute); at the "
                             f"{n} tokens checked the dynamic method would differ by up to "
                             f"{float(np.max(np.abs(a - b) / np.abs(b))):.3g} (relative frequency or slope)")
        elif params.method == "longrope":
            seq_len = n_ctx
            notes.append(f"llama.cpp picks LongRoPE's table by the context it allocates ({n_ctx}), not by the "
                         f"input's length; the meant setting follows it")
        meant = model.setting(seq_len, params, f"{params.method} as ropetool recorded it ({params.words() or 'defaults'})")
        # What llama.cpp makes of the keys comes first: where it equals a moved parameter, its label names the key.
        llama = _state_setting(st_llama, n, n_ctx, "the file's keys as llama.cpp reads them")
        if not llama.same_as(meant, 1e-6):
            candidates.append(_Candidate(replace(llama, label=_keys_vs_record(mf, params, model)), "keys-vs-record"))
        candidates += _param_alternatives(params, model, seq_len)
        if params.method == "longrope":
            other = n if n_ctx > (params.original_context or 0) >= n else max(n_ctx, (params.original_context or 0) + 1)
            candidates.append(_Candidate(model.setting(other, params, "LongRoPE's other table"), "longrope-table"))
    else:
        meant = _state_setting(st_keys, n, n_ctx, f"{meant_named.method}, as the keys document it")
        llama = _state_setting(st_llama, n, n_ctx, "what llama.cpp reads from the keys")
        if not llama.same_as(meant, 1e-9):
            ignored = ", ".join(f"{i.key} = {i.value}" for i in st_llama.ignored) or "its defaults"
            candidates.append(_Candidate(replace(llama, label=f"what llama.cpp reads from the keys (it ignores {ignored})"),
                                         "llama.cpp-reading"))
        candidates += _key_alternatives(mf, st_keys, n, n_ctx)
    # One alternative per distinct setting, none equal to the meant one.
    kept: list[_Candidate] = []
    for c in candidates:
        if c.setting.same_as(meant) or any(c.setting.same_as(k.setting) for k in kept):
            continue
        kept.append(c)
    return meant, kept, naming, notes


def _keys_vs_record(mf: ModelFile, params: RopeParams, model: ReferenceModel) -> str:
    """Name the keys that differ from what ropetool's lowering of the record writes."""
    changed = [f"no {key}" if meant is None else
               f"{key} = {have:g} where the record means {meant:g}" if key == mf.key(K.ROPE_FREQ_BASE_SWA) else
               f"{key} = {have} where the record means {meant}"
               for key, have, meant in mf.record_differences(params, model.shapes.n_rot, model.shapes.n_head)]
    detail = "; ".join(changed) if changed else "a rope key or tensor changed after ropetool wrote it"
    return f"the file's keys as llama.cpp reads them ({detail})"


# ------------------------------------------------------------------------------------------
# The comparison, streamed


class _Tally:
    """Per-position divergences and plain distances, accumulated a chunk at a time."""

    def __init__(self, n: int, k: int):
        self.kl_meant = np.zeros(n)  # KL(P || R0)
        self.kl_alt = np.zeros((k, n))  # KL(P || Ri)
        self.sep = np.zeros((k, n))  # KL(R0 || Ri)
        self.sep_rev = np.zeros((k, n))  # KL(Ri || R0)
        self.max_diff = 0.0
        self.max_ref = 0.0
        self.top1 = 0

    def add(self, start: int, llama: np.ndarray, meant: np.ndarray, alts: list[np.ndarray]) -> None:
        stop = start + len(llama)
        lp = log_softmax(llama.astype(np.float64))
        p = np.exp(lp)
        l0 = log_softmax(meant.astype(np.float64))
        p0 = np.exp(l0)
        self.kl_meant[start:stop] = np.maximum((p * (lp - l0)).sum(-1), 0.0)
        self.max_diff = max(self.max_diff, float(np.abs(llama - meant).max()))
        self.max_ref = max(self.max_ref, float(np.abs(meant).max()))
        self.top1 += int((llama.argmax(-1) == meant.argmax(-1)).sum())
        for i, alt in enumerate(alts):  # an alternative may cover only the chunk's first rows
            r = len(alt)
            li = log_softmax(alt.astype(np.float64))
            self.kl_alt[i, start:start + r] = np.maximum((p[:r] * (lp[:r] - li)).sum(-1), 0.0)
            self.sep[i, start:start + r] = np.maximum((p0[:r] * (l0[:r] - li)).sum(-1), 0.0)
            self.sep_rev[i, start:start + r] = np.maximum((np.exp(li) * (li - l0[:r])).sum(-1), 0.0)


def _block_se(x: np.ndarray) -> float:
    """Standard error of the mean of a per-position series, from the means of contiguous blocks (positions in
    one sequence are correlated; blocks of n/16 or more positions are roughly independent)."""
    n = len(x)
    blocks = min(32, max(4, n // 16))
    size = n // blocks
    means = x[: size * blocks].reshape(blocks, size).mean(-1)
    return float(means.std(ddof=1) / math.sqrt(blocks)) if blocks > 1 else float("inf")


def _verdict(tally: _Tally, labels: list[str], kinds: list[str], positions: slice) -> tuple[list[Alternative], str, str, str | None]:
    d0 = tally.kl_meant[positions]
    alternatives = []
    for i, (label, kind) in enumerate(zip(labels, kinds)):
        di = tally.kl_alt[i, positions]
        gap_series, sep_series, rev_series = di - d0, tally.sep[i, positions], tally.sep_rev[i, positions]
        sep, rev, gap = float(sep_series.mean()), float(rev_series.mean()), float(gap_series.mean())
        # Were llama.cpp computing the meant setting exactly, the gap would equal KL(R0 || Ri) at every position;
        # were it computing the alternative, -KL(Ri || R0).  What it differs by is llama.cpp's rounding under that
        # hypothesis; the standard error of its mean measures the noise a decision must clear.
        noise = _block_se(gap_series - sep_series)
        noise_alt = _block_se(gap_series + rev_series)
        ratio = gap / sep if sep > 0 else 0.0
        if gap < 0 and -gap >= MIN_RATIO * rev and -gap >= SIGNIFICANCE * noise_alt:
            outcome = "closer"
        elif gap >= MIN_RATIO * sep and gap >= SIGNIFICANCE * noise:
            outcome = "farther"
        else:
            outcome = "unresolved"
        alternatives.append(Alternative(label, kind, sep, rev, float(di.mean()), gap, ratio, noise, noise_alt, outcome))
    closer = [a for a in alternatives if a.outcome == "closer"]
    unresolved = [a for a in alternatives if a.outcome == "unresolved"]
    if closer:
        best = min(closer, key=lambda a: a.llama_distance)
        errors = -best.gap / best.noise_alt if best.noise_alt else float("inf")
        reason = (f"llama.cpp's output is closer to {best.label} than to the meant setting (by {-best.gap:.3g} nats "
                  f"per position, {best.ratio:+.2f} of their separation, {errors:.0f} standard errors)")
        return alternatives, "fail", reason, best.label
    if unresolved:
        names = "; ".join(a.label for a in unresolved)
        reason = (f"llama.cpp's rounding hides the difference from: {names} (a gap of at least half the separation, either "
              f"way, and {SIGNIFICANCE:g} standard errors is needed); more tokens, or a --text of real prose, would "
              "separate them")
        return alternatives, "inconclusive", reason, None
    if not alternatives:
        return alternatives, "inconclusive", "no alternative setting differs from the meant one here", None
    weakest = min(alternatives, key=lambda a: a.gap / a.noise if a.noise else float("inf"))
    reason = (f"llama.cpp computes the meant setting: every alternative is farther from its output (the nearest, "
              f"{weakest.label}, by {weakest.ratio:.2f} of their separation, "
              f"{(weakest.gap / weakest.noise) if weakest.noise else float('inf'):.0f} standard errors)")
    return alternatives, "pass", reason, None


def _weight_type(model: ReferenceModel) -> str:
    counts: dict[str, int] = {}
    for name, qtype, n_elements in model.tensor_types():
        if name.endswith(".weight") and not name.startswith("rope_"):
            counts[qtype] = counts.get(qtype, 0) + n_elements
    return max(counts, key=counts.get) if counts else "F32"


def check_gguf(path, device: str = "cpu", n_tokens: int | None = None, text: str | None = None, source=None,
               verbose: bool = False, flash_attn: bool = False, progress=None) -> CheckReport:
    """Which rope setting llama.cpp computes for ``path``, against the numpy reference (module docstring).
    ``progress(message)``, when given, hears about the long work every few seconds."""
    started = time.perf_counter()
    path = Path(path)
    with ModelFile.open(path) as mf:
        bound_tokens(mf, n_tokens)  # a count past the file's context or this machine's memory: refused up front
        errors = [f for f in mf.findings if f.severity == "error"]
        if errors:
            more = f" (and {len(errors) - 1} more: see ropetool inspect)" if len(errors) > 1 else ""
            raise RopetoolError(f"{path}: {errors[0].message}{more}")
        preflight(path, 256, device)  # an abort in llama.cpp ends a child process, as a one-line error
        report = _compare(mf, ReferenceModel.from_model(mf), device, n_tokens, text, source, verbose, flash_attn, progress)
    report.wall_seconds = time.perf_counter() - started
    return report


def _compare(mf: ModelFile, ref: ReferenceModel, device, n_tokens, text, source, verbose, flash_attn, progress) -> CheckReport:
    """llama.cpp against the reference under the meant setting and its alternatives, streamed."""
    path = mf.path
    weight_type = _weight_type(ref)
    model = ref.with_weights_from(ReferenceModel.from_hf(source)) if source is not None else ref
    notes: list[str] = []
    if text is not None:
        with LlamaCpp(path, n_ctx=256, device=device, verbose=verbose) as llm:
            ids = llm.tokenize(text)
        if n_tokens:
            ids = ids[:n_tokens]
        if len(ids) < 2:
            raise RopetoolError("the text gives fewer than 2 tokens")
    else:
        ids, notes = default_tokens(ref.n_vocab, ref.original_context, n_tokens)
    n = len(ids)
    n_ctx = padded_context(n)
    meant, candidates, naming, more_notes = _settings(mf, model, n, n_ctx)
    notes += more_notes
    settings = [meant] + [c.setting for c in candidates]
    m = n if n <= FULL_LENGTH_ALTERNATIVES else max(FULL_LENGTH_ALTERNATIVES, n // 2)
    if progress is not None:
        progress(f"check: the reference runs {len(settings)} settings over {n} tokens, then llama.cpp")
    hidden = model.hidden(ids, settings, lengths=[n] + [m] * len(candidates),
                          progress=ticker(progress, f"reference: {len(settings)} settings x {n} tokens, layers"))
    out_w = model.output_weight()
    tally = _Tally(n, len(candidates))
    with LlamaCpp(path, n_ctx=n_ctx, device=device, verbose=verbose, flash_attn=flash_attn) as llm:
        if llm.n_ctx != n_ctx:  # pragma: no cover - llama.cpp's padding rule changed
            raise RopetoolError(f"llama.cpp allocated {llm.n_ctx} tokens of context, not {n_ctx}")
        rows = max(1, CHUNK_ELEMENTS // max(1, ref.n_vocab))
        for start, logits in llm.logits(ids, progress=ticker(progress, "llama.cpp: tokens")):
            for a in range(0, len(logits), rows):
                b = min(a + rows, len(logits))
                pos = slice(start + a, start + b)
                alts = [model.project(h[pos], out_w) for h in hidden[1:]] if pos.start < m else []
                if alts and pos.stop > m:  # a chunk across the alternatives' end: they cover its first rows
                    alts = [x[: m - pos.start] for x in alts]
                tally.add(start + a, logits[a:b], model.project(hidden[0][pos], out_w), alts)
        device_name = llm.device
    del hidden, out_w
    alternatives, verdict, reason, closest = _verdict(tally, [c.setting.label for c in candidates],
                                                      [c.kind for c in candidates], slice(0, m))
    lint = [f.as_dict() for f in mf.findings if f.severity == "warning"] if verdict == "fail" else []
    comparison = Comparison(tally.max_diff, tally.max_diff / (tally.max_ref or 1.0), tally.top1 / n,
                            float(tally.kl_meant.mean()), float(tally.kl_meant.max()))
    return CheckReport(
        path=str(path), architecture=mf.arch, weight_type=weight_type, method=naming["method"],
        method_source=naming["source"], meant=meant.label, rope={k: v for k, v in naming["params"].items()
                                                                 if not isinstance(v, list)},
        device=device_name, n_tokens=n, n_ctx=n_ctx, positions=[0, n - 1], alternative_positions=[0, m - 1],
        original_context=ref.original_context,
        llama_vs_meant=comparison, alternatives=alternatives, verdict=verdict, reason=reason, closest=closest,
        settings={"kv_cache": "f32", "flash_attention": flash_attn, "batch": min(n, 512)}, notes=notes, lint=lint,
    )


__all__ = ["check_gguf", "CheckReport", "Alternative", "Comparison", "default_tokens", "SIGNIFICANCE", "MIN_RATIO"]
