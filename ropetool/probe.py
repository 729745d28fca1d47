"""``ropetool check`` (the default): read llama.cpp's own graph and compare every rope op with the meant setting.

llama.cpp decodes one small batch of several fresh sequences, a few tokens each, at positions spread from 0
to past the extended context (:func:`ropetool.llamacpp.graph.run_graph`); every GGML_OP_ROPE node and every
attention softmax is read as it is computed.  Against the setting the file means (ropetool's record, else the
keys as they document it: ``ModelFile.keys_state``):

* **parameters**: each rope op's resolved op_params (and freq factors) give, through ggml's formulas
  (:mod:`ropetool.rope.ggml`), an inverse frequency per pair and a cos/sin magnitude; they must equal the meant
  setting's to float32 precision (``PARAM_TOL``).  A difference is named by the parameter, the key behind it
  and why (a key llama.cpp ignores on this architecture; a key changed behind ropetool's record);
* **numerics**: each rope op's output against the meant rotation (:func:`ropetool.rope.rotate.apply_rope`)
  of the op's own input at its own positions, within the float32 rounding bound of
  :func:`ropetool.rope.rotate.rope_tolerance` (docs/check.md); and against the rotation its own op_params
  describe (ropetool's model of ggml: were that to fail, the probe could not read the op);
* **attention**: ALiBi's slopes (ggml's, from each softmax's max_bias) against the meant slopes; no bias on
  a rope model;
* **layers**: which layers have rope ops against the layers the file means to rope.

The weights and the rest of the forward pass are not looked at: ``ropetool check --end-to-end`` compares the
next-token distributions with the numpy reference (:mod:`ropetool.check`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import Report
from ropetool.lint import ERROR
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.graph import RopeOp, run_graph, spread_starts
from ropetool.llamacpp.state import RopeState, first_int
from ropetool.model import ModelFile
from ropetool.rope import METHOD_TABLE, RopeParams, alibi_slopes, attention_scale, ggml, rope_frequencies, sliding_frequencies
from ropetool.rope.rotate import apply_rope, rope_tolerance, section_positions, section_rows
from ropetool.words import number, ranges

PARAM_TOL = 1e-5  # relative: an inverse frequency or magnitude from float32 op_params, against float64 (~100 u)
SLOPE_TOL = 1e-5
N_SEQUENCES = 8
TOKENS_PER_SEQUENCE = 4
MAX_POSITION = 2**31 - 1  # llama_pos is an int32_t
REACH = 1.25  # default: probe to 1.25 x the extended context
MODELLED_MODES = {"normal", "neox", "mrope", "imrope"}
MULTI_SECTION = {"mrope", "imrope"}  # ggml_rope_multi: NEOX pairs, each at one of a token's four positions
ROTATION = {"normal": "normal", "neox": "neox", "mrope": "neox", "imrope": "neox"}  # how a mode pairs the dims
SECTION_NAMES = ("t", "h", "w", "e")


@dataclass
class KindResult:
    """One kind of layer (global, or sliding-window): what llama.cpp computed and how it compares."""

    kind: str
    layers: list[int]
    rope_ops: int
    op_params: dict  # the first op's resolved parameters
    distinct_params: int  # how many different op_params the kind's ops carry
    meant: dict  # the meant inverse frequencies' range and magnitude
    inv_freq_rel_error: float  # max over pairs and ops of |inv_llama / inv_meant - 1|
    magnitude_rel_error: float
    numerics_checked: int  # ops whose input could be read
    max_error: float  # max |llama - meant rotation| over elements
    max_tolerance: float  # the bound at the element of worst ratio
    worst_ratio: float  # max error / tolerance (<= 1: within float32 rounding)
    worst_ratio_own_params: float  # the same against the rotation the op's own params describe
    worst_at: dict = field(default_factory=dict)  # op, position, pair of the worst ratio


@dataclass
class ProbeReport(Report):
    path: str
    architecture: str
    method: str
    method_source: str  # "ropetool" (the record) or "inferred" (the keys)
    meant: str
    encoding: str
    device: str
    positions: list[list[int]]  # [first, last] of each sequence
    max_position: int
    n_ctx: int
    layers_expected: list[int]
    layers_seen: list[int]
    kinds: list[KindResult]
    attention: dict
    findings: list[str]
    verdict: str  # "pass" or "fail"
    reason: str
    notes: list[str] = field(default_factory=list)
    graph_seconds: float = 0.0
    wall_seconds: float = 0.0

    def summary(self) -> str:
        spans = ", ".join(f"{a}..{b}" for a, b in self.positions)
        lines = [
            f"{self.path}: {self.architecture}, rope {self.method} "
            f"({'recorded by ropetool' if self.method_source == 'ropetool' else 'read from the keys'}), probed on "
            f"{self.device} in {self.wall_seconds:.2f} s (llama.cpp {self.graph_seconds:.2f} s)",
            f"meant setting: {self.meant}",
            f"positions probed: {spans} (up to {self.max_position}); layers with rope ops: {ranges(self.layers_seen)} "
            f"(meant: {ranges(self.layers_expected)})",
        ]
        for k in self.kinds:
            lines.append(f"  {k.kind} layers ({ranges(k.layers)}), {k.rope_ops} rope ops: inverse frequencies within "
                         f"{k.inv_freq_rel_error:.2g} of the meant ones, magnitude within {k.magnitude_rel_error:.2g}; "
                         f"output vs the meant rotation: max error {k.max_error:.3g}, {k.worst_ratio:.3g} of the float32 "
                         f"bound ({k.numerics_checked} ops; {k.worst_ratio_own_params:.3g} against its own op_params)")
        a = self.attention
        if a.get("ops"):
            lines.append(f"  attention: {a['ops']} softmax ops, max_bias {a['max_bias']}, scale {a['scale']}"
                         + (f", slopes within {a['slope_rel_error']:.2g} of the meant ones" if a.get("slope_rel_error") is not None else ""))
        lines.append(f"{self.verdict.upper()}: {self.reason}")
        lines.extend(f"  {f}" for f in self.findings[1:])
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# The meant setting


@dataclass
class _Meant:
    label: str
    encoding: str
    n_rot: int | None
    pairing: str | None
    rope: tuple[np.ndarray, float] | None = None  # global layers: (inverse frequency per pair, magnitude)
    sliding: tuple[np.ndarray, float] | None = None  # sliding-window layers
    slopes: np.ndarray | None = None
    params: RopeParams | None = None  # the record's method, when it is the meant one
    sliding_base: float | None = None  # what the record means for the sliding layers' base
    mode: str | None = None  # the rope mode the architecture's ops carry (LoaderArch.ggml_mode)
    sections: tuple[int, ...] | None = None  # a multi-section rope's sections, as the file's key says
    sliding_n_rot: int | None = None  # the sliding layers' rotated dims (gemma4's own; else n_rot)

    def n_rot_of(self, kind: str) -> int | None:
        return self.sliding_n_rot if kind == "sliding" and self.sliding_n_rot else self.n_rot


def _meant(mf: ModelFile, max_pos: int, n_ctx: int, notes: list[str]):
    st, st_keys, record, named = mf.state, mf.keys_state, mf.record, mf.meant
    params = named.rope if named.source == "ropetool" else None
    if params is not None and record is not None and record.exact is False:
        notes.append(f"the file approximates {params.method} (ropetool recorded a relative error of up to "
                     f"{record.approx_error:.3g}); it is checked against what its keys say")
        params = None
    m, named = _meant_setting(mf, max_pos, n_ctx, notes, params, named)
    m.mode, m.sections = st.facts.ggml_mode, st_keys.sections
    return m, named


def _meant_setting(mf: ModelFile, max_pos: int, n_ctx: int, notes: list[str], params, named):
    st, st_keys = mf.state, mf.keys_state
    facts = st.facts
    n_rot = st.n_rot
    if params is None:
        m = _Meant(f"{named.method}, as the keys document it", st_keys.encoding, st_keys.n_rot, facts.pairing)
        if st_keys.encoding == "alibi":
            m.slopes = st_keys.alibi_slopes()
        elif st_keys.encoding == "rope":
            m.rope = st_keys.frequencies(max_pos + 1)
            if st_keys.sliding is not None:
                m.sliding = st_keys.of_sliding_layers().frequencies(max_pos + 1)
                m.sliding_n_rot = st_keys.sliding.n_rot
        return m, named
    seq_len = None
    if METHOD_TABLE[params.method].dynamic:
        seq_len = params.target_context or st.context_length or max_pos + 1
        notes.append(f"{params.method} is baked for {seq_len} tokens (what llama.cpp can compute)")
    elif params.method == "longrope":
        seq_len = n_ctx
        notes.append(f"llama.cpp picks LongRoPE's table by the context per sequence ({n_ctx}); the meant setting follows it")
    label = f"{params.method} as ropetool recorded it ({params.words() or 'defaults'})"
    if params.is_alibi:
        m = _Meant(label, "alibi", n_rot, None, params=params)
        if st.n_head:
            m.slopes = alibi_slopes(params, st.n_head, seq_len=seq_len)
        return m, named
    m = _Meant(label, "rope" if params.method != "none" or st.encoding == "rope" else st.encoding, n_rot,
               facts.pairing, params=params)
    if m.encoding == "rope" and n_rot:
        # gemma4's proportional rope: the method over the whole head, the last pairs still (ropetool's record of them)
        m.rope = rope_frequencies(params, n_rot, seq_len=seq_len, unrotated=mf.unrotated_pairs)
        if st.sliding is not None:
            m.sliding_base = mf.meant_sliding_base
            m.sliding_n_rot = n_swa = st.sliding.n_rot or n_rot
            m.sliding = (m.rope if m.sliding_base is None and n_swa == n_rot else
                         sliding_frequencies(params, m.sliding_base, facts.sliding.scale_follows_global, n_swa, seq_len))
    return m, named


# ------------------------------------------------------------------------------------------
# Per op


def _op_frequencies(op: RopeOp) -> tuple[np.ndarray, float]:
    """What ggml computes from the op's own params: inverse frequency per pair, magnitude."""
    corr = None
    if op.ext_factor != 0:
        corr = ggml.corr_dims(op.n_dims, op.n_ctx_orig, op.beta_fast, op.beta_slow, op.freq_base)
    ff = op.freq_factors[: op.n_dims // 2] if op.freq_factors is not None else None
    return (ggml.inv_freq(op.n_dims, op.freq_base, op.freq_scale, op.ext_factor, corr, ff),
            ggml.magnitude(op.attn_factor, op.freq_scale, op.ext_factor))


def _params_of(op: RopeOp) -> dict:
    return {"n_dims": op.n_dims, "pairing": op.pairing, "n_ctx_orig": op.n_ctx_orig, "freq_base": op.freq_base,
            "freq_scale": op.freq_scale, "ext_factor": op.ext_factor, "attn_factor": op.attn_factor,
            "beta_fast": op.beta_fast, "beta_slow": op.beta_slow, "freq_factors": op.freq_factors is not None,
            "n_offs": op.n_offs}


def _key_of(op: RopeOp) -> tuple:
    ff = None if op.freq_factors is None else op.freq_factors.tobytes()
    return (op.n_dims, op.mode, op.n_ctx_orig, op.freq_base, op.freq_scale, op.ext_factor, op.attn_factor,
            op.beta_fast, op.beta_slow, op.sections, op.n_offs, ff)


class _Kind:
    def __init__(self, kind: str, meant: tuple[np.ndarray, float] | None):
        self.kind, self.meant = kind, meant
        self.layers: set[int] = set()
        self.ops = 0
        self.first: RopeOp | None = None
        self.distinct: dict[tuple, RopeOp] = {}
        self.inv_err = self.mag_err = 0.0
        self.checked = 0
        self.max_error = self.max_tol = self.worst = self.worst_own = 0.0
        self.worst_at: dict = {}
        self.off_pairs: dict[int, int] = {}  # multi-section rope: pair -> the section row it takes, where not the token's


def _close(a: float, b: float, tol: float = PARAM_TOL) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol * 1e-3)


class _Probe:
    def __init__(self, meant: _Meant, st: RopeState, n_ctx: int):
        self.meant, self.st, self.n_ctx = meant, st, n_ctx
        self.kinds: dict[str, _Kind] = {}
        self.notes: list[str] = []

    def kind_of(self, layer: int | None) -> str:
        sw = self.st.sliding
        if sw is not None and layer is not None and layer < len(sw.layers) and sw.layers[layer]:
            return "sliding"
        return "global"

    def on_rope(self, op: RopeOp) -> None:
        kind = self.kind_of(op.layer)
        meant = self.meant.sliding if kind == "sliding" else self.meant.rope
        k = self.kinds.setdefault(kind, _Kind(kind, meant))
        k.ops += 1
        if op.layer is not None:
            k.layers.add(op.layer)
        if k.first is None:
            k.first = op
        key = _key_of(op)
        if key not in k.distinct:
            k.distinct[key] = op
        if op.pairing not in MODELLED_MODES:
            return
        own = _op_frequencies(op)
        n_rot = self.meant.n_rot_of(kind)
        if meant is not None and n_rot == op.n_dims:
            inv, mag = meant
            k.inv_err = max(k.inv_err, ggml.inv_freq_error(own[0], inv[: op.n_dims // 2]))
            k.mag_err = max(k.mag_err, abs(own[1] / mag - 1) if mag else abs(own[1]))
        elif meant is not None:
            k.inv_err = k.mag_err = math.inf
        if op.x is None:
            return
        k.checked += 1
        n_tok = op.x.shape[0]
        pos = op.positions[:n_tok].astype(np.float64)  # each token's position (a multi-section rope's t row)
        own_pos = pos
        if op.pairing in MULTI_SECTION:  # ggml's pick of a position per pair (text tokens: t = h = w, e = 0)
            rows = section_rows(op.n_dims // 2, op.sections, op.pairing == "imrope")
            own_pos = section_positions(op.positions[:4 * n_tok].reshape(4, n_tok).astype(np.float64), op.n_dims // 2,
                                        op.sections, op.pairing == "imrope")
            for i in np.nonzero(np.any(own_pos != pos[:, None], axis=0))[0]:
                k.off_pairs[int(i)] = int(rows[i])
        # the model's meaning for text: every pair at the token's position (transformers' multi-section rope gives a
        # text token the same t, h and w positions, and has no 4th)
        pairing = self.meant.pairing or ROTATION[op.pairing]
        for label, (inv, mag), n_dims in (("own", own, op.n_dims), ("meant", meant or own, n_rot or op.n_dims)):
            if label == "meant" and (meant is None or n_dims > op.shape[0]):
                continue
            at = pos if label == "meant" else own_pos
            rot = pairing if label == "meant" else ROTATION[op.pairing]
            exact = apply_rope(op.x, at, inv, mag, rot, n_dims, op.n_offs)
            tol = rope_tolerance(op.x, exact, at, inv, mag, rot, n_dims, op.n_offs, op.dtype)
            err = np.abs(op.y.astype(np.float64) - exact)
            ratio = err / np.maximum(tol, np.finfo(np.float32).tiny)
            worst = float(ratio.max())
            if label == "own":
                k.worst_own = max(k.worst_own, worst)
                continue
            if worst >= k.worst:
                t, h, d = np.unravel_index(int(ratio.argmax()), ratio.shape)
                k.worst, k.max_tol = worst, float(tol[t, h, d])
                k.worst_at = {"op": op.name, "position": int(pos[t]), "head": int(h), "dim": int(d)}
            k.max_error = max(k.max_error, float(err.max()))


# ------------------------------------------------------------------------------------------
# Naming what differs


_PARAM_KEYS = {  # op parameter -> the key template behind it
    "n_dims": K.ROPE_DIMENSION_COUNT, "freq_base": K.ROPE_FREQ_BASE, "freq_scale": K.ROPE_SCALING_FACTOR,
    "ext_factor": K.ROPE_YARN_EXT_FACTOR, "attn_factor": K.ROPE_SCALING_ATTN_FACTOR, "beta_fast": K.ROPE_YARN_BETA_FAST,
    "beta_slow": K.ROPE_YARN_BETA_SLOW, "n_ctx_orig": K.ROPE_SCALING_ORIG_CTX,
}


def _documented(st: RopeState, kind: str, n_ctx: int) -> dict:
    """The op parameters a state (the keys' reading, or ropetool's model of llama.cpp's) stands for."""
    if kind == "sliding" and st.sliding is not None:  # their base, scale, rotated dims and rope tensor (gemma4: none)
        st = st.of_sliding_layers()
    return {"n_dims": st.n_rot, "freq_base": st.freq_base, "freq_scale": st.freq_scale, "ext_factor": st.ext_factor,
            "attn_factor": st.attn_factor, "beta_fast": st.beta_fast, "beta_slow": st.beta_slow,
            "n_ctx_orig": st.n_ctx_orig, "freq_factors": st.freq_factors(n_ctx)}


def _differences(op: RopeOp, doc: dict) -> list[tuple[str, object, object]]:
    out = []
    for name in ("n_dims", "freq_base", "freq_scale", "ext_factor", "attn_factor", "beta_fast", "beta_slow", "n_ctx_orig"):
        if name in ("beta_fast", "beta_slow", "n_ctx_orig") and op.ext_factor == 0 and not doc["ext_factor"]:
            continue  # no YaRN ramp on either side: these do not enter the math
        have, want = getattr(op, name), doc[name]
        if want is None or not _close(float(have), float(want)):
            out.append((name, have, want))
    ff, want = op.freq_factors, doc["freq_factors"]
    n = op.n_dims // 2
    if (ff is None) != (want is None) or (ff is not None and not np.allclose(ff[:n], np.asarray(want)[:n], rtol=PARAM_TOL)):
        out.append(("freq_factors", "a tensor" if ff is not None else "none", "a tensor" if want is not None else "none"))
    return out


def _explain(op: RopeOp, kind: str, mf: ModelFile, meant: _Meant, n_ctx: int) -> list[str]:
    st, st_keys = mf.state, mf.keys_state
    a = st.arch or "?"
    ignored = {i.key: i for i in st.ignored}
    found = []
    for name, have, want in _differences(op, _documented(st_keys, kind, n_ctx)):
        if name == "freq_factors":
            key = K.ROPE_FREQS_TENSOR if st_keys.rope_freqs_used else K.ROPE_FACTORS_LONG_TENSOR
            found.append(f"freq factors: llama.cpp uses {have} where the file's keys document {want} ({key})")
            continue
        template = K.ROPE_FREQ_BASE_SWA if (name == "freq_base" and kind == "sliding") else _PARAM_KEYS[name]
        key = K.k(template, a)
        why = ignored[key].why if key in ignored else (
            "; ".join(i.why for i in st.ignored) or f"llama.cpp does not take {key} as the keys document it")
        found.append(f"{name} {number(have)} where the file says {number(want)}: {why}")
    if found or meant.params is None:
        return found
    changed = [f"no {key}, which ropetool's record needs" if want is None else
               f"{key} = {number(have)} where ropetool's record means {number(want)}"
               for key, have, want in mf.record_differences(meant.params)]
    return changed or ["the rope op differs from ropetool's record, though the file's keys are the ones ropetool "
                       "writes for it"]


# ------------------------------------------------------------------------------------------
# The command


def _extended_context(mf: ModelFile, meant: _Meant) -> int:
    """The farthest context the setting reaches: the file's, or the trained one times the factor if farther."""
    st = mf.state
    ctx = mf.extended_context or 0
    orig = mf.trained_context or ctx
    factor = 1 / st.freq_scale if st.freq_scale and st.freq_scale < 1 else 1.0
    p = meant.params
    if p is not None:
        factor = max(factor, p.factor or 1.0)
        if p.target_context:
            ctx = max(ctx, p.target_context)
    return max(ctx, int(orig * factor), 64)


def probe_gguf(path, positions: int | None = None, device: str = "cpu", verbose: bool = False,
               isolate: bool = True) -> ProbeReport:
    """Run llama.cpp on one small batch and compare its rope ops with the meant setting (module docstring).

    ``positions``: the farthest position probed (default: 1.25 x the extended context).  ``isolate``: run
    llama.cpp in a child process, so that an abort or a crash in it (GGML_ASSERT, a segfault) becomes a
    one-line RopetoolError instead of the caller's death (the model is loaded once, in the child)."""
    if isolate:
        return _in_child(path, positions, device, verbose)
    started = time.perf_counter()
    path = Path(path)
    notes: list[str] = []
    with ModelFile.open(path) as mf:
        errors = [f for f in mf.findings if f.severity == ERROR]
        if errors:
            more = f" (and {len(errors) - 1} more: see ropetool inspect)" if len(errors) > 1 else ""
            raise RopetoolError(f"{path}: {errors[0].message}{more}")
        st = mf.state
        if st.encoding == "rope" and not st.computable:
            raise RopetoolError(f"{path}: the rope settings cannot be evaluated: "
                                + "; ".join(f"{k}: {why}" for k, why in st.problems))
        # a first reading, to size the probe (LongRoPE's table depends on the context it allocates)
        pre, _ = _meant(mf, 1 << 20, 1 << 20, [])
        ext = _extended_context(mf, pre)
        max_pos = int(positions) if positions is not None else int(REACH * ext)
        if max_pos < TOKENS_PER_SEQUENCE:
            raise RopetoolError(f"--positions must be at least {TOKENS_PER_SEQUENCE}")
        if max_pos > MAX_POSITION:
            raise RopetoolError(f"--positions must be at most {MAX_POSITION} (llama.cpp's positions are 32-bit "
                                f"integers), got {max_pos}")
        n_ctx = 256
        if st.longrope_used and st.n_ctx_orig and max_pos >= st.n_ctx_orig:
            n_ctx = -(-(st.n_ctx_orig + 1) // 256) * 256  # so that llama.cpp picks the long table
        meant, named = _meant(mf, max_pos, n_ctx, notes)
        last = max_pos - TOKENS_PER_SEQUENCE + 1
        must = tuple(x - TOKENS_PER_SEQUENCE // 2 for x in (mf.trained_context or 0, ext) if x)
        starts = spread_starts(N_SEQUENCES, 0, max(0, last), must)
        probe = _Probe(meant, st, n_ctx)
        kv = mf.header.get(mf.key(K.HEAD_COUNT_KV))  # a per-layer array (gemma4's global layers' own key/value heads)
        heads = {int(h) for h in (kv if isinstance(kv, (list, tuple, np.ndarray)) else
                                  [first_int(mf.header, mf.key(K.HEAD_COUNT_KV))])
                 if h} | ({st.n_head} if st.n_head else set())
        dims = {st.head_dim} | ({st.sliding.head_dim} if st.sliding is not None and st.sliding.head_dim else set())
        shapes = {(d, h) for d in dims for h in heads} if st.head_dim else None
        run = run_graph(path, starts, TOKENS_PER_SEQUENCE, device=device, n_ctx=n_ctx, on_rope=probe.on_rope,
                        verbose=verbose, input_shapes=shapes)
        if run.n_ctx_seq != n_ctx and st.longrope_used:
            notes.append(f"llama.cpp allocated {run.n_ctx_seq} cells per sequence, not {n_ctx}")
        report = _report(path, mf, meant, named, probe, run, max_pos, notes)
    report.wall_seconds = time.perf_counter() - started
    return report


def child_probe(path: str, positions: int | None, device: str, verbose: bool) -> dict:
    """The probe in the child process :func:`probe_gguf` starts: its report as a dict."""
    return probe_gguf(path, positions, device, verbose, isolate=False).to_dict()


def _in_child(path, positions, device, verbose) -> ProbeReport:
    from ropetool.llamacpp.isolate import call_isolated

    started = time.perf_counter()
    data = call_isolated(__name__, "child_probe", {"path": str(path), "positions": positions, "device": device,
                                                           "verbose": verbose},
                         f"loading or running {path}", show_stderr=verbose)
    data["kinds"] = [KindResult(**k) for k in data["kinds"]]
    report = ProbeReport(**data)
    report.wall_seconds = time.perf_counter() - started
    return report


def _report(path, mf: ModelFile, meant: _Meant, named, probe: _Probe, run, max_pos: int, notes: list[str]) -> ProbeReport:
    st = mf.state
    findings: list[str] = []
    n_layer = st.n_layer or 0
    # the layers llama.cpp's graph rotates (smollm3 never rotates every 4th: LoaderArch.no_rope_layers)
    expected = [il for il in range(n_layer) if il not in st.no_rope_layers] if meant.encoding == "rope" else []
    seen = sorted({op.layer for op in run.ropes if op.layer is not None})
    if any(op.layer is None for op in run.ropes):
        notes.append("some rope nodes carry no layer index in their names: "
                     + ", ".join(sorted({op.name for op in run.ropes if op.layer is None}))[:200])
    missing = sorted(set(expected) - set(seen))
    extra = sorted(set(seen) - set(expected))
    if missing:
        findings.append(f"layers the file means to rope have no rope op in llama.cpp's graph: {ranges(missing)}")
    unroped = st.recurrent_layers or st.no_rope_layers  # hybrid models: no attention, so no rope, there
    if unroped and meant.encoding == "rope":
        few = len(unroped) == 1
        why = (f"{'is' if few else 'are'} {st.facts.recurrent.kind} in llama.cpp's {st.arch} graph: no attention, so no rope"
               if st.recurrent_layers else
               f"{'has' if few else 'have'} no rope in llama.cpp's {st.arch} graph (hard-coded, whatever the keys say)")
        notes.append(f"layer{'' if few else 's'} {ranges(list(unroped))} {why}"
                     + ("" if set(seen) & set(unroped) else ": no rope op seen there"))
    if extra or (meant.encoding != "rope" and run.ropes):
        findings.append(f"llama.cpp applies rope in layers {ranges(seen) or '(unnamed)'}, where the file means "
                        f"{meant.encoding}")
    kinds = []
    for name in ("global", "sliding"):
        k = probe.kinds.get(name)
        if k is None:
            continue
        first = k.first
        res = KindResult(
            kind=name, layers=sorted(k.layers), rope_ops=k.ops, op_params=_params_of(first), distinct_params=len(k.distinct),
            meant=({"inv_freq_first": float(k.meant[0][0]), "inv_freq_last": float(k.meant[0][-1]),
                    "magnitude": float(k.meant[1]), "n_rot": meant.n_rot_of(name), "pairing": meant.pairing,
                    "mode": meant.mode,
                    **({"sections": list(meant.sections)} if meant.sections is not None else {})} if k.meant else {}),
            inv_freq_rel_error=k.inv_err, magnitude_rel_error=k.mag_err, numerics_checked=k.checked,
            max_error=k.max_error, max_tolerance=k.max_tol, worst_ratio=k.worst, worst_ratio_own_params=k.worst_own,
            worst_at=k.worst_at)
        kinds.append(res)
        if k.meant is None:
            continue
        where = f"{name} layers"
        unmodelled = [op for op in k.distinct.values() if op.pairing not in MODELLED_MODES]
        if unmodelled:
            notes.append(f"{where}: rope mode {unmodelled[0].pairing} (multi-section) is not modelled: its numerics are "
                         "not checked")
        mismatched = [(op, effect) for op in k.distinct.values() if (effect := _effect(op, k.meant, meant, name))]
        for op, effect in mismatched[:1]:
            why = _explain(op, name, mf, meant, probe.n_ctx)
            findings.append(f"{where} ({op.name}): llama.cpp's rope differs from the meant setting: "
                            + effect + (": " + "; ".join(why) if why else ""))
        if k.off_pairs:
            findings.append(_off_pairs(k, name, mf))
        if k.checked and k.worst > 1:
            findings.append(f"{where}: llama.cpp's rope output is {k.worst:.3g} x the float32 rounding bound away from "
                            f"the meant rotation (at {k.worst_at})")
        if k.checked and k.worst_own > 1:
            findings.append(f"{where}: llama.cpp's rope output does not follow its own op_params as ropetool models "
                            f"ggml ({k.worst_own:.3g} x the bound): the probe cannot read this op")
        if k.ops and not k.checked:
            notes.append(f"{where}: no rope op's input could be read (computed in place): numerics not checked")
        for op in k.distinct.values():
            predicted = _differences(op, _documented(st, name, probe.n_ctx))
            if predicted:
                notes.append(f"{where}: ropetool's reading of the keys predicts other op_params than llama.cpp's: "
                             + ", ".join(f"{n} {number(h)} (predicted {number(w)})" for n, h, w in predicted))
                break
    attention = _attention(run, meant, st, findings)
    _attention_scale(run, mf, meant, attention, findings)
    verdict = "fail" if findings else "pass"
    if findings:
        reason = findings[0]
    else:
        parts = [f"{k.kind} layers: {k.rope_ops} rope ops equal the meant setting (frequencies within "
                 f"{k.inv_freq_rel_error:.2g}, output within {k.worst_ratio:.2g} of the float32 bound)" for k in kinds]
        if attention.get("slope_rel_error") is not None:
            parts.append(f"ALiBi slopes within {attention['slope_rel_error']:.2g} of the meant ones")
        reason = "llama.cpp computes the meant setting: " + "; ".join(parts or ["no position encoding, as meant"])
    return ProbeReport(
        path=str(path), architecture=st.arch or "?", method=named.method, method_source=named.source, meant=meant.label,
        encoding=meant.encoding, device=run.device, positions=run.positions, max_position=max_pos, n_ctx=run.n_ctx,
        layers_expected=expected, layers_seen=seen, kinds=kinds, attention=attention, findings=findings,
        verdict=verdict, reason=reason, notes=notes, graph_seconds=run.wall_seconds)


def _off_pairs(k: _Kind, kind: str, mf: ModelFile) -> str:
    """Why a multi-section rope's pairs turn by another position than the token's: the section ggml puts them in."""
    op = next(o for o in k.distinct.values() if o.pairing in MULTI_SECTION)
    by_row: dict[int, list[int]] = {}
    for pair, row in sorted(k.off_pairs.items()):
        by_row.setdefault(row, []).append(pair)
    parts = [f"pair{'s' if len(pairs) > 1 else ''} {ranges(pairs)} by the {SECTION_NAMES[row]} position"
             + (" (0 for text: llama.cpp fills the 4th row of a text token's positions with 0)" if row == 3 else "")
             for row, pairs in by_row.items()]
    return (f"{kind} layers ({op.name}): llama.cpp's multi-section rope ({op.pairing}, sections {list(op.sections)}) "
            f"rotates {'; '.join(parts)}, where the model rotates every pair of a text token by its position: "
            f"{mf.key(K.ROPE_DIMENSION_SECTIONS)} = {list(mf.keys_state.sections or op.sections)} leaves "
            f"{'them' if len(k.off_pairs) > 1 else 'it'} out of the t, h and w sections")


def _effect(op: RopeOp, freqs, meant: _Meant, kind: str) -> str:
    """How the op's rope differs from the meant one, in words ("": it does not)."""
    if meant.n_rot_of(kind) != op.n_dims:
        return f"it rotates {op.n_dims} dims where the file means {meant.n_rot_of(kind)}"
    if meant.mode and op.pairing in MODELLED_MODES and op.pairing != meant.mode:
        return (f"its rope mode is {op.pairing} where the architecture means {meant.mode} (the weights are laid out "
                f"for {meant.pairing} pairs)")
    if op.pairing in MULTI_SECTION and meant.sections is not None and tuple(op.sections) != tuple(meant.sections):
        return f"its sections are {list(op.sections)} where the file says {list(meant.sections)}"
    inv, mag = _op_frequencies(op)
    want = freqs[0][: op.n_dims // 2]
    with np.errstate(divide="ignore", invalid="ignore"):  # a pair meant still (want 0) that turns: infinitely off
        rel = np.where(want == 0, np.where(np.abs(inv) * MAX_POSITION > 1e-6, np.inf, 0.0), np.abs(inv / want - 1))
    bad = np.nonzero(rel > PARAM_TOL)[0]
    parts = []
    if len(bad):
        parts.append(f"the inverse frequencies of pairs {bad[0]}..{bad[-1]} differ by up to {rel.max():.3g} (relative)")
    if not _close(mag, freqs[1]):
        parts.append(f"the cos/sin magnitude is {mag:.6g} where {freqs[1]:.6g} is meant")
    return ", ".join(parts)


def _attention(run, meant: _Meant, st: RopeState, findings: list[str]) -> dict:
    ops = run.attention
    if not ops:
        return {"ops": 0}
    biases = sorted({round(a.max_bias, 6) for a in ops})
    out = {"ops": len(ops), "kinds": sorted({a.op for a in ops}), "scale": sorted({round(a.scale, 6) for a in ops}),
           "max_bias": biases, "softcap": sorted({round(a.softcap, 6) for a in ops if a.softcap is not None}),
           "slope_rel_error": None}
    key = K.k(K.MAX_ALIBI_BIAS, st.arch or "?")
    if meant.encoding == "alibi":
        if meant.slopes is None:
            return out
        worst = 0.0
        for a in ops:
            if a.max_bias <= 0:
                findings.append(f"attention ({a.name}): llama.cpp applies no ALiBi bias where the file means ALiBi "
                                f"({key}, or the architecture's hard-coded bias)")
                return out
            got = ggml.alibi_slopes(a.n_head, a.max_bias)
            if len(got) != len(meant.slopes):
                findings.append(f"attention ({a.name}): ALiBi over {len(got)} heads where the file has {len(meant.slopes)}")
                return out
            worst = max(worst, float(np.max(np.abs(got / meant.slopes - 1))))
        out["slope_rel_error"] = worst
        if worst > SLOPE_TOL:
            why = "; ".join(i.why for i in st.ignored if i.key == key)
            findings.append(f"attention: llama.cpp's ALiBi slopes (max_bias {biases}) differ from the meant ones by up to "
                            f"{worst:.3g} (relative){': ' + why if why else ''}")
    elif any(b != 0 for b in biases):
        findings.append(f"attention: llama.cpp adds an ALiBi bias (max_bias {biases}) where the file means {meant.encoding}")
    return out


def _attention_scale(run, mf: ModelFile, meant: _Meant, out: dict, findings: list[str]) -> None:
    """Where the rope setting moves the attention scale (deepseek2 folds YaRN's mscale^2 into it: LoaderArch.
    kq_scale_mscale), each attention softmax's scale against 1/sqrt(key head) times the meant factor (the record's
    method: rope.attention_scale; else the keys' reading)."""
    st = mf.state
    if not st.facts.kq_scale_mscale or meant.encoding != "rope":
        return
    want = attention_scale(meant.params) if meant.params is not None else mf.keys_state.attention_scale
    head = st.key_length_mla or st.head_dim
    ops = [a for a in run.attention if a.op == "FLASH_ATTN_EXT" or a.name.startswith("kq_soft_max")]
    if not ops or not head:
        return
    got = [a.scale * math.sqrt(head) for a in ops]
    out["attention_scale"] = {"meant": want, "llama_cpp": sorted({round(g, 7) for g in got})}
    worst = max(got, key=lambda g: abs(g / want - 1))
    if not _close(worst, want):
        key = mf.key(K.ROPE_YARN_LOG_MUL)
        findings.append(f"attention: llama.cpp scales the attention scores by {worst:.6g} x 1/sqrt({head}) where the file "
                        f"means {want:.6g} (YaRN's mscale^2, which llama.cpp's {st.arch} takes from {key} and "
                        f"{mf.key(K.ROPE_SCALING_ATTN_FACTOR)})")


__all__ = ["probe_gguf", "ProbeReport", "KindResult", "PARAM_TOL"]
