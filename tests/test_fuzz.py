"""Fuzzing the GGUF reader: mutated headers of a real converted file never crash, hang or blow up memory.

A small GGUF (the llama fixture converted to f16) is mutated by hypothesis: bytes flipped, inserted or
deleted anywhere in the header region, counts, lengths, type tags and tensor offsets overwritten with
boundary values (0, 2^32 - 1, 2^63, 2^64 - 1, the file size...) at the places they really are, and the
file truncated.  For every mutant, ``inspect`` (report, text and JSON rendering, lint) and a dry-run
``set`` either succeed or raise RopetoolError (the CLI's one-line ``Error: ...``); nothing else.  Each
example has a deadline (no hang: a loop driven by a corrupted count would blow it), and the peak of
Python allocations (tracemalloc, which numpy reports to) stays under twice the file size: no length
read from the file is allocated before it is checked against the file's size.

derandomize=True: CI runs the same examples every time; ROPETOOL_FUZZ_EXAMPLES raises the count locally.
"""

from __future__ import annotations

import math
import os
import struct
import tracemalloc
from pathlib import Path

import pytest
from conftest import fixture_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ropetool.convert import convert
from ropetool.edit import set_keys
from ropetool.errors import RopetoolError
from ropetool.inspect import inspect_gguf, render_text
from ropetool.io.gguf_file import GGUFFile, dumps
from ropetool.llamacpp import keys as K

EXAMPLES = int(os.environ.get("ROPETOOL_FUZZ_EXAMPLES", "250"))
BOUNDARY = [0, 1, 2, 3, 4, 7, 8, 12, 13, 31, 32, 33, 255, 256, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
            2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


def _layout(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """The header's end and the (offset, width) of every count, length, type tag and tensor offset in it."""
    spots = [(4, 4), (8, 8), (16, 8)]  # version, tensor count, key/value count
    with GGUFFile(_layout.path) as gf:
        for f in gf.fields.values():
            spots.append((f.start, 8))  # key length
            key_len = struct.unpack_from("<Q", data, f.start)[0]
            spots.append((f.start + 8 + key_len, 4))  # value type
            if f.is_array:
                spots += [(f.data_start - 12, 4), (f.data_start - 8, 8)]  # element type, count
                if f.sub_type is not None and f.sub_type.name == "STRING":
                    pos = f.data_start
                    for _ in range(min(f.count, 3)):  # the first element lengths
                        spots.append((pos, 8))
                        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
            elif f.type.name == "STRING":
                spots.append((f.data_start, 8))
        pos = max(f.end for f in gf.fields.values())
        for _ in gf.tensors:
            spots.append((pos, 8))  # name length
            pos += 8 + struct.unpack_from("<Q", data, pos)[0]
            n_dims = struct.unpack_from("<I", data, pos)[0]
            spots.append((pos, 4))
            spots += [(pos + 4 + 8 * i, 8) for i in range(n_dims)]
            pos += 4 + 8 * n_dims
            spots += [(pos, 4), (pos + 4, 8)]  # type, offset
            pos += 12
        return gf.data_offset, spots


@pytest.fixture(scope="module")
def seed_gguf(tmp_path_factory) -> tuple[bytes, int, list[tuple[int, int]]]:
    path = tmp_path_factory.mktemp("fuzz-seed") / "llama-f16.gguf"
    convert(fixture_dir("llama"), path, outtype="f16")
    data = path.read_bytes()
    _layout.path = path
    header_end, spots = _layout(data)
    return data, header_end, spots


@st.composite
def mutation(draw, size: int, header_end: int, spots: list[tuple[int, int]]):
    kind = draw(st.sampled_from(["field", "field", "field", "flip", "insert", "delete", "truncate"]))
    if kind == "field":
        pos, width = draw(st.sampled_from(spots))
        value = draw(st.sampled_from(BOUNDARY + [size, size - 1, size + 1, header_end]))
        return ("set", pos, (value % 2 ** (8 * width)).to_bytes(width, "little"))
    pos = draw(st.integers(0, header_end))
    if kind == "flip":
        return ("xor", pos, draw(st.integers(1, 255)))
    if kind == "insert":
        return ("insert", pos, draw(st.binary(min_size=1, max_size=16)))
    if kind == "delete":
        return ("delete", pos, draw(st.integers(1, 64)))
    return ("truncate", pos, None)


def apply(data: bytes, mutations) -> bytes:
    buf = bytearray(data)
    for kind, pos, arg in mutations:
        pos = min(pos, len(buf))
        if kind == "set":
            buf[pos:pos + len(arg)] = arg
        elif kind == "xor" and pos < len(buf):
            buf[pos] ^= arg
        elif kind == "insert":
            buf[pos:pos] = arg
        elif kind == "delete":
            del buf[pos:pos + arg]
        elif kind == "truncate":
            del buf[pos:]
    return bytes(buf)


def exercise(path: Path) -> None:
    """What the CLI does for ``inspect``, ``inspect --json`` and ``set --dry-run``."""
    report = inspect_gguf(path)
    render_text(report)
    dumps(report)
    set_keys(path, ["general.name=str:fuzzed"], dry_run=True)


def test_seed_is_clean_and_small(seed_gguf, tmp_path):
    data, header_end, spots = seed_gguf
    path = tmp_path / "seed.gguf"
    path.write_bytes(data)
    exercise(path)
    assert len(spots) > 100 and header_end < len(data)


@pytest.mark.parametrize("chunk", range(4))
def test_mutated_headers(seed_gguf, tmp_path_factory, chunk):
    """Four parametrised runs (different mutation mixes) so that a failure names a smaller space."""
    data, header_end, spots = seed_gguf
    folder = tmp_path_factory.mktemp(f"fuzz-{chunk}")
    path = folder / "mutant.gguf"
    path.write_bytes(data)
    exercise(path)  # warm: imports and caches are not the mutant's allocations
    size_range = {0: (1, 1), 1: (1, 2), 2: (2, 3), 3: (3, 5)}[chunk]

    @settings(max_examples=max(1, EXAMPLES // 4), derandomize=True, deadline=2000, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(mutation(len(data), header_end, spots), min_size=size_range[0], max_size=size_range[1]))
    def run(mutations):
        mutant = apply(data, mutations)
        path.write_bytes(mutant)
        tracemalloc.start()
        try:
            exercise(path)
        except RopetoolError as e:
            message = str(e)
            assert message and "internal error" not in message
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert peak <= 2 * max(len(mutant), len(data)), f"peak {peak:,} bytes for a {len(mutant):,}-byte file"

    run()



# ------------------------------------------------------------------------------------------
# Semantic mutations (issue #23): well-formed headers whose tensor names, array lengths, key types and values
# are hostile.  Through the CLI: inspect, inspect --strict, set and check (its bound and lint path: a mutant
# with a lint error is refused before llama.cpp runs; one without is linted as check lints it); never exit 70,
# a traceback or an exception other than SystemExit.

SEMANTIC_EXAMPLES = int(os.environ.get("ROPETOOL_FUZZ_SEMANTIC_EXAMPLES", "300"))
NAMES = ["output.weight", "blk.0.attn_q.weight", "blk.99.attn_q.weight", "blk.x.attn_q.weight", "outputxweight",
         "output\x00weight", "", ".", "..", "blk.", "blk.0", "token_embd", "rope_freqs.weight", "a" * 63, "é.weight",
         "blk.0.attn_q.weight.weight", "\x1b[31m.weight"]
TYPE_NAMES = ["u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "bool", "str"]
VALUES = {"int": [0, 1, 2, 7, 255, 383, 384, 385, 65535, 2**31 - 1, 2**32 - 1], "float": [0.0, -1.0, 1.5, 1e30, math.nan, math.inf],
          "str": ["", "gpt2", "llama", "bogus", "none", "llama-bpe", "qwen2", "kimi-k2", "\x00", "é"]}


@st.composite
def semantic_mutation(draw, keys: list[str], tensors: list[str]):
    kind = draw(st.sampled_from(["rename", "rename", "key", "key", "key", "array", "drop"]))
    if kind == "rename":
        return ("rename", draw(st.sampled_from(tensors)), draw(st.one_of(st.sampled_from(NAMES), st.text(max_size=12))))
    if kind == "drop":
        return ("drop", draw(st.sampled_from(keys)), None)
    key = draw(st.sampled_from(keys + list(K.TOKENIZER_KEYS) + [K.FILE_TYPE, K.NAME]))
    if kind == "array":
        sub = draw(st.sampled_from(["i32", "u32", "f32", "str"]))
        n = draw(st.sampled_from([0, 1, 2, 383, 384, 385]))
        value = "str" if sub == "str" else "float" if sub == "f32" else "int"
        items = [draw(st.sampled_from(VALUES[value])) for _ in range(min(n, 3))] * (n // 3 + 1)
        return ("set", key, (sub, True, items[:n]))
    tname = draw(st.sampled_from(TYPE_NAMES))
    value = {"str": "str", "f32": "float", "f64": "float", "bool": "bool"}.get(tname, "int")
    v = draw(st.booleans()) if value == "bool" else draw(st.sampled_from(VALUES[value]))
    return ("set", key, (tname, False, v))


def _apply_semantic(src: Path, out: Path, mutations) -> bool:
    """Write ``src`` with ``mutations``; False when the mutant cannot be written (e.g. an int out of its type)."""
    from ropetool.io.gguf_file import TYPES_BY_NAME, NewValue, TensorOut, check_value, write_gguf

    with GGUFFile(src) as gf:
        records = {f.key: f for f in gf.fields.values()}
        names = {t.name: t.name for t in gf.tensors}
        try:
            for kind, target, arg in mutations:
                if kind == "rename":
                    names[target] = arg
                elif kind == "drop":
                    records.pop(target, None)
                else:
                    tname, is_array, value = arg
                    vtype = TYPES_BY_NAME[tname]
                    if is_array:
                        records[target] = NewValue(target, TYPES_BY_NAME["arr"], check_value(TYPES_BY_NAME["arr"], value, vtype, target), vtype)
                    else:
                        records[target] = NewValue(target, vtype, check_value(vtype, value, None, target))
            if len(set(names.values())) != len(names):
                return False
            tensors = []
            for t in gf.tensors:
                copied = TensorOut.copy_of(t)
                copied.name = names[t.name]
                tensors.append(copied)
            write_gguf(out, list(records.values()), tensors, source=gf)
        except (RopetoolError, UnicodeEncodeError):
            return False
    return True


def _clean(args: list[str]):
    from click.testing import CliRunner

    from ropetool.cli import cli

    result = CliRunner().invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output[-500:])
    assert "Traceback" not in result.output and "internal error" not in result.output, (args, result.output[-500:])
    return result


def test_semantic_mutations_through_inspect_set_and_check(seed_gguf, tmp_path_factory):
    from ropetool.model import lint_gguf

    data, _, _ = seed_gguf
    folder = tmp_path_factory.mktemp("fuzz-semantic")
    src = folder / "seed.gguf"
    src.write_bytes(data)
    with GGUFFile(src) as gf:
        keys, tensors = list(gf.fields), [t.name for t in gf.tensors]
    mutant, out = folder / "mutant.gguf", folder / "out.gguf"
    seen = {"written": 0, "refused by check": 0, "lint errors": 0}

    @settings(max_examples=SEMANTIC_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(semantic_mutation(keys, tensors), min_size=1, max_size=3))
    def run(mutations):
        if not _apply_semantic(src, mutant, mutations):
            return
        seen["written"] += 1
        _clean(["inspect", str(mutant)])
        _clean(["inspect", "--strict", "--json", str(mutant)])
        out.unlink(missing_ok=True)
        _clean(["set", str(mutant), "-o", str(out), "general.name=str:fuzzed"])
        errors = [f for f in lint_gguf(mutant) if f.severity == "error"]
        if errors:  # check refuses it in one line, before llama.cpp (no child process: fast)
            seen["lint errors"] += 1
            result = _clean(["check", str(mutant)])
            assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
            seen["refused by check"] += 1

    run()
    assert seen["written"] >= SEMANTIC_EXAMPLES // 2 and seen["refused by check"] >= SEMANTIC_EXAMPLES // 4, seen
