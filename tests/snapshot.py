"""Answers recorded before a refactor, compared after it (issue 21: behaviour unchanged).

``snapshot.check(name, report)`` and ``snapshot.inspect(name, path)`` compare the verdict fields of a
check report and the whole ``inspect --json`` report (less the file's path) with what the code at the
recorded commit answered for the same test case.  ``ROPETOOL_RECORD_SNAPSHOT=1`` records instead
(tests/snapshots/before-modelfile.json); a case with no recorded answer fails, so the file must cover
every case the tests ask for.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path

FILE = Path(__file__).resolve().parent / "snapshots" / "before-modelfile.json"
RECORD = os.environ.get("ROPETOOL_RECORD_SNAPSHOT") == "1"
_recorded: dict = {}


def _load() -> dict:
    return json.loads(FILE.read_text()) if FILE.exists() else {}


_known = _load()


def _save() -> None:
    merged = {**_load(), **_recorded}
    FILE.write_text(json.dumps(dict(sorted(merged.items())), indent=1, sort_keys=True) + "\n")


if RECORD:
    atexit.register(_save)


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def _compare(key: str, value) -> None:
    value = _plain(value)
    if RECORD:
        _recorded[key] = value
        return
    assert key in _known, f"no recorded answer for {key} in {FILE.name}"
    assert value == _known[key], f"{key}: the answer differs from the one recorded before the change"


def check_fields(report) -> dict:
    """The verdict fields of a CheckReport: what it concluded, not the figures."""
    return {"verdict": report.verdict, "method": report.method, "method_source": report.method_source,
            "meant": report.meant, "closest": report.closest,
            "alternatives": [[a.label, a.kind, a.outcome] for a in report.alternatives]}


def check(name: str, report) -> None:
    _compare(f"check {name}", check_fields(report))


def inspect(name: str, path) -> None:
    from ropetool.inspect import inspect_gguf

    report = inspect_gguf(path)
    report["file"].pop("path")
    # schema 2 is schema 1 and the memory section (issue 26, recorded after this file; tests/test_extend.py holds
    # its figures to llama.cpp's own)
    assert report.pop("schema_version") == 2 and "memory" in report
    report.pop("memory")
    report["schema_version"] = 1
    _compare(f"inspect {name}", report)
