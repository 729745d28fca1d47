"""Which GGUF files llama.cpp loads and runs: each file is loaded and two tokens decoded, in child processes.

llama.cpp refuses some files (an exception) and aborts the process on others (GGML_ASSERT), so files
are tried one after another in a child; when the child dies, the file it was on is recorded with the
signal and a new child takes the rest.  ``python tests/llama_loads.py FILE...`` prints one line per file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import sys
from ropetool.llamacpp.runner import LlamaCpp
for path in sys.argv[1:]:
    print("START", path, flush=True)
    try:
        with LlamaCpp(path, n_ctx=256) as llm:
            ids = [min(1, llm.n_vocab - 1), min(2, llm.n_vocab - 1)]
            list(llm.logits(ids))
        print("OK", path, flush=True)
    except Exception as e:
        print("REFUSED", path, " ".join(str(e).split())[:200], flush=True)
"""


def llama_cpp_runs(paths: list[Path], timeout: float = 600) -> dict[str, str]:
    """path -> "ok", "refused: ..." or "died: SIGNAL" for each file."""
    todo = [str(p) for p in paths]
    out: dict[str, str] = {}
    while todo:
        proc = subprocess.run([sys.executable, "-c", CHILD, *todo], capture_output=True, text=True, errors="replace",
                              timeout=timeout, env={**os.environ, "GGML_NO_BACKTRACE": "1"})  # see runner.preflight
        current = None
        for line in proc.stdout.splitlines():
            kind, _, rest = line.partition(" ")
            path, _, why = rest.partition(" ")
            if kind == "START":
                current = path
            elif kind == "OK":
                out[path], current = "ok", None
            elif kind == "REFUSED":
                out[path], current = f"refused: {why}", None
        if proc.returncode == 0:
            break
        if current is None:  # died outside any file
            raise RuntimeError(f"the llama.cpp child failed: {proc.stderr[-2000:]}")
        name = signal.Signals(-proc.returncode).name if proc.returncode < 0 else f"exit {proc.returncode}"
        out[current] = f"died: {name}"
        todo = todo[todo.index(current) + 1:]
    return out


def runs_without_each(path: Path, blocks: tuple[int, ...], tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each tensor outside the blocks and each of the given blocks removed in turn, one file apiece, and run:
    tensor name -> (that file, its llama_cpp_runs result)."""
    from ropetool.io.gguf_file import GGUFFile, TensorOut, write_gguf

    prefixes = tuple(f"blk.{b}." for b in blocks)
    cut = {}
    with GGUFFile(path) as gf:
        for name in (t.name for t in gf.tensors if not t.name.startswith("blk.") or t.name.startswith(prefixes)):
            cut[name] = tmp_path / f"{name}.gguf"
            write_gguf(cut[name], list(gf.fields.values()), [TensorOut.copy_of(t) for t in gf.tensors if t.name != name],
                       source=gf)
    runs = llama_cpp_runs(list(cut.values()))
    return {name: (file, runs[str(file)]) for name, file in cut.items()}


def refused(results: dict[str, tuple[Path, str]]) -> set[str]:
    """The names of runs_without_each's tensors whose removal llama.cpp does not run."""
    return {name for name, (_, run) in results.items() if run != "ok"}


if __name__ == "__main__":
    for p, result in llama_cpp_runs([Path(a) for a in sys.argv[1:]]).items():
        print(p, result)
