"""inspect on a GGUF with a 150k-entry vocabulary, side by side with gguf-py's ``gguf-dump --no-tensors``.

Usage: python benchmarks/bench_inspect.py [--vocab 150000] [--repeat 5] [--keep FILE]

The file is generated here with gguf-py: 150k tokens, 150k merges, token types and scores, the
usual llama hyperparameter and rope keys, and a few tiny tensors.  Both tools are timed as a user
runs them (a fresh process each time, interpreter start-up and imports included), median of
``--repeat`` runs; the in-process times (ropetool's inspect_gguf against gguf.GGUFReader) follow.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_vocab_gguf(path: Path, n: int) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("bench-150k-vocab")
    w.add_context_length(131072)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(16)
    w.add_rope_freq_base(1e6)
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(4.0)
    w.add_rope_scaling_orig_ctx_len(32768)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzĠ"))
    tokens = ["".join(rng.choice(letters, size=1 + i % 9)) + str(i) for i in range(n)]
    w.add_token_list(tokens)
    w.add_token_types([1] * n)
    w.add_token_scores([0.0] * n)
    w.add_token_merges([f"{tokens[i]} {tokens[(i * 7) % n]}" for i in range(n)])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_tensor("token_embd.weight", np.zeros((8, 64), np.float32))
    w.add_tensor("output_norm.weight", np.ones(64, np.float32))
    w.add_tensor("output.weight", np.zeros((8, 64), np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def timed(cmd: list[str], repeat: int, env=None) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed_call(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=150_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="write the generated GGUF here and keep it")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-inspect-"))
    path = args.keep or tmp / "vocab.gguf"
    try:
        t0 = time.perf_counter()
        make_vocab_gguf(path, args.vocab)
        print(f"generated {path} ({path.stat().st_size / 1e6:.1f} MB, {args.vocab:,} tokens + merges) "
              f"in {time.perf_counter() - t0:.1f} s")

        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        ropetool = [sys.executable, "-c", "from ropetool.cli import main; main()"]
        dump = shutil.which("gguf-dump", path=str(Path(sys.executable).parent)) or shutil.which("gguf-dump")
        startup = timed([sys.executable, "-c", "import ropetool.cli, ropetool.inspect, ropetool.lint"], args.repeat, env)
        t_inspect = timed(ropetool + ["inspect", str(path)], args.repeat, env)
        t_json = timed(ropetool + ["inspect", "--json", str(path)], args.repeat, env)
        t_dump = timed([dump, "--no-tensors", str(path)], max(1, min(args.repeat, 3))) if dump else float("nan")

        from ropetool.inspect import inspect_gguf

        t_lib = timed_call(lambda: inspect_gguf(path), args.repeat)
        t_reader = timed_call(lambda: gguf.GGUFReader(path), max(1, min(args.repeat, 3)))

        print()
        print(f"{'command (fresh process, median of runs)':<48} {'wall s':>8}")
        print(f"{'ropetool inspect FILE':<48} {t_inspect:>8.3f}")
        print(f"{'ropetool inspect --json FILE':<48} {t_json:>8.3f}")
        print(f"{'gguf-dump --no-tensors FILE':<48} {t_dump:>8.3f}")
        label = "  (start-up: import ropetool.cli, .inspect, .lint)"
        print(f"{label:<48} {startup:>8.3f}")
        print()
        print(f"{'in-process':<48} {'wall s':>8}")
        print(f"{'ropetool.inspect.inspect_gguf(FILE)':<48} {t_lib:>8.3f}")
        print(f"{'gguf.GGUFReader(FILE)':<48} {t_reader:>8.3f}")
        print()
        print(f"ratio gguf-dump / ropetool inspect: {t_dump / t_inspect:.1f}x (fresh processes)")
        print(f"ratio GGUFReader / inspect_gguf:    {t_reader / t_lib:.1f}x (in-process)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
