"""The committed fixtures are exactly what fixtures/make_fixtures.py produces (same seeds, same tensors)."""

import filecmp
import subprocess
import sys
from pathlib import Path

from conftest import FIXTURES


def test_fixture_script_reproduces_committed_fixtures(tmp_path):
    script = FIXTURES.parent / "make_fixtures.py"
    result = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    committed = sorted(p.relative_to(FIXTURES) for p in FIXTURES.rglob("*") if p.is_file())
    regenerated = sorted(p.relative_to(tmp_path) for p in Path(tmp_path).rglob("*") if p.is_file())
    assert committed == regenerated
    for rel in committed:
        assert filecmp.cmp(FIXTURES / rel, tmp_path / rel, shallow=False), f"{rel} differs"
