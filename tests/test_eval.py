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
    return evaluate(f32, LENGTHS, list(SETTINGS), cache_type="f32")


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
            alone = evaluate(f32, [L], [setting], cache_type="f32").record(setting, L)
            assert alone.perplexity == pytest.approx(report.record(setting, L).perplexity, rel=1e-6)
    # a dynamic method depends on the length: a pass per length (baked at that length), so the record at 128
    # differs from the 192-token pass's first 128 positions
    dyn = report.record("dynamic-ntk:factor=2", 128).perplexity
    baked = evaluate(f32, [128], ["dynamic-ntk:factor=2,target_context=128"], cache_type="f32").record(
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
    r = evaluate(f32, [128], ["llama3:factor=8"], cache_type="f32")
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
    records = [r for r in json.loads(res.output) if r["kind"] == "window"]
    assert [(r["setting"], r["length"]) for r in records] == [("file", 64), ("file", 128), ("ntk:alpha=2", 64),
                                                              ("ntk:alpha=2", 128)]
    assert all(r["perplexity"] > 1 and r["engine"] == "llama.cpp" and r["cache_type"] == "f16" for r in records)
    assert sum(r["recommended"] for r in records) == 2


def test_cli_reference_engine_is_marked(f32, report):
    res = CliRunner().invoke(cli, ["eval", str(f32), "--lengths", "128", "--try", "yarn:factor=4", "--engine",
                                   "reference", "--json"])
    assert res.exit_code == 0, res.output
    records = [r for r in json.loads(res.output) if r["kind"] == "window"]
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
        assert [(r["setting"], r.get("length")) for r in records] == [("file", 64), ("file", 128)] + [("file", None)] * 8
        assert all(r["partial"] for r in records)
    else:
        assert "PARTIAL" in proc.stdout and "ntk:alpha=2" in proc.stdout and "Traceback" not in proc.stderr
        rows = [line for line in proc.stdout.splitlines() if line.startswith("file ")]
        assert len(rows[-1].split()) == 4  # the file's own window row has both lengths and its interval; the others none


# ------------------------------------------------------------------------------------------
# Perplexity by position, intervals, LongEval lines, the KV cache type (issue #27)


def hf_token_logprobs(ids, rope):
    """transformers' float32 log p(token p | tokens 0..p-1) for p = 1..len(ids)-1 (index 0: NaN)."""
    import torch

    logp = torch.log_softmax(torch.tensor(hf_logits(NAME, ids, rope)), dim=-1)
    out = np.full(len(ids), np.nan)
    out[1:] = logp[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0].double().numpy()
    return out


def test_every_position_equals_transformers_token_loglikelihoods(report, window):
    L = LENGTHS[-1]
    for setting, rope in SETTINGS.items():
        theirs = hf_token_logprobs(window[:L], rope)  # dynamic NTK: transformers' own length is L, as the pass
        ours = report.profiles[setting].by_position
        assert len(ours) == L and np.isnan(ours[0]) and np.isnan(theirs[0])
        rel = np.abs(ours[1:] - theirs[1:]) / np.abs(theirs[1:])
        assert rel.max() < 1e-3, (setting, rel.max())
        # the bins: a bin per 1/8 of the longest length (default), positions [k L/8, (k+1) L/8), position 0 not scored
        bins = report.profiles[setting].bins
        assert [(b.start, b.end) for b in bins] == [(k * L // 8, (k + 1) * L // 8) for k in range(8)]
        for b in bins:
            lp = theirs[max(b.start, 1):b.end]
            assert b.scored == len(lp)
            assert b.perplexity == pytest.approx(float(np.exp(-lp.mean())), rel=1e-3), (setting, b)
            assert b.interval[0] < b.perplexity < b.interval[1]
    # the window score (llama.cpp's perplexity tool) is the mean over positions L/2+1..L-1 of the same numbers
    w = report.record("linear:factor=4", L)
    lp = hf_token_logprobs(window[:L], SETTINGS["linear:factor=4"])[L // 2 + 1:L]
    assert w.perplexity == pytest.approx(float(np.exp(-lp.mean())), rel=1e-3) and w.scored == len(lp)


def test_bins_option_and_trained_context_mark(f32):
    r = evaluate(f32, [64, 160], ["linear:factor=4"], bins=5, cache_type="f32")
    assert [(b.start, b.end) for b in r.profiles["file"].bins] == [(0, 32), (32, 64), (64, 96), (96, 128), (128, 160)]
    table = r.position_table().splitlines()
    assert table[0].split() == ["setting", "..32", "..64", "|", "..96", "..128", "..160"]  # trained context 64
    assert "perplexity by position (one pass of 160 tokens per setting" in r.summary()


def test_wilson_interval_against_newcombe():
    # Newcombe, "Two-sided confidence intervals for the single proportion", Stat. Med. 17 (1998) 857-872,
    # Table I, method 3 (Wilson's score interval without continuity correction)
    from ropetool.eval import wilson_interval

    for (k, n), (lo, hi) in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605), (0, 20): (0.0, 0.1611),
                             (1, 29): (0.0061, 0.1718), (29, 29): (0.8830, 1.0)}.items():
        got = wilson_interval(k, n)
        assert got == pytest.approx((lo, hi), abs=5e-5), (k, n, got)


def test_block_bootstrap_against_the_long_run_variance():
    """The moving-block bootstrap's standard error of a mean against the textbook values for an AR(1) series
    x_t = phi x_{t-1} + e_t (unit noise): Var(mean) ~ 1 / ((1 - phi)^2 n) (the long-run variance over n); the
    i.i.d. bootstrap (blocks of 1) estimates Var(x) / n = 1 / ((1 - phi^2) n) instead, far too small."""
    from ropetool.eval import block_bootstrap_means, difference_interval, perplexity_interval

    phi, n = 0.8, 40000
    rng = np.random.default_rng(12)
    e = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = e[0] / np.sqrt(1 - phi ** 2)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    long_run = 1 / ((1 - phi) * np.sqrt(n))
    iid = 1 / np.sqrt((1 - phi ** 2) * n)
    assert block_bootstrap_means(x, block=128).std() == pytest.approx(long_run, rel=0.15)
    assert block_bootstrap_means(x, block=1).std() == pytest.approx(iid, rel=0.1)
    # the perplexity interval: for independent normal log-probabilities the normal-theory interval
    # exp(-(mean +- 1.96 sd / sqrt n)) (blocks of 1 here; any block length estimates it for independent data)
    lp = -3 + 0.5 * rng.standard_normal(20000)
    lo, hi = perplexity_interval(lp)
    half = 1.96 * lp.std() / np.sqrt(len(lp))
    assert (lo, hi) == pytest.approx((np.exp(-lp.mean() - half), np.exp(-lp.mean() + half)), rel=2e-3)
    # paired: a constant shift of every position is the difference exactly, whatever the blocks drawn
    assert difference_interval(lp, lp - 0.25) == pytest.approx((0.25, 0.25), abs=1e-12)


LONGCHAT_HEADER = ("Below is a record of lines I want you to remember. Each line begins with 'line <line index>' and "
                   "contains a '<REGISTER_CONTENT>' at the end of the line as a numerical value. For each line index, "
                   "memorize its corresponding <REGISTER_CONTENT>. At the end of the record, I will ask you to "
                   "retrieve the corresponding <REGISTER_CONTENT> of a certain line index. Now the record start:\n\n")


def test_lines_prompt_has_the_length_and_the_asked_line_once(f32):
    """The prompt of LongChat's longeval (DachengLi1/LongChat, longeval/utils.py generate_lines_testcases), typed
    here from that source, at exactly the asked length in tokens, the asked line present exactly once."""
    from ropetool.eval import lines_found, lines_prompt

    with LlamaCpp(f32, n_ctx=256) as llm:
        tok = lambda s: llm.tokenize(s, add_bos=False)  # noqa: E731
        for length in (500, 1000, 2500):
            for trial in range(3):
                p = lines_prompt(tok, length, 7, trial, bos=7)
                assert len(p.ids) == length and p.ids[0] == 7
                text = llm.detokenize(p.ids[1:])
                assert text.startswith(LONGCHAT_HEADER)
                record = re.findall(r"line ([a-z]+-[a-z]+): REGISTER_CONTENT is <(\d+)>\n", text)
                assert len(record) == p.lines and len({n for n, _ in record}) == p.lines  # distinct names
                assert all(1 <= int(v) <= 50000 for _, v in record)
                line = f"line {p.name}: REGISTER_CONTENT is <{p.value}>\n"
                assert text.count(line) == 1 and record[p.line_index] == (p.name, str(p.value))
                assert text.endswith(f"\nNow the record is over. Tell me what is the <REGISTER_CONTENT> in line "
                                     f"{p.name}? I need the number.Line <{p.name}>: <REGISTER_CONTENT> is")
                sentence = tok(line)
                at = [i for i in range(len(p.ids)) if p.ids[i:i + len(sentence)] == sentence]
                assert at == [p.line_start]
                assert p.padding < len(sentence) + 8  # the newlines fill less than a line (and the slack)
            # the same record for every setting (from the seed, length and trial); another seed, another one
            assert lines_prompt(tok, length, 7, 0).ids == lines_prompt(tok, length, 7, 0).ids
            assert lines_prompt(tok, length, 8, 0).ids != lines_prompt(tok, length, 7, 0).ids
    assert lines_found(" <24904>. Line", 24904) and not lines_found(" <2490>", 24904) and not lines_found(" none", 1)


def test_lines_and_passkey_report_wilson_intervals(f32):
    res = CliRunner().invoke(cli, ["eval", str(f32), "--lengths", "512", "--try", "linear:factor=4", "--lines", "2",
                                   "--passkey", "1", "--depths", "0.5", "--json"])
    assert res.exit_code == 0, res.output
    window = [r for r in json.loads(res.output) if r["kind"] == "window"]
    from ropetool.eval import wilson_interval

    for r in window:
        assert r["lines_trials"] == 2 and r["passkey_trials"] == 1
        assert r["lines_95"] == pytest.approx(list(wilson_interval(r["lines_found"], 2)))
    res = CliRunner().invoke(cli, ["eval", str(f32), "--lengths", "512", "--lines", "2"])
    assert res.exit_code == 0, res.output
    assert "lines accuracy, found/trials (Wilson 95% interval):" in res.output
    assert re.search(r"file\s+\d/2 \(\d+%\.\.\d+%\)", res.output)


def test_cache_type_is_stated_and_changes_the_run(f32, report):
    runner = CliRunner()
    out = {}
    for cache in ("f16", "f32"):
        args = ["eval", str(f32), "--lengths", "192"] + (["--cache-type", cache] if cache != "f16" else [])
        res = runner.invoke(cli, args)
        assert res.exit_code == 0, res.output
        assert f"KV cache {cache}" in res.output.splitlines()[0]
        res = runner.invoke(cli, args + ["--json"])
        rec = next(r for r in json.loads(res.output) if r["kind"] == "window")
        assert rec["cache_type"] == cache
        out[cache] = rec["perplexity"]
    assert out["f32"] == pytest.approx(report.record("file", 192).perplexity, rel=1e-9)
    assert out["f16"] != out["f32"] and out["f16"] == pytest.approx(out["f32"], rel=1e-2)


def test_q8_0_cache_runs_where_llama_cpp_can_store_it(tmp_path):
    # llama.cpp's q8_0 cache stores blocks of 32 values: heads of 16 (the llama fixture) are refused in one line
    # before any work, heads of 32 (qwen3) run, with flash attention (llama.cpp quantizes V only with it)
    llama = tmp_path / "llama.gguf"
    convert(fixture_dir(NAME), llama, outtype="f32")
    res = CliRunner().invoke(cli, ["eval", str(llama), "--lengths", "64", "--cache-type", "q8_0"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "blocks of 32 values" in res.output, res.output
    qwen3 = tmp_path / "qwen3.gguf"
    convert(fixture_dir("qwen3"), qwen3, outtype="f32")
    out = {}
    for cache in ("q8_0", "f32"):
        res = CliRunner().invoke(cli, ["eval", str(qwen3), "--lengths", "128", "--cache-type", cache, "--json"])
        assert res.exit_code == 0, res.output
        out[cache] = next(r for r in json.loads(res.output) if r["kind"] == "window")["perplexity"]
    assert out["q8_0"] != out["f32"] and out["q8_0"] == pytest.approx(out["f32"], rel=2e-2)
    res = CliRunner().invoke(cli, ["eval", str(qwen3), "--lengths", "128", "--cache-type", "q8_0"])
    assert "KV cache q8_0, flash attention" in res.output.splitlines()[0]


def test_recommendation_says_whether_the_next_best_is_distinguishable(f32, report, window):
    from ropetool.eval import difference_interval

    best, line = report.recommendation()
    assert best is not None
    m = re.search(r"(NOT )?distinguishable from the next best, (\S+) \(([\d.]+); .*?95% interval ([\d.]+)\.\.([\d.]+)",
                  line)
    assert m, line
    nxt = m.group(2)
    # the interval from transformers' log-probabilities of the same positions, through the same bootstrap
    L = LENGTHS[-1]
    a = hf_token_logprobs(window[:L], SETTINGS.get(best, SETTINGS["none"]))[L // 2 + 1:L]
    b = hf_token_logprobs(window[:L], SETTINGS.get(nxt, SETTINGS["none"]))[L // 2 + 1:L]
    lo, hi = difference_interval(a, b)
    assert float(m.group(4)) == pytest.approx(np.exp(lo), rel=1e-3) and float(m.group(5)) == pytest.approx(np.exp(hi), rel=1e-3)
    assert (m.group(1) is not None) == (lo <= 0)
    # the file's own setting and `none` are one computation on a plain file: said, not compared
    assert "none: changes no key or tensor of the file" in " ".join(report.notes)


@pytest.mark.parametrize("args,message", [
    (["--bins", "0"], "--bins"),
    (["--bins", "64"], "do not fit 64 tokens"),
    (["--lines", "-1"], "--lines"),
])
def test_bad_position_options_are_one_line_errors(f32, args, message):
    res = CliRunner().invoke(cli, ["eval", str(f32), "--lengths", "64"] + args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], res.output
