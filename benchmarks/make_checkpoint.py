"""Generate a ~0.5 GB f32 llama-shaped checkpoint (SmolLM-135M's shapes) for the benchmarks.

    python benchmarks/make_checkpoint.py OUT_DIR [--layers 30]

Random weights (numpy, seeded), written with safetensors; the tokenizer is the bundled llama
fixture's (config.json's larger vocab_size is padded by the converter, as for real models).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "models" / "llama"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, default=30)
    args = ap.parse_args()
    hidden, heads, kv_heads, ff, vocab = 576, 9, 3, 1536, 49152
    head_dim = hidden // heads
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    tensors = {"model.embed_tokens.weight": w(vocab, hidden), "model.norm.weight": np.ones(hidden, np.float32),
               "lm_head.weight": w(vocab, hidden)}
    for i in range(args.layers):
        p = f"model.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": np.ones(hidden, np.float32),
            p + "post_attention_layernorm.weight": np.ones(hidden, np.float32),
            p + "self_attn.q_proj.weight": w(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": w(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": w(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": w(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": w(ff, hidden),
            p + "mlp.up_proj.weight": w(ff, hidden),
            p + "mlp.down_proj.weight": w(hidden, ff),
        })
    save_file(tensors, str(args.out / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": ff, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "num_hidden_layers": args.layers, "vocab_size": vocab, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "hidden_act": "silu",
        "bos_token_id": 379, "eos_token_id": 380, "torch_dtype": "float32",
    }
    (args.out / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(FIXTURE / name, args.out / name)
    n = sum(t.size for t in tensors.values())
    print(f"wrote {args.out}: {n / 1e6:.1f}M parameters, {(args.out / 'model.safetensors').stat().st_size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
