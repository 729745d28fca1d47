"""Every malformed input of the corpus (tests/bad_inputs) is refused cleanly, through the CLI.

For each case: a non-zero exit, exactly one line of output, ``Error: ...`` naming the problem (never
an internal error or a traceback), no output file and no temporary file left, and the input files
byte-identical.  All cases run in one child process whose address space is capped (RLIMIT_AS) at
what it uses after importing ropetool plus HEADROOM_MB: an allocation sized by a length read from
a file before that length is checked against the file's size (2^63-byte strings, 2^60-element arrays,
a safetensors shape whose size overflows) would fail there, and the peak RSS is recorded.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import build_all

HEADROOM_MB = 384  # address space allowed beyond the imports (threads' stacks and arenas included)
SECONDS = 10  # each case ends within this
RSS_GROWTH_MB = 100  # the peak resident set may grow this much over all the cases together
RUNNER = Path(__file__).resolve().parent / "bad_inputs" / "run_limited.py"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    cases = build_all(root / "cases")
    before = {c.id: {p: _digest(p) for p in c.inputs} for c in cases}
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps([{"id": c.id, "argv": c.argv} for c in cases]))
    results_path = root / "results.json"
    proc = subprocess.run([sys.executable, str(RUNNER), str(manifest), str(results_path), str(HEADROOM_MB)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(results_path.read_text())
    return cases, before, results


def test_corpus_is_large_and_covers_every_kind(corpus):
    cases, _, _ = corpus
    ids = [c.id for c in cases]
    assert len(ids) >= 40
    for prefix, at_least in [("config-", 10), ("st-", 10), ("index-", 6), ("pickle-only", 2), ("gguf-truncated-", 12),
                             ("gguf-", 40), ("rope-", 10)]:
        assert sum(i.startswith(prefix) for i in ids) >= at_least, prefix
    commands = {c.argv[0] for c in cases}
    assert commands == {"convert", "inspect", "set", "unset", "set-rope", "diff", "check", "extend"}


def test_every_case_is_refused_in_one_line_with_nothing_written(corpus):
    cases, before, results = corpus
    by_id = {r["id"]: r for r in results["results"]}
    failures = []
    for case in cases:
        r = by_id[case.id]
        lines = r["output"].strip().splitlines()
        problems = []
        if r["exit_code"] not in (1, 2):
            problems.append(f"exit code {r['exit_code']}")
        if r["seconds"] > SECONDS:
            problems.append(f"took {r['seconds']:.1f} s")
        if r["exit_code"] == 70 or r["exception"] or "internal error" in r["output"] or "Traceback" in r["output"]:
            problems.append(f"not a clean error (exit {r['exit_code']}, {r['exception']})")
        if len(lines) != 1 or not lines[0].startswith("Error: "):
            problems.append(f"{len(lines)} lines, not one 'Error: ...' line")
        elif not any(w.lower() in lines[0].lower() for w in case.words):
            problems.append(f"the error does not mention any of {case.words}")
        if case.out_path is not None and case.out_path.exists():
            problems.append(f"{case.out_path.name} was written")
        if any(case.out_dir.iterdir()):
            problems.append(f"left {[p.name for p in case.out_dir.iterdir()]} in the output folder")
        changed = [p.name for p, h in before[case.id].items() if _digest(p) != h]
        if changed:
            problems.append(f"changed its input(s) {changed}")
        if problems:
            failures.append(f"{case.id}: {'; '.join(problems)}\n    {' '.join(case.argv[:2])} -> {r['output'].strip()[:300]}")
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)


def test_memory_stayed_bounded(corpus):
    """The address-space cap held (no MemoryError above), and the resident set barely grew."""
    _, _, results = corpus
    peak = max(r["maxrss_kb"] for r in results["results"])
    assert peak - results["rss_before_kb"] <= RSS_GROWTH_MB * 1024, (peak, results["rss_before_kb"])


def test_pickles_are_refused_by_name_without_being_opened(tmp_path):
    """A .bin that would run code if unpickled is never opened: the error says why ropetool refuses it."""
    from bad_inputs import hf_cases
    from click.testing import CliRunner

    from ropetool.cli import cli

    cases = [c for c in hf_cases(tmp_path) if c.id.startswith("pickle-only") or c.id == "index-names-pickle-shard"]
    assert len(cases) == 3
    for case in cases:
        result = CliRunner().invoke(cli, case.argv)
        assert result.exit_code == 2
        assert "arbitrary code" in result.output and "safetensors" in result.output


def test_hub_cache_snapshot_symlinks_are_followed(tmp_path):
    """The one place weights legitimately live outside the model folder: a Hugging Face hub cache snapshot,
    whose files are symlinks to ../../blobs.  Those convert; a link out of the repository does not."""
    import shutil

    from bad_inputs import FIXTURES
    from click.testing import CliRunner

    from ropetool.cli import cli

    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / "0123abcd"
    blobs = repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for f in (FIXTURES / "llama").iterdir():
        blob = blobs / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, blob)
        (snapshot / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    out = tmp_path / "tiny.gguf"
    result = CliRunner().invoke(cli, ["convert", str(snapshot), "-o", str(out)])
    assert result.exit_code == 0, result.output
    elsewhere = tmp_path / "elsewhere.safetensors"
    shutil.copy(FIXTURES / "llama" / "model.safetensors", elsewhere)
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors").symlink_to(elsewhere)
    result = CliRunner().invoke(cli, ["convert", str(snapshot), "-o", str(tmp_path / "no.gguf")])
    assert result.exit_code == 2 and "outside the model folder" in result.output


def test_set_rope_replaces_what_it_does_not_read(tmp_path):
    """What set-rope replaces without reading is not refused: a NaN rope_freqs tensor (replaced), and a NaN
    freq_base when ropetool's provenance records the base.  The output is clean for llama.cpp."""
    import numpy as np
    from bad_inputs import FIXTURES
    from click.testing import CliRunner

    from ropetool.cli import cli
    from ropetool.convert import convert
    from ropetool.io.gguf_file import GGUFFile, NewValue, T, TensorOut, write_gguf
    from ropetool.model import lint_gguf

    src = tmp_path / "llama3.gguf"
    convert(FIXTURES / "llama", src, outtype="f16", method="llama3", factor=8.0)
    bad = tmp_path / "bad.gguf"
    with GGUFFile(src) as gf:
        records = [NewValue(f.key, T.FLOAT32, float("nan")) if f.key == "llama.rope.freq_base" else f
                   for f in gf.fields.values()]
        tensors = [TensorOut.from_array(t.name, np.full(t.shape, np.nan, np.float32)) if t.name == "rope_freqs.weight"
                   else TensorOut.copy_of(t) for t in gf.tensors]
        write_gguf(bad, records, tensors, source=gf)
    out = tmp_path / "yarn.gguf"
    result = CliRunner().invoke(cli, ["set-rope", str(bad), "-o", str(out), "--rope", "llama3", "--factor", "4"])
    assert result.exit_code == 0, result.output
    assert not [f for f in lint_gguf(out) if f.severity == "error"]
    with GGUFFile(out) as gf:
        assert gf.get("llama.rope.freq_base") == 10000.0
        assert np.all(np.isfinite(gf.read_tensor("rope_freqs.weight")))


def test_config_dtype_nan_converts_and_says_what_it_assumed(tmp_path):
    """config.json's dtype is never read (the safetensors' own dtype decides); a NaN there converts, with a
    warning that says which dtype the weights were read as and written as (issue #23)."""
    import shutil

    from bad_inputs import FIXTURES, set_config
    from click.testing import CliRunner

    from ropetool.cli import cli

    folder = tmp_path / "m"
    shutil.copytree(FIXTURES / "llama", folder)
    set_config(folder, torch_dtype=float("nan"))
    result = CliRunner().invoke(cli, ["convert", str(folder), "-o", str(tmp_path / "o.gguf")])
    assert result.exit_code == 0, result.output
    assert "torch_dtype is nan, not a dtype name" in result.output and "written as F16" in result.output


def test_eval_lengths_past_the_text_is_refused_at_once(tmp_path):
    """eval --lengths 10^12: one line, within seconds (the text's length and the memory are checked before the
    long work)."""
    import time

    from bad_inputs import FIXTURES
    from click.testing import CliRunner

    from ropetool.cli import cli
    from ropetool.convert import convert

    gguf = tmp_path / "m.gguf"
    convert(FIXTURES / "llama", gguf, outtype="f16")
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["eval", str(gguf), "--lengths", str(10**12)])
    assert result.exit_code == 2 and time.perf_counter() - started < SECONDS, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and ("the text has" in lines[0] or "memory" in lines[0])
