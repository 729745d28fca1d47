"""The committed fixtures are exactly what fixtures/make_fixtures.py produces (same seeds, same tensors).

Every file is compared byte for byte, except the ``"transformers_version"`` stamp that transformers writes
into its JSON files: a newer transformers writes a newer stamp and nothing else differs, so the stamp alone
must not decide the test.  The pinned transformers (tests/constraints.txt) writes the committed stamp.
"""

import re
import subprocess
import sys
from pathlib import Path

from conftest import FIXTURES

VERSION_STAMP = re.compile(rb'"transformers_version": "[^"]*"')


def _content(path: Path) -> bytes:
    data = path.read_bytes()
    return VERSION_STAMP.sub(b'"transformers_version": "*"', data) if path.suffix == ".json" else data


def test_fixture_script_reproduces_committed_fixtures(tmp_path):
    script = FIXTURES.parent / "make_fixtures.py"
    result = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    committed = sorted(p.relative_to(FIXTURES) for p in FIXTURES.rglob("*") if p.is_file())
    regenerated = sorted(p.relative_to(tmp_path) for p in Path(tmp_path).rglob("*") if p.is_file())
    assert committed == regenerated
    for rel in committed:
        assert _content(FIXTURES / rel) == _content(tmp_path / rel), f"{rel} differs"


def test_version_stamp_is_the_only_thing_ignored(tmp_path):
    """The comparison above ignores the stamp and nothing else: a changed value or key still differs."""
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text('{"rope_theta": 10000.0, "transformers_version": "5.23.0"}')
    b.write_text('{"rope_theta": 10000.0, "transformers_version": "5.99.1"}')
    c.write_text('{"rope_theta": 10000.5, "transformers_version": "5.23.0"}')
    assert _content(a) == _content(b)
    assert _content(a) != _content(c)
