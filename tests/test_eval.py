"""ropetool eval: perplexity by length against transformers (the independent oracle), the one-pass shortcut
against separate passes, settings applied by load-time overrides against the same setting written by set-rope
(both llama.cpp), the passkey prompt, the command line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import fixture_config, fixture_dir, hf_logits

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.edit import set_rope
from ropetool.eval import (
    PASSKEY_KEY,
    Evaluation,
    builtin_text,
    evaluate,
    overrides,
    parse_setting,
    passkey_found,
    passkey_keys,
    passkey_prompt,
    rope_edit,
)
from ropetool.llamacpp.runner import LlamaCpp
from ropetool.model import ModelFile

NAME = "llama"
CONFIG = fixture_config(NAME)
L0 = CONFIG["max_position_embeddings"]  # 64: every length below but the first is past the trained context
BASE = CONFIG["rope_parameters"]["rope_theta"]
D = CONFIG["head_dim"]
LENGTHS = [64, 128, 192]
# f32 weights and an f32 KV cache: llama.cpp and transformers agree to about 1e-7 here (the issue asks 1e-3;
# a random-weight model's settings differ by a few 1e-3 in perplexity, so the test holds them closer)
TOLERANCE = 1e-5
# (the --try setting, transformers' rope_parameters for the same method)
SETTINGS = {
    "none": {"rope_type": "default", "rope_theta": BASE},
    "linear:factor=4": {"rope_type": "linear", "factor": 4.0, "rope_theta": BASE},
    "ntk:alpha=4": {"rope_type": "default", "rope_theta": BASE * 4 ** (D / (D - 2))},  # the NTK-aware base (bloc97)
    "yarn:factor=4,original_context=64": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": L0,
                                          "rope_theta": BASE},
    "dynamic-ntk:factor=2": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": BASE},
}


@pytest.fixture(scope="module")
def f32(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "llama.f32.gguf"
    convert(fixture_dir(NAME), path, outtype="f32")
    return path


@pytest.fixture(scope="module")
def report(f32):
    return evaluate(f32, LENGTHS, list(SETTINGS))


@pytest.fixture(scope="module")
def window(f32):
    """The text's first tokens as llama.cpp tokenizes them (BOS first when the vocabulary adds one)."""
    with LlamaCpp(f32, n_ctx=256) as llm:
        ids = llm.tokenize(builtin_text()[:20000], add_bos=False)
        bos = llm.bos
    return ([bos] if bos is not None else []) + ids


def hf_perplexity(ids, rope, length):
    """transformers' float32 perplexity of the window of ``length`` tokens, scored as llama.cpp's perplexity
    tool does: tokens length/2+1 .. length-1, each from the logits one position before."""
    import torch

    logits = torch.tensor(hf_logits(NAME, ids[:length], rope))
    logp = torch.log_softmax(logits, dim=-1)
    first = length // 2
    targets = torch.tensor(ids[first + 1:length])
    nll = -logp[first:length - 1].gather(1, targets[:, None]).mean()
    return float(torch.exp(nll))


def test_perplexity_equals_transformers_past_the_trained_context(report, window):
    worst = 0.0
    for setting, rope in SETTINGS.items():
        for L in LENGTHS:
            ours = report.record(setting, L).perplexity
            theirs = hf_perplexity(window, rope, L)  # a full window of L: transformers' dynamic NTK uses L
            rel = abs(ours - theirs) / theirs
            worst = max(worst, rel)
            assert rel < TOLERANCE, (setting, L, ours, theirs)
    assert worst > 0  # two computations, not one
    # the tolerance tells the settings apart: past the trained context each moves the perplexity by far more
    plain = report.record("none", LENGTHS[-1]).perplexity
    for setting in SETTINGS:
        if setting != "none":
            assert abs(report.record(setting, LENGTHS[-1]).perplexity - plain) / plain > 100 * TOLERANCE, setting
    assert report.record("file", 192).perplexity == report.record("none", 192).perplexity  # a plain file


def test_the_one_pass_shortcut_equals_separate_passes(f32, report):
    for setting in ("none", "yarn:factor=4,original_context=64"):
        for L in LENGTHS[:-1]:
            alone = evaluate(f32, [L], [setting]).record(setting, L)
            assert alone.perplexity == pytest.approx(report.record(setting, L).perplexity, rel=1e-6)
    # a dynamic method depends on the length: a pass per length (baked at that length), so the record at 128
    # differs from the 192-token pass's first 128 positions
    dyn = report.record("dynamic-ntk:factor=2", 128).perplexity
    baked = evaluate(f32, [128], ["dynamic-ntk:factor=2,target_context=128"]).record(
        "dynamic-ntk:factor=2,target_context=128", 128).perplexity
    assert dyn == pytest.approx(baked, rel=1e-9)


def test_overrides_give_the_logits_of_the_file_set_rope_writes(f32, tmp_path, window):
    ids = window[:160]
    with ModelFile.open(f32) as model:
        for setting in ("linear:factor=4", "yarn:factor=4,original_context=64", "ntk:alpha=4"):
            tried = parse_setting(setting)
            values, needs_file = overrides(model, rope_edit(model, tried, None))
            assert needs_file is None and values, setting
            out = tmp_path / "written.gguf"
            set_rope(f32, tried.method, out, force=True, **tried.options)
            with LlamaCpp(f32, n_ctx=256, overrides=values) as llm:
                a = np.concatenate([r for _, r in llm.logits(ids)])
            with LlamaCpp(out, n_ctx=256) as llm:
                b = np.concatenate([r for _, r in llm.logits(ids)])
            with LlamaCpp(f32, n_ctx=256) as llm:
                plain = np.concatenate([r for _, r in llm.logits(ids)])
            assert np.array_equal(a, b), setting
            assert not np.array_equal(a, plain), setting


def test_a_setting_that_changes_rope_tensors_runs_from_a_temporary_file(f32, window):
    # llama3 on llama writes a rope_freqs tensor: no override can add a tensor
    r = evaluate(f32, [128], ["llama3:factor=8"])
    rec = r.record("llama3:factor=8", 128)
    assert rec.applied == "temporary file"
    assert any("temporary file" in n and "rope_freqs" in n for n in r.notes)
    rope = {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": L0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "rope_theta": BASE}
    assert rec.perplexity == pytest.approx(hf_perplexity(window, rope, 128), rel=1e-3)


def test_passkey_prompt_has_the_key_at_the_depth_and_the_length(f32):
    with LlamaCpp(f32, n_ctx=256) as llm:
        tok = lambda s: llm.tokenize(s, add_bos=False)  # noqa: E731
        for length in (300, 1000):
            for depth in (0.1, 0.5, 0.9):
                key = passkey_keys(1, seed=3)[0]
                p = passkey_prompt(tok, length, depth, key, bos=7)
                assert len(p.ids) == length
                sentence = tok(PASSKEY_KEY.format(key=key))
                at = [i for i in range(len(p.ids)) if p.ids[i:i + len(sentence)] == sentence]
                assert at == [p.key_start]
                filler_before = at[0] - p.filler_start
                assert abs(filler_before / p.filler_tokens - depth) <= 1 / p.filler_tokens
                assert p.ids[0] == 7
                text = llm.detokenize(p.ids[1:])
                assert text.startswith("There is an important info") and text.endswith("What is the pass key? The pass key is")
    keys = passkey_keys(5, seed=1)
    assert keys == passkey_keys(5, seed=1) and all(re.fullmatch(r"[1-9]\d{4}", k) for k in keys) and len(set(keys)) == 5
    assert passkey_found(" 12345. Remember", "12345") and passkey_found(" 1 2 3 4 5", "12345")
    assert not passkey_found(" 12344", "12345") and not passkey_found(" the key", "12345")


def test_cli_table_json_and_recommendation(f32):
    runner = CliRunner()
    res = runner.invoke(cli, ["eval", str(f32), "--lengths", "64,128", "--try", "linear:factor=4", "--try", "none"])
    assert res.exit_code == 0, res.output
    assert "setting" in res.output and "linear:factor=4" in res.output
    assert "recommended:" in res.output and "within 5%" in res.output
    res = runner.invoke(cli, ["eval", str(f32), "--lengths", "64,128", "--try", "ntk:alpha=2", "--passkey", "1",
                              "--json"])
    assert res.exit_code == 0, res.output
    records = json.loads(res.output)
    assert [(r["setting"], r["length"]) for r in records] == [("file", 64), ("file", 128), ("ntk:alpha=2", 64),
                                                              ("ntk:alpha=2", 128)]
    assert all(r["perplexity"] > 1 and r["engine"] == "llama.cpp" for r in records)
    assert sum(r["recommended"] for r in records) == 2


def test_cli_reference_engine_is_marked(f32, report):
    res = CliRunner().invoke(cli, ["eval", str(f32), "--lengths", "128", "--try", "yarn:factor=4", "--engine",
                                   "reference", "--json"])
    assert res.exit_code == 0, res.output
    records = json.loads(res.output)
    assert {r["engine"] for r in records} == {"reference"}
    # the numpy reference and llama.cpp agree on the perplexity (independent implementations)
    ref = next(r for r in records if r["setting"] == "file")["perplexity"]
    assert ref == pytest.approx(report.record("file", 128).perplexity, rel=1e-3)


@pytest.mark.parametrize("args,message", [
    (["--try", "spiral"], "unknown rope method"),
    (["--try", "yarn"], "needs --factor"),
    (["--try", "linear:speed=2"], "is not NAME=VALUE"),
    (["--try", "linear:factor=fast"], "is not a number"),
    (["--lengths", "0"], "too short"),
    (["--lengths", "64,-3"], "too short"),
    (["--lengths", "abc"], "lengths"),
    (["--lengths", "5000000"], "the text has"),
    (["--try", "ntk-alibi:alpha=2"], "RoPE architecture"),
])
def test_bad_inputs_are_one_line_errors(f32, args, message):
    full = ["eval", str(f32)] + (args if "--lengths" in args else ["--lengths", "64"] + args)
    res = CliRunner().invoke(cli, full)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], res.output


def test_text_too_short_and_missing_file(f32, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("To be or not to be.")
    res = CliRunner().invoke(cli, ["eval", str(f32), "--lengths", "64", "--text", str(short)])
    assert res.exit_code == 2 and "the text has" in res.output
    with pytest.raises(Exception, match="no such file"):
        Evaluation(tmp_path / "missing.gguf", [64])


def test_plots_are_pngs(f32, report, tmp_path):
    from ropetool.plot import plot_eval, plot_wavelengths

    out = tmp_path / "eval.png"
    plot_eval(report, out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1500, 600)
    res = CliRunner().invoke(cli, ["inspect", str(f32), "--plot", str(tmp_path / "w.png")])
    assert res.exit_code == 0, res.output
    data = (tmp_path / "w.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") == 1000
    _ = plot_wavelengths


def test_a_setting_llama_cpp_cannot_compute_is_refused_or_run_by_the_reference(tmp_path):
    bloom = tmp_path / "bloom.gguf"
    convert(fixture_dir("bloom"), bloom, outtype="f32")
    res = CliRunner().invoke(cli, ["eval", str(bloom), "--lengths", "128", "--try", "ntk-alibi:alpha=2"])
    assert res.exit_code == 2 and "--engine reference" in res.output, res.output
    res = CliRunner().invoke(cli, ["eval", str(bloom), "--lengths", "128", "--try", "ntk-alibi:alpha=2", "--engine",
                                   "reference"])
    assert res.exit_code == 0, res.output
    assert "ntk-alibi:alpha=2 [reference]" in res.output and "engine reference" in res.output


def test_without_matplotlib_the_plot_option_names_the_extra(f32, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed: importing it raises ImportError
    res = CliRunner().invoke(cli, ["eval", str(f32), "--lengths", "64", "--plot", str(tmp_path / "x.png")])
    assert res.exit_code == 2 and res.output.strip() == "Error: plotting needs matplotlib: pip install 'ropetool[plot]'"
    assert not (tmp_path / "x.png").exists()


INTERRUPT_ON_SECOND_PASS = """
import signal, sys
# as on a terminal: a shell that starts this test in the background may have set SIGINT to be ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
import ropetool.eval as E
calls = []
original = E.llama_logprobs
def interrupted(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # Ctrl-C while the second setting runs
        signal.raise_signal(signal.SIGINT)  # delivered to this thread, handled before the next line
    return original(*args, **kwargs)
E.llama_logprobs = interrupted
from ropetool.cli import main
sys.argv[0] = "ropetool"
main()
"""


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_prints_the_results_so_far(f32, as_json):
    import subprocess
    import sys

    args = ["eval", str(f32), "--lengths", "64,128", "--try", "linear:factor=4", "--try", "ntk:alpha=2"]
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_ON_SECOND_PASS, *args, *(["--json"] if as_json else [])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    if as_json:
        records = json.loads(proc.stdout)
        assert [(r["setting"], r["length"]) for r in records] == [("file", 64), ("file", 128)]
        assert all(r["partial"] for r in records)
    else:
        assert "PARTIAL" in proc.stdout and "ntk:alpha=2" in proc.stdout and "Traceback" not in proc.stderr
        row = next(line for line in proc.stdout.splitlines() if line.startswith("file "))
        assert len(row.split()) == 3  # the file's own row has both lengths; the others none
