"""The code's shape: layers that import one way and commands that never import each other (import-linter's
contracts in pyproject.toml), no import circle at any depth (imports inside functions included), no reach into
another module's private names, no GGUF rope key spelled outside ropetool/llamacpp/, and a clean ruff run."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ropetool"


def _bin(name: str) -> str:
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[tuple[str, str | None]]]:
    """module -> {(imported module, imported name or None)}, from every import statement in its AST."""
    out = {}
    for name, path in mods.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:  # relative imports are not used: they hide the layer an import reaches
                    found.add((f"<relative import in {name}>", None))
                    continue
                if node.module and node.module.split(".")[0] == "ropetool":
                    for alias in node.names:
                        sub = f"{node.module}.{alias.name}"
                        found.add((sub, None) if sub in mods else (node.module, alias.name))
            elif isinstance(node, ast.Import):
                found |= {(a.name, None) for a in node.names if a.name.split(".")[0] == "ropetool"}
        out[name] = found
    return out


def test_import_linter_contract_holds():
    result = subprocess.run([_bin("lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout  # the layers, and the commands' independence


# A rope key or rope tensor as code spells it: "llama.rope.freq_base", f"{arch}.rope.scaling.factor" (whose
# constant part is ".rope.scaling.factor"), "rope_freqs.weight", ropetool's record "ropetool.rope.method".
ROPE_KEY = re.compile(r"([a-z0-9_]*\.)?rope\.[a-z_]+(\.[a-z_]+)*|rope_(freqs|factors_long|factors_short)\.weight|ropetool\.[a-z_.]+")


def _spelled_rope_keys(package: Path) -> list[str]:
    """Every string constant (f-string parts included) outside package/llamacpp/ that is a rope key."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if "llamacpp" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ROPE_KEY.fullmatch(node.value):
                found.append(f"{path.relative_to(package.parent)}:{node.lineno}: {node.value!r}")
    return sorted(found, key=lambda x: (x.split(":")[0], int(x.split(":")[1])))


def test_no_rope_key_spelled_outside_llamacpp():
    """llamacpp/keys.py is the one table of key names; every other module names a key through it."""
    assert _spelled_rope_keys(PACKAGE) == []


def test_the_key_finder_finds_a_spelled_key(tmp_path):
    pkg = tmp_path / "ropetool"
    (pkg / "llamacpp").mkdir(parents=True)
    (pkg / "llamacpp" / "keys.py").write_text('BASE = "{arch}.rope.freq_base"\n')
    (pkg / "cmd.py").write_text('def f(gf, arch):\n    a = gf.get(f"{arch}.rope.scaling.factor")\n    return a, gf.get("rope_freqs.weight")\n')
    assert [x.split(": ")[1] for x in _spelled_rope_keys(pkg)] == ["'.rope.scaling.factor'", "'rope_freqs.weight'"]


def test_no_import_circle_at_any_depth():
    mods = _modules()
    graph = {m: {target for target, _ in deps if target in mods and target != m} for m, deps in _imports(mods).items()}
    # A package imports its submodules' names through them; an edge into a package is an edge into its __init__.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                cycle = visit(n)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, " -> ".join(cycle)


def test_no_relative_imports_and_no_private_names_across_modules():
    mods = _modules()
    bad = []
    for m, deps in _imports(mods).items():
        for target, name in deps:
            if target.startswith("<relative"):
                bad.append(target)
            elif name is not None and name.startswith("_") and not name.startswith("__") and target != m:
                bad.append(f"{m} imports {target}.{name}")
    assert not bad, bad


def test_ruff_is_clean():
    result = subprocess.run([_bin("ruff"), "check", "ropetool", "tests", "benchmarks", "fixtures"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-1000:]


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    """The circle test above would see a circle: two modules importing each other inside functions."""
    pkg = tmp_path / "ropetool"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from ropetool.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from ropetool import a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    try:
        test_no_import_circle_at_any_depth()
    except AssertionError as e:
        assert "ropetool.a -> ropetool.b -> ropetool.a" in str(e)
    else:  # pragma: no cover
        raise AssertionError("the circle was not found")
