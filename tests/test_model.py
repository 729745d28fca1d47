"""The one opened model (ropetool.model.ModelFile): each command opens and parses its input once, and every
command names the same trained and extended context for a file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import fixture_dir

from ropetool.cli import cli
from ropetool.convert import convert
from ropetool.io.gguf_file import GGUFFile
from ropetool.llamacpp import keys as K
from ropetool.model import ModelFile


@pytest.fixture
def parses(monkeypatch):
    """How many times each file's header was parsed."""
    counts: Counter = Counter()
    parse = GGUFFile._parse

    def counting(self):
        counts[Path(self.path).resolve()] += 1
        return parse(self)

    monkeypatch.setattr(GGUFFile, "_parse", counting)
    return counts


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    """A linear x4 conversion without its original_context key (as another tool might leave it): ropetool's record
    says 64 tokens trained, context_length says 256 (the extended context)."""
    from ropetool.edit import unset_keys

    folder = tmp_path_factory.mktemp("model")
    convert(fixture_dir("llama"), folder / "with-key.gguf", outtype="f32", method="linear", factor=4.0)
    unset_keys(folder / "with-key.gguf", [K.k(K.ROPE_SCALING_ORIG_CTX, "llama")], folder / "linear.gguf")
    return folder / "linear.gguf"


@pytest.mark.parametrize("args", [
    ["inspect", "{f}", "--json"],
    ["inspect", "{f}", "--plot", "{out}.png"],
    ["check", "{f}", "--end-to-end", "--tokens", "64"],
    ["set-rope", "{f}", "-o", "{out}", "--rope", "yarn", "--factor", "2"],
    ["eval", "{f}", "--lengths", "16,32", "--try", "yarn:factor=2", "--try", "llama3:factor=2"],
], ids=["inspect", "inspect-plot", "check-end-to-end", "set-rope", "eval"])
def test_each_command_parses_its_input_once(args, linear, parses, tmp_path):
    out = tmp_path / "out.gguf"
    result = CliRunner().invoke(cli, [a.format(f=linear, out=out) for a in args])
    assert result.exit_code == 0, result.output
    assert parses[linear.resolve()] == 1, dict(parses)


def test_the_probe_parses_its_input_once(linear, parses):
    """check's default runs llama.cpp in a child process; the probe itself (run here) opens the model once."""
    from ropetool.probe import probe_gguf

    report = probe_gguf(linear, isolate=False)
    assert report.verdict == "pass", report.summary()
    assert parses[linear.resolve()] == 1, dict(parses)
    assert any(a < 64 <= b for a, b in report.positions)  # a sequence straddles the one trained context (64)


def test_one_trained_context_everywhere(linear, tmp_path):
    from ropetool.eval import Evaluation
    from ropetool.reference import ReferenceModel

    with ModelFile.open(linear) as model:
        assert (model.trained_context, model.extended_context) == (64, 256)
        assert model.state.orig_ctx_key is None  # the record, not a key, says 64
    report = json.loads(CliRunner().invoke(cli, ["inspect", str(linear), "--json"]).output)
    assert (report["rope"]["trained_context"], report["rope"]["extended_context"]) == (64, 256)
    assert Evaluation(linear, [16]).report.trained_context == 64
    with ReferenceModel.from_gguf(linear) as ref:
        assert ref.original_context == 64
    out = tmp_path / "yarn.gguf"
    result = CliRunner().invoke(cli, ["set-rope", str(linear), "-o", str(out), "--rope", "yarn", "--factor", "2"])
    assert result.exit_code == 0, result.output
    with ModelFile.open(out) as model:  # extended from the trained 64, not from the 256 of the linear file
        assert (model.trained_context, model.extended_context) == (64, 128)


def test_an_edited_view_changes_nothing_on_disk(linear):
    with ModelFile.open(linear) as model:
        key = model.key(K.ROPE_SCALING_FACTOR)
        edited = model.edited({key: 8.0})
        assert edited.state.factor == 8.0 and model.state.factor == 4.0
        hidden = model.edited(remove=[key])
        assert hidden.state.factor is None and key in model.header.fields
