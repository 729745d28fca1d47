"""Run ropetool command lines in this process under an address-space limit; used by test_bad_inputs.py.

    python tests/bad_inputs/run_limited.py MANIFEST.json RESULTS.json HEADROOM_MB

MANIFEST.json is a list of {"id", "argv"}.  Everything ropetool imports is imported first; then
RLIMIT_AS is set to the address space in use plus HEADROOM_MB, so that any allocation sized by an
unchecked length read from a file (gigabytes to exabytes) fails with MemoryError, which the CLI would
report as an internal error (exit 70) rather than a one-line ``Error:``.  Each command runs through
click's CliRunner, interrupted (SIGALRM) after CASE_SECONDS; its exit code, output, wall time and peak
RSS so far are written to RESULTS.json.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import time

CASE_SECONDS = 20


def vm_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def main() -> None:
    manifest, results_path, headroom_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from click.testing import CliRunner

    import ropetool.convert  # noqa: F401
    import ropetool.edit  # noqa: F401
    import ropetool.inspect  # noqa: F401
    import ropetool.io.checkpoint  # noqa: F401
    import ropetool.io.vocab  # noqa: F401
    import ropetool.lint  # noqa: F401
    from ropetool.cli import cli

    cases = json.load(open(manifest))
    runner = CliRunner()
    runner.invoke(cli, ["--version"])  # warm click
    base_vm = vm_kb("VmSize")
    limit = (base_vm + headroom_mb * 1024) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = []
    def too_slow(signum, frame):
        raise TimeoutError(f"still running after {CASE_SECONDS} s")

    signal.signal(signal.SIGALRM, too_slow)
    for case in cases:
        started = time.perf_counter()
        signal.alarm(CASE_SECONDS)  # a hang (a FIFO opened for reading) becomes a failed case, not a hung test
        r = runner.invoke(cli, case["argv"])
        signal.alarm(0)
        results.append({
            "seconds": time.perf_counter() - started,
            "id": case["id"],
            "exit_code": r.exit_code,
            "output": r.output,
            "exception": None if r.exception is None or isinstance(r.exception, SystemExit) else repr(r.exception),
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        })
    json.dump({"base_vm_kb": base_vm, "limit_bytes": limit, "rss_before_kb": rss0, "results": results},
              open(results_path, "w"))


if __name__ == "__main__":
    main()
