#!/usr/bin/env python
"""Peak memory of converting a mixture of experts: experts are written one slice at a time into their stack.

    python benchmarks/moe_memory.py [--keep DIR]

Writes a Mixtral-shaped checkpoint of about 0.6 GB (float32 safetensors, a shard per layer; random
weights, the tokenizer of fixtures/models/mixtral), converts it to f16 and to q8_0 with ``ropetool
convert`` in a fresh process each, and reports each run's peak resident set against the sizes that
matter: one expert matrix (what the writer holds at a time, at most a run of rows of it), one stacked
expert tensor (what a writer that stacks in memory would hold) and the whole model.  The launching
interpreter's ~15 MB count in the child's peak (Linux carries it over at fork/exec).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "models" / "mixtral"
SIZES = dict(hidden_size=1024, intermediate_size=2816, num_local_experts=8, num_experts_per_tok=2, num_hidden_layers=2,
             num_attention_heads=16, num_key_value_heads=4)


def make_checkpoint(out: Path) -> dict:
    out.mkdir(parents=True)
    config = json.loads((FIXTURE / "config.json").read_text())
    config.update(SIZES, head_dim=None, dtype="float32")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (FIXTURE / name).exists():
            shutil.copy(FIXTURE / name, out / name)
    rng = np.random.default_rng(0)
    e, f, v = SIZES["hidden_size"], SIZES["intermediate_size"], config["vocab_size"]
    kv = e // SIZES["num_attention_heads"] * SIZES["num_key_value_heads"]

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    weight_map = {}
    shards = [{"model.embed_tokens.weight": w(v, e), "model.norm.weight": np.ones(e, np.float32), "lm_head.weight": w(v, e)}]
    for il in range(SIZES["num_hidden_layers"]):
        p = f"model.layers.{il}."
        layer = {p + "input_layernorm.weight": np.ones(e, np.float32), p + "post_attention_layernorm.weight": np.ones(e, np.float32),
                 p + "self_attn.q_proj.weight": w(e, e), p + "self_attn.k_proj.weight": w(kv, e),
                 p + "self_attn.v_proj.weight": w(kv, e), p + "self_attn.o_proj.weight": w(e, e),
                 p + "block_sparse_moe.gate.weight": w(SIZES["num_local_experts"], e)}
        for x in range(SIZES["num_local_experts"]):
            q = f"{p}block_sparse_moe.experts.{x}."
            layer.update({q + "w1.weight": w(f, e), q + "w2.weight": w(e, f), q + "w3.weight": w(f, e)})
        shards.append(layer)
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, out / name)
        weight_map.update({k: name for k in shard})
        del shard
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return {"expert_matrix_mb": f * e * 4 / 2**20, "stacked_mb": SIZES["num_local_experts"] * f * e * 4 / 2**20,
            "model_mb": sum(p.stat().st_size for p in out.glob("*.safetensors")) / 2**20}


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def main(make=None, name: str = "mixtral-big", stacked: str = "one stacked expert tensor", script: str = __file__) -> None:
    """Make the checkpoint (``make`` writes it into a folder and returns its sizes) in a child process, then
    measure convert's peak RSS on it to f16 and q8_0 against the interpreter's start-up."""
    make = make or make_checkpoint
    parser = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)  # internal: write the checkpoint, print its sizes
    args = parser.parse_args()
    if args.make:
        print(json.dumps(make(args.make)))
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="ropetool-memory-"))
    try:
        # Made in a child: a child's peak RSS starts from its parent's at fork, so this process stays small.
        shutil.rmtree(work / name, ignore_errors=True)
        made = subprocess.run([sys.executable, script, "--make", str(work / name)], capture_output=True,
                              text=True, check=True)
        sizes = json.loads(made.stdout)
        print(f"checkpoint {sizes['model_mb']:.0f} MiB; one expert matrix {sizes['expert_matrix_mb']:.1f} MiB; "
              f"{stacked} {sizes['stacked_mb']:.1f} MiB")
        base, _ = peak_rss([sys.executable, "-c", "import ropetool.cli, ropetool.convert, ropetool.io.vocab"])
        print(f"start-up (interpreter and imports): peak RSS {base:.0f} MiB")
        for outtype in ("f16", "q8_0"):
            out = work / f"{name}-{outtype}.gguf"
            rss, wall = peak_rss([sys.executable, "-m", "ropetool", "convert", str(work / name), "-o", str(out),
                                  "--outtype", outtype, "--force"])
            extra = rss - base
            print(f"convert -> {outtype}: peak RSS {rss:.0f} MiB, {extra:.0f} MiB above start-up "
                  f"({extra / sizes['expert_matrix_mb']:.1f} expert matrices, {extra / sizes['stacked_mb']:.2f} stacked "
                  f"tensors, {extra / sizes['model_mb']:.3f} of the model), {wall:.1f} s, output "
                  f"{out.stat().st_size / 2**20:.0f} MiB")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
