#!/usr/bin/env python
"""Peak memory of converting Qwen 3.5's mixture (qwen35moe) as released: stacked experts split one expert at a time.

    python benchmarks/hybrid_memory.py [--keep DIR]

Writes a qwen35moe checkpoint of about 0.5 GB in the released layout (Qwen3_5MoeForConditionalGeneration: config.json's
text model under text_config, tensors under model.language_model., each layer's experts stacked as mlp.experts.gate_up_proj
[E, 2 ff, n_embd] and mlp.experts.down_proj [E, n_embd, ff]; float32 safetensors, a shard per layer; random weights, the
tokenizer of fixtures/models/qwen35moe): one Gated DeltaNet layer with fewer key than value heads (its value heads
reordered on the way), one attention layer.  Converts it to f16 and to q8_0 with ``ropetool convert`` in a fresh process
each and reports each run's peak resident set against one expert matrix (what the writer holds at a time), one stacked
tensor as stored (gate_up_proj: what a writer that loads a tensor whole would hold) and the whole model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from moe_memory import main as measure
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "models" / "qwen35moe"
TEXT = dict(hidden_size=1024, num_hidden_layers=2, layer_types=["linear_attention", "full_attention"], num_attention_heads=8,
            num_key_value_heads=2, head_dim=128, linear_num_key_heads=4, linear_num_value_heads=8, linear_key_head_dim=128,
            linear_value_head_dim=128, linear_conv_kernel_dim=4, num_experts=8, num_experts_per_tok=2,
            moe_intermediate_size=2048, shared_expert_intermediate_size=2048)


def make_checkpoint(out: Path) -> dict:
    out.mkdir(parents=True)
    config = json.loads((FIXTURE / "config.json").read_text())
    config["text_config"].update(TEXT, dtype="float32")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(FIXTURE / name, out / name)
    rng = np.random.default_rng(0)
    t = config["text_config"]
    e, f, n_exp, v = t["hidden_size"], t["moe_intermediate_size"], t["num_experts"], t["vocab_size"]
    hd, nh, nkv = t["head_dim"], t["num_attention_heads"], t["num_key_value_heads"]
    nk, nv, dk = t["linear_num_key_heads"], t["linear_num_value_heads"], t["linear_key_head_dim"]
    key, value = nk * dk, nv * dk

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    ones = lambda n: np.zeros(n, np.float32)  # noqa: E731  (Qwen 3.5's norms hold w in 1 + w)
    weight_map = {}
    m = "model.language_model."
    shards = [{m + "embed_tokens.weight": w(v, e), m + "norm.weight": ones(e), "lm_head.weight": w(v, e)}]
    for il, kind in enumerate(t["layer_types"]):
        p = f"{m}layers.{il}."
        layer = {p + "input_layernorm.weight": ones(e), p + "post_attention_layernorm.weight": ones(e),
                 p + "mlp.gate.weight": w(n_exp, e), p + "mlp.experts.gate_up_proj": w(n_exp, 2 * f, e),
                 p + "mlp.experts.down_proj": w(n_exp, e, f), p + "mlp.shared_expert.gate_proj.weight": w(f, e),
                 p + "mlp.shared_expert.up_proj.weight": w(f, e), p + "mlp.shared_expert.down_proj.weight": w(e, f),
                 p + "mlp.shared_expert_gate.weight": w(1, e)}
        if kind == "full_attention":
            layer.update({p + "self_attn.q_proj.weight": w(2 * nh * hd, e), p + "self_attn.k_proj.weight": w(nkv * hd, e),
                          p + "self_attn.v_proj.weight": w(nkv * hd, e), p + "self_attn.o_proj.weight": w(e, nh * hd),
                          p + "self_attn.q_norm.weight": ones(hd), p + "self_attn.k_norm.weight": ones(hd)})
        else:
            q = p + "linear_attn."
            layer.update({q + "in_proj_qkv.weight": w(2 * key + value, e), q + "in_proj_z.weight": w(value, e),
                          q + "in_proj_a.weight": w(nv, e), q + "in_proj_b.weight": w(nv, e), q + "A_log": w(nv),
                          q + "dt_bias": w(nv), q + "conv1d.weight": w(2 * key + value, 1, 4), q + "norm.weight": ones(dk),
                          q + "out_proj.weight": w(e, value)})
        shards.append(layer)
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, out / name)
        weight_map.update({k: name for k in shard})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return {"expert_matrix_mb": f * e * 4 / 2**20, "stacked_mb": n_exp * 2 * f * e * 4 / 2**20,
            "model_mb": sum(p.stat().st_size for p in out.glob("*.safetensors")) / 2**20}


def main() -> None:
    measure(make_checkpoint, "qwen35moe-big", "one stacked gate_up_proj", __file__)


if __name__ == "__main__":
    main()
