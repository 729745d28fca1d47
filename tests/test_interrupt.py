"""A convert or set-rope killed with SIGKILL mid-write leaves no file at the target and its input unchanged.

Design: the CLI runs in a child process on a generated checkpoint (benchmarks/make_checkpoint.py
--layers 2: 254 MB of float32, in tmp).  The child's writes are slowed down by a wrapper around
os.pwrite / os.copy_file_range (a 15 ms sleep per call, installed before ropetool is imported:
ropetool's code is unchanged), so that the kill reliably lands mid-write.  The test polls the
output folder and sends SIGKILL as soon as the temporary file ``.NAME.XXXXXXXX.tmp`` has appeared
and grown past a few MB.  Then:

* the target path does not exist (set-rope --in-place: the input is still byte-identical);
* the input files hash as before;
* the temporary file is still there: nothing can delete it after SIGKILL (documented behaviour);
* the next run to the same target succeeds and removes that stale temporary file, which it
  recognises by its name and because no process holds its lock (a temporary file still locked by a
  live writer is left alone).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THROTTLE = """
import os, time
def _slow(f):
    def g(*args, **kwargs):
        time.sleep({delay})
        return f(*args, **kwargs)
    return g
os.pwrite = _slow(os.pwrite)
os.copy_file_range = _slow(os.copy_file_range)
from ropetool.cli import main
main()
"""
GROWN = 4 << 20  # kill once the temporary file holds this much


def _hash_folder(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.iterdir()):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        out[p.name] = h.hexdigest()
    return out


def _temps(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.*.tmp"))


def _run_and_kill(args: list[str], watch: Path, target_name: str, delay: float = 0.015, timeout: float = 60):
    """Start ``ropetool ARGS`` throttled; SIGKILL it when its temporary file has grown. Returns the temp path."""
    proc = subprocess.Popen([sys.executable, "-c", THROTTLE.format(delay=delay), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            temps = _temps(watch, target_name)
            if temps and temps[0].stat().st_size > GROWN:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                return temps[0], proc
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"ropetool finished (exit {proc.returncode}) before it could be killed: {err.decode()[-500:]}")
            time.sleep(0.005)
        pytest.fail("the temporary file never grew")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("interrupt") / "ckpt"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_checkpoint.py"), str(folder), "--layers", "2"],
                   check=True, capture_output=True)
    return folder


def _ropetool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from ropetool.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_convert_killed_mid_write(checkpoint, tmp_path):
    before = _hash_folder(checkpoint)
    out = tmp_path / "model.gguf"
    temp, proc = _run_and_kill(["convert", str(checkpoint), "-o", str(out), "--outtype", "f16"], tmp_path, out.name)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "a killed conversion left a file at the target"
    assert temp.exists(), "nothing can remove the temporary file of a SIGKILLed process"
    assert _hash_folder(checkpoint) == before

    result = _ropetool("convert", str(checkpoint), "-o", str(out), "--outtype", "f16")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:4] == b"GGUF"
    assert not temp.exists() and _temps(tmp_path, out.name) == [], "the stale temporary file was not cleaned"
    assert _hash_folder(checkpoint) == before


@pytest.fixture(scope="module")
def converted(checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "model-f16.gguf"
    result = _ropetool("convert", str(checkpoint), "-o", str(out), "--outtype", "f16")
    assert result.returncode == 0, result.stderr
    return out


def test_set_rope_killed_mid_write(converted, tmp_path):
    before = _hash_folder(converted.parent)
    out = tmp_path / "yarn.gguf"
    temp, proc = _run_and_kill(["set-rope", str(converted), "-o", str(out), "--rope", "yarn", "--factor", "4"],
                               tmp_path, out.name, delay=0.05)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and temp.exists()
    assert _hash_folder(converted.parent) == before

    result = _ropetool("set-rope", str(converted), "-o", str(out), "--rope", "yarn", "--factor", "4")
    assert result.returncode == 0, result.stderr
    assert _temps(tmp_path, out.name) == []
    assert _hash_folder(converted.parent) == before


def test_set_rope_in_place_killed_mid_write(converted, tmp_path):
    """--in-place replaces the input only by the final rename: killed before it, the input is intact."""
    src = tmp_path / converted.name
    shutil.copyfile(converted, src)
    before = _hash_folder(tmp_path)
    temp, proc = _run_and_kill(["set-rope", str(src), "--in-place", "--rope", "linear", "--factor", "2"],
                               tmp_path, src.name, delay=0.05)
    assert proc.returncode == -signal.SIGKILL and temp.exists()
    temp.unlink()
    assert _hash_folder(tmp_path) == before


def test_a_live_writers_temporary_file_is_left_alone(checkpoint, tmp_path):
    """Only temporaries no process holds are stale: one locked by a running writer survives the next run."""
    out = tmp_path / "model.gguf"
    live = tmp_path / f".{out.name}.abcd1234.tmp"
    stale = tmp_path / f".{out.name}.efgh5678.tmp"
    unrelated = tmp_path / f".{out.name}.notours.tmp"
    for p in (live, stale, unrelated):
        p.write_bytes(b"partial")
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        result = _ropetool("convert", str(ROOT / "fixtures" / "models" / "llama"), "-o", str(out))
        assert result.returncode == 0, result.stderr
        assert live.exists() and not stale.exists() and unrelated.exists()
