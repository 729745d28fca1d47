"""The plan of a Hugging Face folder's conversion to GGUF: everything the file will hold, decided up front.

Read config.json and the safetensors headers (io/checkpoint.py); pick the model family (families.py);
resolve the rope method from config.json or the caller (rope/); lower it to GGUF keys and tensors
(llamacpp/lowering.py); plan every output tensor (name, type, shape, and how to produce it) and check the
shapes against config.json.  :mod:`ropetool.convert` writes a plan; the numpy reference runs one without
writing it (``ReferenceModel.from_hf``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from ropetool.errors import RopetoolError
from ropetool.families import Dims, Family, config_value, family_for_config
from ropetool.io.checkpoint import Checkpoint, TensorRef, load_tensor, open_checkpoint
from ropetool.io.gguf_file import (
    NewValue,
)
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.lowering import Lowered, check_options, lower_for_llama_cpp, provenance
from ropetool.llamacpp.quantize import FILE_TYPES as QUANTIZED_TYPES
from ropetool.llamacpp.validity import check_new_values
from ropetool.model import trained_context
from ropetool.rope import RopeParams, kept_parameters, make_params, rope_from_hf_config
from ropetool.rope.hf import CONTEXT_KEYS
from ropetool.rope.rotate import section_rows
from ropetool.version import __version__

OUTTYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}  # written by ropetool itself
# Every --outtype: auto (f16, or bf16 from a bf16 checkpoint), ropetool's own, and llama.cpp's quantizer's.
FILE_TYPES = {
    Q.F32: gguf.LlamaFileType.ALL_F32,
    Q.F16: gguf.LlamaFileType.MOSTLY_F16,
    Q.BF16: gguf.LlamaFileType.MOSTLY_BF16,
    Q.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
}
ALL_OUTTYPES = ("auto", *OUTTYPES, *QUANTIZED_TYPES)
# HF tensors that carry nothing llama.cpp needs.
SKIP_SUFFIXES = (".rotary_emb.inv_freq", ".attn.masked_bias", ".attn.bias")


@dataclass(frozen=True)
class Hparams:
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    head_dim: int
    eps: float
    vocab_size: int
    trained_context: int
    tied: bool
    context_from_config: bool = True  # False: trained_context is the family's default (see Family.default_context)
    n_expert: int = 0  # mixture of experts (0: dense)
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_ff_shexp: int = 0
    n_dense_lead: int = 0  # leading layers with a dense feed-forward before the mixture (deepseek2)
    moe_step: int = 1  # layer il is a mixture when (il + 1) % moe_step == 0 (llama4's interleave_moe_layer_step)
    # Family.global_heads (gemma4): the sliding layers' head size (head_dim is then the global layers'), the global
    # layers' key/value heads, and which layers slide (config.json's layer_types).
    head_dim_swa: int = 0
    n_head_kv_global: int = 0
    swa_layers: tuple[int, ...] = ()
    # Multi-head latent attention (Family.mla): the value head, the low ranks, the rotated part of each head.
    head_dim_v: int | None = None
    n_lora_q: int = 0
    n_lora_kv: int = 0
    head_dim_rope: int = 0
    # Hybrid models (Family.recurrent_tensors): the layers without attention, and the recurrent blocks' sizes (Dims).
    recurrent: tuple[int, ...] = ()
    n_lin_k_heads: int = 0
    n_lin_v_heads: int = 0
    lin_head_k: int = 0
    lin_head_v: int = 0
    conv_kernel: int = 0

    @classmethod
    def from_config(cls, config: dict, family: Family) -> "Hparams":
        def need(*names, default=None):
            for n in names:
                if config.get(n) is not None:
                    return n, config[n]
            if default is not None:
                return names[0], default
            raise RopetoolError(f"config.json lacks {names[0]}")

        def count(*names, default=None, key=None) -> int:
            name, v = need(*names, default=default)
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise RopetoolError(f"config.json: {name} must be a positive integer, got {v!r}")
            if key is not None:  # what the GGUF key it becomes can hold (checked before anything is sized by it)
                K.check_range(key, v, f"config.json: {name}")
            return v

        n_embd = count("hidden_size", "n_embed", "n_embd", "d_model", key=K.EMBEDDING_LENGTH)
        n_head = count("num_attention_heads", "n_head", "n_heads", key=K.HEAD_COUNT)
        head_dim = count("head_dim", key=K.KEY_LENGTH) if config.get("head_dim") else n_embd // n_head
        if head_dim < 1:
            raise RopetoolError(f"config.json: hidden_size {n_embd} is smaller than num_attention_heads {n_head}")
        eps_name, eps = need(family.hf_eps_key, "rms_norm_eps", "layer_norm_epsilon", "layer_norm_eps")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps >= 0):
            raise RopetoolError(f"config.json: {eps_name} must be a finite number >= 0, got {eps!r}")
        K.check_range(family.eps_key, eps, f"config.json: {eps_name}")
        tied = config.get("tie_word_embeddings", family.tied_default)
        if not isinstance(tied, bool):
            raise RopetoolError(f"config.json: tie_word_embeddings must be true or false, got {tied!r}")
        n_ff = count("intermediate_size", "ffn_hidden_size", default=4 * n_embd, key=K.FEED_FORWARD_LENGTH)
        n_ff = ffn_width(config, family, n_ff)
        experts = _experts(config, family, n_ff, count)
        if config.get("multi_query") and not config.get("new_decoder_architecture"):
            n_head_kv = 1  # Falcon-7B's multi-query attention (transformers' FalconAttention)
        else:
            n_head_kv = count("num_key_value_heads", "num_kv_heads", "n_head", "n_heads", "num_attention_heads",
                              key=K.HEAD_COUNT_KV)
        if n_head % n_head_kv:
            raise RopetoolError(f"config.json: {n_head} attention heads cannot share {n_head_kv} key/value heads evenly")
        heads = _global_heads(config, family, head_dim, n_head_kv, n_head, count) if family.global_heads else {}
        if heads:
            head_dim = heads.pop("head_dim")
        context_names = (*CONTEXT_KEYS, *family.context_keys)
        default_context = family.default_context[0] if family.default_context else 2048
        mla = {}
        if family.mla:  # llama.cpp's MQA view of MLA: one key/value head, the latent as its key and value
            if config.get("q_lora_rank") is None:
                raise RopetoolError("config.json: q_lora_rank is null (queries without a low rank, DeepSeek V2 Lite's "
                                    "layout): ropetool converts DeepSeek V3's")
            rope_dim = count("qk_rope_head_dim", key=K.ROPE_DIMENSION_COUNT)
            head_dim = count("qk_nope_head_dim") + rope_dim
            K.check_range(K.KEY_LENGTH_MLA, head_dim, "config.json: qk_nope_head_dim + qk_rope_head_dim")
            n_head_kv = 1
            mla = {"head_dim_v": count("v_head_dim", key=K.VALUE_LENGTH_MLA),
                   "n_lora_q": count("q_lora_rank", key=K.Q_LORA_RANK),
                   "n_lora_kv": count("kv_lora_rank", key=K.KV_LORA_RANK), "head_dim_rope": rope_dim}
        return cls(
            n_embd=n_embd,
            n_layer=count("num_hidden_layers", "n_layer", "n_layers", key=K.BLOCK_COUNT),
            n_head=n_head,
            n_head_kv=n_head_kv,
            n_ff=n_ff,
            head_dim=head_dim,
            eps=float(eps),
            vocab_size=count("vocab_size", key=K.VOCAB_SIZE),
            trained_context=count(*context_names, default=default_context, key=K.CONTEXT_LENGTH),
            context_from_config=any(config.get(n) is not None for n in context_names),
            tied=tied,
            **experts,
            **mla,
            **heads,
            **_hybrid(config, family, count),
        )

    @property
    def dims_global(self) -> Dims:
        """The sizes of the global layers' tensors (gemma4's own head size and key/value heads; else :attr:`dims`)."""
        from dataclasses import replace

        return replace(self.dims, head_dim=self.head_dim, n_head_kv=self.n_head_kv_global or self.n_head_kv)

    @property
    def dims(self) -> Dims:
        """The sizes the tensors follow (of the sliding layers, where gemma4's global layers differ)."""
        return Dims(self.n_embd, self.n_head, self.n_head_kv, self.head_dim_swa or self.head_dim, self.n_ff, self.vocab_size,
                    head_dim_v=self.head_dim_v, n_expert=self.n_expert, n_ff_exp=self.n_ff_exp, n_ff_shexp=self.n_ff_shexp,
                    n_lora_q=self.n_lora_q, n_lora_kv=self.n_lora_kv, head_dim_rope=self.head_dim_rope,
                    n_lin_k_heads=self.n_lin_k_heads, n_lin_v_heads=self.n_lin_v_heads, lin_head_k=self.lin_head_k,
                    lin_head_v=self.lin_head_v, conv_kernel=self.conv_kernel)


def _experts(config: dict, family: Family, n_ff: int, count) -> dict:
    """A mixture of experts' sizes from config.json (an empty dict for a dense model), refusing what
    llama.cpp's graph for the family would compute differently."""
    names = ("num_local_experts", "num_experts", "n_routed_experts")
    if not any(config.get(n) for n in names):
        if family.moe == "always":
            raise RopetoolError(f"config.json: a {family.arch} model needs num_experts")
        return {}
    if family.moe is None:
        raise RopetoolError(f"config.json describes a mixture of experts, which llama.cpp's {family.arch} does not run")
    n_expert = count(*names, key=K.EXPERT_COUNT)
    used = count("num_experts_per_tok", key=K.EXPERT_USED_COUNT)
    if used > n_expert:
        raise RopetoolError(f"config.json: num_experts_per_tok {used} is more than the {n_expert} experts")
    # Mixtral's config.json has no norm_topk_prob (it always renormalises): absent means so for the family that
    # takes experts optionally (llama); the others' configs say it.
    norm_topk = config.get("norm_topk_prob", True if family.moe == "optional" else None)
    if norm_topk is not None and family.moe_norm_topk is not None and bool(norm_topk) != family.moe_norm_topk:
        raise RopetoolError(f"config.json: norm_topk_prob is {bool(norm_topk)}, but llama.cpp's {family.arch} graph "
                            f"{'always' if family.moe_norm_topk else 'never'} renormalises the chosen experts' weights: "
                            "it would compute another model")
    dense = config.get("mlp_only_layers") or []  # (leading dense layers, the family's dense_lead_key, are allowed)
    step = config.get("decoder_sparse_step", 1)
    if dense or step not in (1, None):
        raise RopetoolError(f"config.json: dense layers among the experts (mlp_only_layers {dense}, decoder_sparse_step "
                            f"{step}): llama.cpp's {family.arch} makes every layer a mixture of experts")
    out = {"n_expert": n_expert, "n_expert_used": used,
           "n_ff_exp": count("moe_intermediate_size", default=n_ff, key=K.EXPERT_FEED_FORWARD_LENGTH)}
    if family.shared_expert:
        out["n_ff_shexp"] = count("shared_expert_intermediate_size", default=n_ff, key=K.EXPERT_SHARED_FEED_FORWARD_LENGTH)
    if family.shared_experts:  # llama4: one ungated shared expert as wide as an expert, hard-coded
        out["n_ff_shexp"] = out["n_ff_exp"] * family.shared_experts
    if family.moe_step_key:
        step = config.get(family.moe_step_key, 1)
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise RopetoolError(f"config.json: {family.moe_step_key} must be a positive integer, got {step!r}")
        K.check_range(K.INTERLEAVE_MOE_LAYER_STEP, step, f"config.json: {family.moe_step_key}")
        out["moe_step"] = step
    if family.shared_experts_key:  # ungated shared experts, each as wide as an expert, summed into one (deepseek2)
        shared = config.get(family.shared_experts_key) or 0
        if isinstance(shared, bool) or not isinstance(shared, int) or shared < 0:
            raise RopetoolError(f"config.json: {family.shared_experts_key} must be a count, got {shared!r}")
        out["n_ff_shexp"] = out["n_ff_exp"] * shared
        if not shared:
            raise RopetoolError(f"config.json: {family.shared_experts_key} is 0, but llama.cpp's {family.arch} loader "
                                "requires the shared expert's tensors")
    if family.dense_lead_key:
        lead = config.get(family.dense_lead_key) or 0
        if isinstance(lead, bool) or not isinstance(lead, int) or lead < 0:
            raise RopetoolError(f"config.json: {family.dense_lead_key} must be a count, got {lead!r}")
        out["n_dense_lead"] = lead
    return out


# -- hybrid models (issue 25) ----------------------------------------------------------------------------------

def text_model_config(config: dict, family: Family) -> dict:
    """config.json as the family reads it: where the text model is nested under ``text_config`` (Family.text_config:
    Qwen 3.5's released checkpoints), its values over the top level's, as llama.cpp's converter merges them; the
    names older releases use (Family.config_aliases) where the field is absent."""
    nested = config.get("text_config")
    if family.text_config and isinstance(nested, dict):
        config = {**config, **nested}
    for alias, name in family.config_aliases:
        if config.get(name) is None and config.get(alias) is not None:
            config = {**config, name: config[alias]}
    for source, destination in family.config_moves:  # llama4: as llama.cpp's converter renames them
        if source in config:
            config = {**config, destination: config[source]}
    return config


def ffn_width(config: dict, family: Family, n_ff: int) -> int:
    """The feed-forward's width as the model's class derives it from config.json (Family.ffn_dim_rule): LFM2's
    Lfm2MLP takes 2/3 of intermediate_size, times block_ffn_dim_multiplier, rounded up to block_multiple_of (the
    multiplier and the rounding only with a multiplier), when block_auto_adjust_ff_dim."""
    if family.ffn_dim_rule != "lfm2" or not config.get("block_auto_adjust_ff_dim", True):
        return n_ff
    width = int(2 * n_ff / 3)
    multiplier, multiple = config.get("block_ffn_dim_multiplier", 1.0), config.get("block_multiple_of", 256)
    if multiplier is not None:
        if (isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or not multiplier > 0
                or isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1):
            raise RopetoolError(f"config.json: block_ffn_dim_multiplier {multiplier!r} and block_multiple_of "
                                f"{multiple!r} must be a positive number and a positive integer")
        width = int(multiplier * width)
        width = multiple * ((width + multiple - 1) // multiple)
    if width < 1:
        raise RopetoolError(f"config.json: intermediate_size {n_ff} gives a feed-forward of width {width}")
    K.check_range(K.FEED_FORWARD_LENGTH, width, "config.json: the feed-forward width")
    return width


def _layer_types(config: dict, family: Family, n_layer: int) -> tuple[int, ...]:
    """A hybrid model's layers without attention, from config.json's layer_types (else transformers' default for
    the class: every full_attention_interval-th layer attends, 4 without it)."""
    types = config.get("layer_types")
    if types is None and family.short_conv:  # transformers' Lfm2Config: full_attn_idxs, else every layer attends
        idxs = config.get("full_attn_idxs")
        idxs = range(n_layer) if idxs is None else idxs
        if not isinstance(idxs, (list, range)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idxs):
            raise RopetoolError(f"config.json: full_attn_idxs must list layer numbers, got {json.dumps(idxs)[:120]}")
        types = ["full_attention" if il in set(idxs) else "conv" for il in range(n_layer)]
    if types is None and family.linear_attention:
        interval = config.get("full_attention_interval", 4)
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise RopetoolError(f"config.json: full_attention_interval must be a positive integer, got {interval!r}")
        types = ["linear_attention" if (il + 1) % interval else "full_attention" for il in range(n_layer)]
    if not isinstance(types, list) or len(types) != n_layer or not all(isinstance(t, str) for t in types):
        raise RopetoolError(f"config.json: layer_types must list the kind of each of the {n_layer} layers, got "
                            f"{json.dumps(types)[:120]}")
    recurrent = {"linear_attention"} if family.linear_attention else {"conv"}
    unknown = sorted(set(types) - recurrent - {"full_attention"})
    if unknown:
        raise RopetoolError(f"config.json: layer_types holds {', '.join(map(repr, unknown))}; llama.cpp's {family.arch} "
                            "has full_attention and " + ("linear_attention" if family.linear_attention else "conv") + " layers")
    if all(t in recurrent for t in types):
        raise RopetoolError(f"config.json: layer_types has no full_attention layer; llama.cpp's {family.arch} needs one")
    return tuple(il for il, t in enumerate(types) if t in recurrent)


def _global_heads(config: dict, family: Family, head_dim: int, n_head_kv: int, n_head: int, count) -> dict:
    """Gemma 4's layer kinds from config.json (Family.global_heads): which layers slide (layer_types), the sliding
    layers' head size (head_dim) and the global layers' head size and key/value heads, as transformers' Gemma4TextConfig
    takes them: per_layer_config's overrides of a layer (its index a string in config.json), else global_head_dim
    (512 by default) and, where attention_k_eq_v, num_global_key_value_heads.  llama.cpp holds one head size per kind
    (key_length, key_length_swa) and key/value heads per layer."""
    n_layer = count("num_hidden_layers", key=K.BLOCK_COUNT)
    types = config.get("layer_types")
    if types is None:  # transformers' default: five sliding layers, then a global one
        types = ["sliding_attention" if (il + 1) % 6 else "full_attention" for il in range(n_layer)]
    if (not isinstance(types, list) or len(types) != n_layer
            or not set(types) <= {"sliding_attention", "full_attention"}):
        raise RopetoolError(f"config.json: layer_types must list sliding_attention or full_attention for each of the "
                            f"{n_layer} layers, got {json.dumps(types)[:120]}")
    swa = tuple(il for il, t in enumerate(types) if t == "sliding_attention")
    if not swa or len(swa) == n_layer:
        raise RopetoolError(f"config.json: layer_types must hold both sliding_attention and full_attention layers for "
                            f"llama.cpp's {family.arch}")
    per_layer = config.get("per_layer_config")
    if per_layer is None:
        kv = config.get("num_global_key_value_heads") if config.get("attention_k_eq_v", True) else None
        per_layer = {str(il): {"head_dim": config.get("global_head_dim", 512), **({"num_key_value_heads": kv} if kv else {})}
                     for il in range(n_layer) if il not in swa}
    if not isinstance(per_layer, dict) or not all(isinstance(v, dict) for v in per_layer.values()):
        raise RopetoolError("config.json: per_layer_config must map layer numbers to their overrides")
    sizes: dict[int, tuple[int, int]] = {}
    for il in range(n_layer):
        over = per_layer.get(str(il), per_layer.get(il, {}))
        unknown = sorted(set(over) - {"head_dim", "num_key_value_heads"})
        if unknown:
            raise RopetoolError(f"config.json: per_layer_config overrides {', '.join(unknown)} of layer {il}; llama.cpp's "
                                f"{family.arch} takes only a head size per kind of layer and key/value heads per layer")
        hd, kv = over.get("head_dim", head_dim), over.get("num_key_value_heads", n_head_kv)
        for name, v in (("head_dim", hd), ("num_key_value_heads", kv)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise RopetoolError(f"config.json: layer {il}'s {name} must be a positive integer, got {v!r}")
        if n_head % kv:
            raise RopetoolError(f"config.json: layer {il}: {n_head} attention heads cannot share {kv} key/value heads evenly")
        sizes[il] = (hd, kv)
    for kind, layers in (("sliding", [il for il in swa]), ("global", [il for il in range(n_layer) if il not in swa])):
        if len({sizes[il] for il in layers}) > 1:
            raise RopetoolError(f"config.json: the {kind} layers differ in head size or key/value heads; llama.cpp's "
                                f"{family.arch} takes one of each per kind of layer")
    global_hd, global_kv = sizes[next(il for il in range(n_layer) if il not in swa)]
    swa_hd, swa_kv = sizes[swa[0]]
    K.check_range(K.KEY_LENGTH, global_hd, "config.json: the global layers' head_dim")
    K.check_range(K.KEY_LENGTH_SWA, swa_hd, "config.json: head_dim")
    if swa_kv != n_head_kv:
        raise RopetoolError("config.json: per_layer_config overrides the sliding layers' num_key_value_heads")
    return {"head_dim": global_hd, "head_dim_swa": swa_hd, "n_head_kv_global": global_kv, "swa_layers": swa}


def sliding_rotary_dim(config: dict, head_dim_swa: int) -> int:
    """The sliding layers' rotated dims: their head times rope_parameters.sliding_attention's partial_rotary_factor (1
    by default), as llama.cpp's converter writes rope.dimension_count_swa."""
    params = config.get("rope_parameters")
    local = params.get("sliding_attention") if isinstance(params, dict) else None
    prf = local.get("partial_rotary_factor", 1.0) if isinstance(local, dict) else 1.0
    if isinstance(prf, bool) or not isinstance(prf, (int, float)) or not 0 < prf <= 1:
        raise RopetoolError(f"config.json: the sliding layers' partial_rotary_factor must be a number in (0, 1], got {prf!r}")
    n_rot = int(head_dim_swa * prf)
    K.check_range(K.ROPE_DIMENSION_COUNT_SWA, n_rot, "config.json: the sliding layers' rotated dims")
    return n_rot


def _hybrid(config: dict, family: Family, count) -> dict:
    """A hybrid model's recurrent layers and their sizes from config.json (an empty dict for other families)."""
    if not (family.linear_attention or family.short_conv):
        return {}
    n_layer = count("num_hidden_layers", key=K.BLOCK_COUNT)
    out: dict = {"recurrent": _layer_types(config, family, n_layer)}
    if family.short_conv:
        out["conv_kernel"] = count("conv_L_cache", default=3, key=K.SHORTCONV_L_CACHE)
    if family.linear_attention:
        out.update(n_lin_k_heads=count("linear_num_key_heads", key=K.SSM_GROUP_COUNT),
                   n_lin_v_heads=count("linear_num_value_heads", key=K.SSM_TIME_STEP_RANK),
                   lin_head_k=count("linear_key_head_dim", key=K.SSM_STATE_SIZE),
                   lin_head_v=count("linear_value_head_dim"), conv_kernel=count("linear_conv_kernel_dim",
                                                                                key=K.SSM_CONV_KERNEL))
        if out["lin_head_k"] != out["lin_head_v"]:
            raise RopetoolError(f"config.json: linear_key_head_dim {out['lin_head_k']} and linear_value_head_dim "
                                f"{out['lin_head_v']} differ, but llama.cpp's {family.arch} sizes both by ssm.state_size")
        if out["n_lin_v_heads"] % out["n_lin_k_heads"]:
            raise RopetoolError(f"config.json: {out['n_lin_v_heads']} linear value heads cannot share "
                                f"{out['n_lin_k_heads']} key heads evenly")
    return out


def hybrid_values(config: dict, family: Family, hp: "Hparams", rotary_dim: int) -> list[tuple[str, object]]:
    """The keys of a hybrid model's recurrent layers and multi-section rope (llama.cpp's converter writes the same:
    conversion/qwen.py's Qwen3NextModel and _Qwen35MRopeMixin)."""
    values: list[tuple[str, object]] = []
    if family.linear_attention:
        values += [(K.SSM_CONV_KERNEL, hp.conv_kernel), (K.SSM_STATE_SIZE, hp.lin_head_k),
                   (K.SSM_GROUP_COUNT, hp.n_lin_k_heads), (K.SSM_TIME_STEP_RANK, hp.n_lin_v_heads),
                   (K.SSM_INNER_SIZE, hp.lin_head_v * hp.n_lin_v_heads)]
        recurrent = set(hp.recurrent)
        values.append((K.RECURRENT_LAYERS, [il in recurrent for il in range(hp.n_layer)]))
        interval = config.get("full_attention_interval", 4)
        values.append((K.FULL_ATTENTION_INTERVAL, interval if isinstance(interval, int) and interval > 0 else 4))
    if family.loader.rope_type in ("mrope", "imrope"):
        values.append((K.ROPE_DIMENSION_SECTIONS, mrope_sections(config, family, rotary_dim)))
    return values


QWEN35_DEFAULT_SECTIONS = [11, 11, 10]  # transformers' Qwen3_5TextRotaryEmbedding and llama.cpp's converter default


def mrope_sections(config: dict, family: Family, rotary_dim: int) -> list[int]:
    """rope.dimension_sections from config.json's rope_parameters.mrope_section ([t, h, w] pairs, the 4th 0), refused
    where ggml's multi-section rope would leave a pair at the 4th position, which llama.cpp sets to 0 for text:
    transformers rotates every pair by the token's position (its t, h and w positions are equal for text)."""
    params = config.get("rope_parameters") if isinstance(config.get("rope_parameters"), dict) else {}
    given = params.get("mrope_section", config.get("mrope_section", QWEN35_DEFAULT_SECTIONS))
    if (not isinstance(given, list) or not 1 <= len(given) <= K.MROPE_SECTIONS - 1
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in given) or not any(given)):
        raise RopetoolError(f"config.json: mrope_section must list up to 3 section sizes (pairs), got {json.dumps(given)}")
    sections = list(given) + [0] * (K.MROPE_SECTIONS - len(given))
    pairs = rotary_dim // 2
    rows = section_rows(pairs, sections, family.loader.rope_type == "imrope")
    unrotated = [i for i in range(pairs) if rows[i] == K.MROPE_SECTIONS - 1]
    if unrotated:
        raise RopetoolError(f"config.json: mrope_section {given} leaves pairs {unrotated[0]}..{unrotated[-1]} of the "
                            f"{pairs} rotated pairs in llama.cpp's 4th section, which it holds at position 0 for text: "
                            f"those pairs would not rotate (transformers rotates them by the token's position)")
    return sections


def check_family_config(config: dict, family: Family) -> None:
    """Refuse a config.json that asks for what llama.cpp's graph for the family does not compute."""
    for path, want, why, *default in family.requires:
        want = want(config) if callable(want) else want
        got = config_value(config, path, default[0] if default else want)
        if got != want:
            raise RopetoolError(f"config.json: {path} is {json.dumps(got)}, but {why}")
    n_layer = config.get("num_hidden_layers")
    step = config.get(family.moe_step_key, 1) if family.moe_step_key else None
    if family.hf_moe_layers and isinstance(n_layer, int) and 0 < n_layer <= K.MAX_LAYERS and isinstance(step, int) \
            and not isinstance(step, bool) and step > 0:
        layers = config.get(family.hf_moe_layers)
        want = [il for il in range(n_layer) if (il + 1) % step == 0]
        if layers is not None and layers != want:
            raise RopetoolError(f"config.json: {family.hf_moe_layers} is {json.dumps(layers)[:120]}, but llama.cpp's "
                                f"{family.arch} makes layer il a mixture exactly when (il + 1) % {family.moe_step_key} "
                                f"({step}) == 0: layers {want}")
    key, n_layer = family.hf_no_rope_layers, config.get("num_hidden_layers")
    if key and isinstance(n_layer, int) and 0 < n_layer <= K.MAX_LAYERS:
        flags = config.get(key)
        if flags is None:  # transformers: a no-rope layer every no_rope_layer_interval layers (default 4)
            interval = config.get("no_rope_layer_interval", 4)
            flags = [int((il + 1) % interval != 0) for il in range(n_layer)] if isinstance(interval, int) and interval > 0 \
                else interval
        unroped = family.loader.no_rope_layers(n_layer)
        want = [il not in unroped for il in range(n_layer)]
        if (not isinstance(flags, list) or len(flags) < n_layer or any(f not in (0, 1) for f in flags)
                or [bool(f) for f in flags[:n_layer]] != want):
            raise RopetoolError(f"config.json: {key} is {json.dumps(flags)[:120]}, but llama.cpp's {family.arch} graph "
                                f"applies no rope exactly in layers {', '.join(map(str, unroped)) or '(none)'} (every "
                                f"{family.loader.no_rope_step}th): it would compute another model")


def family_values(config: dict, family: Family, hp: Hparams, rope: RopeParams, rotary_dim: int = 0) -> list[NewValue]:
    """The keys a family writes beyond the common ones (soft-caps, sliding-window layers), after checking that
    config.json asks for nothing llama.cpp's graph for the family computes otherwise."""
    a = family.arch
    values: list[tuple[str, object]] = []
    for template, path, default in family.config_keys:
        value = config_value(config, path, default) if path is not None else default  # no path: a fixed value
        if value is not None:
            if template in K.RANGES:
                K.check_range(template, value, f"config.json: {path}")
            values.append((template, value))
    if family.query_scale_layers is not None:
        want = hp.n_embd // hp.n_head if hp.n_layer in family.query_scale_layers else hp.head_dim
        qpas = config.get("query_pre_attn_scalar", want)
        if qpas != want:
            raise RopetoolError(f"config.json: query_pre_attn_scalar is {qpas}, but llama.cpp's {a} scales queries by "
                                f"1/sqrt({want}) for this model (it does not read the key)")
    if family.ffn == "geglu":
        act = config.get("hidden_activation") or config.get("hidden_act") or "gelu_pytorch_tanh"
        if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
            raise RopetoolError(f"config.json: hidden_activation {act!r}, but llama.cpp's {a} uses tanh-approximated GELU")
    if config.get("use_bidirectional_attention") not in (None, False, "vision"):  # "vision": text tokens stay causal
        raise RopetoolError(f"config.json: use_bidirectional_attention is set; llama.cpp's {a} is causal")
    if family.softcaps is not None:
        caps = {K.ATTN_LOGIT_SOFTCAPPING: "attn_logit_softcapping", K.FINAL_LOGIT_SOFTCAPPING: "final_logit_softcapping"}
        for template, name in caps.items():
            cap = config.get(name)
            if family.softcaps == "final" and template == K.ATTN_LOGIT_SOFTCAPPING:
                continue  # neither transformers nor llama.cpp caps this family's attention scores
            if cap is None and family.softcaps == "always":
                raise RopetoolError(f"config.json: {name} is null, but llama.cpp's {a} always soft-caps (50 and 30 "
                                    "without the keys)")
            if cap is not None:
                K.check_range(template, cap, f"config.json: {name}")
                values.append((template, float(cap)))
    sliding = family.loader.sliding
    if sliding is not None:
        window = config.get(sliding.hf_window)
        types = config.get("layer_types")
        if window:
            K.check_range(K.SLIDING_WINDOW, window, f"config.json: {sliding.hf_window}")
            if sliding.window_fixed is None:  # llama4's chunk is hard-coded (its requires say so): no key
                values.append((K.SLIDING_WINDOW, int(window)))
            default = [il % sliding.period < sliding.period - 1 for il in range(hp.n_layer)]
            if hp.swa_layers or sliding.pattern_required:  # gemma4: the pattern always, as the loader requires
                values.append((K.SLIDING_WINDOW_PATTERN, [il in set(hp.swa_layers) for il in range(hp.n_layer)]))
            elif isinstance(types, list) and [t == sliding.hf_layer_type for t in types] != default:
                if len(types) != hp.n_layer:
                    raise RopetoolError(f"config.json: layer_types has {len(types)} entries for {hp.n_layer} layers")
                values.append((K.SLIDING_WINDOW_PATTERN, [t == sliding.hf_layer_type for t in types]))
            if hp.head_dim_swa:  # gemma4: the sliding layers' own head size and rotated dims
                values += [(K.KEY_LENGTH_SWA, hp.head_dim_swa), (K.VALUE_LENGTH_SWA, hp.head_dim_swa),
                           (K.ROPE_DIMENSION_COUNT_SWA, sliding_rotary_dim(config, hp.head_dim_swa))]
            local = sliding_base(config, rope)
            if sliding.base_default is not None or local != rope.base:  # gemma2: the global base unless told
                values.append((K.ROPE_FREQ_BASE_SWA, local))
        elif sliding.window_default is not None:
            raise RopetoolError(f"config.json: no sliding_window, but llama.cpp's {a} always slides ({sliding.window_default})")
        elif K.SLIDING_WINDOW in family.required_keys:
            raise RopetoolError(f"config.json: no sliding_window, which llama.cpp's {a} loader requires")
    values += hybrid_values(config, family, hp, rotary_dim)
    out = []
    for template, value in values:
        if isinstance(value, list):
            sub = K.T.INT32 if value and not isinstance(value[0], bool) else K.T.BOOL
            out.append(NewValue(K.k(template, a), K.T.ARRAY, value, sub))
        else:
            vtype = K.TYPES.get(template, K.T.FLOAT32)
            out.append(NewValue(K.k(template, a), vtype, bool(value) if vtype == K.T.BOOL else value))
    return out


def sliding_base(config: dict, rope: RopeParams) -> float:
    """The rope base of the sliding-window layers: transformers 5's rope_parameters["sliding_attention"], the
    4.x ``rope_local_base_freq``, else the global base; a scaled rope there is refused (llama.cpp never
    scales those layers' rope on gemma3, and scales them as the global layers on gemma2)."""
    params = config.get("rope_parameters")
    local = params.get("sliding_attention") if isinstance(params, dict) else None
    if isinstance(local, dict):
        kind = local.get("rope_type") or local.get("type") or "default"
        if kind != "default":
            raise RopetoolError(f"config.json: the sliding-window layers' rope is {kind!r}; llama.cpp gives them only a base")
        base = local.get("rope_theta", 10000.0)
    else:
        base = config.get("rope_local_base_freq", rope.base)
    K.check_range(K.ROPE_FREQ_BASE_SWA, base, "config.json: the sliding layers' rope_theta")
    return float(base)


def check_rope_config(config: dict) -> None:
    """The config.json numbers the rope readers (rope/hf.py) convert without checking."""
    prf = config.get("partial_rotary_factor", config.get("rotary_pct"))
    if isinstance(config.get("rope_parameters"), dict):
        prf = config["rope_parameters"].get("partial_rotary_factor", prf)
    if prf is not None and (isinstance(prf, bool) or not isinstance(prf, (int, float))
                            or not (math.isfinite(prf) and 0 < prf <= 1)):
        raise RopetoolError(f"config.json: partial_rotary_factor must be a number in (0, 1], got {prf!r}")


@dataclass
class PlannedTensor:
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order, after transforms
    qtype: Q
    source: list[TensorRef]  # HF tensor(s) it is made from (empty for generated ones)
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    data: np.ndarray | None = None  # generated tensors (rope_freqs, ...)
    rows_transform: Callable[[np.ndarray], np.ndarray] | None = None  # row by row (a run of rows at a time, streamed)
    # Each source (one expert's matrix) converted whole by it and written in order: a stack built one source at a
    # time (gpt-oss's experts: split and transposed), never the whole stack in memory.
    each: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return math.prod(self.shape) // block * size

    @property
    def streamed(self) -> bool:
        """Read from the checkpoint a run of rows at a time (no transform, not generated)."""
        return self.data is None and self.transform is None and self.each is None

    def whole(self) -> np.ndarray:
        """The tensor's values before conversion (float32 unless generated otherwise), all at once."""
        if self.data is not None:
            return self.data
        if self.each is not None:
            arr = np.stack([self.each(load_tensor(ref)) for ref in self.source])
        elif len(self.source) > 1:  # a stack of experts
            arr = np.stack([load_tensor(ref) for ref in self.source])
        else:  # a [1, n] gate becomes the vector llama.cpp loads; a transform may change the shape (gpt-oss's biases)
            arr = load_tensor(self.source[0])
            arr = arr if self.transform is not None else arr.reshape(self.shape)
        if self.rows_transform is not None:
            arr = self.rows_transform(arr)
        return self.transform(arr).reshape(self.shape) if self.transform is not None else arr


def rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    """A tensor as a 2-D array of rows (its last dimension), which every output type converts row-wise."""
    if len(shape) == 0:
        return 1, 1
    return math.prod(shape[:-1]), shape[-1]


@dataclass
class Plan:
    """Everything a conversion will write, computed before any byte is written."""

    source: Path
    family: Family
    hparams: Hparams
    rope: RopeParams
    rotary_dim: int
    lowered: Lowered
    outtype: Q
    values: list[NewValue] = field(default_factory=list)  # every key/value of the header, in order
    tensors: list[PlannedTensor] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    vocab: object | None = None
    quantize_to: str | None = None  # a llama.cpp file type (q4_k_m, ...): the plan is its f16/bf16 intermediate

    @property
    def arch(self) -> str:
        return self.family.arch

    @property
    def type_name(self) -> str:
        """The file type written, as model pages spell it: F16, BF16, Q8_0, Q4_K_M, ..."""
        return self.quantize_to.upper() if self.quantize_to else self.outtype.name

    @property
    def n_params(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def describe(self) -> dict:
        """The plan as plain data (for --dry-run and --json)."""
        return {
            "source": str(self.source),
            "architecture": self.arch,
            "outtype": self.type_name,
            **({"intermediate": self.outtype.name} if self.quantize_to else {}),
            "rope": self.rope.as_dict(),
            "exact": self.lowered.exact,
            "notes": self.lowered.notes,
            "warnings": self.lowered.warnings,
            "context_length": self.lowered.context_length,
            "keys": {v.key: _plain(v.value) for v in self.values if not v.key.startswith("tokenizer.")},
            "tensors": [
                # the shape in ggml's order, as inspect shows it
                {"name": t.name, "type": t.qtype.name, "shape": list(reversed(t.shape)), "bytes": t.nbytes}
                for t in self.tensors
            ],
            "skipped": self.skipped,
            "total_bytes": self.total_bytes,
        }


def _plain(value):
    if isinstance(value, (list, tuple)):
        return f"[{len(value)} items]"
    return value


def rope_for(config: dict, family: Family, method: str | None, hp: Hparams, **options) -> tuple[RopeParams, int, int]:
    """The rope method to embed: config.json's, or the caller's ``method`` with ``options``; with the rotated dims and
    the pairs at the end of each head that stay unrotated (transformers' proportional rope: gemma4's global layers)."""
    max_bias = config_value(config, family.hf_alibi_bias) if family.hf_alibi_bias else None
    if family.global_heads:  # gemma4: the global layers' rope, over their own head
        config = {**config, "head_dim": hp.head_dim}
    hf = rope_from_hf_config(config, alibi=family.alibi_at(hp.n_layer), max_bias=max_bias)
    if method is None:
        params = hf.params
        changes = {k: v for k, v in options.items() if v is not None}
        if changes:  # e.g. --target-context for a config's dynamic rope
            params = make_params(params.method, **{**params.values(), **changes})
        return params, hf.rotary_dim, hf.unrotated_pairs
    check_options(method, options)
    values = dict(options)
    if values.get("base") is None and not hf.params.is_alibi:
        values["base"] = hf.params.base
    if values.get("original_context") is None:
        values["original_context"] = trained_context(hf.params.original_context, None, hp.trained_context)
    for name, value in kept_parameters(method, hf.params).items():  # DeepSeek's YaRN temperature, unless given
        if values.get(name) is None:
            values[name] = value
    return make_params(method, **values), hf.rotary_dim, hf.unrotated_pairs


def _shifted(shift: float, w: np.ndarray) -> np.ndarray:
    return (w + np.float32(shift)).astype(np.float32, copy=False)


def _permute(n_head: int) -> Callable[[np.ndarray], np.ndarray]:
    """llama.cpp's LlamaModel.permute: HF rotate_half rows -> interleaved (NORMAL) pairs."""

    def f(w: np.ndarray) -> np.ndarray:
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    return f


def _normalised_rows(w: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm, as torch.nn.functional.normalize (eps 1e-12) does: Baichuan 2's NormHead
    normalises its output matrix so when the model runs, and llama.cpp multiplies by the matrix as stored."""
    w = np.asarray(w, dtype=np.float32)
    norms = np.sqrt(np.sum(np.square(w, dtype=np.float64), axis=-1, keepdims=True))
    return (w / np.maximum(norms, 1e-12)).astype(np.float32)


def _grouped_qkv(n_head: int, n_head_kv: int) -> Callable[[np.ndarray], np.ndarray]:
    """A fused QKV stored per key/value group (the group's n_head / n_head_kv queries, its key, its value:
    BLOOM and GPT-NeoX with one query per group, Falcon with MQA or GQA) -> [q; k; v], as llama.cpp's
    converters reorder it (weights and biases alike)."""

    def f(w: np.ndarray) -> np.ndarray:
        per_group = n_head // n_head_kv
        head_dim = w.shape[0] // (n_head + 2 * n_head_kv)
        g = w.reshape(n_head_kv, per_group + 2, head_dim, *w.shape[1:])
        q = g[:, :per_group].reshape(n_head * head_dim, *w.shape[1:])
        k = g[:, per_group].reshape(n_head_kv * head_dim, *w.shape[1:])
        v = g[:, per_group + 1].reshape(n_head_kv * head_dim, *w.shape[1:])
        return np.concatenate([q, k, v])

    return f


# Experts' routers stay float32, as llama.cpp's converter and quantizer keep them; so do the recurrent layers'
# convolutions (conversion/base.py: SSM_CONV1D, SHORTCONV_CONV).
F32_KINDS = ("ffn_gate_inp", "ssm_conv1d", "shortconv.conv")


def _tensor_type(name: str, shape: tuple[int, ...], outtype: Q) -> Q:
    # 1-D tensors, rope tensors, routers, and anything not named .weight (a mixture's per-expert biases are 2-D) stay
    # float32, as llama.cpp's converter keeps them.
    parts = name.split(".")
    kind = ".".join(parts[2:-1]) if name.startswith("blk.") else parts[0]
    if (len(shape) == 1 or name.startswith("rope_") or outtype == Q.F32 or kind in F32_KINDS
            or not name.endswith(".weight")):
        return Q.F32
    if outtype == Q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] != 0:
        return Q.F16  # as llama.cpp's converter falls back
    return outtype


EXPERT_NAME = re.compile(r"^(?P<prefix>.*\.experts)\.(?P<index>\d+)\.(?P<rest>.+)$")


def _stacked_experts(ckpt: Checkpoint, hp: Hparams) -> Iterator[tuple[str, list[TensorRef]]]:
    """The checkpoint's tensors as (name, sources): one source each, except the experts of a mixture,
    which llama.cpp loads stacked (``...experts.3.w1.weight`` x n_expert -> ``...experts.w1.weight``,
    expert 0 first); llama.cpp's converter names the stack so, and gguf-py's name map knows that name."""
    groups: dict[str, dict[int, TensorRef]] = {}
    for hf_name, ref in ckpt.tensors.items():
        m = EXPERT_NAME.match(hf_name)
        if m is None:
            yield hf_name, [ref]
            continue
        groups.setdefault(f"{m['prefix']}.{m['rest']}", {})[int(m["index"])] = ref
    for name, by_index in groups.items():
        if sorted(by_index) != list(range(hp.n_expert)):
            raise RopetoolError(f"the checkpoint has experts {sorted(by_index)[:8]} of {name!r}, but config.json says "
                                f"{hp.n_expert} (0..{hp.n_expert - 1})")
        refs = [by_index[i] for i in range(hp.n_expert)]
        if len({(r.shape, r.dtype) for r in refs}) != 1:
            raise RopetoolError(f"the experts of {name!r} differ in shape or type")
        yield name, refs


LAYER_NAME = re.compile(r"^model\.layers\.(\d+)\.")


def _renamed(sources, renames: tuple[tuple[str, str], ...]) -> Iterator[tuple[str, list[TensorRef]]]:
    """Sources with the name endings ``renames`` replaced (DeepSeek V3's ``e_score_correction_bias`` is llama.cpp's
    ``exp_probs_b.bias``, as its converter renames it)."""
    for name, refs in sources:
        for old, new in renames:
            if name.endswith(old):
                name = name[: -len(old)] + new
                refs = [TensorRef(name, r.path, r.dtype, r.shape, r.start, r.end) for r in refs] if len(refs) == 1 else refs
        yield name, refs


def _split_kv_b(sources) -> Iterator[tuple[str, list[TensorRef]]]:
    """MLA's ``kv_b_proj`` [n_head x (qk_nope + v), kv_lora] as llama.cpp's converter splits it for the absorbed
    attention: ``k_b_proj`` and ``v_b_proj``, each the whole tensor, cut by :func:`_mla_kv_b`."""
    for name, refs in sources:
        if not name.endswith(".self_attn.kv_b_proj.weight"):
            yield name, refs
            continue
        ref = refs[0]
        for part in ("k_b_proj", "v_b_proj"):
            new = name.replace(".kv_b_proj.", f".{part}.")
            yield new, [TensorRef(new, ref.path, ref.dtype, ref.shape, ref.start, ref.end)]


def _mla_kv_b(kind: str, hp: Hparams, shape: tuple[int, ...]):
    """(transform, shape) of attn_k_b / attn_v_b from kv_b_proj: per head, the first qk_nope rows are the key's (their
    transpose, [kv_lora, qk_nope], is attn_k_b), the next v_head_dim the value's (attn_v_b, [v, kv_lora])."""
    nope, v, rank = hp.head_dim - hp.head_dim_rope, hp.head_dim_v, hp.n_lora_kv
    if shape != (hp.n_head * (nope + v), rank):
        raise RopetoolError(f"kv_b_proj has shape {list(shape)} but config.json implies {[hp.n_head * (nope + v), rank]}")
    if kind == "attn_k_b":
        return (lambda w: np.ascontiguousarray(w.reshape(hp.n_head, nope + v, rank)[:, :nope].transpose(0, 2, 1)),
                (hp.n_head, rank, nope))
    return lambda w: np.ascontiguousarray(w.reshape(hp.n_head, nope + v, rank)[:, nope:]), (hp.n_head, v, rank)


MXFP4_SUFFIXES = ("_blocks", "_scales")


def _gate_up_experts(ckpt: Checkpoint, hp: Hparams) -> Iterator[tuple[str, list[TensorRef]]]:
    """gpt-oss's experts (``experts_layout`` "gate-up-transposed") under the names of separate projections, as
    llama.cpp's converter splits them: ``experts.gate_up_proj`` [E, n_embd, 2 ff] as ``gate_proj.weight`` and
    ``up_proj.weight`` and ``experts.down_proj`` [E, ff, n_embd] as ``down_proj.weight``, each a list of the E experts'
    byte ranges (split and transposed one at a time: :func:`_experts_transform`); the biases (``..._bias``) as
    ``.bias`` tensors.  MXFP4 experts (``..._blocks`` and ``..._scales``, the released checkpoints) are refused."""
    for hf_name, refs in _stacked_experts(ckpt, hp):
        stem, _, leaf = hf_name.rpartition(".")
        if not stem.endswith(".experts"):
            yield hf_name, refs
            continue
        ref = refs[0]
        if leaf.endswith(MXFP4_SUFFIXES):
            raise RopetoolError(f"tensor {hf_name!r}: the experts are MXFP4 (..._blocks/_scales), which ropetool does not "
                                "convert (it writes f32/f16/bf16/q8_0 and would not dequantize them into a file about 4x the "
                                "checkpoint unasked): convert a BF16 release of the model")
        parts = {"gate_up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",),
                 "gate_up_proj_bias": ("gate_proj", "up_proj"), "down_proj_bias": ("down_proj",)}.get(leaf)
        if parts is None:
            yield hf_name, refs
            continue
        if leaf.endswith("_bias"):
            for part in parts:
                name = f"{stem}.{part}.bias"
                yield name, [TensorRef(name, ref.path, ref.dtype, ref.shape, ref.start, ref.end)]  # one tensor, not a stack
            continue
        if len(ref.shape) != 3 or ref.shape[0] != hp.n_expert:
            raise RopetoolError(f"tensor {hf_name!r} has shape {list(ref.shape)}, not [{hp.n_expert} experts, rows, cols]")
        size = ref.nbytes // ref.shape[0]
        experts = [TensorRef(f"{hf_name}[{e}]", ref.path, ref.dtype, ref.shape[1:], ref.start + e * size,
                             ref.start + (e + 1) * size) for e in range(ref.shape[0])]
        for part in parts:
            yield f"{stem}.{part}.weight", experts


def _experts_transform(kind: str, is_bias: bool, shape: tuple[int, ...], halves: bool = False):
    """(each, transform, shape): how one of :func:`_gate_up_experts`'s tensors becomes llama.cpp's: gate and up are the
    even and odd columns of gate_up (gpt-oss; llama.cpp's converter: ``[..., ::2]`` and ``[..., 1::2]``), or its first
    and second half (``halves``: llama4, whose converter splits the transposed gate_up at the middle), each expert's
    matrix transposed to [out, in]; the biases split the same way."""
    half = shape[-1] // 2
    gate, up = (slice(0, half), slice(half, None)) if halves else (slice(0, None, 2), slice(1, None, 2))
    cols = {"ffn_gate_exps": gate, "ffn_up_exps": up, "ffn_down_exps": slice(None)}[kind]
    if is_bias:
        return None, (lambda w: np.ascontiguousarray(w[..., cols])), (shape[0], len(range(shape[1])[cols]))
    return (lambda w: np.ascontiguousarray(w[:, cols].T)), None, (shape[0], len(range(shape[2])[cols]), shape[1])


def _split_fused(ckpt: Checkpoint, family: Family, hp: Hparams, expected: dict) -> Iterator[tuple[str, list[TensorRef]]]:
    """A fused [q; k; v] tensor (``family.fused_qkv``, qkv_layout "split-concat") as three tensors named as the
    separate projections (``...q_proj.weight`` ...), each the byte range of its rows, as llama.cpp's converter
    splits Baichuan's W_pack: nothing is read here, and each part streams on its own."""
    suffix = f".{family.fused_qkv}.weight"
    for hf_name, refs in _stacked_experts(ckpt, hp):
        ref = refs[0]
        if len(refs) != 1 or not hf_name.endswith(suffix):
            yield hf_name, refs
            continue
        want = expected["attn_qkv"]
        if tuple(ref.shape) != want:
            raise RopetoolError(f"tensor {hf_name!r} has shape {list(ref.shape)} but config.json implies {list(want)} "
                                "(q, k and v stacked)")
        row_bytes = ref.nbytes // ref.shape[0]
        at = 0
        for part, kind in zip(("q_proj", "k_proj", "v_proj"), ("attn_q", "attn_k", "attn_v")):
            rows = expected[kind][0]
            name = f"{hf_name[: -len('.weight')].rsplit('.', 1)[0]}.{part}.weight"  # beside the fused one
            yield name, [TensorRef(name, ref.path, ref.dtype, (rows, ref.shape[1]), ref.start + at * row_bytes,
                                   ref.start + (at + rows) * row_bytes)]
            at += rows


def plan_tensors(ckpt: Checkpoint, family: Family, hp: Hparams, outtype: Q,
                 config: dict | None = None) -> tuple[list[PlannedTensor], list[str]]:
    name_map = gguf.get_tensor_name_map(family.model_arch, hp.n_layer)
    expected = family.tensor_shapes(hp.dims)
    expected_global = family.tensor_shapes(hp.dims_global) if hp.swa_layers else expected  # gemma4's global layers
    planned: list[PlannedTensor] = []
    skipped: list[str] = []
    sources = _split_fused(ckpt, family, hp, expected) if family.qkv_layout == "split-concat" else _stacked_experts(ckpt, hp)
    if family.experts_layout in ("gate-up-transposed", "gate-up-transposed-halves"):
        sources = _gate_up_experts(ckpt, hp)
    if family.experts_layout == "gate-up-stacked":
        sources = _gate_up_stacked(sources, hp)
    if family.stacked_prefix:  # lfm2moe: llama.cpp's converter names the stacked experts layers.N.feed_forward...
        old, new = family.stacked_prefix
        sources = ((new + n[len(old):] if len(r) > 1 and n.startswith(old) else n, r) for n, r in sources)
    if family.renames:
        sources = _renamed(sources, family.renames)
    if family.mla:
        sources = _split_kv_b(sources)
    if family.linear_attention == "qwen3next":
        sources = _split_qkvz(sources)
    mtp = config is not None and bool(config.get("num_nextn_predict_layers"))
    normhead = config is not None and family.normalised_output(config)
    for hf_name, refs in sources:
        ref = refs[0]
        if hf_name.endswith(SKIP_SUFFIXES):
            skipped.append(hf_name)
            continue
        if family.skip_prefixes and hf_name.startswith(family.skip_prefixes):  # a vision tower, MTP layers
            skipped.append(hf_name)
            continue
        prefix = family.strip_prefix
        lookup = hf_name[len(prefix):] if prefix and hf_name.startswith(prefix) else hf_name
        for old, new in family.hf_prefixes:
            if lookup.startswith(old):
                lookup = new + lookup[len(old):]
        layer = LAYER_NAME.match(lookup)
        if mtp and layer is not None and int(layer[1]) >= hp.n_layer:  # the multi-token-prediction modules, which
            skipped.append(hf_name)  # llama.cpp's converter leaves out too (num_nextn_predict_layers)
            continue
        name = name_map.get_name(lookup, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise RopetoolError(f"tensor {hf_name!r} is not part of a {family.arch} model as ropetool knows it")
        bare = name.startswith("blk.") and name.count(".") == 2 and name.split(".")[2] in family.bare_tensors
        if not name.endswith((".weight", ".bias")) and not bare:  # a bare parameter (gpt-oss's sinks) is a weight
            name += ".weight"
        parts = name.split(".")
        kind = (parts[2] if bare else ".".join(parts[2:-1])) if name.startswith("blk.") else parts[0]
        is_bias = name.endswith(".bias")
        stacked = hf_name not in ckpt.tensors and hf_name != ref.name  # a stack of experts (a split part is not)
        shape = (len(refs), *ref.shape) if stacked else tuple(ref.shape)
        if len(shape) == 2 and shape[0] == 1 and len(expected.get(kind, ())) == 1:
            shape = shape[1:]  # a [1, n] gate (qwen2moe's shared_expert_gate) that llama.cpp loads as a vector
        each = transform = None
        if family.mla and kind in ("attn_k_b", "attn_v_b"):
            transform, shape = _mla_kv_b(kind, hp, shape)
        if family.experts_layout in ("gate-up-transposed", "gate-up-transposed-halves") and kind in (
                "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"):
            if not stacked and not is_bias:
                raise RopetoolError(f"tensor {hf_name!r} is not one of {family.arch}'s stacked experts")
            each, transform, shape = _experts_transform(kind, is_bias, shape,
                                                        halves=family.experts_layout.endswith("halves"))
        if family.short_conv and kind == "shortconv.conv" and len(shape) == 3 and shape[1] == 1:
            shape = (shape[0], shape[2])  # [n_embd, 1, L] squeezed, as llama.cpp's converter does (the same bytes)
        if family.linear_attention and kind in LINEAR_ATTENTION_KINDS:
            transform, shape = _linear_attention(family.linear_attention, kind, hf_name, hp, shape)
        want = (expected_global if layer is not None and int(layer[1]) not in hp.swa_layers else expected).get(kind)
        if want is not None:
            want = want[:-1] if is_bias and len(want) > 1 else want  # a bias has one value per row (per expert)
            if shape != want:
                raise RopetoolError(
                    f"tensor {hf_name!r} has shape {list(shape)} but config.json implies {list(want)}"
                )
        if family.drops_output and name == "output.weight":
            if not hp.tied:
                raise RopetoolError(f"config.json: the output matrix is not tied to the embeddings, but llama.cpp's "
                                    f"{family.arch} always uses the embeddings (and refuses an output.weight)")
            skipped.append(hf_name)
            continue
        if family.norm_shift and name.endswith("norm.weight") and kind not in family.norm_shift_skip:
            transform = functools.partial(_shifted, family.norm_shift)  # stored as 1 + w, as llama.cpp's converter does
        if family.permute_qk and kind in ("attn_q", "attn_k"):
            transform = _permute(hp.n_head if kind == "attn_q" else hp.n_head_kv)
        if family.qkv_layout == "grouped" and kind == "attn_qkv":
            transform = _grouped_qkv(hp.n_head, hp.n_head_kv)
        rows = _normalised_rows if normhead and name == "output.weight" else None
        planned.append(PlannedTensor(name, shape, _tensor_type(name, shape, outtype), refs, transform, rows_transform=rows,
                                     each=each))
    names = {t.name for t in planned}
    if "output.weight" not in names and "token_embd.weight" in names and family.writes_tied_output:
        # llama.cpp's converter writes the tied output matrix explicitly (bloom).
        embd = next(t for t in planned if t.name == "token_embd.weight")
        planned.append(PlannedTensor("output.weight", embd.shape, embd.qtype, embd.source))
        names.add("output.weight")
    if "token_embd.weight" not in names:
        raise RopetoolError("the checkpoint has no token embedding tensor")
    if "output.weight" not in names and not hp.tied:
        raise RopetoolError("config.json says the output matrix is not tied to the embeddings "
                            "(tie_word_embeddings false), but the checkpoint has no lm_head.weight")
    missing = [n for n in family.required_tensors(hp.n_layer, experts=hp.n_expert > 0, dense_lead=hp.n_dense_lead,
                                                  recurrent=hp.recurrent, moe_step=hp.moe_step)
               if n not in names and n not in K.ROPE_TENSORS]  # (the lowering writes those)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise RopetoolError(f"the checkpoint lacks {', '.join(missing[:3])}{more}, which llama.cpp's {family.arch} "
                            "requires (by their GGUF names)")
    return planned, skipped


def _gate_up_stacked(sources, hp: Hparams) -> Iterator[tuple[str, list[TensorRef]]]:
    """Experts stored stacked (``experts_layout`` "gate-up-stacked": Qwen 3.5 / 3.6's released mixtures), under the
    names of the per-expert projections llama.cpp's converter makes of them: ``experts.gate_up_proj`` [E, 2 ff,
    n_embd] as ``gate_proj.weight`` (each expert's first ff rows) and ``up_proj.weight`` (the next ff), and
    ``experts.down_proj`` [E, n_embd, ff] as ``down_proj.weight``, each a list of the E experts' byte ranges: streamed
    one expert at a time, nothing read here (conversion/qwen.py, Qwen2MoeModel.modify_tensors).  The per-expert
    layout transformers saves passes through."""
    for name, refs in sources:
        stem, _, leaf = name.removesuffix(".weight").rpartition(".")
        if not stem.endswith(".experts") or leaf not in ("gate_up_proj", "down_proj") or len(refs) != 1:
            yield name, refs
            continue
        ref = refs[0]
        if len(ref.shape) != 3 or ref.shape[0] != hp.n_expert or (leaf == "gate_up_proj" and ref.shape[1] % 2):
            raise RopetoolError(f"tensor {name!r} has shape {list(ref.shape)}, not [{hp.n_expert} experts, rows, cols]"
                                + (" with gate and up rows" if leaf == "gate_up_proj" else ""))
        size = ref.nbytes // ref.shape[0]
        parts = (("gate_proj", 0), ("up_proj", size // 2)) if leaf == "gate_up_proj" else (("down_proj", 0),)
        rows = ref.shape[1] // len(parts)
        for part, at in parts:
            new = f"{stem}.{part}.weight"
            yield new, [TensorRef(f"{name}[{e}]", ref.path, ref.dtype, (rows, ref.shape[2]), ref.start + e * size + at,
                                  ref.start + e * size + at + size // len(parts)) for e in range(ref.shape[0])]


LINEAR_ATTENTION_KINDS = ("attn_qkv", "attn_gate", "ssm_beta", "ssm_alpha", "ssm_a", "ssm_dt", "ssm_conv1d", "ssm_out")


def _split_qkvz(sources) -> Iterator[tuple[str, list[TensorRef]]]:
    """Qwen3-Next's fused ``in_proj_qkvz`` as the two tensors llama.cpp's converter makes of it, ``in_proj_qkv`` and
    ``in_proj_z`` (each the whole tensor, cut by :func:`_linear_attention`)."""
    for name, refs in sources:
        if not name.endswith(".linear_attn.in_proj_qkvz.weight"):
            yield name, refs
            continue
        ref = refs[0]
        for part in ("in_proj_qkv", "in_proj_z"):
            new = name.replace(".in_proj_qkvz.", f".{part}.")
            yield new, [TensorRef(new, ref.path, ref.dtype, ref.shape, ref.start, ref.end)]


def _tiled(w: np.ndarray, n_k: int, per_k: int, size: int, axis: int = 0) -> np.ndarray:
    """Value heads (``size`` rows each along ``axis``) from grouped by key head ([k0: v0 .. v(r-1)], [k1: ...]) to tiled
    ([k0 v0, k1 v0, ...], [k0 v1, k1 v1, ...]), as llama.cpp's converter reorders them for ggml's broadcast
    (_LinearAttentionVReorderBase._reorder_v_heads)."""
    w = np.moveaxis(np.asarray(w, dtype=np.float32), axis, 0)
    shape = w.shape
    w = w.reshape(n_k, per_k, size, *shape[1:]).swapaxes(0, 1).reshape(shape)
    return np.ascontiguousarray(np.moveaxis(w, 0, axis))


def _linear_attention(layout: str, kind: str, hf_name: str, hp: Hparams, shape: tuple[int, ...]):
    """(transform, shape) of a Gated DeltaNet tensor as llama.cpp's converter writes it (conversion/qwen.py,
    Qwen3NextModel.modify_tensors and _LinearAttentionVReorderBase): A_log as -exp(A_log); the convolution [C, 1, K]
    squeezed to [C, K]; Qwen 3.5's value heads tiled where there are fewer key heads than value heads (the rows of
    the V part of in_proj_qkv and of the convolution, of in_proj_z, in_proj_a, in_proj_b, the entries of A_log and
    dt_bias, the columns of out_proj); Qwen3-Next's in_proj_qkvz split per key head into [q; k; v] and z."""
    nk, nv, dk, dv = hp.n_lin_k_heads, hp.n_lin_v_heads, hp.lin_head_k, hp.lin_head_v
    r, key = nv // nk, nk * dk
    tile = layout == "qwen35" and nk != nv

    def v_part(w: np.ndarray) -> np.ndarray:  # rows [q; k; v]: the v rows tiled
        return np.concatenate([w[:2 * key], _tiled(w[2 * key:], nk, r, dv)]) if tile else w

    if kind == "ssm_conv1d":
        if len(shape) == 3 and shape[1] == 1:
            shape = (shape[0], shape[2])  # the same bytes: streamed as they are unless the value heads move
        return ((lambda w: v_part(np.asarray(w, dtype=np.float32).reshape(shape))) if tile else None), shape
    if kind == "ssm_a":
        return (lambda w: -np.exp(_tiled(w, nk, r, 1) if tile else np.asarray(w, dtype=np.float32))), shape
    if layout == "qwen3next" and kind in ("attn_qkv", "attn_gate"):
        part = 2 * dk + 2 * r * dv
        if shape != (nk * part, hp.n_embd):
            raise RopetoolError(f"tensor {hf_name!r} has shape {list(shape)} but config.json implies "
                                f"{[nk * part, hp.n_embd]} (q, k, v and z per key head)")

        def cut(w: np.ndarray) -> np.ndarray:
            g = np.asarray(w, dtype=np.float32).reshape(nk, part, -1)
            if kind == "attn_gate":
                return g[:, 2 * dk + r * dv:].reshape(nk * r * dv, -1)
            return np.concatenate([g[:, :dk].reshape(key, -1), g[:, dk:2 * dk].reshape(key, -1),
                                   g[:, 2 * dk:2 * dk + r * dv].reshape(nk * r * dv, -1)])

        return cut, ((2 * key + nv * dv, hp.n_embd) if kind == "attn_qkv" else (nv * dv, hp.n_embd))
    if not tile:
        return None, shape
    if kind == "attn_qkv":
        return v_part, shape
    if kind == "attn_gate":
        return (lambda w: _tiled(w, nk, r, dv)), shape
    if kind in ("ssm_beta", "ssm_alpha", "ssm_dt"):
        return (lambda w: _tiled(w, nk, r, 1)), shape
    if kind == "ssm_out":
        return (lambda w: _tiled(w, nk, r, dv, axis=1)), shape
    return None, shape


def _hparam_values(family: Family, hp: Hparams, rotary_dim: int, context_length: int) -> list[NewValue]:
    a = family.arch
    values = [
        (K.CONTEXT_LENGTH, int(context_length)),
        (K.EMBEDDING_LENGTH, hp.n_embd),
        (K.BLOCK_COUNT, hp.n_layer),
        (K.FEED_FORWARD_LENGTH, hp.n_ff),
        (K.HEAD_COUNT, hp.n_head),
        (K.HEAD_COUNT_KV, hp.n_head_kv),
        (K.VOCAB_SIZE, hp.vocab_size),
        (family.eps_key, hp.eps),
    ]
    if family.mla:  # llama.cpp's MQA view (the latent and the rotated key as one head), and the decompressed sizes
        values += [(K.KEY_LENGTH, hp.n_lora_kv + hp.head_dim_rope), (K.VALUE_LENGTH, hp.n_lora_kv),
                   (K.KEY_LENGTH_MLA, hp.head_dim), (K.VALUE_LENGTH_MLA, hp.head_dim_v)]
    elif hp.head_dim != hp.n_embd // hp.n_head or family.writes_head_dim:
        values += [(K.KEY_LENGTH, hp.head_dim), (K.VALUE_LENGTH, hp.head_dim)]
    if hp.n_expert:
        values += [(K.EXPERT_COUNT, hp.n_expert), (K.EXPERT_USED_COUNT, hp.n_expert_used)]
        if family.moe == "always":  # llama's loader sizes experts by feed_forward_length, as Mixtral's config does
            values.append((K.EXPERT_FEED_FORWARD_LENGTH, hp.n_ff_exp))
        if family.shared_expert:
            values.append((K.EXPERT_SHARED_FEED_FORWARD_LENGTH, hp.n_ff_shexp))
    if family.loader.uses_rope(hp.n_layer):
        values.append((K.ROPE_DIMENSION_COUNT, rotary_dim))
    out = [NewValue(K.k(template, a), K.TYPES[template], value) for template, value in values]
    if hp.n_head_kv_global and hp.n_head_kv_global != hp.n_head_kv:  # gemma4: the global layers' own key/value heads
        kv = [hp.n_head_kv if il in set(hp.swa_layers) else hp.n_head_kv_global for il in range(hp.n_layer)]
        out = [NewValue(v.key, K.T.ARRAY, kv, K.T.INT32) if v.key == K.k(K.HEAD_COUNT_KV, a) else v for v in out]
    if family.short_conv:  # lfm2: a layer without attention has no key/value heads (llama.cpp's marker of it)
        kv = [0 if il in set(hp.recurrent) else hp.n_head_kv for il in range(hp.n_layer)]
        out = [NewValue(v.key, K.T.ARRAY, kv, K.T.INT32) if v.key == K.k(K.HEAD_COUNT_KV, a) else v for v in out]
    return out


def _model_name(name: str, vocab) -> str:
    """general.name; llama.cpp (llama-vocab.cpp) sets token attributes for any model whose name contains
    "phi3"/"phi-3" and aborts if "</s>", "<unk>", "<s>" or "<|endoftext|>" is missing from its vocabulary."""
    phi3_tokens = ("</s>", "<unk>", "<s>", "<|endoftext|>")
    lowered = name.lower()
    if vocab is not None and ("phi3" in lowered or "phi-3" in lowered):
        if not set(phi3_tokens) <= set(vocab.tokens):
            return lowered.replace("phi-3", "phi_3").replace("phi3", "phi_3")
    return name


def plan_conversion(
    model_dir: str | os.PathLike,
    outtype: str = "auto",
    method: str | None = None,
    approximate: bool = False,
    pre_tokenizer: str | None = None,
    with_vocab: bool = True,
    context_length: int | None = None,
    **rope_options,
) -> Plan:
    """Read a model folder and decide everything the GGUF will hold; raises RopetoolError on bad input.

    ``with_vocab=False`` skips the tokenizer (for callers that only want the tensors, like the reference).
    ``context_length``: the extended context to write (default: the lowering's, at least the trained one).
    """
    outtype = str(outtype).strip().lower()
    quantize_to = None
    if outtype in QUANTIZED_TYPES:  # llama.cpp's quantizer, from the auto (f16/bf16) conversion
        quantize_to, outtype = outtype, "auto"
    elif outtype != "auto" and outtype not in OUTTYPES:
        raise RopetoolError(f"unknown output type {outtype!r}; choose from {', '.join(ALL_OUTTYPES)}")
    ckpt = open_checkpoint(model_dir)
    family = family_for_config(ckpt.config)
    ckpt.config = text_model_config(ckpt.config, family)
    check_family_config(ckpt.config, family)
    hp = Hparams.from_config(ckpt.config, family)
    if family.positionless_at(hp.n_layer):  # baichuan: rope at 32 layers, ALiBi at 40, nothing otherwise
        loader, rules = family.loader, []
        if loader.rope_layer_counts:
            rules.append(f"rope only at {'/'.join(map(str, loader.rope_layer_counts))} layers")
        if loader.alibi_by_layers:
            rules.append(f"ALiBi only at {'/'.join(str(n) for n, _ in loader.alibi_by_layers)}")
        raise RopetoolError(f"config.json: {hp.n_layer} layers, but llama.cpp's {family.arch} graph applies "
                            f"{' and '.join(rules) or 'no position encoding'}: a {hp.n_layer}-layer model would run with "
                            "no position encoding at all (another model); ropetool does not convert it")
    qtype = (Q.BF16 if ckpt.source_dtype == "BF16" else Q.F16) if outtype == "auto" else OUTTYPES[outtype]

    check_rope_config(ckpt.config)
    rope, rotary_dim, unrotated = rope_for(ckpt.config, family, method, hp, **rope_options)
    lowered = lower_for_llama_cpp(rope, family.loader, rotary_dim, hp.n_head, hp.trained_context, approximate,
                                  n_layer=hp.n_layer, unrotated=unrotated)
    if not hp.context_from_config and family.default_context:
        lowered.notes.append(f"context_length {hp.trained_context}: {family.default_context[1]}")
    for key in ("torch_dtype", "dtype"):  # never read: the weights' own dtype decides; a malformed one is said
        declared = ckpt.config.get(key)
        if declared is not None and not isinstance(declared, str):
            lowered.warnings.append(f"config.json's {key} is {declared!r}, not a dtype name: ignored; the weights are "
                                    f"{ckpt.source_dtype} in the safetensors, written as {qtype.name}")
    tensors, skipped = plan_tensors(ckpt, family, hp, qtype, ckpt.config)
    for name, data in lowered.tensors.items():
        tensors.append(PlannedTensor(name, tuple(data.shape), Q.F32, [], data=data))

    vocab = None
    if with_vocab:
        from ropetool.io.vocab import load_vocab, vocab_records

        vocab = load_vocab(ckpt.path, vocab_size=hp.vocab_size, pre_tokenizer=pre_tokenizer)
    plan = Plan(ckpt.path, family, hp, rope, rotary_dim, lowered, qtype, tensors=tensors, skipped=skipped, vocab=vocab,
                quantize_to=quantize_to)
    context = max(lowered.context_length or hp.trained_context, hp.trained_context)
    if context_length is not None:
        K.check_range(K.CONTEXT_LENGTH, context_length, "the context")
        context = lowered.context_length = int(context_length)
    plan.values = [
        NewValue(K.ARCHITECTURE, K.T.STRING, family.arch),
        NewValue(K.NAME, K.T.STRING, _model_name(ckpt.path.name, vocab)),
        NewValue(K.FILE_TYPE, K.T.UINT32, int(FILE_TYPES[qtype])),
        *_hparam_values(family, hp, rotary_dim, context),
        *family_values(ckpt.config, family, hp, rope, rotary_dim),
        *lowered.values,
        *provenance(lowered, __version__),
    ]
    swa = [v for v in plan.values if v.key == K.k(K.ROPE_FREQ_BASE_SWA, family.arch)]
    if swa:  # the sliding-window layers' base, in ropetool's record (check tells a changed key from it)
        plan.values.append(NewValue(K.RT_SLIDING_BASE, K.TYPES[K.RT_SLIDING_BASE], swa[0].value))
    check_new_values(plan.values, family.arch)
    if vocab is not None:
        plan.values += vocab_records(vocab)
    return plan
