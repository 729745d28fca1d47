"""``ropetool inspect``: a GGUF's metadata, tensor table and a plain-words RoPE/ALiBi summary.

It puts together, as the report whose JSON form docs/inspect.md documents (``schema_version``):

* the metadata and tensor table (only the header and the tiny rope tensors are read);
* what llama.cpp computes for the file (:func:`ropetool.llamacpp.state.read_state`);
* the method as meant: ropetool's record when present, else the method the keys and tensors express
  (:mod:`ropetool.llamacpp.readback`), described in words;
* the lint findings (:mod:`ropetool.lint`);
* the memory a run at the file's context (or another) holds: the weights and the KV cache for each cache type
  (:meth:`ropetool.model.ModelFile.memory`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import field_json, plain_value
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.readback import CLASSIFY_TOL
from ropetool.llamacpp.state import SCALING_TYPES
from ropetool.model import ModelFile, memory_words
from ropetool.rope import METHOD_TABLE, default_inv_freq, ntk_base
from ropetool.rope.fit import nice
from ropetool.words import number, ranges

SCHEMA_VERSION = 2  # 2: the memory section (issue 26)
BASE_SOURCES = {"key": K.short(K.ROPE_FREQ_BASE_SWA), "default": "llama.cpp default", "global": "the global base"}
STRING_PREVIEW = 100  # characters of a string shown in text mode without --full


# ------------------------------------------------------------------------------------------
# Summary


METHOD_NAMES = {name: m.title for name, m in METHOD_TABLE.items()} | {
    "custom": "custom per-pair frequencies",
    "unknown": "unknown",
}


def summarize_rope(model: ModelFile) -> dict:
    """The rope/ALiBi summary of the report (see docs/inspect.md for every field)."""
    gf, st, meant, inferred = model.header, model.state, model.meant, model.inferred
    method, params, source, notes = meant.method, meant.params, meant.source, meant.notes
    inf_method = inferred.method
    correction_fit = inferred.correction_range
    notes = notes + st.notes
    extended = model.extended_context
    out: dict = {
        "architecture": st.arch,
        "arch_known": st.facts.known,
        "position_encoding": st.encoding,
        "method": method,
        "method_source": source,
        "params": {k: plain_value(v) for k, v in params.items()},
        "inferred_method": inf_method,
        "exact": model.record.exact if model.record is not None else None,
        "factor": None,
        "alpha": None,
        "base": None,
        "trained_context": None,
        "extended_context": extended,
        "rotary_dim": st.n_rot,
        "pairs": None,
        "correction_range": None,
        "attention_factor": None,
        "rope_tensors": [],
        "alibi": None,
        "llama_cpp": None,
        "sliding_window": None,
        "notes": notes,
        "description": "",
    }
    for name in K.ROPE_TENSORS:
        t = gf.tensor(name)
        if t is not None:
            used = (st.rope_freqs_loaded if name == K.ROPE_FREQS_TENSOR else st.longrope_loaded)
            out["rope_tensors"].append({"name": name, "type": t.type.name, "length": t.n_elements, "used": bool(used)})

    if st.encoding == "alibi":
        slopes = st.alibi_slopes()
        out["alibi"] = {
            "max_bias": st.alibi_max_bias,
            "source": st.alibi_source,
            "n_head": st.n_head,
            "slopes": None if slopes is None else [float(f"{s:.6g}") for s in slopes],
        }
        out["trained_context"] = model.trained_context
        out["description"] = (
            f"{METHOD_NAMES.get(method, method)}: max_bias {number(st.alibi_max_bias)} "
            f"({'hard-coded by llama.cpp for ' + str(st.arch) if st.alibi_source == 'hard-coded' else 'from ' + K.k(K.MAX_ALIBI_BIAS, st.arch)})"
            + (f", {st.n_head} heads, slopes {slopes[0]:.4g} .. {slopes[-1]:.4g}" if slopes is not None else "")
        )
        return out

    d = st.n_rot
    base0 = float(params.get("base") or st.freq_base)
    factor = params.get("factor")
    alpha = params.get("alpha")
    trained = model.trained_context
    out.update(base=base0, factor=factor, alpha=alpha, trained_context=trained, attention_factor=nice(st.magnitude))
    llama = {
        "scaling_type": st.scaling_type,
        "scaling_type_source": "key" if st.scaling_type_raw is not None else "default",
        "freq_base": nice(st.freq_base),
        "freq_scale": nice(st.freq_scale),
        "n_rot": d,
        "n_ctx_orig": st.n_ctx_orig,
        "ext_factor": st.ext_factor,
        "beta_fast": st.beta_fast,
        "beta_slow": st.beta_slow,
        "rope_attn_factor": nice(st.rope_attn_factor),
        "magnitude": nice(st.magnitude),
        "pair_divisor": None,
        "pair_divisor_short": None,
    }
    out["llama_cpp"] = llama
    if not st.computable or st.scaling_type not in SCALING_TYPES:
        out["description"] = f"{METHOD_NAMES.get(method, method)} (llama.cpp cannot run these settings; see lint)"
        return out
    inv0 = default_inv_freq(base0, d)
    inv = st.inv_freq(extended)
    div = inv0 / inv
    llama["pair_divisor"] = [float(f"{x:.7g}") for x in div]
    if st.longrope_used:
        short = inv0 / st.inv_freq(st.n_ctx_orig)
        llama["pair_divisor_short"] = [float(f"{x:.7g}") for x in short]
    scale = alpha if method == "ntk" and alpha else (float(div[-1]) if method in ("dynamic-ntk", "none", "custom") else factor)
    scale = scale or float(div[-1])
    unrotated = model.unrotated_pairs  # gemma4's proportional rope: the end of each global head never turns
    still = list(range(len(div) - unrotated, len(div))) if unrotated else []
    if still and method in ("none", "custom"):
        scale = float(div[len(div) - unrotated - 1])
    kept = [j for j, x in enumerate(div) if abs(x - 1) <= CLASSIFY_TOL and j not in still]
    interp = [j for j, x in enumerate(div) if j not in kept and j not in still and abs(x / scale - 1) <= CLASSIFY_TOL]
    blended = [j for j in range(len(div)) if j not in kept and j not in interp and j not in still]
    out["pairs"] = {"kept": kept, "interpolated": interp, "blended": blended, "scale": nice(float(scale)),
                    **({"unrotated": still} if still else {})}
    rng = st.correction_range()
    if rng is not None:
        out["correction_range"] = list(rng)
    elif correction_fit is not None:
        out["correction_range"] = correction_fit

    words = METHOD_NAMES.get(method, method)
    bits = []
    if method == "ntk" and alpha:
        bits.append(f"alpha {number(alpha)}: base {number(base0)} raised to {number(st.freq_base)}")
    elif method == "dynamic-ntk":
        bits.append(f"base {number(base0)} baked as {number(st.freq_base)} for {extended} tokens")
    elif factor:
        bits.append(f"factor {number(factor)}")
        if method != "linear":
            bits.append(f"base {number(base0)}")
    else:
        bits.append(f"base {number(base0)}")
    if method == "llama3":
        bits.append(f"low_freq_factor {number(params.get('low_freq_factor'))}, high_freq_factor {number(params.get('high_freq_factor'))}")
    if trained and extended:
        bits.append(f"trained on {trained} tokens, extended to {extended}")
    pairs = f"{d // 2} rotary pairs: {ranges(kept, ', ')} kept"
    if interp:
        pairs += f", {ranges(interp, ', ')} divided by {number(float(scale))}"
    if blended:
        pairs += f", {ranges(blended, ', ')} in between"
    if still:
        pairs += (f", {ranges(still, ', ')} unrotated (proportional rope: only the first {d - 2 * unrotated} of each "
                  f"{d}-dim head turn; rope_freqs holds 1e30 on the rest, whatever the setting)")
    bits.append(pairs)
    if out["correction_range"] is not None:
        bits.append(f"YaRN ramp over pairs {out['correction_range'][0]}..{out['correction_range'][1]}")
    if not st.key_length_mla and st.head_dim and d and d < st.head_dim:  # partial rotary (phi3, gptneox, glm4moe)
        bits.append(f"rope on the first {d} of each head's {st.head_dim} dims (the other {st.head_dim - d} unrotated, "
                    "whatever the setting)")
    if st.key_length_mla and d and st.key_length_mla > d:
        bits.append(f"rope on the last {d} of each head's {st.key_length_mla} key dims (multi-head latent attention: "
                    "the rest and the values unrotated)")
    if abs(st.magnitude - 1) > 1e-7:
        bits.append(f"cos/sin scaled by {number(st.magnitude)}")
    if abs(st.attention_scale - 1) > 1e-7:
        llama["attention_scale"] = nice(st.attention_scale)
        bits.append(f"attention scores scaled by {number(st.attention_scale)} (YaRN's mscale^2, which llama.cpp's "
                    f"{st.arch} folds into the attention scale)")
    if out["rope_tensors"] and not still:
        bits.append("tensors " + ", ".join(t["name"] + ("" if t["used"] else " (not loaded: llama.cpp refuses the file)") for t in out["rope_tensors"]))
    if st.sections is not None:  # qwen35: a multi-section rope over the text tokens' one position
        llama["sections"] = list(st.sections)
        bits.append(f"{'interleaved ' if st.facts.rope_type == 'imrope' else ''}multi-section rope (sections "
                    + ", ".join(f"{n} {v}" for n, v in zip("thwe", st.sections))
                    + "; a text token has one position in t, h and w, so its pairs turn as NEOX rope's"
                    + (")" if not st.unturned_pairs else
                       f"; pairs {ranges(st.unturned_pairs, ', ')} fall in the 4th section, at position 0 for text: they "
                       "never turn)"))
    if st.recurrent_layers:  # hybrid models: the recurrent layers have no attention, so no rope
        rec = list(st.recurrent_layers)
        llama["no_rope_layers"] = list(st.no_rope_layers)
        llama["recurrent_layers"] = rec
        llama["recurrent_kind"] = st.facts.recurrent.kind
        attn = st.rope_layers
        reach = ("the extension changes the attention layers only" if method != "none"
                 else "an extension would change the attention layers only")
        bits.append(f"rope in the {len(attn)} attention layer{'s' if len(attn) != 1 else ''} ({ranges(attn, ', ')}) only: "
                    f"{len(rec)} layer{'s' if len(rec) != 1 else ''} ({ranges(rec, ', ')}) {'are' if len(rec) != 1 else 'is'} "
                    f"{st.facts.recurrent.kind}, without rope (their recurrence carries the order); {reach}")
    elif st.no_rope_layers:  # smollm3: the graph never rotates these layers, whatever the keys say
        llama["no_rope_layers"] = list(st.no_rope_layers)
        unroped = list(st.no_rope_layers)
        bits.append(f"rope in layers {ranges(st.rope_layers, ', ')} only: llama.cpp's {st.arch} graph skips every "
                    f"{st.facts.no_rope_step}th layer ({'layer' if len(unroped) == 1 else 'layers'} {ranges(unroped, ', ')}: "
                    "no position information there, whatever the setting)")
    t = st.temperature
    if t is not None:  # mistral3: Llama 4's attention temperature, whose period is the original context
        llama["attention_temperature"] = {"scale": nice(t.scale), "period": t.period, "period_source": t.period_source,
                                          "offset": t.offset, **({"no_rope_only": True} if t.no_rope_only else {})}
        position = f"(position + {number(t.offset)})" if t.offset else "position"
        if t.no_rope_only:  # llama4: the no-rope layers' queries, scale and period hard-coded
            bits.append(f"the queries of the layers without rope ({ranges(list(st.no_rope_layers), ', ')}) scaled by 1 + "
                        f"{number(t.scale)} ln(floor({position} / {t.period}) + 1) (Llama 4's attention temperature, "
                        f"hard-coded by llama.cpp's {st.arch}: 1 below position {t.period - int(t.offset)}, whatever "
                        "the setting)")
        else:
            bits.append(f"queries scaled by 1 + {number(t.scale)} ln(floor({position} / {t.period}) + 1) after rope (Llama "
                        f"4's attention temperature; the period is {t.period_source} as llama.cpp reads it)")
    out["description"] = f"{words}: " + "; ".join(bits)
    sw = st.sliding
    if sw is not None:
        global_layers = [il for il, slides in enumerate(sw.layers) if not slides]
        sliding_layers = [il for il, slides in enumerate(sw.layers) if slides]
        swa = st.of_sliding_layers()
        scaled = sw.freq_scale != 1 or swa.magnitude != 1
        out["sliding_window"] = {
            "window": sw.window,
            "layers": sliding_layers,
            "global_layers": global_layers,
            "pattern_source": sw.pattern_source,
            "freq_base": nice(sw.freq_base),
            "freq_base_source": sw.freq_base_source,
            "freq_scale": nice(sw.freq_scale),
            "magnitude": nice(swa.magnitude),
        }
        kind = st.facts.sliding.attention
        if kind != "sliding-window":  # llama4's chunked layers (the gemma and gpt-oss reports keep their fields)
            out["sliding_window"]["attention"] = kind
        roped_global = [il for il in global_layers if il not in st.no_rope_layers]
        if roped_global or not global_layers:
            said = f"; that is the global layers' rope ({ranges(global_layers, ', ')}); "
        else:  # llama4: the full-attention layers are the ones without rope; the rope above is the chunked layers'
            said = f"; the global (full-attention) layers ({ranges(global_layers, ', ')}) have no rope: that is the rope of the "
        window = f"window {sw.window}" if kind == "sliding-window" else f"chunks of {sw.window} tokens"
        if sw.head_dim and sw.head_dim != st.head_dim or sw.n_rot and sw.n_rot != d:  # gemma4: their own heads
            out["sliding_window"].update(head_dim=sw.head_dim, n_rot=sw.n_rot)
            window += (f", heads of {sw.head_dim} dims, {sw.n_rot} rotated" + (" (all)" if sw.n_rot == sw.head_dim else "")
                       + (", no rope_freqs" if not st.facts.sliding.rope_freqs else ""))
        follows = st.facts.sliding.scale_follows_global  # gemma2, gpt-oss, llama4: an extension scales them too
        out["description"] += (
            f"{said}{len(sliding_layers)} {kind} layers ({ranges(sliding_layers, ', ')}, {window})"
            f"{' use base ' if roped_global or not global_layers else ': base '}"
            f"{number(sw.freq_base)} ({BASE_SOURCES[sw.freq_base_source]})"
            + (f", freq_scale {number(sw.freq_scale)}" + (" as the global layers" if roped_global else "") if scaled
               else ", unscaled")
            + (f": {sw.window} tokens of context each, whatever the extension" if not scaled and not follows else
               " (an extension scales them)" if not scaled else ""))
    return out


# ------------------------------------------------------------------------------------------
# Report


def inspect_gguf(path: str | os.PathLike, full: bool = False, context: int | None = None) -> dict:
    """The whole report (metadata, tensors, rope summary, lint, memory) as plain data; see docs/inspect.md."""
    with ModelFile.open(path) as model:
        return inspect_model(model, full, context)


def memory_section(model: ModelFile, context: int | None = None) -> dict:
    """The memory at ``context`` (default: the file's extended context), or why it cannot be sized."""
    n = context or model.extended_context or model.trained_context
    if not n:
        return {"context": None, "error": f"{model.path} has no context_length"}
    try:
        return model.memory(n).as_dict()
    except RopetoolError as e:
        return {"context": n, "error": str(e)}


def inspect_model(model: ModelFile, full: bool = False, context: int | None = None) -> dict:
    """:func:`inspect_gguf`'s report of an opened model; ``context``: the memory at that many tokens."""
    gf = model.header
    report = {
        "schema_version": SCHEMA_VERSION,
        "file": {
            "path": str(gf.path),
            "size": gf.size,
            "version": gf.version,
            "endianness": gf.endian,
            "alignment": gf.alignment,
            "kv_count": gf.kv_count,
            "tensor_count": gf.tensor_count,
            "data_offset": gf.data_offset,
        },
        "metadata": {k: field_json(f, full) for k, f in gf.fields.items()},
        "tensors": [
            {"name": t.name, "type": t.type.name, "shape": list(t.shape), "elements": t.n_elements,
             "bytes": t.nbytes, "offset": t.offset}
            for t in gf.tensors
        ],
        "rope": summarize_rope(model),
        "lint": [f.as_dict() for f in model.findings],
        "memory": memory_section(model, context),
    }
    return report


def wavelengths(model: ModelFile) -> dict:
    """Per rotary pair, the wavelength (2 pi / inverse frequency, tokens) llama.cpp computes for the file, and
    under plain RoPE, PI and NTK-aware scaling by the file's factor (its factor or alpha; else the extended
    context over the trained one; else 2, for comparison): what the summary says in words, for a plot."""
    st = model.state
    if st.encoding != "rope" or not st.computable:
        raise RopetoolError(f"{model.path}: no rope to plot (position encoding {st.encoding})")
    summary = summarize_rope(model)
    base = summary["base"]  # the meant method's, else freq_base
    trained, context = model.trained_context, model.extended_context
    params = summary.get("params", {})
    s = params.get("factor") or params.get("alpha")
    why = f"the file's {'factor' if params.get('factor') else 'alpha'}"
    if not s and context and trained and context > trained:
        s, why = context / trained, "context_length / trained context"
    if not s or s <= 1:
        s, why = 2.0, "for comparison"
    d = st.n_rot
    plain = default_inv_freq(base, d)
    inv, _ = st.frequencies(context or 1, context)
    two_pi = 2 * np.pi
    return {
        "title": f"{Path(model.path).name}: {summary['method']} (base {base:g}, {d} rotary dims)",
        "file": (two_pi / inv).tolist(),
        "plain": (two_pi / plain).tolist(),
        "pi": (two_pi / (plain / s)).tolist(),
        "ntk": (two_pi / default_inv_freq(ntk_base(base, s, d), d)).tolist(),
        "labels": {"file": f"the file: {summary['method']}", "plain": f"plain RoPE (base {base:g})",
                   "pi": f"PI x{s:g} ({why})", "ntk": f"NTK-aware alpha {s:g} ({why})"},
        "trained_context": trained,
        "context": context,
    }


def _text_value(entry: dict, full: bool) -> str:
    def one(v):
        if isinstance(v, str):
            s = json.dumps(v, ensure_ascii=False)
            if not full and len(s) > STRING_PREVIEW:
                s = s[:STRING_PREVIEW] + f"...\" ({len(v):,} chars)"
            return s
        return number(v)

    if "count" in entry:
        items = ", ".join(one(v) for v in entry["value"])
        more = f", ... ({entry['count']:,} items; --full shows all)" if entry["truncated"] else ""
        return f"[{items}{more}]"
    return one(entry["value"])


def _shown(name: str) -> str:
    """A key or tensor name as text: control characters (a NUL, an escape sequence) escaped, never sent raw."""
    return name if name.isprintable() else ascii(name)[1:-1]


def render_text(report: dict, full: bool = False) -> str:
    lines = []
    f = report["file"]
    lines.append(f"{f['path']}: GGUF v{f['version']}, {f['endianness']}-endian, {f['size']:,} bytes, "
                 f"{f['kv_count']} keys, {f['tensor_count']} tensors, alignment {f['alignment']}, data at {f['data_offset']:,}")
    lines.append("")
    lines.append("metadata:")
    width = max((len(_shown(k)) for k in report["metadata"]), default=0)
    for k, e in report["metadata"].items():
        lines.append(f"  {_shown(k):<{width}}  {e['type']:<9} {_text_value(e, full)}")
    lines.append("")
    lines.append(f"tensors ({len(report['tensors'])}):")
    tw = max((len(_shown(t["name"])) for t in report["tensors"]), default=4)
    for t in report["tensors"]:
        shape = "x".join(str(s) for s in t["shape"]) or "scalar"
        lines.append(f"  {_shown(t['name']):<{tw}}  {t['type']:<7} {shape:<16} {t['bytes']:>14,} B")
    lines.append(f"  total {sum(t['bytes'] for t in report['tensors']):,} B")
    lines.append("")
    r = report["rope"]
    src = {"ropetool": "recorded by ropetool", "inferred": "inferred from keys and tensors"}[r["method_source"]]
    lines.append(f"position encoding ({r['position_encoding']}, architecture {r['architecture']}):")
    lines.append(f"  method:     {r['method']} ({src})")
    lines.append(f"  summary:    {r['description']}")
    if r["position_encoding"] == "rope":
        ctx = f"trained {r['trained_context']}, extended {r['extended_context']}"
        lines.append(f"  context:    {ctx}")
        scale = [f"{name} {number(r[name])}" for name in ("factor", "alpha", "base") if r[name] is not None]
        lines.append(f"  scale:      {', '.join(scale)}")
        if r["pairs"]:
            p = r["pairs"]
            lines.append(f"  pairs:      kept {ranges(p['kept'], ', ')}; interpolated (/{number(p['scale'])}) {ranges(p['interpolated'], ', ')}; "
                         f"blended {ranges(p['blended'], ', ')}" + (f"; unrotated {ranges(p['unrotated'], ', ')}" if p.get("unrotated")
                                                                else ""))
        if r["correction_range"] is not None:
            lines.append(f"  YaRN ramp:  pairs {r['correction_range'][0]}..{r['correction_range'][1]}")
        lines.append(f"  attention:  cos/sin magnitude {number(r['attention_factor'])}")
        lc = r["llama_cpp"]
        lines.append(f"  llama.cpp:  type {lc['scaling_type']} ({lc['scaling_type_source']}), freq_base {number(lc['freq_base'])}, "
                     f"freq_scale {number(lc['freq_scale'])}, n_rot {lc['n_rot']}, n_ctx_orig {lc['n_ctx_orig']}, "
                     f"ext_factor {number(lc['ext_factor'])}")
        if lc.get("attention_temperature"):
            t = lc["attention_temperature"]
            pos = f"(pos + {number(t['offset'])})" if t["offset"] else "pos"
            lines.append(f"  attn temp:  queries x (1 + {number(t['scale'])} ln(floor({pos} / {t['period']}) + 1)), period "
                         f"from {t['period_source']}" + (", in the layers without rope only" if t.get("no_rope_only")
                                                          else ""))
        if lc.get("recurrent_layers"):
            lines.append(f"  no rope:    {'layer' if len(lc['recurrent_layers']) == 1 else 'layers'} "
                         f"{ranges(lc['recurrent_layers'], ', ')} ({lc['recurrent_kind']}: no attention, no rope; a setting "
                         "reaches the other layers only)")
        elif lc.get("no_rope_layers"):
            lines.append(f"  no rope:    {'layer' if len(lc['no_rope_layers']) == 1 else 'layers'} "
                         f"{ranges(lc['no_rope_layers'], ', ')} (llama.cpp's graph never rotates q and k there)")
        if lc.get("sections"):
            lines.append("  sections:   " + ", ".join(f"{n} {v}" for n, v in zip("thwe", lc["sections"]))
                         + " (multi-section rope; text: every pair at the token's position)")
        sw = r.get("sliding_window")
        if sw:
            lines.append(f"  global:     layers {ranges(sw['global_layers'], ', ')}: freq_base {number(lc['freq_base'])}, "
                         f"freq_scale {number(lc['freq_scale'])}")
            chunked = sw.get("attention") == "chunked"
            lines.append(f"  {'chunked:   ' if chunked else 'sliding:   '} layers {ranges(sw['layers'], ', ')} (pattern: "
                         f"{sw['pattern_source']}), {'chunks of' if chunked else 'window'} "
                         f"{sw['window']}: freq_base {number(sw['freq_base'])} ({sw['freq_base_source']}), "
                         f"freq_scale {number(sw['freq_scale'])}"
                         + (f", head {sw['head_dim']}, n_rot {sw['n_rot']}" if sw.get("n_rot") else ""))
    if r["params"]:
        lines.append("  params:     " + ", ".join(f"{k}={number(v) if not isinstance(v, list) else f'[{len(v)} values]'}"
                                                for k, v in r["params"].items()))
    for t in r["rope_tensors"]:
        lines.append(f"  tensor:     {t['name']} {t['type']} [{t['length']}]{'' if t['used'] else ' (not loaded by llama.cpp: it refuses the file)'}")
    for n in r["notes"]:
        lines.append(f"  note:       {n}")
    lines.append("")
    mem = report.get("memory")
    if mem:
        lines.append(f"memory:     {memory_words(mem)}")
        lines.append("")
    if report["lint"]:
        lines.append(f"lint ({len(report['lint'])}):")
        for x in report["lint"]:
            lines.append(f"  {x['severity']:<7} {x['id']}: {x['message']}")
    else:
        lines.append("lint: no findings")
    return "\n".join(lines)


__all__ = ["SCHEMA_VERSION", "summarize_rope", "memory_section", "inspect_gguf", "inspect_model", "wavelengths", "render_text"]
