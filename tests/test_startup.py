"""Start-up: importing ropetool or its command line, and listing the commands, import no numpy, no gguf-py
and no command module; each command is imported when it runs, with its help unchanged (issue #28).

Not timing tests: what is checked is which modules a fresh interpreter has imported
(benchmarks/startup.py times it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
# The modules behind the commands: the CLI's command modules and the library modules they run.
COMMAND_MODULES = {f"ropetool.cli.{m}" for m in ("check", "convert", "edit", "eval", "extend", "inspect", "quantize",
                                                  "options")} | {
    f"ropetool.{m}" for m in ("check", "convert", "edit", "eval", "extend", "inspect", "lint", "quantize", "reference",
                              "plot", "families", "probe", "rewrite", "model")}
HEAVY = ("numpy", "gguf", "llama_cpp", "yaml")

PROBE = r"""
import json, sys
{code}
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _modules_after(code: str, env_extra: dict | None = None, stdout: list | None = None) -> set[str]:
    """The modules a fresh interpreter has imported after running ``code`` (its stderr's last line); its
    output is appended to ``stdout`` when given."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-c", PROBE.format(code=code)], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if stdout is not None:
        stdout.append(proc.stdout)
    return set(json.loads(proc.stderr.strip().splitlines()[-1]))


def _loaded_heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m in COMMAND_MODULES)


@pytest.mark.parametrize("code", ["import ropetool", "import ropetool.cli", "from ropetool.cli import cli, main"])
def test_importing_the_cli_imports_no_numpy_gguf_or_command_module(code):
    modules = _modules_after(code)
    assert "ropetool" in modules and ("ropetool.cli" in modules or code == "import ropetool")
    assert _loaded_heavy(modules) == []


def test_the_package_s_rope_names_are_there_on_first_use():
    import ropetool
    import ropetool.rope

    for name in ("RopeParams", "make_params", "rope_frequencies", "alibi_slopes", "rope_from_hf_config"):
        assert getattr(ropetool, name) is getattr(ropetool.rope, name)
    assert set(ropetool.__all__) <= set(dir(ropetool))
    with pytest.raises(AttributeError):
        ropetool.no_such_name  # noqa: B018


def test_listing_the_commands_imports_none_of_them():
    code = ("from ropetool.cli import cli\n"
            "try:\n    cli.main(['--help'], prog_name='ropetool')\nexcept SystemExit:\n    pass")
    assert _loaded_heavy(_modules_after(code)) == []


def test_shell_completion_of_the_command_names_imports_none_of_them():
    code = ("from ropetool.cli import cli\n"
            "try:\n    cli.main([], prog_name='ropetool')\nexcept SystemExit:\n    pass")
    env = {"_ROPETOOL_COMPLETE": "zsh_complete", "COMP_WORDS": "ropetool ", "COMP_CWORD": "1"}
    out = []
    assert _loaded_heavy(_modules_after(code, env, out)) == []
    assert "inspect\nShow a GGUF's metadata" in out[0] and "set-rope\n" in out[0]


def test_a_command_imports_its_module_when_it_is_looked_up():
    modules = _modules_after("from ropetool.cli import cli\nimport click\ncli.get_command(click.Context(cli), 'inspect')")
    assert "ropetool.cli.inspect" in modules and "ropetool.cli.edit" not in modules and "ropetool.cli.check" not in modules


def test_the_group_names_every_command_with_its_own_short_help():
    """The short help kept in the group is the first paragraph of each command's docstring, so that the
    listing (a stand-in's short help) is what click would make from the command itself, at any width."""
    from ropetool.cli import COMMANDS, cli

    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name, (_, short) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.help.split("\n\n")[0].strip() == short, name
        for limit in (20, 45, 74, 200):
            assert click.Command(name, help=short).get_short_help_str(limit) == command.get_short_help_str(limit), (name, limit)


LISTINGS = r"""
import json, sys
import click
from click.testing import CliRunner
from ropetool.cli import COMMANDS, cli
widths = (60, 80, 120)
lazy = [CliRunner().invoke(cli, ["--help"], prog_name="ropetool", terminal_width=w).output for w in widths]
imported_before = sorted(m for m in sys.modules if m.startswith("ropetool.cli."))
ctx = click.Context(cli)
for name in COMMANDS:
    cli.get_command(ctx, name)
eager = click.Group("ropetool", commands=dict(cli.commands), params=cli.params, help=cli.help,
                    context_settings=cli.context_settings)
real = [CliRunner().invoke(eager, ["--help"], prog_name="ropetool", terminal_width=w).output for w in widths]
print(json.dumps({"lazy": lazy, "real": real, "imported_before": imported_before}))
"""


def test_the_listing_is_click_s_own_listing_of_the_commands():
    """``ropetool --help`` with no command imported against click's listing of the real commands (a plain
    click.Group holding them all), at three terminal widths, in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", LISTINGS], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["imported_before"] == []
    for lazy, real in zip(out["lazy"], out["real"]):
        assert "Commands:" in real and lazy == real


@pytest.mark.skipif(not hasattr(click.exceptions, "NoSuchCommand"), reason="click < 8.4 suggests no command names")
def test_a_mistyped_command_is_matched_against_every_name_not_only_the_imported_ones():
    for typed, said in (("inspct", "Did you mean 'inspect'?"), ("sett", "(Did you mean one of: 'set', 'unset'?)")):
        proc = subprocess.run([sys.executable, "-m", "ropetool", typed, "x"], capture_output=True, text=True, timeout=60,
                              cwd=ROOT)
        assert proc.returncode == 2 and proc.stderr == f"Error: No such command '{typed}'. {said} (see ropetool --help)\n"


def _tiny_gguf(path: Path) -> Path:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_head_count(4)
    w.add_rope_dimension_count(16)
    w.add_rope_freq_base(10000.0)
    w.add_token_list(["a", "b", "c"])
    w.add_tensor("output_norm.weight", np.ones(64, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_inspect_imports_gguf_py_s_constants_alone(tmp_path):
    """inspect (text and --json) takes gguf-py's types and names from gguf.constants without importing the
    rest of gguf-py (its reader, writer, quantizers, vocabulary and metadata modules)."""
    path = _tiny_gguf(tmp_path / "tiny.gguf")
    for flags in ([], ["--json"]):
        code = ("from ropetool.cli import cli\n"
                f"try:\n    cli.main(['inspect', *{flags!r}, {str(path)!r}], prog_name='ropetool')\n"
                "except SystemExit as e:\n    assert not e.code, e.code")
        out = []
        modules = _modules_after(code, stdout=out)
        assert "gguf.constants" in modules and "output_norm.weight" in out[0]
        assert not {m for m in modules if m.split(".")[0] in ("gguf", "yaml", "sentencepiece")} - {"gguf.constants"}


LINKED = r"""
import sys
first = sys.argv[1]
if first == "gguf":
    import gguf
import ropetool.families, ropetool.io.gguf_file as gf, ropetool.llamacpp.keys as K
from ropetool.io.gguf_constants import constants
assert ("gguf" in sys.modules) == (first == "gguf"), first
import gguf
import gguf.constants
assert constants is gguf.constants is sys.modules["gguf.constants"]
assert gf.T is gguf.GGUFValueType and K.T is gguf.GGUFValueType and gf.GGMLQuantizationType is gguf.GGMLQuantizationType
assert gguf.constants.GGML_QUANT_SIZES is gf.GGML_QUANT_SIZES and gguf.Keys is gf._Keys
assert not any(type(f).__module__ == "ropetool.io.gguf_constants" for f in sys.meta_path)  # the one-shot finder is gone
assert gguf.GGUFValueType.get_type("x") is gf.T.STRING and callable(gguf.GGUFReader) and callable(gguf.quants.quantize)
print("ok")
"""


@pytest.mark.parametrize("first", ["ropetool", "gguf"])
def test_gguf_py_s_constants_are_one_module_whichever_is_imported_first(first):
    """ropetool's gguf.constants is gguf-py's own (one GGUFValueType class in the process), and a later
    ``import gguf`` is whole, with its ``constants`` attribute."""
    proc = subprocess.run([sys.executable, "-c", LINKED, first], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
