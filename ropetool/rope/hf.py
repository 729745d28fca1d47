"""Read the position-encoding settings of a Hugging Face config.json, in both schemas.

transformers 4.x wrote a top-level ``rope_theta`` and ``rope_scaling: {type|rope_type, factor, ...}``;
transformers 5.x writes ``rope_parameters: {rope_type, rope_theta, ...}`` (nested per layer type for
some models).  Both appear on the hub.  The rules below follow transformers 5's
``standardize_rope_params`` and ``_compute_*_parameters``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ropetool.errors import RopetoolError
from ropetool.rope.methods import RopeParams, canonical_method, make_params, validate


@dataclass(frozen=True)
class HFRope:
    """The rope (or ALiBi) settings of a config.json: the method, its parameters and the rotary dims."""

    params: RopeParams
    head_dim: int
    rotary_dim: int  # 0 for ALiBi models
    # transformers' "proportional" rope (Gemma 4's global layers): the frequencies of a head_dim rope, the last pairs
    # of each head left unrotated (inv_freq 0: _compute_proportional_rope_parameters); rotary_dim is then the head
    unrotated_pairs: int = 0


def head_dim_of(config: dict) -> int:
    heads = config.get("num_attention_heads") or config.get("n_head") or config.get("n_heads")
    hidden = config.get("hidden_size") or config.get("n_embed") or config.get("n_embd") or config.get("d_model")
    head_dim = config.get("head_dim")
    if head_dim:
        return int(head_dim)
    if not heads or not hidden:
        raise RopetoolError("config.json lacks num_attention_heads/hidden_size (cannot derive head_dim)")
    return int(hidden) // int(heads)


def _rope_dict(config: dict) -> tuple[dict, str]:
    params = config.get("rope_parameters")
    if isinstance(params, dict) and params:
        if isinstance(params.get("full_attention"), dict):
            params = params["full_attention"]
        return dict(params), "rope_parameters"
    scaling = config.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise RopetoolError(f"config.json rope_scaling must be an object, got {type(scaling).__name__}")
    if scaling:
        return dict(scaling), "rope_scaling"
    return {}, "plain"


# The config.json keys that give the trained context, in the order they are read (a family may add its own).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "seq_length", "max_seq_len")


def rope_from_hf_config(config: dict, alibi: bool = False, max_bias: float | None = None) -> HFRope:
    """The method and parameters a config.json asks for, as transformers reads them.

    ``alibi``: the model's family uses ALiBi instead of rotary embeddings (config.json's ``alibi`` flag,
    as Falcon's, says so too); ``max_bias``: its max_bias where config.json gives one (MPT's alibi_bias_max)."""
    max_pos = next((config[k] for k in CONTEXT_KEYS if config.get(k)), None)
    if alibi or config.get("alibi") is True:
        params = make_params("alibi", **({"max_bias": max_bias} if max_bias is not None else {}))
        try:
            validate(params)
        except RopetoolError as e:
            raise RopetoolError(f"config.json ALiBi: {e}") from None
        return HFRope(params, head_dim_of(config), 0)

    d, schema = _rope_dict(config)
    rope_type = d.get("rope_type") or d.get("type") or "default"
    proportional = rope_type == "proportional"
    if proportional:  # a linear factor over the whole head's frequencies (1: none), the rest of each head unrotated
        factor = d.get("factor", 1.0)
        rope_type = "default" if factor in (None, 1, 1.0) else "linear"
    method = canonical_method(rope_type)
    # GPT-NeoX's 4.x configs: rotary_emb_base and rotary_pct.
    theta = d.get("rope_theta", config.get("rope_theta", config.get("rotary_emb_base", 10000.0)))
    prf = d.get("partial_rotary_factor", config.get("partial_rotary_factor", config.get("rotary_pct", 1.0))) or 1.0
    # Multi-head latent attention (DeepSeek V2/V3, Kimi K2): the rope is on the last qk_rope_head_dim of each head.
    head_dim = int(config["qk_rope_head_dim"]) if config.get("qk_rope_head_dim") else head_dim_of(config)
    rotary_dim = int(head_dim * float(prf))
    unrotated = 0
    if proportional:  # transformers: rope_angles = int(partial_rotary_factor * head_dim // 2) pairs turn
        rotary_dim, unrotated = head_dim, head_dim // 2 - int(float(prf) * head_dim // 2)

    original = d.get("original_max_position_embeddings")
    if method in ("llama3", "yarn", "longrope"):
        # transformers 5: a top-level value (Phi-3) wins; else default to max_position_embeddings.
        original = config.get("original_max_position_embeddings") or original or max_pos
    factor = d.get("factor")
    if method == "dynamic-ntk":
        # transformers' dynamic NTK scales relative to max_position_embeddings (a TODO in its source).
        original = max_pos
    if method in ("yarn", "longrope") and factor is None and original:
        factor = max_pos / original
    if method == "longrope" and config.get("original_max_position_embeddings") and max_pos:
        # transformers: Phi-3's attention factor comes from max_position_embeddings / original.
        factor = max_pos / config["original_max_position_embeddings"]

    values = dict(
        base=theta,
        factor=factor,
        original_context=original,
        attention_factor=d.get("attention_factor", d.get("attn_factor")),
        beta_fast=d.get("beta_fast") or None,
        beta_slow=d.get("beta_slow") or None,
        extrapolation_factor=d.get("extrapolation_factor"),
        mscale=d.get("mscale"),
        mscale_all_dim=d.get("mscale_all_dim"),
        truncate=d.get("truncate"),
        low_freq_factor=d.get("low_freq_factor"),
        high_freq_factor=d.get("high_freq_factor"),
        short_factor=d.get("short_factor"),
        long_factor=d.get("long_factor"),
        alpha=d.get("alpha"),
    )
    if method == "none":
        values = {"base": theta}
    elif method in ("linear", "dynamic-ntk", "yarn", "llama3") and factor is None:
        raise RopetoolError(f"config.json {schema}: rope type {rope_type} needs a factor")
    try:
        params = validate(make_params(method, **values), rotary_dim)
    except RopetoolError as e:
        raise RopetoolError(f"config.json {schema}: {e}") from None
    return HFRope(params, head_dim, rotary_dim, unrotated)


__all__ = ["HFRope", "rope_from_hf_config", "CONTEXT_KEYS"]
