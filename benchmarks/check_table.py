"""Run `ropetool check` over every fixture architecture and every method llama.cpp can express.

    python benchmarks/check_table.py [--device cpu|gpu] [--outtype f32] [--out FILE.md]

Prints (and writes) a markdown table: llama.cpp vs the numpy reference, and the negative control.
The matrix is the one tests/test_check.py asserts on.
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
        "| fixture | method | weights | device | max abs diff | relative | top-1 | KL mean | control effect | control / diff | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, method in MATRIX:
            path = Path(tmp) / f"{name}-{method}.gguf"
            convert(ROOT / "fixtures" / "models" / name, path, outtype=args.outtype, **LLAMA_METHODS[method])
            t0 = time.perf_counter()
            r = check_gguf(path, device=args.device)
            m, c = r.llama_vs_reference, r.control_effect
            failures += r.verdict != "pass"
            rows.append(
                f"| {name} | {method} ({r.method}) | {r.weight_type} | {r.device} | {m.max_abs_diff:.2e} | {m.rel_error:.2e} "
                f"| {m.top1_agreement:.0%} | {m.kl_mean:.1e} | {c.rel_error:.2e} | {c.rel_error / max(m.rel_error, 1e-12):,.0f}x "
                f"| {r.verdict} |"
            )
            print(rows[-1], f"({time.perf_counter() - t0:.1f} s)", flush=True)
    table = "\n".join(rows) + "\n"
    if args.out:
        args.out.write_text(table)
    print(table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
