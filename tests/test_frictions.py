"""What a new user tripped over (issue 17), one test each: every one of them failed before its fix."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import fixture_dir

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.io.gguf_file import GGUFFile

ROOT = Path(__file__).resolve().parent.parent


def one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize("method,needed", [("yarn", "--factor"), ("linear", "--factor"), ("llama3", "--factor"),
                                           ("ntk-by-parts", "--factor"), ("ntk", "--alpha")])
def test_a_method_without_its_parameter_is_an_error(method, needed, tmp_path):
    """--rope yarn without --factor used to write factor 1: a no-op extension."""
    out = tmp_path / "o.gguf"
    line = one_error_line(CliRunner().invoke(cli, ["convert", str(fixture_dir("llama")), "-o", str(out), "--rope", method]))
    assert needed in line and not out.exists()
    src = tmp_path / "src.gguf"
    convert(fixture_dir("llama"), src, outtype="f32")
    line = one_error_line(CliRunner().invoke(cli, ["set-rope", str(src), "-o", str(out), "--rope", method]))
    assert needed in line and not out.exists()


def test_output_folder_gets_the_conventional_name(tmp_path):
    """-o EXISTING_DIR --force used to fail with 'Is a directory: .NAME.tmp'."""
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir("llama")), "-o", str(tmp_path), "--force"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "llama-F16.gguf").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["llama-F16.gguf"]


def test_default_name_is_the_type_written(tmp_path, monkeypatch):
    """Without -o the file used to be MODEL-auto.gguf although it holds F16 (or BF16)."""
    monkeypatch.chdir(tmp_path)
    for name, expected in (("llama", "llama-F16.gguf"), ("mistral", "mistral-BF16.gguf")):
        result = CliRunner().invoke(cli, ["convert", str(fixture_dir(name))])
        assert result.exit_code == 0, result.output
        assert (tmp_path / expected).is_file()
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir("llama")), "--outtype", "q8_0"])
    assert (tmp_path / "llama-Q8_0.gguf").is_file(), result.output


def test_dry_run_speaks_like_inspect():
    """--dry-run used to print a Python dict for the rope and shapes as [49152, 576] where inspect says 576x49152."""
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir("qwen2")), "--dry-run"])
    assert result.exit_code == 0, result.output
    rope = next(line for line in result.output.splitlines() if line.startswith("rope:"))
    assert "{" not in rope and "'" not in rope and "yarn (" in rope and "factor 4" in rope
    embd = next(line for line in result.output.splitlines() if line.strip().startswith("token_embd.weight"))
    assert "64x400" in embd  # n_embd x n_vocab, as inspect and llama.cpp show it


def test_dry_run_into_a_closed_pipe_ends_quietly():
    """`ropetool convert --dry-run | head` used to end with 'Error: Broken pipe'."""
    proc = subprocess.run(f'"{sys.executable}" -m ropetool convert "{fixture_dir("qwen3")}" --dry-run | head -n 2',
                          shell=True, capture_output=True, text=True, timeout=60)
    assert proc.stdout.count("\n") == 2
    assert "Error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_help_says_where_defaults_come_from():
    """set-rope --help used to say '(default: config.json's)'; convert --help did not explain auto."""
    set_rope = " ".join(CliRunner().invoke(cli, ["set-rope", "--help"]).output.split())
    assert "config.json" not in set_rope and "(default: the file's)" in set_rope
    convert_help = " ".join(CliRunner().invoke(cli, ["convert", "--help"]).output.split())
    assert "auto: f16, or bf16 when the checkpoint is bf16" in convert_help


def test_set_keeps_the_type_llama_cpp_reads(tmp_path):
    """`ropetool set` used to write an f64 freq_base (which llama.cpp refuses) with exit 0 after a warning."""
    src, out = tmp_path / "s.gguf", tmp_path / "o.gguf"
    convert(fixture_dir("llama"), src, outtype="f32")
    line = one_error_line(CliRunner().invoke(cli, ["set", str(src), "-o", str(out), "llama.rope.freq_base=f64:20000"]))
    assert "f32" in line and not out.exists()
    result = CliRunner().invoke(cli, ["set", str(src), "-o", str(out), "llama.rope.freq_base=f32:20000"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["set", str(src), "-o", str(out), "--force", "llama.rope.freq_base=f64:20000"])
    assert result.exit_code == 0, result.output
    with GGUFFile(out) as gf:
        assert gf.fields["llama.rope.freq_base"].type_name == "f64"


@pytest.mark.parametrize("argv", [["convert", "--bogus"], ["convert"], ["inspect"], ["nosuchcommand"],
                                  ["check", "x.gguf", "--device", "tpu"]])
def test_usage_errors_are_one_line(argv):
    """Usage errors used to print three lines (usage, hint, error)."""
    line = one_error_line(CliRunner().invoke(cli, argv))
    assert "--help" in line


def test_docs_cite_only_files_in_the_repository():
    """docs/inspect.md and docs/check.md used to cite notes outside the repository."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "fixtures" / "README.md"]
    for doc in docs:
        text = doc.read_text()
        for gone in ("shared/reference", "llama-cpp-semantics.md", "practical.md", "rope-methods.md", "lowering.md"):
            assert gone not in text, f"{doc.name} cites {gone}"
        for link in re.findall(r"\]\(([^)#]+)\)", text):
            if not link.startswith("http"):
                assert (doc.parent / link).exists(), f"{doc.name} links to {link}, which does not exist"


def test_readme_says_what_ntk_by_parts_writes(tmp_path):
    """The README said ntk-by-parts on llama writes a rope_freqs tensor; with default betas it writes type yarn
    with an attention factor that cancels YaRN's magnitude."""
    out = tmp_path / "p.gguf"
    convert(fixture_dir("llama"), out, outtype="f32", method="ntk-by-parts", factor=4.0)
    with GGUFFile(out) as gf:
        assert gf.get("llama.rope.scaling.type") == "yarn" and gf.tensor("rope_freqs.weight") is None
        assert abs(gf.get("llama.rope.scaling.attn_factor") * (1 + 0.1 * 1.3862943611198906) - 1) < 1e-6
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `ntk-by-parts`"))
    assert "type = yarn" in row and "attn_factor" in row


def test_json_dry_run_shapes_match_inspect(tmp_path):
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir("llama")), "--dry-run", "--json", "--outtype", "f32"])
    planned = {t["name"]: t["shape"] for t in json.loads(result.output)["tensors"]}
    out = tmp_path / "l.gguf"
    convert(fixture_dir("llama"), out, outtype="f32")
    inspected = json.loads(CliRunner().invoke(cli, ["inspect", str(out), "--json"]).output)["tensors"]
    assert planned == {t["name"]: t["shape"] for t in inspected}
