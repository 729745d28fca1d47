"""``ropetool extend`` (issue #26): a model to a file that runs at N tokens in llama.cpp, proven, with its memory.

The independent sources: llama.cpp itself (its probe graph for the proof; its own log of the KV cache it
allocates, n_ctx_train and its training-context warning, read in a child process by tests/llama_context.py; its
logits for the runtime flags against the written file), set-rope (the file must be the one set-rope writes),
config.json (the recipe re-targeted) and eval (the same recommendation from the same runs).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_dir
from llama_context import llama_context

from ropetool.convert import convert
from ropetool.edit import diff_gguf, set_rope
from ropetool.extend import candidates, extend
from ropetool.io.gguf_file import GGUFFile
from ropetool.model import ModelFile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fixtures"))
import real_model  # noqa: E402

MIB = 2**20
PRINTED = 0.005 * MIB  # llama.cpp prints MiB with two decimals


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ropetool", *map(str, args)], capture_output=True, text=True,
                          timeout=900, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _converted(name: str, tmp_path: Path, outtype: str = "f16") -> Path:
    out = tmp_path / f"{name}.gguf"
    convert(fixture_dir(name), out, outtype=outtype)
    return out


def _kv_matches(path: Path, n: int, cache_type: str, *, flash_attn: bool = True, swa_full: bool = False) -> dict:
    """ropetool's KV figure for ``path`` at ``n`` against llama.cpp's own log of the caches it allocates."""
    with ModelFile.open(path) as mf:
        kv = mf.kv_cache(n, cache_type, swa_full=swa_full, flash_attn=flash_attn)
    got = llama_context(path, n, cache_type, flash_attn=flash_attn, swa_full=swa_full)
    assert got["context"], got["log"][-2000:]
    caches = got["caches"]
    if kv.sliding_cells is None:
        assert len(caches) == 1
        (base,) = caches
        assert (base["cells"], base["layers"]) == (kv.cells, kv.layers)
        ours = [kv.bytes]
    else:  # llama_kv_cache_iswa: the global layers' cache, then the sliding ones'
        base, swa = caches
        assert (base["cells"], base["layers"]) == (kv.cells, kv.layers - kv.sliding_layers)
        assert (swa["cells"], swa["layers"]) == (kv.sliding_cells, kv.sliding_layers)
        ours = [kv.bytes - kv.sliding_bytes, kv.sliding_bytes]
    for mine, cache in zip(ours, caches):  # each to the digit llama.cpp prints
        assert abs(mine - cache["mib"] * MIB) <= PRINTED * (1 + 1e-9), (kv, caches)
    reported = sum(c["mib"] for c in caches) * MIB
    assert all(c["k_type"] == c["v_type"] == cache_type for c in caches)
    return {"ropetool": kv.bytes, "llama.cpp": reported, "caches": caches}


# ------------------------------------------------------------------------------------------
# The real model, as shipped


@pytest.fixture(scope="module")
def smollm2():
    return real_model.find_smollm2_gguf()


@pytest.fixture(scope="module")
def extended_32k(smollm2, tmp_path_factory):
    work = tmp_path_factory.mktemp("extend-real")
    proc = _run("extend", smollm2, "--context", 32768, "-o", work / "smol-32k.gguf", "--json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return work / "smol-32k.gguf", json.loads(proc.stdout), work


def test_the_real_model_to_32768_is_written_and_proven(extended_32k, smollm2):
    path, result, _ = extended_32k
    assert result["written"] and Path(result["output"]) == path and path.exists()
    assert result["probe"]["verdict"] == "pass" and result["probe"]["max_position"] == 32768
    with GGUFFile(path) as gf:
        assert gf.get("llama.context_length") == 32768
    got = llama_context(path, 32768, "f16")  # llama.cpp's own reading of the file at 32768
    assert got["context"] and got["n_ctx_train"] == 32768 and not got["overflow_warning"]
    before = llama_context(smollm2, 32768, "f16")  # the file as shipped: llama.cpp warns
    assert before["n_ctx_train"] == 8192 and before["overflow_warning"]


def test_the_real_model_s_file_is_set_rope_s(extended_32k, smollm2, tmp_path):
    """The same keys, tensors and record as set-rope writes for the setting extend chose."""
    path, result, _ = extended_32k
    setting = result["setting"]
    other = set_rope(smollm2, setting["method"], tmp_path / "set-rope.gguf", **setting["options"])
    assert other.written and other.rope["context_length"] == 32768
    assert diff_gguf(path, tmp_path / "set-rope.gguf")["identical"]


@pytest.mark.parametrize("cache_type", ["f16", "q8_0"])
def test_the_real_model_s_kv_figure_is_llama_cpp_s(extended_32k, cache_type):
    path, result, _ = extended_32k
    figures = _kv_matches(path, 32768, cache_type)
    printed = result["memory"]["kv_cache"][cache_type]["bytes"]
    assert printed == figures["ropetool"]
    assert abs(printed / figures["llama.cpp"] - 1) < 0.01  # the acceptance's bound; in fact equal to 0.01 MiB
    weights = result["memory"]["weights_bytes"]
    assert 0 < path.stat().st_size - weights < 16 * MIB  # the file is its tensors and a header (and padding)
    assert result["memory"]["kv_cache"][cache_type]["fits_in_bytes"] == printed + weights


def test_the_real_model_s_lines_run_it(extended_32k, smollm2):
    path, result, _ = extended_32k
    run = result["run"]
    assert run["llama-server"] == f"llama-server -m {shlex.quote(str(path))} -c 32768"
    assert run["modelfile"].splitlines() == [f"FROM {path}", "PARAMETER num_ctx 32768"]
    assert "-ctk q8_0 -ctv q8_0 -fa on" in run["smaller cache"]
    assert run["flags"].startswith(f"llama-server -m {shlex.quote(str(smollm2))} -c 32768 ")


# ------------------------------------------------------------------------------------------
# The runtime flags compute what the file holds


ROPE_SCALING = {"none": 0, "linear": 1, "yarn": 2}  # include/llama.h: LLAMA_ROPE_SCALING_TYPE_*


def _flags_as_params(line: str) -> tuple[int, dict, dict]:
    """llama-server's flags as common_context_params_to_llama hands them to llama.cpp (common/arg.cpp parses
    --rope-scale N as rope_freq_scale = 1/N; --override-kv KEY=TYPE:VALUE,... as load-time overrides)."""
    words = shlex.split(line)
    n_ctx, cparams, overrides = None, {}, {}
    i = 3  # llama-server -m PATH
    while i < len(words):
        flag, value = words[i], words[i + 1]
        if flag == "-c":
            n_ctx = int(value)
        elif flag == "--rope-scaling":
            cparams["rope_scaling_type"] = ROPE_SCALING[value]
        elif flag == "--rope-scale":
            cparams["rope_freq_scale"] = 1.0 / float(value)
        elif flag == "--rope-freq-base":
            cparams["rope_freq_base"] = float(value)
        elif flag == "--yarn-orig-ctx":
            cparams["yarn_orig_ctx"] = int(value)
        elif flag == "--override-kv":
            for item in value.split(","):
                key, typed = item.split("=", 1)
                kind, v = typed.split(":", 1)
                overrides[key] = {"int": int, "float": float, "str": str, "bool": lambda x: x == "true"}[kind](v)
        else:
            raise AssertionError(f"unexpected flag {flag}")
        i += 2
    return n_ctx, cparams, overrides


@pytest.mark.parametrize("name,n", [("llama", 1024), ("gemma2", 1024), ("qwen3", 2048)])
def test_the_runtime_flags_give_the_file_s_logits(name, n, tmp_path):
    """llama.cpp with the printed flags on the source computes what it computes on the written file."""
    source = _converted(name, tmp_path, "f32")
    result = extend(source, n, tmp_path / "out.gguf")
    assert result.written and result.probe.passed
    line = result.run["flags"]
    n_ctx, cparams, overrides = _flags_as_params(line)
    assert n_ctx == n and overrides.get(f"{result.architecture}.context_length") == n
    if name == "gemma2":  # sliding-window layers: every key as an override, no named rope flag
        assert not cparams and result.run["flags_cannot"]
    tokens = [int(t) for t in np.random.default_rng(0).integers(3, 100, 48)]
    a = llama_context(source, n, "f32", flash_attn=False, cparams=cparams, overrides=overrides, tokens=tokens)
    b = llama_context(tmp_path / "out.gguf", n, "f32", flash_attn=False, tokens=tokens)
    plain = llama_context(source, n, "f32", flash_attn=False, tokens=tokens)
    assert a["n_ctx_train"] == b["n_ctx_train"] == n
    la, lb, lp = (np.asarray(x["logits"]) for x in (a, b, plain))
    assert np.array_equal(la, lb)
    assert not np.array_equal(lb, lp)  # the setting changes the logits at these positions: the test can fail


# ------------------------------------------------------------------------------------------
# KV figures on the fixtures: sliding-window layers and grouped-query heads


@pytest.mark.parametrize("name", ["gemma2", "gemma3"])
def test_a_sliding_window_fixture_s_kv_figure_is_llama_cpp_s(name, tmp_path):
    source = _converted(name, tmp_path)
    result = extend(source, 16384, tmp_path / "out.gguf")
    assert result.written and result.probe.passed
    path = tmp_path / "out.gguf"
    with ModelFile.open(path) as mf:
        assert mf.state.sliding is not None and mf.state.sliding.window == 16  # the fixture's config.json
    for n in (300, 16384):  # below and above window + n_ubatch
        for flash_attn, swa_full in ((True, False), (False, False), (True, True)):
            figures = _kv_matches(path, n, "f16", flash_attn=flash_attn, swa_full=swa_full)
            if n == 16384 and not swa_full:
                assert figures["caches"][1]["cells"] == 768  # the window (16) + n_ubatch (512), padded to 256
    # a quantized cache: llama.cpp makes none for the fixture's 16-wide heads (q8_0 blocks are 32), nor ropetool
    assert not llama_context(path, 1024, "q8_0")["context"]
    assert result.memory.unavailable.keys() == {"q8_0", "q4_0"}


def test_a_grouped_query_fixture_s_kv_figure_is_llama_cpp_s(tmp_path):
    source = _converted("llama", tmp_path)
    with ModelFile.open(source) as mf:
        assert (mf.state.n_head, mf.header.get("llama.attention.head_count_kv")) == (4, 2)
    result = extend(source, 16384, tmp_path / "out.gguf")
    assert result.written and result.probe.passed
    figures = _kv_matches(tmp_path / "out.gguf", 16384, "f16")
    assert figures["ropetool"] == result.memory.caches["f16"].bytes
    _kv_matches(tmp_path / "out.gguf", 16384, "f16", flash_attn=False)


@pytest.mark.parametrize("name", ["deepseek-v3", "qwen35", "qwen3next", "lfm2", "gpt-oss", "smollm3"])
def test_the_2025_26_fixtures_kv_figures_are_llama_cpp_s(name, tmp_path):
    """Multi-head latent attention (deepseek2: K alone, the latent and the rope part), hybrids (only the attention
    layers hold a KV cache: qwen35's and qwen3next's one in four, lfm2's layers with KV heads), gpt-oss's sliding
    layers, smollm3's no-rope layers (which still cache): ropetool's figure against llama.cpp's log."""
    source = tmp_path / f"{name}.gguf"  # gpt-oss's truncate: false has no key (docs/convert.md)
    convert(fixture_dir(name), source, outtype="f32", approximate=name == "gpt-oss")
    with ModelFile.open(source) as mf:
        n_layer, recurrent = mf.state.n_layer, mf.state.recurrent_layers
    for n in (1024, 4096):
        for flash_attn in (True, False):
            figures = _kv_matches(source, n, "f16", flash_attn=flash_attn)
            layers = sum(c["layers"] for c in figures["caches"])
            assert layers == n_layer - len(recurrent)
    if recurrent:  # the fixture is a hybrid: some layers hold no cache
        assert 0 < len(recurrent) < n_layer


def test_inspect_shows_the_kv_figure_at_the_file_s_context_and_at_another(smollm2):
    for extra, n in (([], 8192), (["--context", "16384"], 16384)):
        proc = _run("inspect", smollm2, "--json", *extra)
        assert proc.returncode == 0, proc.stderr
        memory = json.loads(proc.stdout)["memory"]
        assert memory["context"] == n
        got = llama_context(smollm2, n, "f16")
        assert abs(memory["kv_cache"]["f16"]["bytes"] - got["caches"][0]["mib"] * MIB) <= PRINTED
    text = _run("inspect", smollm2, "--context", "16384").stdout
    assert "memory:     weights 92.1 MiB; KV cache at 16384 tokens: f16 360.0 MiB" in text


# ------------------------------------------------------------------------------------------
# A Hugging Face folder to Q4_K_M in one command


@pytest.fixture(scope="module")
def smollm2_folder(smollm2, tmp_path_factory):
    return real_model.rebuild_hf_folder(smollm2, tmp_path_factory.mktemp("hf") / "SmolLM2-135M-Instruct", "bf16")


def test_a_folder_to_q4_k_m_at_n_in_one_command(smollm2_folder, tmp_path):
    import llama_cpp

    proc = _run("extend", smollm2_folder, "--context", 32768, "--outtype", "Q4_K_M", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    path = tmp_path / "SmolLM2-135M-Instruct-Q4_K_M-32k.gguf"
    assert (tmp_path / result["output"]).resolve() == path.resolve() and result["written"]
    assert result["probe"]["verdict"] == "pass" and result["probe"]["max_position"] == 32768
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the intermediate is gone
    with GGUFFile(path) as gf:
        assert gf.get("llama.context_length") == 32768
        assert gf.get("general.file_type") == llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
        assert {t.type.name for t in gf.tensors} >= {"Q4_K", "Q6_K"}
        assert gf.get("ropetool.rope.method") == result["setting"]["method"]
    got = llama_context(path, 32768, "f16")
    assert got["n_ctx_train"] == 32768 and not got["overflow_warning"]
    for cache_type in ("f16", "q8_0"):
        figures = _kv_matches(path, 32768, cache_type)
        assert result["memory"]["kv_cache"][cache_type]["bytes"] == figures["ropetool"]


# ------------------------------------------------------------------------------------------
# The rule


def test_a_config_s_own_yarn_is_re_targeted(tmp_path):
    config = json.loads((fixture_dir("qwen2") / "config.json").read_text())
    scaling = config["rope_scaling"]
    original = scaling["original_max_position_embeddings"]
    result = extend(fixture_dir("qwen2"), 2048, tmp_path / "out.gguf")
    assert result.setting.rule == "recipe" and result.setting.method == scaling["type"] == "yarn"
    assert result.probe.passed
    with ModelFile.open(tmp_path / "out.gguf") as mf:
        assert mf.record.method == "yarn" and mf.record.params["factor"] == 2048 / original
        assert mf.record.params["original_context"] == original and mf.extended_context == 2048


@pytest.mark.parametrize("name", ["qwen3", "qwen35", "qwen3next"])
def test_a_qwen_without_a_recipe_gets_its_family_s_yarn(name, tmp_path):
    config = json.loads((fixture_dir(name) / "config.json").read_text())
    text = config.get("text_config", config)  # Qwen 3.5 nests the text model
    assert "rope_scaling" not in text and text["rope_parameters"]["rope_type"] == "default"
    result = extend(fixture_dir(name), 512, tmp_path / "out.gguf")
    assert (result.setting.rule, result.setting.method) == ("family", "yarn") and "Qwen" in result.setting.why
    assert result.setting.options == {"factor": 512 / text["max_position_embeddings"]} and result.probe.passed


def test_a_gguf_already_extended_is_re_targeted_and_nothing_to_do_below_it(tmp_path):
    source = tmp_path / "yarn4.gguf"
    convert(fixture_dir("llama"), source, outtype="f16", method="yarn", factor=4.0)  # 64 -> 256
    proc = _run("extend", source, "--context", 200, cwd=tmp_path)
    assert proc.returncode == 0 and "nothing to do" in proc.stdout and "runs at 256" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yarn4.gguf"]
    result = extend(source, 1024, tmp_path / "out.gguf")
    assert result.setting.rule == "recipe" and result.setting.options["factor"] == 16 and result.probe.passed


def test_measure_takes_eval_s_recommendation_from_the_same_runs(tmp_path):
    """--measure on a fixture (trained on 64 tokens, measured at 64 and 128) chooses what ``ropetool eval`` of the
    same candidates at the same lengths recommends."""
    source = _converted("llama", tmp_path, "f32")
    proc = _run("extend", source, "--context", 128, "--measure", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    tries = [a for t in candidates(64, 128) for a in ("--try", t)]
    ev = _run("eval", source, "--lengths", "64,128", *tries, cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    chosen = re.search(r"^recommended: (\S+):", ev.stdout, re.M).group(1)
    assert result["measure"]["recommended"] == chosen and result["setting"]["rule"] == "measured"
    assert chosen.startswith(result["setting"]["method"] + ":")
    for record in result["measure"]["records"]:  # the same figures as eval's table
        cell = f"{record['perplexity']:.4g}"
        assert re.search(rf"^{re.escape(record['setting'])} .*{re.escape(cell)}", ev.stdout, re.M), (record, ev.stdout)


# ------------------------------------------------------------------------------------------
# Refusals: one line, nothing written


@pytest.mark.parametrize("value", ["0", "-5", "abc", "1.5", ""])
def test_a_context_that_is_not_a_positive_integer_is_refused(value, tmp_path):
    source = _converted("llama", tmp_path)
    proc = _run("extend", source, "--context", value, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama.gguf"]


def _refused(args, tmp_path, *words):
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = _run("extend", *args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == before
    for w in words:
        assert w in proc.stderr, proc.stderr
    return proc.stderr


def test_an_alibi_family_llama_cpp_hard_codes_is_refused(tmp_path):
    _refused([fixture_dir("bloom"), "--context", 4096], tmp_path, "hard-codes ALiBi (max_bias 8)", "nothing written")
    source = _converted("bloom", tmp_path)
    _refused([source, "--context", 4096], tmp_path, "hard-codes ALiBi", "nothing written")


def test_no_exact_method_is_refused_without_approximate(tmp_path):
    source = _converted("mpt", tmp_path)
    _refused([source, "--context", 4096], tmp_path, "cannot compute ntk-alibi exactly on mpt", "--approximate",
             "mpt.context_length=u32:4096", "nothing written")
    _refused([fixture_dir("mpt"), "--context", 4096], tmp_path, "cannot compute ntk-alibi exactly on mpt")
    result = extend(source, 4096, tmp_path / "out.gguf", approximate=True)
    assert result.written and result.probe.passed and result.rope["exact"] is False


def test_a_recipe_llama_cpp_cannot_compute_is_refused_naming_what_it_can(tmp_path):
    """qwen2's loader ignores the YaRN beta keys and loads no rope_freqs: a config.json's own YaRN with beta_fast 2
    (over 8192 tokens, where the ramp then differs from native YaRN's) has no exact form there; the refusal names the
    methods llama.cpp computes exactly on qwen2."""
    import shutil

    folder = tmp_path / "qwen2-betas"
    shutil.copytree(fixture_dir("qwen2"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["rope_scaling"].update(beta_fast=2.0, original_max_position_embeddings=8192, factor=2.0)
    config["max_position_embeddings"] = 16384
    (folder / "config.json").write_text(json.dumps(config))
    err = _refused([folder, "--context", 65536], tmp_path, "cannot compute yarn exactly on qwen2", "--approximate",
                   "exact on qwen2 at factor 8 with their default parameters: yarn, ntk, dynamic-ntk, linear")
    assert "nothing written" in err and "beta_fast 2 cannot be written" in err and "whatever the file says" in err
    result = extend(folder, 65536, tmp_path / "approx.gguf", approximate=True)
    assert result.written and result.probe.passed and result.rope["exact"] is False


def test_flags_cannot_set_a_rope_tensor(tmp_path):
    source = tmp_path / "llama3.gguf"
    convert(fixture_dir("llama3"), source, outtype="f16")
    result = extend(source, 1024, tmp_path / "out.gguf")
    assert result.written and result.setting.method == "llama3" and result.probe.passed
    assert not result.run["flags"] and "rope_freqs" in result.run["flags_cannot"][0]


def test_other_refusals(tmp_path):
    source = _converted("llama", tmp_path)
    _refused([source, "--context", 256, "--outtype", "q8_0"], tmp_path, "--outtype applies to a Hugging Face folder")
    _refused([fixture_dir("llama"), "--context", 256, "--measure"], tmp_path, "--measure evaluates a GGUF")
    _refused([fixture_dir("phi3"), "--context", 4096], tmp_path, "LongRoPE", "nothing written")
    (tmp_path / "taken.gguf").write_bytes(b"x")
    _refused([source, "--context", 256, "-o", tmp_path / "taken.gguf"], tmp_path, "exists; pass --force")
    assert (tmp_path / "taken.gguf").read_bytes() == b"x"


# ------------------------------------------------------------------------------------------
# No PASS, no success: the file is not put at the output, it is kept under its temporary name


def test_an_unproven_file_is_kept_under_its_temporary_name(tmp_path, monkeypatch):
    """A lowering that records another base than its keys hold (a stand-in for a ropetool bug): llama.cpp computes
    the keys' setting, the probe fails on the written file, nothing is put at the output, the result says so."""
    import ropetool.llamacpp.lowering as lowering

    source = _converted("llama", tmp_path)
    real = lowering.record

    def wrong_record(params, *args):
        return real(params.replace(base=params.base * 2), *args)

    monkeypatch.setattr(lowering, "record", wrong_record)
    target = tmp_path / "out.gguf"
    result = extend(source, 1024, target)
    assert not result.written and not result.passed and result.probe.verdict == "fail"
    assert not target.exists() and result.kept.exists()
    assert re.fullmatch(r"\.out\.gguf\.[a-z0-9_]{8}\.tmp", result.kept.name)
    assert "FAIL" in result.summary() and str(result.kept) in result.summary()
    theta = json.loads((fixture_dir("llama") / "config.json").read_text())["rope_parameters"]["rope_theta"]
    with ModelFile.open(result.kept) as mf:  # the file as written, for inspection
        assert mf.record.params["base"] == 2 * theta
    monkeypatch.setattr(lowering, "record", real)
    again = extend(source, 1024, target)  # the next write to the same output removes it
    assert again.written and again.probe.passed and not result.kept.exists()
