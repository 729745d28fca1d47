"""set-rope, set, unset and diff: outputs checked with gguf-py's reader and with llama.cpp itself.

The key acceptance test: set-rope to YaRN on an f32 GGUF gives llama.cpp logits equal (<= 1e-6) to
those of a file converted directly with the same setting, on 100 tokens (past the original 64),
with every tensor's bytes unchanged (sha256 of gguf-py's view of the data).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tracemalloc

import gguf
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import fixture_dir, llama_cpp_logits, token_ids
from test_inspect import build as build_complete

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.edit import diff_gguf, parse_assignment, set_keys, set_rope, unset_keys
from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import GGUFFile, T, TensorOut, write_gguf
from ropetool.llamacpp import keys as K

R = gguf.Keys.Rope
N = 100


def build(*args, **kwargs):
    """test_inspect's builder with exactly the tensors given (edits copy whatever a file holds)."""
    return build_complete(*args, complete=False, **kwargs)


def key(template, arch="llama"):
    return template.format(arch=arch)


def file_hash(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def tensor_hashes(path) -> dict[str, str]:
    """sha256 of each tensor's bytes as gguf-py reads them (an independent reader)."""
    reader = gguf.GGUFReader(path)
    return {t.name: hashlib.sha256(np.ascontiguousarray(t.data).view(np.uint8).tobytes()).hexdigest() for t in reader.tensors}


def fields(path) -> dict:
    reader = gguf.GGUFReader(path)
    return {f.name: (f.types, f.contents()) for f in reader.fields.values() if not f.name.startswith("GGUF.")}


def listing(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture(scope="module")
def llama_f32(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "llama.gguf"
    convert(fixture_dir("llama"), path, outtype="f32")
    return path


# --------------------------------------------------------------------------------------------
# KEY=TYPE:VALUE


@pytest.mark.parametrize("text,vtype,value,sub", [
    ("a.b=u8:255", T.UINT8, 255, None),
    ("a.b=i8:-128", T.INT8, -128, None),
    ("a.b=u16:0x10", T.UINT16, 16, None),
    ("a.b=i16:-5", T.INT16, -5, None),
    ("a.b=u32:4294967295", T.UINT32, 2**32 - 1, None),
    ("a.b=i32:-7", T.INT32, -7, None),
    ("a.b=u64:18446744073709551615", T.UINT64, 2**64 - 1, None),
    ("a.b=i64:-9", T.INT64, -9, None),
    ("a.b=f32:1e6", T.FLOAT32, 1e6, None),
    ("a.b=f64:0.1", T.FLOAT64, 0.1, None),
    ("a.b=bool:true", T.BOOL, True, None),
    ("a.b=bool:0", T.BOOL, False, None),
    ("a.b=str:yarn", T.STRING, "yarn", None),
    ("a.b=str:", T.STRING, "", None),
    ("a.b=str:x=y:z", T.STRING, "x=y:z", None),
    ("a.b=arr[i32]:1,2,3", T.ARRAY, [1, 2, 3], T.INT32),
    ("a.b=arr[f32]:0.5, 2", T.ARRAY, [0.5, 2.0], T.FLOAT32),
    ("a.b=arr[str]:a,b", T.ARRAY, ["a", "b"], T.STRING),
    ('a.b=arr[str]:["a,b", "c"]', T.ARRAY, ["a,b", "c"], T.STRING),
    ("a.b=arr[i32]:[16, 24, 24, 0]", T.ARRAY, [16, 24, 24, 0], T.INT32),
    ("a.b=arr[u8]:", T.ARRAY, [], T.UINT8),
    ("a.b=arr[bool]:true,false", T.ARRAY, [True, False], T.BOOL),
])
def test_parse_assignment(text, vtype, value, sub):
    v = parse_assignment(text)
    assert (v.key, v.type, v.value, v.sub_type) == ("a.b", vtype, value, sub)


@pytest.mark.parametrize("text", ["a.b", "=u8:1", "a.b=u8:256", "a.b=i8:-129", "a.b=u64:-1", "a.b=f32:1e39",
                                  "a.b=bool:maybe", "a.b=int:3", "a.b=u32", "a.b=arr[x]:1", "a.b=arr[i32]:1,x",
                                  "a.b=arr[str]:[1]", "a.b=arr[i32]:[1,", "a.b=u32:1.5", "a.b=arr[arr]:1"])
def test_parse_assignment_errors(text):
    with pytest.raises(RopetoolError):
        parse_assignment(text)


def test_string_from_file(tmp_path):
    (tmp_path / "t.jinja").write_text("{{ bos }}, hello\n")
    v = parse_assignment(f"tokenizer.chat_template=str@{tmp_path / 't.jinja'}")
    assert v.type == T.STRING and v.value == "{{ bos }}, hello\n"


# --------------------------------------------------------------------------------------------
# set / unset


def test_set_writes_typed_values_gguf_py_reads(tmp_path, llama_f32):
    out = tmp_path / "o.gguf"
    set_keys(llama_f32, [
        f"{key(R.FREQ_BASE)}=f32:500000",  # replaces an existing key in place
        "test.empty_string=str:",
        "test.empty_array=arr[i32]:",
        "test.u64=u64:18446744073709551615",
        'test.strs=arr[str]:["a,b","", "ü"]',
        "test.flag=bool:yes",
    ], out)
    f = fields(out)
    assert f[key(R.FREQ_BASE)] == ([T.FLOAT32], 500000.0)
    assert f["test.empty_string"] == ([T.STRING], "")
    assert f["test.empty_array"] == ([T.ARRAY], [])  # gguf-py lists no element type for an empty array ...
    raw = gguf.GGUFReader(out).fields["test.empty_array"].parts  # ... but it is there: key len, key, type, element type, count
    assert (int(raw[2][0]), int(raw[3][0]), int(raw[4][0])) == (T.ARRAY, T.INT32, 0)
    assert f["test.u64"] == ([T.UINT64], 2**64 - 1)
    assert f["test.strs"] == ([T.ARRAY, T.STRING], ["a,b", "", "ü"])
    assert f["test.flag"] == ([T.BOOL], True)
    before, after = fields(llama_f32), f
    assert list(after)[: list(after).index(key(R.FREQ_BASE)) + 1] == list(before)[: list(before).index(key(R.FREQ_BASE)) + 1]
    assert tensor_hashes(out) == tensor_hashes(llama_f32)
    # llama.cpp still loads it (the empty values included)
    llama_cpp_logits(out, token_ids(8, 384))


def test_unset(tmp_path, llama_f32):
    out = tmp_path / "o.gguf"
    unset_keys(llama_f32, ["tokenizer.chat_template"], out)
    f = fields(out)
    assert "tokenizer.chat_template" not in f
    assert {k: v for k, v in fields(llama_f32).items() if k != "tokenizer.chat_template"} == f
    assert tensor_hashes(out) == tensor_hashes(llama_f32)
    with pytest.raises(RopetoolError, match="no key"):
        unset_keys(llama_f32, ["no.such.key"], tmp_path / "p.gguf")
    assert not (tmp_path / "p.gguf").exists()


def test_set_in_place_is_atomic_and_keeps_mode(tmp_path, llama_f32):
    path = tmp_path / "m.gguf"
    path.write_bytes(llama_f32.read_bytes())
    os.chmod(path, 0o640)
    ino = os.stat(path).st_ino
    res = CliRunner().invoke(cli, ["set", str(path), "general.name=str:renamed", "--in-place"])
    assert res.exit_code == 0, res.output
    assert fields(path)["general.name"][1] == "renamed"
    assert os.stat(path).st_ino != ino  # replaced by rename, not rewritten in place
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert listing(tmp_path) == {"m.gguf"}
    assert tensor_hashes(path) == tensor_hashes(llama_f32)


def test_output_safety_rules(tmp_path, llama_f32):
    runner = CliRunner()
    out = tmp_path / "o.gguf"
    out.write_bytes(b"keep me")
    res = runner.invoke(cli, ["set", str(llama_f32), "general.name=str:x", "-o", str(out)])
    assert res.exit_code == 2 and res.output.strip().startswith("Error:") and "--force" in res.output
    assert out.read_bytes() == b"keep me"
    res = runner.invoke(cli, ["set", str(llama_f32), "general.name=str:x", "-o", str(out), "--force"])
    assert res.exit_code == 0 and fields(out)["general.name"][1] == "x"
    res = runner.invoke(cli, ["set", str(llama_f32), "general.name=str:x"])
    assert res.exit_code == 2 and "--in-place" in res.output
    res = runner.invoke(cli, ["set", str(llama_f32), "general.name=str:x", "-o", str(llama_f32), "--force"])
    assert res.exit_code == 2 and "input file" in res.output
    res = runner.invoke(cli, ["set", str(llama_f32), "general.name=str:x", "-o", str(out), "--in-place"])
    assert res.exit_code == 2


def _assert_failed_cleanly(folder, src, src_hash, expected_listing):
    assert file_hash(src) == src_hash
    assert listing(folder) == expected_listing  # no output, no temporary file


def test_failures_leave_input_untouched(tmp_path, llama_f32):
    src = tmp_path / "src.gguf"
    src.write_bytes(llama_f32.read_bytes())
    h = file_hash(src)
    runner = CliRunner()
    for args in (
        ["set", str(src), "general.name=u8:300", "-o", str(tmp_path / "o.gguf")],
        ["set", str(src), "general.alignment=u32:48", "-o", str(tmp_path / "o.gguf")],
        ["set", str(src), "general.alignment=u32:48", "--in-place"],
        ["set-rope", str(src), "--rope", "llama3", "--factor", "0.5", "-o", str(tmp_path / "o.gguf")],  # factor < 1
        ["set-rope", str(src), "--rope", "yarn", "--factor", "0.5", "--in-place"],
        ["set-rope", str(src), "--rope", "alibi", "-o", str(tmp_path / "o.gguf")],  # ALiBi on a RoPE arch
        ["unset", str(src), "no.such.key", "--in-place"],
    ):
        res = runner.invoke(cli, args)
        assert res.exit_code == 2, (args, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:"), res.output
        _assert_failed_cleanly(tmp_path, src, h, {"src.gguf"})


def test_set_rope_refuses_inexact_without_approximate(tmp_path):
    src = tmp_path / "q.gguf"
    convert(fixture_dir("qwen2"), src, outtype="f32")
    h = file_hash(src)
    res = CliRunner().invoke(cli, ["set-rope", str(src), "--rope", "yarn", "--factor", "4", "--beta-slow", "2",
                                   "-o", str(tmp_path / "o.gguf")])
    assert res.exit_code == 2 and "--approximate" in res.output
    _assert_failed_cleanly(tmp_path, src, h, {"q.gguf"})
    res = CliRunner().invoke(cli, ["set-rope", str(src), "--rope", "yarn", "--factor", "4", "--beta-slow", "2",
                                   "-o", str(tmp_path / "o.gguf"), "--approximate"])
    assert res.exit_code == 0, res.output
    f = fields(tmp_path / "o.gguf")
    assert f[K.RT_EXACT][1] is False and f[K.RT_APPROX_ERROR][1] > 0


@pytest.mark.parametrize("in_place", [False, True])
def test_failure_while_writing_leaves_nothing(tmp_path, llama_f32, in_place):
    src = tmp_path / "src.gguf"
    src.write_bytes(llama_f32.read_bytes())
    h = file_hash(src)

    def boom():
        raise OSError(28, "No space left on device")

    out = None if in_place else tmp_path / "o.gguf"
    with pytest.raises(OSError):
        set_keys(src, ["general.name=str:x"], out, in_place=in_place, _hooks={"fail_after_header": boom})
    _assert_failed_cleanly(tmp_path, src, h, {"src.gguf"})
    with pytest.raises(OSError):
        set_rope(src, "yarn", out, in_place=in_place, factor=4.0, _hooks={"fail_after_header": boom})
    _assert_failed_cleanly(tmp_path, src, h, {"src.gguf"})


def test_truncated_input_is_refused(tmp_path, llama_f32):
    src = tmp_path / "t.gguf"
    data = llama_f32.read_bytes()
    src.write_bytes(data[: len(data) - 1000])
    h = file_hash(src)
    for args in (["set", str(src), "general.name=str:x", "-o", str(tmp_path / "o.gguf")],
                 ["set-rope", str(src), "--rope", "yarn", "--factor", "4", "--in-place"]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2 and res.output.strip().startswith("Error:") and len(res.output.strip().splitlines()) == 1
        _assert_failed_cleanly(tmp_path, src, h, {"t.gguf"})


def test_tensor_data_is_streamed(tmp_path):
    """A 64 MiB tensor is copied without holding it in memory."""
    big = np.random.default_rng(0).standard_normal((1024, 16384)).astype(np.float32)
    src = build(tmp_path / "big.gguf", tensors={"token_embd.weight": big})
    del big
    tracemalloc.start()
    set_keys(src, ["general.name=str:x"], tmp_path / "o.gguf")
    set_rope(src, "linear", tmp_path / "r.gguf", factor=2.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 << 20, peak
    assert tensor_hashes(tmp_path / "o.gguf") == tensor_hashes(src) == tensor_hashes(tmp_path / "r.gguf")


def test_big_endian_file_stays_big_endian(tmp_path):
    src = build(tmp_path / "be.gguf", endian=gguf.GGUFEndian.BIG)
    set_keys(src, ["test.x=arr[i32]:1,2", "test.s=str:hi"], tmp_path / "o.gguf")
    reader = gguf.GGUFReader(tmp_path / "o.gguf")
    assert reader.endianess == gguf.GGUFEndian.BIG
    assert reader.fields["test.x"].contents() == [1, 2] and reader.fields["test.s"].contents() == "hi"
    assert reader.fields[key(gguf.Keys.LLM.CONTEXT_LENGTH)].contents() == 4096
    np.testing.assert_array_equal(reader.tensors[0].data, gguf.GGUFReader(src).tensors[0].data)


@pytest.mark.parametrize("copy_file_range", [True, False], ids=["copy_file_range", "no-copy_file_range"])
@pytest.mark.parametrize("replaced", [None, "b.weight", "a.weight", "c.weight"])
def test_copied_and_new_tensors_land_where_gguf_py_reads_them(tmp_path, replaced, copy_file_range, monkeypatch):
    """The writer copies neighbouring kept tensors in one run; a tensor written anew between them (same size,
    same place) must not be overwritten by that run, nor its neighbours by it.  Also where os.copy_file_range
    is missing (macOS): copied through a buffer."""
    if not copy_file_range:
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    rng = np.random.default_rng(5)
    arrays = {n: rng.standard_normal(shape).astype(np.float32) for n, shape in
              [("a.weight", (3, 40)), ("b.weight", (7,)), ("c.weight", (2, 33)), ("d.weight", (5,))]}
    src = build(tmp_path / "src.gguf", tensors=arrays)
    new = -np.arange(arrays[replaced].size, dtype=np.float32).reshape(arrays[replaced].shape) if replaced else None
    out = tmp_path / "out.gguf"
    with GGUFFile(src) as gf:
        tensors = [TensorOut.from_array(t.name, new) if t.name == replaced else TensorOut.copy_of(t)
                   for t in gf.tensors]
        write_gguf(out, list(gf.fields.values()), tensors, source=gf)
    reader = gguf.GGUFReader(out)
    assert [t.name for t in reader.tensors] == list(arrays)
    for t in reader.tensors:
        want = new if t.name == replaced else arrays[t.name]
        np.testing.assert_array_equal(np.asarray(t.data).reshape(want.shape), want, err_msg=t.name)
        assert int(t.data_offset) % 32 == 0
    assert out.stat().st_size == src.stat().st_size  # same layout, padded to the end


# --------------------------------------------------------------------------------------------
# set-rope against a direct conversion, in llama.cpp


@pytest.mark.parametrize("method,options", [
    ("yarn", {"factor": 4.0}),
    ("yarn", {"factor": 4.0, "beta_fast": 8.0}),  # written as rope_freqs on llama
    ("llama3", {"factor": 8.0}),
    ("linear", {"factor": 2.0}),
    ("ntk", {"alpha": 4.0}),
    ("ntk-by-parts", {"factor": 4.0}),
])
def test_set_rope_matches_direct_conversion_in_llama_cpp(tmp_path, llama_f32, method, options):
    ids = token_ids(N, 384)
    out = tmp_path / "set.gguf"
    direct = tmp_path / "direct.gguf"
    set_rope(llama_f32, method, out, **options)
    convert(fixture_dir("llama"), direct, outtype="f32", method=method, **options)
    a, b = llama_cpp_logits(out, ids), llama_cpp_logits(direct, ids)
    assert np.abs(a - b).max() <= 1e-6
    assert np.abs(a - llama_cpp_logits(llama_f32, ids)).max() > 1e-3  # the method changed something
    before, after = tensor_hashes(llama_f32), tensor_hashes(out)
    for name, h in before.items():
        assert after[name] == h, name
    assert set(after) - set(before) <= set(K.ROPE_TENSORS)
    assert fields(out) == fields(direct)  # the same keys, types and values as a direct conversion


def test_set_rope_replaces_old_rope_keys_and_tensors(tmp_path):
    src = tmp_path / "l3.gguf"
    convert(fixture_dir("llama3"), src, outtype="f32")
    out = tmp_path / "o.gguf"
    set_rope(src, "yarn", out, factor=4.0)
    f = fields(out)
    assert "rope_freqs.weight" not in tensor_hashes(out)
    assert f[key(R.SCALING_TYPE)][1] == "yarn" and f[key(R.SCALING_FACTOR)][1] == 4.0
    assert f[key(R.FREQ_BASE)][1] == 500000.0  # the original base, from ropetool.rope.params
    assert f[key(R.SCALING_ORIG_CTX_LEN)][1] == 64  # the trained context, from original_context_length
    assert f[key(gguf.Keys.LLM.CONTEXT_LENGTH)][1] == 256
    assert f[K.RT_METHOD][1] == "yarn"
    assert json.loads(f[K.RT_PARAMS][1])["factor"] == 4.0
    back = tmp_path / "back.gguf"
    set_rope(out, "none", back)
    fb = fields(back)
    assert fb[key(R.SCALING_TYPE)][1] == "none" and key(R.SCALING_FACTOR) not in fb
    ids = token_ids(N, 384)
    direct = tmp_path / "direct.gguf"
    convert(fixture_dir("llama3"), direct, outtype="f32", method="none")
    assert np.abs(llama_cpp_logits(back, ids) - llama_cpp_logits(direct, ids)).max() <= 1e-6


def test_set_rope_keeps_alignment(tmp_path):
    src = build(tmp_path / "a.gguf", alignment=64, tensors={
        "token_embd.weight": np.arange(8 * 64, dtype=np.float32).reshape(8, 64), "x.weight": np.ones(3, np.float32),
        "y.weight": np.arange(5, dtype=np.float32)})
    out = tmp_path / "o.gguf"
    set_rope(src, "llama3", out, factor=8.0, original_context=1024, base=500000.0)
    reader = gguf.GGUFReader(out)
    assert reader.alignment == 64 and reader.data_offset % 64 == 0
    assert all(int(t.data_offset) % 64 == 0 for t in reader.tensors)
    hashes = tensor_hashes(out)
    for name, h in tensor_hashes(src).items():
        assert hashes[name] == h
    assert "rope_freqs.weight" in hashes


def test_set_rope_dry_run(tmp_path, llama_f32):
    res = CliRunner().invoke(cli, ["set-rope", str(llama_f32), "--rope", "yarn", "--factor", "4", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["written"] is False and d["output"] is None
    changes = {c["key"]: c for c in d["keys"]}
    assert changes[key(R.SCALING_TYPE)]["old"]["value"] == "none" and changes[key(R.SCALING_TYPE)]["new"]["value"] == "yarn"
    assert changes[key(R.SCALING_FACTOR)]["change"] == "added"
    assert changes[key(gguf.Keys.LLM.CONTEXT_LENGTH)]["new"]["value"] == 256
    assert listing(llama_f32.parent) == {"llama.gguf"}
    text = CliRunner().invoke(cli, ["set-rope", str(llama_f32), "--rope", "llama3", "--factor", "8", "--dry-run"]).output
    assert "+ rope_freqs.weight" in text and "dry run" in text


def test_set_rope_unknown_architecture_is_conservative(tmp_path):
    # An architecture name llama.cpp does not know (every name it knows has a loader record).
    src = build(tmp_path / "g.gguf", "future-arch", d=16)
    out = tmp_path / "o.gguf"
    res = CliRunner().invoke(cli, ["set-rope", str(src), "--rope", "yarn", "--factor", "4", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "no facts about future-arch" in res.output
    assert fields(out)[key(R.SCALING_TYPE, "future-arch")][1] == "yarn"
    res = CliRunner().invoke(cli, ["set-rope", str(src), "--rope", "llama3", "--factor", "8", "-o", str(tmp_path / "p.gguf")])
    assert res.exit_code == 2 and "rope_freqs" in res.output and not (tmp_path / "p.gguf").exists()


def test_set_rope_warns_about_ntk_looking_base(tmp_path):
    src = build(tmp_path / "n.gguf", base=10000.0 * 8 ** (16 / 14))
    result = set_rope(src, "linear", tmp_path / "o.gguf", factor=2.0)
    assert any("--freq-base 10000" in w for w in result.warnings)


# --------------------------------------------------------------------------------------------
# diff


def test_diff(tmp_path, llama_f32):
    runner = CliRunner()
    res = runner.invoke(cli, ["diff", str(llama_f32), str(llama_f32)])
    assert res.exit_code == 0 and "identical" in res.output
    other = tmp_path / "o.gguf"
    set_rope(llama_f32, "llama3", other, factor=8.0)
    res = runner.invoke(cli, ["diff", "--json", str(llama_f32), str(other)])
    assert res.exit_code == 1
    d = json.loads(res.output)
    assert d["identical"] is False
    assert d["metadata"]["changed"][key(gguf.Keys.LLM.CONTEXT_LENGTH)]["new"]["value"] == 512
    assert key(R.SCALING_ORIG_CTX_LEN) in d["metadata"]["added"]
    assert [t["name"] for t in d["tensors"]["added"]] == ["rope_freqs.weight"]
    assert d["tensors"]["changed"] == [] and d["tensors"]["unchanged"] == len(gguf.GGUFReader(llama_f32).tensors)


def test_diff_detects_tensor_bytes(tmp_path):
    a = build(tmp_path / "a.gguf", tensors={"token_embd.weight": np.zeros((8, 64), np.float32),
                                            "n.weight": np.ones(64, np.float32)})
    b = build(tmp_path / "b.gguf", tensors={"token_embd.weight": np.zeros((8, 64), np.float32),
                                            "n.weight": np.full(64, 2.0, np.float32)})
    d = diff_gguf(a, b)
    assert [t["name"] for t in d["tensors"]["changed"]] == ["n.weight"]
    ha, hb = (tensor_hashes(p)["n.weight"] for p in (a, b))
    assert d["tensors"]["changed"][0]["sha256"] == [ha, hb]
    assert diff_gguf(a, b, tensor_data=False)["tensors"]["changed"] == []
    res = CliRunner().invoke(cli, ["diff", str(a), str(b)])
    assert res.exit_code == 1 and "n.weight: data differs" in res.output


def test_set_rope_option_the_method_does_not_read_is_an_error(tmp_path):
    from click.testing import CliRunner
    from conftest import fixture_dir

    from ropetool.cli import cli
    from ropetool.convert import convert

    src = tmp_path / "in.gguf"
    convert(fixture_dir("llama"), src, outtype="f16")
    out = tmp_path / "out.gguf"
    result = CliRunner().invoke(cli, ["set-rope", str(src), "-o", str(out), "--rope", "ntk", "--alpha", "2",
                                      "--factor", "3"])
    assert result.exit_code == 2 and "--factor does not apply to --rope ntk" in result.output
    assert not out.exists()
