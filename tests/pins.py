"""Is the installed environment exactly the one tests/constraints.txt pins?

    python tests/pins.py            # exit 1 and list the differences, exit 0 when it is
    python tests/pins.py --freeze   # print the installed environment in constraints.txt's form

A difference is a pinned package at another version, a pinned package that is missing, or an installed
package that is not pinned (so removing a pin from constraints.txt fails here instead of letting pip
pick whatever is newest). Build tooling that venv and pip bring themselves is not pinned.
conftest.py prints :func:`versions_line` in pytest's header.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

CONSTRAINTS = Path(__file__).resolve().parent / "constraints.txt"
UNPINNED = {"pip", "setuptools", "wheel", "ropetool"}  # build tooling, and the project itself
SHOWN = ("llama-cpp-python", "gguf", "numpy", "transformers", "torch", "tokenizers", "sentencepiece", "hypothesis")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise SystemExit(f"{path}: {line!r} is not NAME==VERSION")
        pins[canonical(name)] = version.strip()
    return pins


def installed() -> dict[str, str]:
    out = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out[canonical(name)] = dist.version
    return out


def _public(version: str) -> str:
    """A version without its local label: torch's CPU wheel is 2.13.0+cpu for the pin 2.13.0."""
    return version.split("+", 1)[0]


def differences(pins: dict[str, str], have: dict[str, str]) -> list[str]:
    out = []
    for name, want in sorted(pins.items()):
        got = have.get(name)
        if got is None:
            out.append(f"{name}=={want} is pinned but not installed")
        elif _public(got) != want:
            out.append(f"{name} is {got}, pinned {want}")
    for name, got in sorted(have.items()):
        if name not in pins and name not in UNPINNED:
            out.append(f"{name} {got} is installed but not pinned in {CONSTRAINTS.name}")
    return out


def ggml_version() -> str | None:
    """The ggml library llama-cpp-python built from its vendored llama.cpp (from the library's file name)."""
    try:
        files = metadata.files("llama-cpp-python") or []
    except metadata.PackageNotFoundError:
        return None
    found = [re.search(r"libggml-base\.so\.(\d+\.\d+\.\d+)$", str(f)) for f in files]
    return next((m.group(1) for m in found if m), None)


def versions_line() -> str:
    have = installed()
    shown = ", ".join(f"{name} {have[name]}" for name in SHOWN if name in have)
    if ggml_version():
        shown = shown.replace(f"llama-cpp-python {have.get('llama-cpp-python')}",
                              f"llama-cpp-python {have.get('llama-cpp-python')} (vendored llama.cpp, ggml {ggml_version()})")
    diffs = differences(read_pins(), have)
    state = "as pinned" if not diffs else f"{len(diffs)} difference(s) from tests/constraints.txt (python tests/pins.py)"
    return f"ropetool {have.get('ropetool', '?')} against {shown}; environment {state}"


def main(argv: list[str]) -> int:
    if argv[1:] == ["--freeze"]:
        for name, version in sorted(installed().items()):
            if name not in UNPINNED:
                print(f"{name}=={_public(version)}")
        return 0
    diffs = differences(read_pins(), installed())
    if diffs:
        print(f"The test environment differs from {CONSTRAINTS}:", file=sys.stderr)
        for d in diffs:
            print(f"  {d}", file=sys.stderr)
        return 1
    print(f"environment matches {CONSTRAINTS.name} ({len(read_pins())} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
