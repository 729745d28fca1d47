"""ropetool's benchmarks, side by side with their baselines, in one run; writes docs/benchmarks.md.

    python benchmarks/run.py [--out docs/benchmarks.md] [--repeat 3] [--layers 30] [--keep DIR]

1. convert (f16, q8_0) of the ~0.65 GB float32 checkpoint made by make_checkpoint.py, against the
   floor of copying the same safetensors file durably (cp, then sync FILE: convert fsyncs its output
   before renaming it into place), and against plain cp too.  Peak memory is the converting
   process's ru_maxrss (os.wait4), against the target largest tensor + 150 MB.
2. inspect against gguf-py's ``gguf-dump --no-tensors`` on a 150k-token vocabulary GGUF
   (bench_inspect.py's generator).
3. set-rope against copying the file durably (and plainly), and against ``gguf-new-metadata
   --remove-metadata general.name`` (gguf-py's closest rewrite), on the f16 conversion.
4. The numpy reference forward pass (ReferenceModel.from_gguf(f32 GGUF).logits) against transformers
   (torch, CPU, float32) on the same model and the same 256 tokens: tokens per second.

Every command is timed as a user runs it: a fresh process (start-up and imports included), the median
of --repeat runs, the page cache warm (one untimed run first) and dirty pages flushed (sync) before
each timed run.  Generating the inputs is not timed.  This script imports nothing but the standard
library until the timings are done, so that the children's ru_maxrss is theirs (Linux counts the
parent's resident size at fork/exec in the child's maximum).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ROPETOOL = [sys.executable, "-c", "from ropetool.cli import main; main()"]
# Diagnostic only: the same command with os.fsync made a no-op, to show what the durable write costs.
ROPETOOL_NO_FSYNC = [sys.executable, "-c", "import os; os.fsync = lambda fd: None; from ropetool.cli import main; main()"]
# Diagnostic only: convert with gguf-py's own Q8_0 quantizer in place of ropetool's byte-identical one.
ROPETOOL_GGUF_PY_Q8 = [sys.executable, "-c", "import gguf, ropetool.io.encode as e; "
                       "e.q8_0 = lambda x, s: gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0); "
                       "from ropetool.cli import main; main()"]
N_TOKENS = 256
# Children run as after a pip install: bytecode cached (the untimed first run writes it), even where the
# calling shell sets PYTHONDONTWRITEBYTECODE (compiling ropetool's modules afresh costs ~40 ms a run).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_timed(cmd: list[str], cleanup: list[Path] = (), repeat: int = 3, warm: bool = True) -> dict:
    """Median wall time and the largest peak RSS (MB) of ``cmd`` in a fresh process."""
    walls, rss = [], []
    for i in range(repeat + (1 if warm else 0)):
        for p in cleanup:
            if p.exists():
                p.unlink()
        os.sync()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=CHILD_ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
        proc.stderr.close()
        if warm and i == 0:
            continue
        walls.append(wall)
        rss.append(usage.ru_maxrss / 1024)
    return {"wall": statistics.median(walls), "walls": walls, "rss_mb": max(rss)}


def copy_floors(src: Path, dst: Path, repeat: int, label: str = "") -> dict:
    """The copy floors for writing ``src``'s bytes again: plain cp, and cp then sync FILE (durable)."""
    floors = {f"cp{label}": run_timed(["cp", str(src), str(dst)], [dst], repeat),
              f"cp+sync{label}": run_timed(["sh", "-c", f'cp "{src}" "{dst}" && sync "{dst}"'], [dst], repeat)}
    dst.unlink(missing_ok=True)
    return floors


def machine() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import numpy

    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, numpy {numpy.__version__}")


def largest_tensor_mb(ckpt: Path) -> float:
    """The largest tensor once widened to float32 (what a converter may hold), from the safetensors header.

    Read with the standard library only: this process stays small, because a child's ru_maxrss
    starts from its parent's resident size at the time of the fork/exec."""
    import math
    import struct

    with open(ckpt / "model.safetensors", "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return max(math.prod(v["shape"]) * 4 for k, v in header.items() if k != "__metadata__") / 2**20


FORWARD = r"""
import json, statistics, sys, time
which, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ids = [(i * 37 + 11) % 49000 + 4 for i in range(n)]
if which == "reference":
    from ropetool.reference import ReferenceModel
    t = time.perf_counter(); m = ReferenceModel.from_gguf(path); load = time.perf_counter() - t
    fwd = lambda: m.logits(ids)
else:
    import torch
    from transformers import AutoModelForCausalLM
    t = time.perf_counter()
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32); m.eval()
    load = time.perf_counter() - t
    x = torch.tensor([ids])
    def fwd():
        with torch.no_grad():
            return m(x).logits[0].numpy()
fwd()
times = []
for _ in range(3):
    t = time.perf_counter(); out = fwd(); times.append(time.perf_counter() - t)
import numpy as np
np.save(sys.argv[4], np.asarray(out, dtype=np.float32))
print(json.dumps({"load": load, "forward": statistics.median(times), "tokens": n}))
"""


def forward(which: str, path: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", FORWARD, which, str(path), str(N_TOKENS), str(out)],
                          capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise SystemExit(f"{which} forward failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_args(doc: str, out: str, repeat: int, layers: int) -> argparse.Namespace:
    """The options both benchmark scripts take (their defaults differ)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / out)
    ap.add_argument("--repeat", type=int, default=repeat)
    ap.add_argument("--layers", type=int, default=layers)
    ap.add_argument("--keep", type=Path, help="work here (and keep the files) instead of a temporary folder")
    return ap.parse_args()


def work_folder(keep: Path | None) -> Path:
    work = keep or Path(tempfile.mkdtemp(prefix="ropetool-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    return work


def checkpoint(work: Path, layers: int) -> Path:
    """make_checkpoint.py's checkpoint in ``work``/ckpt, made unless it is there (not timed)."""
    ckpt = work / "ckpt"
    if not (ckpt / "model.safetensors").exists():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_checkpoint.py"), str(ckpt),
                        "--layers", str(layers)], check=True, stdout=subprocess.DEVNULL)
    return ckpt


def main() -> int:
    args = parse_args(__doc__, "benchmarks.md", repeat=3, layers=30)
    started = time.perf_counter()
    work = work_folder(args.keep)
    results: dict = {}
    try:
        ckpt = checkpoint(work, args.layers)
        st = ckpt / "model.safetensors"
        size_mb = st.stat().st_size / 1e6
        largest = largest_tensor_mb(ckpt)
        print(f"checkpoint: {size_mb:.0f} MB f32, largest tensor {largest:.0f} MiB", flush=True)

        # -- 1. convert vs copy -------------------------------------------------------------
        results.update(copy_floors(st, work / "copy.safetensors", args.repeat))
        for outtype in ("f16", "q8_0"):
            out = work / f"model-{outtype}.gguf"
            results[f"convert {outtype}"] = run_timed(
                ROPETOOL + ["convert", str(ckpt), "-o", str(out), "--outtype", outtype], [out], args.repeat)
            print(f"convert {outtype}: {results[f'convert {outtype}']}", flush=True)
        # A K-quant: ropetool's auto (f16) conversion into a temporary intermediate, then llama.cpp's quantizer.
        out = work / "model-q4_k_m.gguf"
        results["convert q4_k_m"] = run_timed(
            ROPETOOL + ["convert", str(ckpt), "-o", str(out), "--outtype", "q4_k_m"], [out], args.repeat)
        results["q4_k_m bytes"] = out.stat().st_size
        results["f16 bytes"] = (work / "model-f16.gguf").stat().st_size
        print(f"convert q4_k_m: {results['convert q4_k_m']}", flush=True)
        out = work / "model-f16.gguf"
        results["convert f16, fsync skipped (diagnostic)"] = run_timed(
            ROPETOOL_NO_FSYNC + ["convert", str(ckpt), "-o", str(out), "--outtype", "f16"], [out], args.repeat)
        out = work / "model-q8_0.gguf"
        results["convert q8_0, gguf-py's quantizer (diagnostic)"] = run_timed(
            ROPETOOL_GGUF_PY_Q8 + ["convert", str(ckpt), "-o", str(out), "--outtype", "q8_0"], [out], args.repeat)
        results["python -c 'import ropetool.cli, ropetool.convert, ropetool.edit' (start-up)"] = run_timed(
            [sys.executable, "-c", "import ropetool.cli, ropetool.convert, ropetool.edit"], [], args.repeat)
        f16 = work / "model-f16.gguf"
        subprocess.run(ROPETOOL + ["convert", str(ckpt), "-o", str(f16), "--outtype", "f16", "--force"], check=True,
                       stdout=subprocess.DEVNULL)

        # -- 2. inspect vs gguf-dump ----------------------------------------------------------
        vocab = work / "vocab-150k.gguf"
        if not vocab.exists():  # bench_inspect.py's generator, in a child (this process stays small)
            subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
                            "from bench_inspect import make_vocab_gguf; make_vocab_gguf(Path(sys.argv[2]), 150_000)",
                            str(ROOT / "benchmarks"), str(vocab)], check=True, stdout=subprocess.DEVNULL)
        results["inspect"] = run_timed(ROPETOOL + ["inspect", str(vocab)], [], max(args.repeat, 5))
        results["inspect --json"] = run_timed(ROPETOOL + ["inspect", "--json", str(vocab)], [], max(args.repeat, 5))
        results["gguf-dump"] = run_timed([str(BIN / "gguf-dump"), "--no-tensors", str(vocab)], [], 1, warm=False)
        print(f"inspect {results['inspect']['wall']:.3f} s, gguf-dump {results['gguf-dump']['wall']:.3f} s", flush=True)

        # -- 3. set-rope vs gguf-new-metadata and copy ---------------------------------------
        edited = work / "yarn.gguf"
        results.update(copy_floors(f16, edited, args.repeat, " f16"))
        results["set-rope"] = run_timed(
            ROPETOOL + ["set-rope", str(f16), "-o", str(edited), "--rope", "yarn", "--factor", "4"], [edited],
            args.repeat)
        results["set-rope, fsync skipped (diagnostic)"] = run_timed(
            ROPETOOL_NO_FSYNC + ["set-rope", str(f16), "-o", str(edited), "--rope", "yarn", "--factor", "4"],
            [edited], args.repeat)
        results["gguf-new-metadata"] = run_timed(
            [str(BIN / "gguf-new-metadata"), "--remove-metadata", "general.name", str(f16), str(edited), "--force"],
            [edited], max(1, args.repeat - 1))
        edited.unlink(missing_ok=True)
        print(f"set-rope {results['set-rope']['wall']:.3f} s, gguf-new-metadata "
              f"{results['gguf-new-metadata']['wall']:.3f} s", flush=True)

        # -- 4. reference forward vs transformers --------------------------------------------
        f32 = work / "model-f32.gguf"
        subprocess.run(ROPETOOL + ["convert", str(ckpt), "-o", str(f32), "--outtype", "f32", "--force"], check=True,
                       stdout=subprocess.DEVNULL)
        results["reference"] = forward("reference", f32, work / "ref.npy")
        f32.unlink()
        results["transformers"] = forward("transformers", ckpt, work / "hf.npy")
        import numpy as np  # only now: nothing is timed after this

        a, b = np.load(work / "ref.npy"), np.load(work / "hf.npy")
        results["forward max abs diff"] = float(np.abs(a - b).max())
        results["forward max abs logit"] = float(np.abs(b).max())
        print(f"reference {results['reference']}, transformers {results['transformers']}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    text = render(results, size_mb, largest, total, args)
    # startup.py's and check_speed.py's sections (between their markers) are kept as they are.
    old = args.out.read_text() if args.out.exists() else ""
    for name in ("startup", "check"):
        start, end = old.find(f"<!-- {name}-benchmark:start -->"), old.find(f"<!-- {name}-benchmark:end -->")
        if start >= 0 and end > start:
            text = text.rstrip() + "\n\n" + old[start:end + len(f"<!-- {name}-benchmark:end -->")] + "\n"
    args.out.write_text(text)
    print(text)
    return 0


def render(r: dict, size_mb: float, largest: float, total: float, args) -> str:
    cp, cps = r["cp"]["wall"], r["cp+sync"]["wall"]
    cp16, cps16 = r["cp f16"]["wall"], r["cp+sync f16"]["wall"]
    ref_tps = N_TOKENS / r["reference"]["forward"]
    hf_tps = N_TOKENS / r["transformers"]["forward"]

    def ok(cond: bool) -> str:
        return "met" if cond else "**missed**"

    rows = []
    for outtype in ("f16", "q8_0"):
        c = r[f"convert {outtype}"]
        rows.append(f"| convert → {outtype} | {c['wall']:.2f} s | cp + sync {cps:.2f} s | **{c['wall'] / cps:.2f}x** | "
                    f"≤ 3x | {ok(c['wall'] <= 3 * cps)} | {c['wall'] / cp:.1f}x plain cp ({cp:.2f} s) |")
        rows.append(f"| convert → {outtype}: peak RSS | {c['rss_mb']:.0f} MB | largest tensor {largest:.0f} MiB "
                    f"+ 150 MB | **{c['rss_mb'] / (largest + 150):.2f}x** | ≤ 1x | {ok(c['rss_mb'] <= largest + 150)} | |")
    k, f16b, kb = r["convert q4_k_m"], r["f16 bytes"] / 1e6, r["q4_k_m bytes"] / 1e6
    rows.append(f"| convert → Q4_K_M (llama.cpp's quantizer) | {k['wall']:.2f} s | convert → f16 "
                f"{r['convert f16']['wall']:.2f} s | {k['wall'] / r['convert f16']['wall']:.1f}x | | | peak RSS "
                f"{k['rss_mb']:.0f} MB; extra disk at the peak: the f16 intermediate {f16b:.0f} MB + the output "
                f"{kb:.0f} MB |")
    i, d = r["inspect"]["wall"], r["gguf-dump"]["wall"]
    rows.append(f"| inspect (150k vocab) | {i:.3f} s | gguf-dump --no-tensors {d:.2f} s | **{i / d:.3f}x** | ≤ 0.1x | "
                f"{ok(i <= 0.1 * d)} | --json: {r['inspect --json']['wall']:.3f} s |")
    s, nm = r["set-rope"]["wall"], r["gguf-new-metadata"]["wall"]
    rows.append(f"| set-rope (f16 file) | {s:.2f} s | cp + sync {cps16:.2f} s | **{s / cps16:.2f}x** | ≤ 2x | "
                f"{ok(s <= 2 * cps16)} | {s / cp16:.1f}x plain cp ({cp16:.2f} s); "
                f"{s / nm:.2f}x gguf-new-metadata ({nm:.2f} s) |")
    rows.append(f"| reference forward, {N_TOKENS} tokens | {ref_tps:.0f} tok/s | transformers {hf_tps:.0f} tok/s | "
                f"**{ref_tps / hf_tps:.2f}x** | ≥ 0.5x | {ok(ref_tps >= 0.5 * hf_tps)} | "
                f"max |Δlogit| {r['forward max abs diff']:.1e} of {r['forward max abs logit']:.2f} |")
    detail = [f"| {name} | {v['wall']:.3f} | {', '.join(f'{w:.3f}' for w in v['walls'])} | {v['rss_mb']:.0f} |"
              for name, v in r.items() if isinstance(v, dict) and "walls" in v]
    return f"""# Benchmarks

Generated by `python benchmarks/run.py` ({total:.0f} s for the whole run) on {datetime.date.today().isoformat()}.
Machine: {machine()}.

Each command runs as a user runs it: a fresh process (interpreter start-up and imports included), median
of {args.repeat} timed runs after an untimed one (page cache warm), `sync` before each run (no dirty pages
from the previous one).  The checkpoint is `benchmarks/make_checkpoint.py --layers {args.layers}`
({size_mb:.0f} MB of float32, SmolLM-135M's shapes, random weights); making it is not timed.

| what | ropetool | baseline | ratio | target | | also |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

## Raw timings

| command | median s | runs (s) | peak RSS MB |
|---|---|---|---|
{chr(10).join(detail)}

Peak RSS of a child counts the ~15 MB of the launching interpreter (Linux carries the parent's resident
size into the child's maximum at fork/exec), which is why `cp` shows 15 MB.  The rows marked
"diagnostic" run the same command with `os.fsync` made a no-op (to show what the durable write costs;
ropetool itself always fsyncs) or with gguf-py's Q8_0 quantizer in place of ropetool's.

Reference forward: load {r['reference']['load']:.2f} s, forward {r['reference']['forward']:.3f} s; transformers:
load {r['transformers']['load']:.2f} s, forward {r['transformers']['forward']:.3f} s (torch threads: default).

{NOTES.format(**notes_values(r))}"""


def notes_values(r: dict) -> dict:
    conv, nof = r["convert f16"]["wall"], r["convert f16, fsync skipped (diagnostic)"]["wall"]
    startup = r["python -c 'import ropetool.cli, ropetool.convert, ropetool.edit' (start-up)"]["wall"]
    cp, cps, sr = r["cp"]["wall"], r["cp+sync"]["wall"], r["set-rope"]["wall"]
    q8, q8_py = r["convert q8_0"]["wall"], r["convert q8_0, gguf-py's quantizer (diagnostic)"]["wall"]
    sr_nofsync = r["set-rope, fsync skipped (diagnostic)"]["wall"]
    cp16 = r["cp f16"]["wall"]
    return dict(rss=r["convert f16"]["rss_mb"], conv=conv, startup=startup, work=nof - startup, fsync=conv - nof,
                nofsync=nof, ratio=conv / cp, q8=q8, q8_py=q8_py, q8_py_ratio=q8_py / cps, q8_cp=q8 / cp, sr=sr,
                sr_fsync=sr - sr_nofsync, sr_nm=r["gguf-new-metadata"]["wall"] / sr, sr_cp=sr / cp16, cp16=cp16,
                startup_cp16=startup / cp16, budget=3 * cp, fixed=startup + conv - nof, budget_sr=2 * cp16,
                sr_fixed=startup + sr - sr_nofsync)

NOTES = """## The copy floor is a durable copy

convert and set-rope write to a temporary file, **fsync** it, and only then rename it over the target:
after a crash or a power cut the target is the old file or the complete new one, never a zero-length or
partial one.  `cp` returns as soon as its copy is in the page cache; the disk writes it later.  The floor
for "copying the same bytes" with the same guarantee is therefore `cp` followed by `sync FILE` (which
fsyncs that one file), and the targets above are taken against it.  Against plain `cp` the ratios are
convert → f16 {ratio:.1f}x, → q8_0 {q8_cp:.1f}x and set-rope {sr_cp:.1f}x.  3x plain `cp` would leave convert
{budget:.2f} s for everything, of which the interpreter's start-up ({startup:.2f} s) and the fsync of its 326 MB
({fsync:.2f} s) take {fixed:.2f} s; 2x plain `cp` of the f16 file would leave set-rope {budget_sr:.2f} s, of which
the start-up and its fsync take {sr_fixed:.2f} s.  Plain `cp` is reported beside every row.

On bigger models the page cache hides less of the disk from `cp`: docs/benchmarks-at-scale.md
(`python benchmarks/at_scale.py`) times convert and set-rope on a 6.6 GB checkpoint against plain `cp`
and the durable copy side by side.

## Where the time goes, and what changed

**convert** took 2.2 s (f16) and 2.3 s (q8_0) with a 222 MB peak on this checkpoint before this work.
Profiled (cProfile, then timing each phase): numpy's float32 → float16 cast, a scalar software loop
here (about 3.4 ns per value), 0.57 s; gguf-py's `write_tensor_data` (`tofile` of whole tensors) 0.46 s;
gguf-py packing the 49k-token vocabulary value by value 0.40 s; gguf-py's Q8_0 quantizer (a dozen
passes and a Python loop per 16 rows, about 8 ns per value) 1.3 s; page faults on the memory-mapped
input and on fresh whole-tensor output arrays.  Now:

- the header (vocabulary included) is packed by ropetool, with fast paths for big string and number
  arrays (0.02 s), in gguf-py's exact layout;
- tensors are converted a run of rows (~1 MB of float32) at a time into reused per-thread buffers and
  written with `pwrite` at their final offset, by a small thread pool (two threads on this 2-core VM);
- float32 → float16 is numpy's cast and BF16 is gguf-py's quantizer; Q8_0 is gguf-py's algorithm
  (ggml's `quantize_row_q8_0_ref`) written out in place in those buffers (`ropetool/encode.py`), whose
  bytes tests/test_encode.py checks against `gguf.quants.quantize` (random rows at four scales, exact
  halves, zeros, subnormals, scales beyond float16, and 200 hypothesis arrays of any finite float32).
  With gguf-py's own quantizer (diagnostic row) convert → q8_0 takes {q8_py:.2f} s ({q8_py_ratio:.2f}x the
  durable copy) instead of {q8:.2f} s;
- tensors kept in their source type (f32 → f32, f16 → f16) are copied by the kernel (`copy_file_range`).

Every output is byte-identical to gguf-py's GGUFWriter with gguf-py's quantizers (tests/test_convert.py:
fixtures in f32/f16/bf16/q8_0, rope tensors, sharded input).  Peak memory fell from 222 MB to {rss:.0f} MB.

What remains of convert → f16 ({conv:.2f} s): {startup:.2f} s of interpreter start-up and imports (numpy,
gguf-py, click: `python -c 'import ropetool.cli, ropetool.convert, ropetool.edit'`), then planning (config, safetensors header,
tokenizer: ~0.07 s) and converting and writing ({work:.2f} s together: 163 M values, reading 651 MB and
writing 326 MB through the page cache), and {fsync:.2f} s of fsync before the atomic rename, the disk
writing the 326 MB (the diagnostic row without it: {nofsync:.2f} s).  Starting the disk writes early
(`posix_fadvise(DONTNEED)` after each run of rows) was tried: on this VM it moved the time into the
conversion rather than hiding it.

**set-rope** ({sr:.2f} s) rewrites the header and copies the whole tensor data section with one
`copy_file_range` (in the kernel, ~0.14 s for 326 MB); the rest is the interpreter start-up ({startup:.2f} s,
alone {startup_cp16:.1f}x `cp` of this file, {cp16:.2f} s) and the fsync ({sr_fsync:.2f} s).  It is {sr_nm:.1f}x faster
than gguf-new-metadata, which reads and writes every tensor through Python.

**inspect** reads only the header and walks string arrays by their length prefixes without decoding
them (the start-up is most of its time); gguf-dump builds every field of the 150k-entry arrays.

**reference forward**: the numpy reference (float32 matmuls through numpy's BLAS) on the f32 GGUF
against transformers (torch, float32, CPU) on the safetensors checkpoint, same 256 tokens.
"""


if __name__ == "__main__":
    sys.exit(main())
