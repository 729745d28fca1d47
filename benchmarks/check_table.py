"""Run `ropetool check` over every fixture architecture and every method llama.cpp can express.

    python benchmarks/check_table.py [--device cpu|gpu] [--outtype f32] [--out FILE.md]

Prints (and writes) a markdown table: llama.cpp against the meant setting, and the nearest alternative
(the one whose gap is the fewest standard errors).  The matrix is the one tests/test_check.py asserts on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_check import LLAMA_METHODS, MATRIX  # noqa: E402

from ropetool.check import check_gguf  # noqa: E402
from ropetool.convert import convert  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--outtype", default="f32")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = [
        "| fixture | method | weights | device | KL(llama.cpp, meant) | top-1 | alternatives | nearest alternative | gap / separation "
        "| standard errors | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, method in MATRIX:
            path = Path(tmp) / f"{name}-{method}.gguf"
            convert(ROOT / "fixtures" / "models" / name, path, outtype=args.outtype, **LLAMA_METHODS[method])
            t0 = time.perf_counter()
            r = check_gguf(path, device=args.device)
            m = r.llama_vs_meant
            near = min(r.alternatives, key=lambda a: a.gap / a.noise if a.noise else float("inf"))
            failures += r.verdict != "pass"
            rows.append(
                f"| {name} | {method} ({r.method}) | {r.weight_type} | {r.device} | {m.kl_mean:.1e} | {m.top1_agreement:.0%} "
                f"| {len(r.alternatives)} | {near.label} | {near.ratio:.3f} | {near.gap / near.noise:,.0f} | {r.verdict} |"
            )
            print(rows[-1], f"({time.perf_counter() - t0:.1f} s)", flush=True)
    table = "\n".join(rows) + "\n"
    if args.out:
        args.out.write_text(table)
    print(table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
