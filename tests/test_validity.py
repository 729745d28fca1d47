"""What llama.cpp refuses or aborts on is known before llama.cpp sees a file (issue #16).

Every fact is proved against llama.cpp itself (tests/llama_loads.py runs each file in a child process, so
an abort is an observation, not the end of the test run):

* each new lint rule fires on an edit llama.cpp refuses or dies on, ``set`` refuses that edit without
  ``--force``, and an edit of the same key to a sound value runs;
* each family's list of required tensors is exactly the set whose removal makes llama.cpp fail;
* hypothesis writes random finite and non-finite values, and wrong types, into every rope and shape key
  of the converted fixtures: inspect, lint and set never fail but with the project's one-line error, and
  every file ``set`` writes without ``--force`` runs in llama.cpp;
* ``check`` turns a llama.cpp abort into one line (preflight), and an output created by another program
  while ropetool writes is kept.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import fixture_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_loads import llama_cpp_runs, refused, runs_without_each

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.edit import set_keys, set_rope, unset_keys
from ropetool.errors import RopetoolError
from ropetool.families import FAMILIES
from ropetool.io.gguf_file import GGUFFile, TensorOut, write_gguf
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.runner import preflight
from ropetool.model import lint_gguf

FIXTURES = ("llama", "qwen2", "qwen3", "phi3", "bloom", "mixtral", "qwen2moe", "qwen3moe", "gemma2", "gemma3", "gptneox",
            "falcon", "falcon-mq", "mpt", "baichuan-7b", "smollm3", "olmo2", "mistral3")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("validity")
    out = {}
    for name in FIXTURES:
        out[name] = root / f"{name}.gguf"
        convert(fixture_dir(name), out[name], outtype="f32")
    return out


def _ids(path):
    return {f.id for f in lint_gguf(path)}


# ------------------------------------------------------------------------------------------
# The new rules against llama.cpp

# (fixture, edit, the rule it triggers, a sound edit of the same key)
EDITS = [
    ("llama", "llama.block_count=u32:3", "shape-mismatch", "llama.block_count=u32:2"),
    ("llama", "llama.block_count=u32:0", "implausible-value", None),
    ("llama", "llama.block_count=u32:600", "implausible-value", None),
    ("llama", "llama.attention.head_count=u32:3", "rope-dim-mismatch", "llama.attention.head_count=u32:4"),
    ("phi3", "phi3.attention.head_count=u32:2", "shape-mismatch", "phi3.attention.head_count=u32:4"),
    ("llama", "llama.attention.head_count_kv=u32:1", "shape-mismatch", "llama.attention.head_count_kv=u32:2"),
    ("llama", "llama.attention.head_count=arr[u32]:4", "shape-mismatch", "llama.attention.head_count=arr[u32]:4,4"),
    ("llama", "llama.feed_forward_length=u32:100", "shape-mismatch", "llama.feed_forward_length=u32:128"),
    ("llama", "llama.embedding_length=u32:65", "shape-mismatch", None),
    ("llama", "llama.attention.key_length=u32:8", "rope-dim-mismatch", "llama.attention.key_length=u32:16"),
    ("llama", "llama.attention.value_length=u32:8", "shape-mismatch", "llama.attention.value_length=u32:16"),
    ("llama", "llama.attention.layer_norm_rms_epsilon=f32:-1", "implausible-value",
     "llama.attention.layer_norm_rms_epsilon=f32:1e-5"),
    ("llama", "llama.attention.layer_norm_rms_epsilon=f32:nan", "implausible-value", None),
    ("llama", "general.alignment=u32:16", "implausible-value", "general.alignment=u32:64"),
    ("llama", "general.alignment=u32:8", "implausible-value", "general.alignment=u32:4096"),
    ("llama", "llama.context_length=f32:64", "wrong-key-type", "llama.context_length=u32:128"),
    ("qwen2", "qwen2.rope.dimension_count=u32:8", "rope-dim-mismatch", "qwen2.rope.dimension_count=u32:16"),
    ("phi3", "phi3.rope.dimension_count=u32:32", "implausible-value", None),
    ("bloom", "bloom.attention.layer_norm_epsilon=f32:-0.5", "implausible-value", None),
    # issue #23: the tokenizer keys llama_vocab::impl::load checks, and the general keys the loader reads typed
    ("llama", "tokenizer.ggml.model=str:bogus", "unknown-tokenizer", "tokenizer.ggml.model=str:gpt2"),
    ("llama", "tokenizer.ggml.model=str:", "unknown-tokenizer", None),
    ("llama", "tokenizer.ggml.model=u32:2", "wrong-key-type", None),
    ("llama", "tokenizer.ggml.pre=str:bogus", "unknown-tokenizer", "tokenizer.ggml.pre=str:qwen2"),
    ("llama", "tokenizer.ggml.token_type=arr[i32]:1", "tokenizer-array-length",
     "tokenizer.ggml.token_type=arr[i32]:" + ",".join(["1"] * 385)),  # longer than the vocabulary is fine
    ("llama", "tokenizer.ggml.token_type=arr[u32]:" + ",".join(["1"] * 384), "wrong-key-type", None),
    ("llama", "tokenizer.ggml.scores=arr[f32]:0.5", "tokenizer-array-length",
     "tokenizer.ggml.scores=arr[i32]:" + ",".join(["0"] * 384)),
    ("llama", "tokenizer.ggml.bos_token_id=i32:-1", "wrong-key-type", "tokenizer.ggml.bos_token_id=u32:1"),
    ("llama", "tokenizer.ggml.add_bos_token=u8:1", "wrong-key-type", "tokenizer.ggml.add_bos_token=bool:true"),
    ("llama", "tokenizer.ggml.token_type_count=i32:1", "wrong-key-type", "tokenizer.ggml.token_type_count=u32:1"),
    ("llama", "general.file_type=str:F16", "wrong-key-type", "general.file_type=u32:0"),
    ("llama", "general.name=u32:7", "wrong-key-type", "general.name=str:seven"),
]


@pytest.mark.parametrize("fixture,edit,rule,sound", EDITS, ids=[e[1] for e in EDITS])
def test_each_rule_is_what_llama_cpp_refuses(converted, tmp_path, fixture, edit, rule, sound):
    src = converted[fixture]
    with pytest.raises(RopetoolError, match="llama.cpp refuses or cannot run|is read by llama.cpp as"):
        set_keys(src, [edit], tmp_path / "refused.gguf")
    assert not (tmp_path / "refused.gguf").exists()
    bad = set_keys(src, [edit], tmp_path / "bad.gguf", force=True).output
    assert rule in _ids(bad)
    assert CliRunner().invoke(cli, ["inspect", "--strict", str(bad)]).exit_code == 1
    paths = [bad]
    if sound is not None:
        paths.append(set_keys(src, [sound], tmp_path / "sound.gguf").output)
        assert not any(f.severity == "error" for f in lint_gguf(paths[1]))
    runs = llama_cpp_runs(paths)
    assert runs[str(bad)] != "ok", runs
    if sound is not None:
        assert runs[str(paths[1])] == "ok", runs


def test_missing_shape_keys(converted, tmp_path):
    src = converted["llama"]
    cases = {}
    for template, rule in ((K.EMBEDDING_LENGTH, "missing-key"), (K.BLOCK_COUNT, "missing-key"),
                           (K.HEAD_COUNT, "missing-key"), (K.FEED_FORWARD_LENGTH, "missing-key"),
                           (K.LAYERNORM_RMS_EPS, "missing-key")):
        key = K.k(template, "llama")
        with pytest.raises(RopetoolError, match=rule):
            unset_keys(src, [key], tmp_path / "refused.gguf")
        cases[unset_keys(src, [key], tmp_path / f"no-{template.split('.')[-1]}.gguf", force=True).output] = rule
    for path, rule in cases.items():
        assert rule in _ids(path), path
    runs = llama_cpp_runs(list(cases))
    assert all(r != "ok" for r in runs.values()), runs


def test_missing_tokenizer_keys(converted, tmp_path):
    """unset of what llama.cpp's vocabulary needs is refused; --force writes files llama.cpp refuses."""
    src = converted["llama"]
    paths = []
    for key in (K.TOKENIZER_MODEL, K.TOKENIZER_TOKENS, K.TOKENIZER_MERGES):
        with pytest.raises(RopetoolError, match="missing-key"):
            unset_keys(src, [key], tmp_path / "refused.gguf")
        paths.append(unset_keys(src, [key], tmp_path / f"no-{key.split('.')[-1]}.gguf", force=True).output)
        assert "missing-key" in _ids(paths[-1])
    runs = llama_cpp_runs(paths)
    assert all(r != "ok" for r in runs.values()), runs


CHILD_BOS = r"""
import sys, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], vocab_only=True, verbose=False)
print(llm.token_bos())
"""


def test_special_token_past_the_vocabulary_is_not_what_llama_cpp_uses(converted, tmp_path):
    """llama.cpp loads a bos id past the vocabulary but uses another (its default): lint says so; an id in
    range is the one llama.cpp uses."""
    src = converted["llama"]
    with pytest.raises(RopetoolError, match="special-token-out-of-range"):
        set_keys(src, ["tokenizer.ggml.bos_token_id=u32:384"], tmp_path / "refused.gguf")
    bad = set_keys(src, ["tokenizer.ggml.bos_token_id=u32:384"], tmp_path / "bad.gguf", force=True).output
    sound = set_keys(src, ["tokenizer.ggml.bos_token_id=u32:383"], tmp_path / "sound.gguf").output
    assert "special-token-out-of-range" in _ids(bad) and "special-token-out-of-range" not in _ids(sound)

    def bos(path):
        proc = subprocess.run([sys.executable, "-c", CHILD_BOS, str(path)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return int(proc.stdout.split()[-1])

    assert bos(bad) != 384 and bos(sound) == 383


def _renamed(src, out, old, new):
    with GGUFFile(src) as gf:
        tensors = []
        for t in gf.tensors:
            copied = TensorOut.copy_of(t)
            if t.name == old:
                copied.name = new
            tensors.append(copied)
        write_gguf(out, list(gf.fields.values()), tensors, source=gf)
    return out


@pytest.mark.parametrize("fixture", ["llama", "qwen2", "gemma2"])
def test_unknown_tensor_names_are_findings_and_llama_cpp_refuses_them(converted, tmp_path, fixture):
    """A tensor name without a dot, with a NUL byte, or of no architecture: lint's unknown-tensor (it used to be
    an IndexError in the family check); every command that reads the file ends cleanly; llama.cpp refuses it."""
    src = converted[fixture]
    with GGUFFile(src) as gf:
        victim = next(t.name for t in gf.tensors if t.name.startswith("blk.0."))
    files = [_renamed(src, tmp_path / f"{i}.gguf", victim, new)
             for i, new in enumerate(["blk0attnweight", victim.replace(".", "\x00", 1), "my_tensor.weight", "", "."])]
    for path in files:
        assert "unknown-tensor" in _ids(path), path
        assert _run(["inspect", str(path)]).exit_code == 0
        assert _run(["inspect", "--strict", str(path)]).exit_code == 1
        result = _run(["check", str(path)])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1  # _run: one 'Error:' line
        for args in (["set", str(path), "-o", str(tmp_path / "o.gguf"), "--force", "general.name=str:x"],
                     ["unset", str(path), "-o", str(tmp_path / "o.gguf"), "--force", K.NAME],
                     ["set-rope", str(path), "-o", str(tmp_path / "o.gguf"), "--force", "--rope", "linear", "--factor", "2"]):
            assert _run(args).exit_code in (0, 2), args
    runs = llama_cpp_runs(files + [src])
    assert runs[str(src)] == "ok" and all(runs[str(p)] != "ok" for p in files), runs


def test_pre_tokenizer_names_are_the_vendored_llama_cpp_s():
    """keys.PRE_TOKENIZERS (with io.vocab's list) is read from llama-vocab.cpp as vendored by the pinned
    llama-cpp-python: the names its BPE branch accepts, and the tokenizer models it knows."""
    import os
    import re

    source = Path(os.environ.get("ROPETOOL_LLAMA_CPP_SRC", "/work/vendor-src/llama.cpp")) / "src" / "llama-vocab.cpp"
    if not source.exists():
        pytest.skip(f"no llama.cpp source at {source} (set ROPETOOL_LLAMA_CPP_SRC)")
    text = source.read_text()
    body = text[text.index("void llama_vocab::impl::load("):]
    models = body[:body.index("unknown tokenizer:")]
    bpe = body[body.index("if (type == LLAMA_VOCAB_TYPE_BPE)"):body.index("unknown pre-tokenizer type")]
    assert set(re.findall(r'tokenizer_pre == "([^"]+)"', bpe)) == set(K.PRE_TOKENIZERS)
    assert set(re.findall(r'tokenizer_model == "([^"]+)"', models)) == set(K.TOKENIZER_MODELS)


# ------------------------------------------------------------------------------------------
# Required tensors


@pytest.mark.parametrize("fixture", FIXTURES)
def test_required_tensors_are_what_llama_cpp_requires(converted, tmp_path, fixture):
    """Remove each tensor outside the blocks and each of block 0 in turn: llama.cpp fails exactly when the
    family lists it as required, and lint says missing-tensor exactly then."""
    src = converted[fixture]
    with GGUFFile(src) as gf:
        family = FAMILIES[gf.architecture]
        n_layer = gf.get(K.k(K.BLOCK_COUNT, gf.architecture))
        experts = bool(gf.get(K.k(K.EXPERT_COUNT, gf.architecture)))
    required = set(family.required_tensors(n_layer, experts=experts))
    results = runs_without_each(src, (0,), tmp_path)
    assert refused(results) == required & set(results), results
    for name, (path, _) in results.items():
        assert ("missing-tensor" in _ids(path)) == (name in required), name


def test_convert_names_the_missing_tensor(tmp_path):
    from bad_inputs import _st_read, _st_write

    folder = tmp_path / "m"
    shutil.copytree(fixture_dir("qwen3"), folder)
    for shard in folder.glob("*.safetensors"):
        pairs, payload = _st_read(shard)
        kept = [(k, v) for k, v in pairs if k != "model.layers.0.self_attn.q_norm.weight"]
        if len(kept) != len(pairs):
            _st_write(shard, kept, payload)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"].pop("model.layers.0.self_attn.q_norm.weight")
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(RopetoolError, match=r"blk\.0\.attn_q_norm\.weight"):
        convert(folder, tmp_path / "o.gguf")
    assert not (tmp_path / "o.gguf").exists()


# ------------------------------------------------------------------------------------------
# Fuzz: every rope and shape key, random values and types

FUZZ_TEMPLATES = tuple(dict.fromkeys(K.ROPE_CONTEXT_KEYS + K.SHAPE_KEYS + (
    K.LAYERNORM_RMS_EPS, K.LAYERNORM_EPS, K.ALIGNMENT, K.SLIDING_WINDOW, K.ROPE_SCALING_TYPE)))
INT_TYPES = {"u8": (0, 255), "i8": (-128, 127), "u16": (0, 65535), "i16": (-32768, 32767), "u32": (0, 2**32 - 1),
             "i32": (-2**31, 2**31 - 1), "u64": (0, 2**64 - 1), "i64": (-2**63, 2**63 - 1)}
NOTABLE_INTS = [0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 48, 64, 100, 128, 256, 384, 511, 512, 513, 4096, 65536, 2**31 - 1,
                2**32 - 1]
NOTABLE_FLOATS = [0.0, -0.0, -1.0, 0.5, 1.0, 1.5, 2.0, 4.0, 32.0, 1e-6, 1e4, 5e5, 1e30, 3.4e38, -1e-6, math.nan,
                  math.inf, -math.inf]


def _float_text(x: float) -> str:
    return "nan" if math.isnan(x) else repr(float(x))


@st.composite
def edits(draw):
    fixture = draw(st.sampled_from(FIXTURES))
    template = draw(st.sampled_from(FUZZ_TEMPLATES))
    key = K.k(template, fixture) if "{arch}" in template else template
    if draw(st.integers(0, 9)) == 0:
        return fixture, "unset", key
    right = K.TYPES.get(template)
    tname = draw(st.sampled_from([{K.T.UINT32: "u32", K.T.FLOAT32: "f32", K.T.STRING: "str", K.T.BOOL: "bool"}.get(right, "u32")] * 4
                                 + list(INT_TYPES) + ["f32", "f64", "bool", "str", "arr[u32]", "arr[f32]"]))
    if tname in INT_TYPES:
        lo, hi = INT_TYPES[tname]
        value = str(draw(st.one_of(st.sampled_from([v for v in NOTABLE_INTS if lo <= v <= hi]), st.integers(lo, hi))))
    elif tname in ("f32", "f64"):
        value = _float_text(draw(st.one_of(st.sampled_from(NOTABLE_FLOATS), st.floats(width=32 if tname == "f32" else 64))))
    elif tname == "bool":
        value = draw(st.sampled_from(["true", "false"]))
    elif tname == "str":
        value = draw(st.one_of(st.sampled_from(["none", "linear", "yarn", "longrope", "dynamic", "64", ""]), st.text(max_size=8)))
    elif tname == "arr[u32]":
        value = ",".join(str(v) for v in draw(st.lists(st.sampled_from(NOTABLE_INTS), min_size=0, max_size=3)))
    else:
        value = ",".join(_float_text(v) for v in draw(st.lists(st.sampled_from(NOTABLE_FLOATS), min_size=1, max_size=3)))
    return fixture, "set", f"{key}={tname}:{value}"


def _run(args):
    result = CliRunner().invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output)
    assert "Traceback" not in result.output and "internal error" not in result.output, (args, result.output)
    assert "RuntimeWarning" not in result.output and "RankWarning" not in result.output, (args, result.output)
    if result.exit_code == 2:
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, result.output)
    return result


def test_fuzz_rope_and_shape_keys(converted, tmp_path):
    written = tmp_path / "written"
    written.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    counts = {"written": 0, "refused": 0}

    @settings(max_examples=250, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(edits())
    def one(edit):
        fixture, op, arg = edit
        src = converted[fixture]
        out, forced = work / "out.gguf", work / "forced.gguf"
        for p in (out, forced):
            p.unlink(missing_ok=True)
        result = _run([op, str(src), "-o", str(out), arg])
        _run([op, str(src), "-o", str(forced), "--force", arg])
        if forced.exists():  # whatever --force wrote, inspect and lint read without failing
            _run(["inspect", str(forced)])
            _run(["inspect", "--strict", str(forced)])
            try:
                lint_gguf(forced)
            except RopetoolError:
                pass
            shown = _run(["inspect", "--json", str(forced)])
            if shown.exit_code == 0:
                json.loads(shown.output, parse_constant=lambda c: pytest.fail(f"{c} in inspect --json"))
        if result.exit_code == 0:
            counts["written"] += 1
            shutil.copyfile(out, written / f"{counts['written']:04d}.gguf")
            (written / f"{counts['written']:04d}.txt").write_text(f"{fixture} {op} {arg}")
        else:
            counts["refused"] += 1
            if forced.exists() and "llama.cpp refuses or cannot run" in result.output:
                assert _run(["inspect", "--strict", str(forced)]).exit_code == 1, arg

    one()
    assert counts["written"] >= 30 and counts["refused"] >= 30, counts
    files = sorted(written.glob("*.gguf"))
    runs = llama_cpp_runs(files)
    failed = {(written / (p.stem + ".txt")).read_text(): r for p in files if (r := runs[str(p)]) != "ok"}
    assert not failed, failed


# Per option: values a user would give, then hostile ones (drawn a quarter of the time).
OPTION_VALUES = {
    "factor": ([2.0, 4.0, 8.0, 1.5], [0.5, 1.0, 65536.0, 1e30, -2.0, math.inf, math.nan]),
    "alpha": ([2.0, 4.0, 8.0], [0.0, 1.0, 1e6, -1.0, math.inf]),
    "original-context": ([32, 64], [1, 8, 2**31, 2**32 - 1, 2**40]),
    "target-context": ([128, 256], [1, 64, 4096, 2**32 - 1, 2**62]),
    "beta-fast": ([32.0, 16.0], [1.0, 1e-30, 0.0, -4.0, math.nan]),
    "beta-slow": ([1.0, 2.0], [0.5, 64.0, 0.0, math.inf]),
    "attn-factor": ([1.0, 1.2], [0.1, 1e-30, 100.0, 1e6, math.nan]),
    "freq-base": ([10000.0, 500000.0], [1.5, 1.0, 1e38, 1e39, -1.0]),
}


@st.composite
def rope_edits(draw):
    from ropetool.rope import METHODS, canonical_method
    from ropetool.rope.methods import USES

    fixture = draw(st.sampled_from(FIXTURES))
    method = draw(st.sampled_from([m for m in METHODS if m != "longrope" or fixture == "phi3"]))
    readable = {n.replace("_", "-") for n in USES[canonical_method(method)]} & set(OPTION_VALUES)
    args = []
    for name in sorted(readable):
        if draw(st.booleans()):
            sane, hostile = OPTION_VALUES[name]
            value = draw(st.sampled_from(hostile if draw(st.integers(0, 3)) == 0 else sane))
            args += [f"--{name}", _float_text(value) if isinstance(value, float) else str(value)]
    if draw(st.integers(0, 3)) == 0:
        args.append("--approximate")
    return fixture, ["--rope", method, *args]


def test_fuzz_set_rope_options(converted, tmp_path):
    """Every rope method with random option values, finite and not: one-line errors or a file llama.cpp runs."""
    written = tmp_path / "written"
    written.mkdir()
    out = tmp_path / "out.gguf"
    log = {}

    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(rope_edits())
    def one(edit):
        fixture, args = edit
        out.unlink(missing_ok=True)
        result = _run(["set-rope", str(converted[fixture]), "-o", str(out), *args])
        if result.exit_code == 0:
            path = written / f"{len(log):04d}.gguf"
            shutil.move(out, path)
            log[str(path)] = f"{fixture} {' '.join(args)}"

    one()
    assert len(log) >= 30, len(log)
    runs = llama_cpp_runs([Path(p) for p in log])
    failed = {log[p]: r for p, r in runs.items() if r != "ok"}
    assert not failed, failed


# ------------------------------------------------------------------------------------------
# check's preflight, and the race on the output


def test_preflight_turns_an_abort_into_one_line(converted, tmp_path):
    bad = set_keys(converted["llama"], ["llama.attention.layer_norm_rms_epsilon=f32:-1"], tmp_path / "bad.gguf",
                   force=True).output
    with pytest.raises(RopetoolError, match=r"llama.cpp aborted \(SIGABRT\).*GGML_ASSERT\(eps >= 0.0f\)"):
        preflight(bad, 256)
    preflight(converted["llama"], 256)  # a sound file passes


def test_an_output_created_meanwhile_is_kept(converted, tmp_path):
    """Another program creates the target while ropetool writes: without --force its file stays."""
    theirs = b"another program's file"

    def create_target(out):
        def hook(*args):
            out.write_bytes(theirs)
            return args[0] if args else None
        return hook

    out = tmp_path / "set-rope.gguf"
    with pytest.raises(RopetoolError, match="appeared while it was being written"):
        set_rope(converted["llama"], "linear", out, factor=2.0, _hooks={"fail_after_header": create_target(out)})
    assert out.read_bytes() == theirs
    out = tmp_path / "set.gguf"
    with pytest.raises(RopetoolError, match="appeared while it was being written"):
        set_keys(converted["llama"], ["general.name=str:x"], out, _hooks={"fail_after_header": create_target(out)})
    assert out.read_bytes() == theirs
    out = tmp_path / "convert.gguf"

    def progress(items):
        out.write_bytes(theirs)
        yield from items

    with pytest.raises(RopetoolError, match="appeared while it was being written"):
        convert(fixture_dir("llama"), out, progress=progress)
    assert out.read_bytes() == theirs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["convert.gguf", "set-rope.gguf", "set.gguf"]
    # with --force the new file replaces it
    set_keys(converted["llama"], ["general.name=str:x"], out, force=True)
    with GGUFFile(out) as gf:
        assert gf.get("general.name") == "x"


@pytest.mark.parametrize("length", [241, 250, 255])
def test_long_output_names(converted, tmp_path, length):
    """The temporary file's name must fit NAME_MAX even when the output's name nearly fills it."""
    out = tmp_path / ("m" * (length - 5) + ".gguf")
    set_keys(converted["llama"], ["general.name=str:x"], out)
    set_keys(converted["llama"], ["general.name=str:y"], out, force=True)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    with GGUFFile(out) as gf:
        assert gf.get("general.name") == "y"


def test_numpy_warnings_stay_quiet(converted, tmp_path):
    """A value whose arithmetic overflows (the reader computes with it before refusing it) prints no
    RuntimeWarning: the command's output is its one line."""
    bad = set_keys(converted["llama"], ["llama.rope.freq_base=f32:3.4e38", "llama.rope.scaling.factor=f32:1e-30"],
                   tmp_path / "bad.gguf", force=True).output
    for args in (["inspect", str(bad)], ["inspect", "--json", str(bad)], ["set-rope", str(bad), "-o", str(tmp_path / "o.gguf"),
                                                                     "--rope", "ntk", "--alpha", "1e30"]):
        proc = subprocess.run([sys.executable, "-m", "ropetool", *args], capture_output=True, text=True, timeout=60)
        assert "Warning" not in proc.stderr, proc.stderr  # a subprocess: pytest does not catch its warnings
