"""Run a function that drives llama.cpp in a child process: an abort or a crash in llama.cpp (GGML_ASSERT, a
segfault) becomes a one-line RopetoolError instead of the caller's death.

On Linux the child is forked from the caller (everything already imported: no second interpreter start),
unless this process has run llama.cpp itself (GNU OpenMP's thread pool hangs in a forked child); otherwise
it is a fresh interpreter.  The function's result must be a JSON-able dict; a RopetoolError it
raises comes back as itself.  ggml's backtrace (which forks gdb and can hang: see ``runner.preflight``) is
turned off in the child.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

from ropetool.errors import RopetoolError

TIMEOUT = 600  # seconds: loading the largest models from a cold disk


def _result(module: str, function: str, kwargs: dict) -> str:
    try:
        out = getattr(importlib.import_module(module), function)(**kwargs)
        return json.dumps({"ok": out})
    except RopetoolError as e:
        return json.dumps({"error": str(e)})
    except Exception as e:  # reported as the child's failure, in one line
        return json.dumps({"failure": f"{type(e).__name__}: {e}"})


def call_isolated(module: str, function: str, kwargs: dict, what: str, timeout: float = TIMEOUT,
                  show_stderr: bool = False) -> dict:
    """``module.function(**kwargs)`` in a child process; its dict result.  ``what``: for the error messages
    ("loading or running FILE"); ``show_stderr``: copy what the child wrote to stderr (llama.cpp's log) to ours."""
    from ropetool.llamacpp import runner

    fork = sys.platform.startswith("linux") and hasattr(os, "fork") and not runner.RAN_IN_PROCESS
    with tempfile.TemporaryFile() as err:
        if fork:
            code, out = _forked(module, function, kwargs, err, timeout, what)
        else:
            code, out = _spawned(module, function, kwargs, err, timeout, what)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if show_stderr and stderr:
        sys.stderr.write(stderr)
    try:
        data = json.loads(out) if out else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        if "ok" in data:
            return data["ok"]
        if "error" in data:
            raise RopetoolError(data["error"])
        if "failure" in data:
            raise RopetoolError(f"{what} failed: {data['failure']}")
    lines = [x.strip() for x in stderr.splitlines() if x.strip()]
    said = next((x for x in lines if "GGML_ASSERT" in x or "error" in x.lower()), lines[-1] if lines else "")
    said = " ".join(re.sub(r"^\S*/", "", said).split())[:300]
    if code < 0:
        raise RopetoolError(f"llama.cpp aborted ({signal.Signals(-code).name}) {what}: {said or 'no message'}")
    raise RopetoolError(f"{what} failed: {said or f'exit code {code}'}")


def _forked(module, function, kwargs, err, timeout, what) -> tuple[int, str]:
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 1
        try:
            os.close(r)
            os.dup2(err.fileno(), 2)
            os.environ["GGML_NO_BACKTRACE"] = "1"
            data = _result(module, function, kwargs).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise RopetoolError(f"llama.cpp did not finish {what} within {timeout:g} s")
            ready, _, _ = select.select([r], [], [], left)
            if ready:
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", "replace")


def _spawned(module, function, kwargs, err, timeout, what) -> tuple[int, str]:
    code = ("import json, sys\nfrom ropetool.llamacpp.isolate import _result\n"
            "a = json.loads(sys.argv[1])\nsys.stdout.write(_result(a['m'], a['f'], a['k']))\n")
    args = json.dumps({"m": module, "f": function, "k": kwargs})
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-c", code, args], stdout=subprocess.PIPE, stderr=err, text=True,
                              errors="replace", timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise RopetoolError(f"llama.cpp did not finish {what} within {timeout:g} s") from None
    return proc.returncode, proc.stdout


__all__ = ["call_isolated", "TIMEOUT"]
