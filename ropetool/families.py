"""The model families ropetool converts and runs in its reference: one record each.

A family says how a Hugging Face model maps onto one llama.cpp architecture (its config.json class
names, how tensor names and layouts change on the way: llama's Q/K permutation, BLOOM's per-head fused
QKV) and the shape of the forward pass llama.cpp builds for it (norm, feed-forward).  What llama.cpp's
loader does with the rope keys of that architecture is :mod:`ropetool.llamacpp.archs`; everything else
(biases, q/k norms, fused QKV, tied output) the reference reads from which tensors a file has.

Adding a llama-like architecture is one record here.  Special cases are named hooks on the record
(``qkv_layout``, ``writes_tied_output``), never a test of the name in a command.
"""

from __future__ import annotations

from dataclasses import dataclass

from ropetool.errors import RopetoolError
from ropetool.io.gguf_constants import constants as gguf  # gguf-py's MODEL_ARCH names, without the rest of gguf-py
from ropetool.llamacpp import keys as K
from ropetool.llamacpp.archs import LoaderArch, loader


@dataclass(frozen=True)
class Dims:
    """The sizes a model's tensor shapes follow (from config.json, or from a GGUF's keys)."""

    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int  # of the keys (and queries)
    n_ff: int
    n_vocab: int
    head_dim_v: int | None = None  # of the values, when it differs
    n_expert: int = 0  # mixture of experts: experts per layer (0: a dense feed-forward)
    n_ff_exp: int = 0  # each expert's feed-forward length
    n_ff_shexp: int = 0  # the shared expert's (qwen2moe)
    # Multi-head latent attention (deepseek2): the queries' and the key/value latent's low ranks, and the rotated
    # part of each head (head_dim is then the decompressed key head, qk_nope + qk_rope).
    n_lora_q: int = 0
    n_lora_kv: int = 0
    head_dim_rope: int = 0
    # Hybrid models' recurrent layers: the Gated DeltaNet's key and value heads and their sizes and its convolution's
    # kernel (qwen35, qwen3next); the short convolution's length (lfm2).
    n_lin_k_heads: int = 0
    n_lin_v_heads: int = 0
    lin_head_k: int = 0
    lin_head_v: int = 0
    conv_kernel: int = 0


# The tensors every family's llama.cpp loader requires (create_tensor without TENSOR_NOT_REQUIRED), and each
# block's norms and projections; a family adds its own.  tests/test_validity.py proves each list by removing
# every tensor of a fixture in turn and running llama.cpp on what is left.
_MODEL = ("token_embd.weight", "output_norm.weight")
_BLOCK = ("attn_norm.weight", "attn_output.weight", "ffn_norm.weight", "ffn_up.weight", "ffn_down.weight")
_QKV = ("attn_q.weight", "attn_k.weight", "attn_v.weight")
_DENSE_FFN = ("ffn_gate.weight", "ffn_up.weight", "ffn_down.weight")
_MOE_FFN = ("ffn_gate_inp.weight", "ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight")
_SHARED_EXPERT = ("ffn_gate_inp_shexp.weight", "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight")


def _with_biases(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for t in names for n in (t, t[:-len("weight")] + "bias"))


def config_value(config: dict, path: str, default=None):
    """A config.json value by a dotted path ("attn_config.alibi_bias_max")."""
    node = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


@dataclass(frozen=True)
class Family:
    arch: str  # llama.cpp's architecture name
    hf_architectures: tuple[str, ...]
    norm: str  # "rms" or "layer"
    ffn: str  # "swiglu" (separate gate), "swiglu-fused" (gate and up in one tensor, gate first), "gelu", "geglu"
    permute_qk: bool = False  # HF rotate_half rows -> llama.cpp's NORMAL pairs (llama's converter permutes)
    # Fused QKV as HF stores it: "concat" ([q; k; v], kept so) or "grouped": per group of query heads that share
    # a key/value head, the group's queries then its key then its value (BLOOM and GPT-NeoX: one query per group;
    # Falcon: n_head / n_head_kv), reordered to [q; k; v] as llama.cpp's converters do; "split-concat": [q; k; v]
    # in one HF tensor named ``fused_qkv`` (Baichuan's W_pack) that llama.cpp's converter splits into attn_q, attn_k
    # and attn_v (each then renamed, and permuted where ``permute_qk``).
    qkv_layout: str | None = None
    fused_qkv: str | None = None  # the fused tensor's module name (suffix before ".weight") for "split-concat"
    context_keys: tuple[str, ...] = ()  # config.json keys of the trained context after the usual ones (Baichuan-13B's
    # model_max_length)
    # Baichuan 2's NormHead: the output matrix is L2-normalised per row when the model runs (the checkpoint holds it
    # unnormalised; llama.cpp's graph multiplies by output.weight as stored).  A config.json with any of these keys
    # (or this vocabulary size) is such a model, and convert writes the rows normalised.
    normhead_keys: tuple[str, ...] = ()
    normhead_vocab: int | None = None
    strip_prefix: str = ""  # prefix llama.cpp's converter removes from HF names
    hf_eps_key: str = "rms_norm_eps"
    tied_default: bool = False  # tie_word_embeddings when config.json does not say
    writes_tied_output: bool = False  # the converter writes the tied output matrix as output.weight
    model_tensors: tuple[str, ...] = _MODEL  # the tensors outside the blocks llama.cpp requires
    block_tensors: tuple[str, ...] = _BLOCK + _QKV + ("ffn_gate.weight",)  # ... and in every block (dense)
    # Mixture of experts (every layer: llama.cpp has no dense layers in these): None, the family has none;
    # "optional" (llama: Mixtral, when expert_count > 0) or "always"; and what llama.cpp's graph hard-codes
    # for the family: whether the top-k routing weights are renormalised to sum to 1 (build_moe_ffn's norm_w),
    # and whether a shared expert with a sigmoid gate is added (qwen2moe).
    moe: str | None = None
    moe_norm_topk: bool | None = True  # None: llama.cpp reads it from a key (expert_weights_norm)
    shared_expert: bool = False
    moe_gate_required: bool = True  # llama's loader takes experts without a gate (ffn_gate_exps not required)
    # Gemma's conventions, as llama.cpp's converter and graph have them: every ``*norm.weight`` is stored as
    # 1 + the Hugging Face weight; the embeddings are scaled by sqrt(n_embd); the attention and feed-forward
    # outputs are normed again before the residual (post_attention_norm, post_ffw_norm); the query scale is
    # 1/sqrt(head_dim) whatever query_pre_attn_scalar says; soft-capping of the attention scores and the
    # logits ("always": llama.cpp applies both, 50 and 30 without the keys; "final": only a final cap, when
    # its key is written); ``drops_output``: llama.cpp's loader takes the embeddings and refuses an
    # output.weight.
    norm_shift: float = 0.0
    embed_scale: bool = False
    softcaps: str | None = None
    drops_output: bool = False
    writes_head_dim: bool = False  # key_length/value_length written even when n_embd / n_head gives them
    query_scale_layers: tuple[int, ...] | None = None  # fixed query scale: 1/sqrt(head_dim), or 1/sqrt(n_embd /
    # n_head) at these layer counts (llama.cpp's rule for the 27B models); None: the usual 1/sqrt(head_dim)
    # The residual block: "never" (x + attn(norm(x)), then + ffn(norm(.))), "always" (Falcon: x + attn(norm(x)) +
    # ffn(norm'(x)), the feed-forward on attn_norm's output unless the layer has an ffn_norm), "key" (GPT-NeoX:
    # use_parallel_residual says which).
    parallel_residual: str = "never"
    # config.json values llama.cpp's graph reads from keys: (key template, config.json path, default when absent;
    # None: no key without the value).  ``hf_alibi_bias``: where config.json holds ALiBi's max_bias.
    config_keys: tuple[tuple[str, str, object], ...] = ()
    required_keys: tuple[str, ...] = ()  # keys (templates) the family's loader throws without, beyond the common ones
    hf_alibi_bias: str | None = None
    # What config.json must say for llama.cpp's graph to compute the model: (path, the value it must have, why);
    # a missing value passes (transformers' default for the class is the value required), unless a 4th entry gives
    # the class's default (gemma4's hidden_size_per_layer_input, 256).  The value may be a function of config.json
    # (llama4's q/k norm, which llama.cpp leaves out on 128-expert models only).
    requires: tuple[tuple, ...] = ()
    # The trained context when config.json does not say it, and where the number comes from.
    default_context: tuple[int, str] | None = None
    # ``ropetool extend``'s setting for a longer context when the model has no recipe of its own (docs/extend.md):
    # (method, where it comes from: the family's model cards, or a measurement); None: EXTEND_DEFAULT.
    extend: tuple[str, str] | None = None
    # The q/k norms' span: "head" (qwen3, gemma3: one weight per head dimension, applied to each head) or
    # "projection" (olmo2: over the whole q and k projections, n_head * head_dim and n_head_kv * head_dim).
    qk_norm: str = "head"
    # config.json's per-layer rope flags (1: the layer rotates q and k, 0: no rope), which must be the pattern
    # llama.cpp's graph hard-codes for the architecture (LoaderArch.no_rope_layers): smollm3's no_rope_layers.
    hf_no_rope_layers: str | None = None
    # How a mixture's experts are stored: None, one matrix per expert (``...experts.3.w1.weight``, stacked on the
    # way); "gate-up-transposed" (gpt-oss): already stacked, each expert [in, out] (x @ W), gate and up interleaved
    # in one ``experts.gate_up_proj`` (gate the even columns), biases ``..._bias``: split and transposed as
    # llama.cpp's converter does, one expert at a time.
    experts_layout: str | None = None
    # Multi-head latent attention (deepseek2, DeepSeek V3 / Kimi K2): queries through a low-rank q_a/q_b, keys and
    # values from one compressed latent (kv_a_proj_with_mqa, whose last qk_rope_head_dim rows are the one rotated
    # key), kv_b_proj split into attn_k_b (transposed) and attn_v_b as llama.cpp's converter splits it; written as
    # llama.cpp's MQA view (head_count_kv 1, key_length kv_lora + rope, value_length kv_lora, the *_mla sizes).
    mla: bool = False
    dense_lead_key: str | None = None  # config.json's count of leading dense layers (first_k_dense_replace)
    shared_experts_key: str | None = None  # config.json's count of ungated shared experts, each expert-sized
    renames: tuple[tuple[str, str], ...] = ()  # Hugging Face name endings renamed as llama.cpp's converter does
    # Whether ropetool's numpy reference runs the family's blocks (check --end-to-end, eval's reference); False:
    # a block it does not have (attention sinks, the experts' clamped SwiGLU), and the probe is the rope's proof.
    reference: bool = True
    moe_tensors: tuple[str, ...] = ()  # what every mixture layer requires beyond the experts (glm4moe's exp_probs_b)
    # Hybrid models (issue 25): recurrent layers without attention (llamacpp/archs.py's Recurrent says how a file marks
    # them), which carry ``recurrent_tensors`` instead of ``attention_tensors`` (the rest of ``block_tensors`` is in
    # every layer); ``linear_attention``: the Gated DeltaNet's layout, "qwen35" (in_proj_qkv, in_proj_z, in_proj_a,
    # in_proj_b; value heads reordered from grouped to tiled when there are fewer key heads) or "qwen3next" (in_proj_qkvz
    # and in_proj_ba fused per key head); ``short_conv``: lfm2's convolution; ``attn_output_gate``: q_proj holds each
    # head's query and then its output gate; ``text_config``: config.json nests the text model under text_config, as
    # Qwen 3.5's released checkpoints (Qwen3_5ForConditionalGeneration) do; ``hf_prefixes``: name prefixes renamed as
    # llama.cpp's converter renames them, ``skip_prefixes``: tensors it leaves out (a vision tower, MTP layers);
    # ``norm_shift_skip``: norms not shifted by ``norm_shift``; ``bare_tensors``: kinds llama.cpp names without a
    # .weight suffix (ssm_a).
    recurrent_tensors: tuple[str, ...] = ()
    attention_tensors: tuple[str, ...] = ()
    linear_attention: str | None = None
    short_conv: bool = False
    attn_output_gate: bool = False
    text_config: bool = False
    hf_prefixes: tuple[tuple[str, str], ...] = ()
    skip_prefixes: tuple[str, ...] = ()
    norm_shift_skip: tuple[str, ...] = ()
    bare_tensors: tuple[str, ...] = ()
    # config.json names older releases use for a field (LFM2's block_ff_dim, tie_embedding), taken where the field is
    # absent; ``ffn_dim_rule``: the feed-forward's width derived from config.json as the model's class derives it
    # ("lfm2": Lfm2MLP's 2/3 x intermediate_size x block_ffn_dim_multiplier rounded up to block_multiple_of).
    config_aliases: tuple[tuple[str, str], ...] = ()
    ffn_dim_rule: str | None = None
    stacked_prefix: tuple[str, str] | None = None  # the stacked experts' name prefix as llama.cpp's converter writes it
    # Llama 4 (issue 24): ``moe_step_key``: config.json's step of the mixture layers among dense ones (layer il is a
    # mixture when (il + 1) % step == 0, written as interleave_moe_layer_step; ``hf_moe_layers``: config.json's list of
    # them, which must be that pattern); ``shared_experts``: ungated shared experts the graph hard-codes, each as wide
    # as an expert (no config key); ``config_moves``: config.json fields moved as llama.cpp's converter moves them,
    # (source, destination) in order, the destination overwritten (Llama 4's intermediate_size is the experts' width,
    # intermediate_size_mlp the dense layers').
    moe_step_key: str | None = None
    hf_moe_layers: str | None = None
    shared_experts: int = 0
    config_moves: tuple[tuple[str, str], ...] = ()
    # Gemma 4: the global (full-attention) layers have their own head size and key/value heads (config.json's
    # per_layer_config, else global_head_dim and num_global_key_value_heads, as transformers' Gemma4TextConfig derives
    # them), the sliding layers config.json's head_dim and num_key_value_heads; written as key_length (the global) and
    # key_length_swa, and a per-layer head_count_kv where they differ.
    global_heads: bool = False

    def required_tensors(self, n_layer: int, experts: bool = False, dense_lead: int = 0, recurrent=(),
                         moe_step: int = 1) -> list[str]:
        """The GGUF names of every tensor llama.cpp's loader requires of a model with ``n_layer`` blocks
        (output.weight is optional to most: a model without it uses the embeddings); ``experts``: a mixture
        of experts, whose routers and stacked experts replace the dense feed-forward, but in the first
        ``dense_lead`` blocks (deepseek2's leading_dense_block_count) and in the layers il with (il + 1) % moe_step
        != 0 (llama4's interleave_moe_layer_step; 0: none); ``recurrent``: a hybrid model's layers without attention,
        whose ``recurrent_tensors`` replace the ``attention_tensors``."""
        dense = list(self.block_tensors)
        block = dense
        if experts or self.moe == "always":
            block = [t for t in block if t not in _DENSE_FFN] + [
                t for t in _MOE_FFN if self.moe_gate_required or t != "ffn_gate_exps.weight"]
            block += list(_SHARED_EXPERT) if self.shared_expert else []
            if self.shared_experts_key or self.shared_experts:  # ungated: no ffn_gate_inp_shexp
                block += list(_SHARED_EXPERT[1:])
            block += list(self.moe_tensors)
        recurrent = set(recurrent)

        def of(i: int) -> list[str]:
            names = dense if i < dense_lead or (self.moe_step_key and (not moe_step or (i + 1) % moe_step)) else block
            if i in recurrent:
                names = [t for t in names if t not in self.attention_tensors] + list(self.recurrent_tensors)
            return names

        return list(self.model_tensors) + [f"blk.{i}.{t}" for i in range(n_layer) for t in of(i)]

    def tensor_shapes(self, d: Dims) -> dict[str, tuple[int, ...]]:
        """The shape of each kind of tensor (``attn_q``, ...; Hugging Face order, rows first) for sizes ``d``."""
        q = d.n_head * d.head_dim
        kv = d.n_head_kv * d.head_dim
        v = d.n_head_kv * (d.head_dim_v or d.head_dim)
        e, f = d.n_embd, d.n_ff
        return {
            "token_embd": (d.n_vocab, e),
            "output": (d.n_vocab, e),
            "output_norm": (e,),
            "token_embd_norm": (e,),
            "attn_norm": (e,),
            "attn_norm_2": (e,),
            "ffn_norm": (e,),
            "attn_q": (q, e),
            "attn_k": (kv, e),
            "attn_v": (v, e),
            "attn_qkv": (q + kv + v, e),
            "attn_output": (e, d.n_head * (d.head_dim_v or d.head_dim)),
            "attn_q_norm": (q,) if self.qk_norm == "projection" else (d.head_dim,),
            "attn_k_norm": (kv,) if self.qk_norm == "projection" else (d.head_dim,),
            "ffn_gate": (f, e),
            "ffn_up": (2 * f, e) if self.ffn == "swiglu-fused" else (f, e),
            "ffn_down": (e, f),
            "post_attention_norm": (e,),
            "post_ffw_norm": (e,),
            "ffn_gate_inp": (d.n_expert, e),
            "ffn_gate_exps": (d.n_expert, d.n_ff_exp, e),
            "ffn_up_exps": (d.n_expert, d.n_ff_exp, e),
            "ffn_down_exps": (d.n_expert, e, d.n_ff_exp),
            "ffn_gate_inp_shexp": (e,),
            "ffn_gate_shexp": (d.n_ff_shexp, e),
            "ffn_up_shexp": (d.n_ff_shexp, e),
            "ffn_down_shexp": (e, d.n_ff_shexp),
            "attn_sinks": (d.n_head,),
            "attn_q_a": (d.n_lora_q, e),
            "attn_q_a_norm": (d.n_lora_q,),
            "attn_q_b": (q, d.n_lora_q),
            "attn_kv_a_mqa": (d.n_lora_kv + d.head_dim_rope, e),
            "attn_kv_a_norm": (d.n_lora_kv,),
            "attn_k_b": (d.n_head, d.n_lora_kv, d.head_dim - d.head_dim_rope),
            "attn_v_b": (d.n_head, d.head_dim_v or d.head_dim, d.n_lora_kv),
            "exp_probs_b": (d.n_expert,),
            **self._hybrid_shapes(d),
        }

    def _hybrid_shapes(self, d: Dims) -> dict[str, tuple[int, ...]]:
        """The recurrent layers' tensors (Hugging Face order, after the conversion's transforms) and a gated query."""
        e = d.n_embd
        out: dict[str, tuple[int, ...]] = {}
        if self.attn_output_gate:
            out["attn_q"] = (2 * d.n_head * d.head_dim, e)
        if self.short_conv:
            out.update({"shortconv.conv": (e, d.conv_kernel), "shortconv.in_proj": (3 * e, e), "shortconv.out_proj": (e, e)})
        if self.linear_attention:
            key, value = d.n_lin_k_heads * d.lin_head_k, d.n_lin_v_heads * d.lin_head_v
            out.update({"attn_qkv": (2 * key + value, e), "attn_gate": (value, e), "ssm_beta": (d.n_lin_v_heads, e),
                        "ssm_alpha": (d.n_lin_v_heads, e), "ssm_ba": (2 * d.n_lin_v_heads, e), "ssm_a": (d.n_lin_v_heads,),
                        "ssm_dt": (d.n_lin_v_heads,), "ssm_conv1d": (2 * key + value, d.conv_kernel),
                        "ssm_norm": (d.lin_head_v,), "ssm_out": (e, value)})
        return out

    @property
    def eps_key(self) -> str:
        """The key (template) of the norms' epsilon."""
        return K.LAYERNORM_RMS_EPS if self.norm == "rms" else K.LAYERNORM_EPS

    @property
    def loader(self) -> LoaderArch:
        return loader(self.arch)

    @property
    def alibi(self) -> bool:
        """Whether llama.cpp runs this family with ALiBi (for any layer count) rather than rope."""
        return self.loader.alibi_bias(None, None) is not None or bool(self.loader.alibi_by_layers)

    def alibi_at(self, n_layer: int | None) -> bool:
        """Whether llama.cpp runs a model of this family with ``n_layer`` blocks with ALiBi (baichuan: at 40)."""
        return self.loader.alibi_bias(n_layer, None) is not None

    def positionless_at(self, n_layer: int) -> bool:
        """Whether llama.cpp's graph would run a model with ``n_layer`` blocks with no position encoding at all
        (baichuan at any count but 32 and 40)."""
        return not self.loader.uses_rope(n_layer) and not self.alibi_at(n_layer)

    def normalised_output(self, config: dict) -> bool:
        """Whether config.json describes a model whose output rows are L2-normalised at inference (NormHead)."""
        return (any(k in config for k in self.normhead_keys)
                or (self.normhead_vocab is not None and config.get("vocab_size") == self.normhead_vocab))

    @property
    def model_arch(self) -> gguf.MODEL_ARCH:
        return next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == self.arch)


# The rule docs/extend.md states: where neither the model nor its family says how to extend it, this method at
# factor N / trained: what `ropetool extend --measure` chose on SmolLM2-135M, a llama (NTK-aware ahead of Dynamic
# NTK baked at N and YaRN at 12288 over 8192; docs/eval.md's 2x run puts it ahead of YaRN too); unmeasured on the
# other families.
_MEASURED = ("measured on SmolLM2-135M in docs/extend.md: NTK-aware ahead of Dynamic NTK and YaRN at 12288 over "
             "8192")
EXTEND_DEFAULT = ("ntk", f"ropetool's default ({_MEASURED}; unmeasured on this family)")
_QWEN_YARN = ("yarn", "the Qwen2.5, Qwen3, Qwen3-Next and Qwen3.5 model cards: YaRN, factor = the context / the original context")

FAMILIES: dict[str, Family] = {
    f.arch: f
    for f in (
        Family("llama", ("LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM"), "rms", "swiglu",
               permute_qk=True, moe="optional", moe_gate_required=False, extend=("ntk", f"llama's default ({_MEASURED})")),
        Family("qwen2", ("Qwen2ForCausalLM",), "rms", "swiglu", extend=_QWEN_YARN),
        Family("qwen3", ("Qwen3ForCausalLM",), "rms", "swiglu", extend=_QWEN_YARN,
               block_tensors=_BLOCK + _QKV + ("ffn_gate.weight", "attn_q_norm.weight", "attn_k_norm.weight")),
        # qwen2moe's loader requires output.weight (no fallback to the embeddings): a tied model writes it.
        Family("qwen2moe", ("Qwen2MoeForCausalLM",), "rms", "swiglu", moe="always", moe_norm_topk=False, extend=_QWEN_YARN,
               shared_expert=True, writes_tied_output=True, model_tensors=_MODEL + ("output.weight",)),
        Family("qwen3moe", ("Qwen3MoeForCausalLM",), "rms", "swiglu", moe="always", extend=_QWEN_YARN,
               block_tensors=_BLOCK + _QKV + ("attn_q_norm.weight", "attn_k_norm.weight")),
        Family("phi3", ("Phi3ForCausalLM",), "rms", "swiglu-fused", qkv_layout="concat",
               block_tensors=_BLOCK + ("attn_qkv.weight",)),
        Family("gemma2", ("Gemma2ForCausalLM",), "rms", "geglu", tied_default=True, norm_shift=1.0, embed_scale=True,
               softcaps="always", drops_output=True, writes_head_dim=True, query_scale_layers=(46,),
               block_tensors=_BLOCK + _QKV + ("ffn_gate.weight", "post_attention_norm.weight", "post_ffw_norm.weight")),
        Family("gemma3", ("Gemma3ForCausalLM",), "rms", "geglu", tied_default=True, norm_shift=1.0, embed_scale=True,
               softcaps="final", writes_head_dim=True, query_scale_layers=(62,),
               block_tensors=_BLOCK + _QKV + ("ffn_gate.weight", "post_attention_norm.weight", "post_ffw_norm.weight",
                                              "attn_q_norm.weight", "attn_k_norm.weight")),
        # Baichuan (llama.cpp's converter: W_pack split into q, k, v, q and k permuted as llama's; the loader requires
        # output.weight). 32 layers run rope, 40 ALiBi with max_bias 8 (llamacpp/archs.py); Baichuan 2 is recognised
        # by its config's z_loss_weight (or its 125696-token vocabulary) and gets its NormHead rows normalised.
        Family("baichuan", ("BaichuanForCausalLM", "BaiChuanForCausalLM"), "rms", "swiglu", permute_qk=True,
               qkv_layout="split-concat", fused_qkv="self_attn.W_pack", context_keys=("model_max_length",),
               normhead_keys=("z_loss_weight",), normhead_vocab=125696, model_tensors=_MODEL + ("output.weight",)),
        Family("bloom", ("BloomForCausalLM", "BloomModel"), "layer", "gelu", qkv_layout="grouped",
               strip_prefix="transformer.", hf_eps_key="layer_norm_epsilon", tied_default=True,
               writes_tied_output=True,
               model_tensors=_MODEL + ("output_norm.bias", "token_embd_norm.weight", "token_embd_norm.bias"),
               block_tensors=_with_biases(_BLOCK + ("attn_qkv.weight",)),
               default_context=(2048, "config.json does not say; the released BLOOM models were trained on 2048-token "
                                      "sequences (BLOOM paper, section 3.5)")),
        # GPT-NeoX (Pythia): partial rotary (rotary_pct), parallel residual as use_parallel_residual says; its
        # loader requires the output matrix and every bias.
        Family("gptneox", ("GPTNeoXForCausalLM",), "layer", "gelu", qkv_layout="grouped", hf_eps_key="layer_norm_eps",
               strip_prefix="", writes_tied_output=True, parallel_residual="key",
               config_keys=((K.USE_PARALLEL_RESIDUAL, "use_parallel_residual", True),),
               required_keys=(K.USE_PARALLEL_RESIDUAL,),
               requires=(("attention_bias", True, "llama.cpp's gptneox requires the attention biases"),),
               model_tensors=_MODEL + ("output_norm.bias", "output.weight"),
               block_tensors=_with_biases(_BLOCK + ("attn_qkv.weight",))),
        # Falcon: one fused QKV (grouped per key/value head: MQA, GQA or none), attention and feed-forward in
        # parallel from the same input, normed once (7B: input_layernorm) or twice (40B: ln_attn, ln_mlp); no
        # biases but the norms'; no ALiBi in llama.cpp.
        Family("falcon", ("FalconForCausalLM", "RWForCausalLM"), "layer", "gelu", qkv_layout="grouped",
               hf_eps_key="layer_norm_epsilon", tied_default=True, parallel_residual="always",
               requires=(("alibi", False, "llama.cpp's falcon runs rope, not ALiBi"),
                         ("bias", False, "llama.cpp's falcon has no linear biases"),
                         ("parallel_attn", True, "llama.cpp's falcon computes attention and feed-forward in parallel")),
               model_tensors=_MODEL + ("output_norm.bias",),
               block_tensors=("attn_norm.weight", "attn_norm.bias", "attn_qkv.weight", "attn_output.weight",
                              "ffn_up.weight", "ffn_down.weight"),
               default_context=(2048, "config.json does not say; llama.cpp's converter writes 2048 for Falcon")),
        # SmolLM3: llama's layout (q/k permuted as llama.cpp's converter does) without rope in every 4th layer, which
        # llama.cpp's smollm3 graph hard-codes (src/models/smollm3.cpp): config.json's no_rope_layers must say the same.
        # Its loader creates no output or feed-forward biases and no sliding window.
        Family("smollm3", ("SmolLM3ForCausalLM",), "rms", "swiglu", permute_qk=True, tied_default=True,
               hf_no_rope_layers="no_rope_layers",
               requires=(("attention_bias", False, "llama.cpp's smollm3 loads no attention output bias"),
                         ("mlp_bias", False, "llama.cpp's smollm3 loads no feed-forward biases"),
                         ("use_sliding_window", False, "llama.cpp's smollm3 has no sliding-window layers"))),
        # OLMo 2: no norm before attention or feed-forward; each one's output is normed before the residual
        # (post_attention_norm, post_ffw_norm); q and k normed over the whole projection, before rope (NEOX, no
        # permutation); the loader requires output.weight (a tied model writes it) and takes the head size as
        # n_embd / n_head (src/models/olmo2.cpp).
        Family("olmo2", ("Olmo2ForCausalLM",), "rms", "swiglu", qk_norm="projection", writes_tied_output=True,
               model_tensors=_MODEL + ("output.weight",),
               block_tensors=_QKV + ("attn_output.weight", "attn_q_norm.weight", "attn_k_norm.weight",
                                     "post_attention_norm.weight", "post_ffw_norm.weight") + _DENSE_FFN,
               requires=(("attention_bias", False, "llama.cpp's olmo2 loads no attention biases"),
                         ("head_dim", None, "llama.cpp's olmo2 takes the head size as hidden_size / num_attention_heads"))),
        # Ministral 3 (mistral3): llama's layout (q/k permuted as llama.cpp's converter does), YaRN whose betas and
        # mscale_all_dim (as rope.scaling.yarn_log_multiplier) its loader reads, and the Llama 4-style attention
        # temperature (rope_parameters.llama_4_scaling_beta as attention.temperature_scale), whose period llama.cpp
        # takes from rope.scaling.original_context_length (src/models/mistral3.cpp; LoaderArch.attn_temperature).
        Family("mistral3", ("Ministral3ForCausalLM",), "rms", "swiglu", permute_qk=True,
               config_keys=((K.ATTENTION_TEMPERATURE_SCALE, "rope_parameters.llama_4_scaling_beta", None),),
               requires=(("sliding_window", None, "llama.cpp's mistral3 has no sliding-window layers"),)),
        # MPT: ALiBi with max_bias from attn_config.alibi_bias_max (read from the file: the one llama.cpp
        # architecture ropetool converts whose ALiBi slopes a setting can change; jais reads the key too), q/k/v
        # clamped at clip_qkv; no biases.
        Family("mpt", ("MptForCausalLM", "MPTForCausalLM"), "layer", "gelu", qkv_layout="concat",
               hf_eps_key="layer_norm_epsilon", tied_default=True,
               config_keys=((K.CLAMP_KQV, "attn_config.clip_qkv", None),), hf_alibi_bias="attn_config.alibi_bias_max",
               extend=("ntk-alibi", "NTK-ALiBi (keezen/ntk_alibi), a = the context / the trained one: the ALiBi "
                                    "analogue of NTK-aware scaling; unmeasured"),
               requires=(("attn_config.alibi", True, "llama.cpp's mpt has no position encoding without ALiBi"),
                         ("attn_config.qk_ln", False, "transformers' MPT has no q/k norms"),
                         ("attn_config.softmax_scale", None, "llama.cpp's mpt scales queries by 1/sqrt(head_dim)"),
                         ("logit_scale", None, "llama.cpp's mpt does not scale the logits")),
               block_tensors=_BLOCK + ("attn_qkv.weight",)),
    )
}


# gpt-oss (GptOssForCausalLM): every other layer slides (llamacpp/archs.py's SLIDING_WINDOWS), attention sinks, biases
# on the attention output and on every expert and router, the experts' clamped SwiGLU, whose constants llama.cpp's graph
# hard-codes (src/llama-graph.cpp, LLM_FFN_SWIGLU_OAI_MOE: alpha 1.702, limit 7); the loader requires output.weight,
# attention.sliding_window and each layer's post-attention norm (src/models/openai-moe.cpp).
_GPT_OSS_BLOCK = ("attn_norm.weight", "post_attention_norm.weight") + _QKV + (
    "attn_output.weight", "attn_output.bias", "attn_sinks.weight", "ffn_gate_inp.bias", "ffn_gate_exps.bias",
    "ffn_up_exps.bias", "ffn_down_exps.bias")
FAMILIES.update({f.arch: f for f in (
    Family("gpt-oss", ("GptOssForCausalLM",), "rms", "swiglu-oai", moe="always", experts_layout="gate-up-transposed",
           writes_tied_output=True, model_tensors=_MODEL + ("output.weight",), block_tensors=_GPT_OSS_BLOCK,
           required_keys=(K.SLIDING_WINDOW,), reference=False,
           requires=(("swiglu_alpha", 1.702, "llama.cpp's gpt-oss graph hard-codes the experts' SwiGLU alpha 1.702"),
                     ("swiglu_limit", 7.0, "llama.cpp's gpt-oss graph hard-codes the experts' SwiGLU limit 7"))),
)})


# deepseek2 (DeepseekV3ForCausalLM; Kimi K2 has the same layout and class): multi-head latent attention with the rope on
# the last qk_rope_head_dim of each head, pairs interleaved as llama.cpp's NORMAL rope pairs them (rope_interleave; no
# permutation); first_k_dense_replace dense layers, then a mixture with n_shared_experts ungated shared experts,
# sigmoid routing with a selection bias (e_score_correction_bias, as exp_probs_b) over n_group groups of which
# topk_group are kept, weights renormalised (norm_topk_prob) and scaled (routed_scaling_factor); all read from keys.
# YaRN's mscale_all_dim becomes rope.scaling.yarn_log_multiplier (0.1 x, prescaled) and moves the attention scale
# (llamacpp/archs.KQ_SCALE_MSCALE, llamacpp/lowering.py).  The loader requires kv_lora_rank, expert_shared_count and
# expert_feed_forward_length; the output matrix is optional (tied models use the embeddings).
_MLA_BLOCK = ("attn_norm.weight", "attn_q_a_norm.weight", "attn_kv_a_norm.weight", "attn_q_a.weight", "attn_q_b.weight",
              "attn_kv_a_mqa.weight", "attn_k_b.weight", "attn_v_b.weight", "attn_output.weight", "ffn_norm.weight"
              ) + _DENSE_FFN
FAMILIES.update({f.arch: f for f in (
    Family("deepseek2", ("DeepseekV3ForCausalLM",), "rms", "swiglu", moe="always", moe_norm_topk=None, mla=True,
           dense_lead_key="first_k_dense_replace", shared_experts_key="n_shared_experts",
           renames=((".mlp.gate.e_score_correction_bias", ".mlp.gate.e_score_correction.bias"),),
           block_tensors=_MLA_BLOCK, reference=False,
           config_keys=((K.LEADING_DENSE_BLOCK_COUNT, "first_k_dense_replace", 0),
                        (K.Q_LORA_RANK, "q_lora_rank", None), (K.KV_LORA_RANK, "kv_lora_rank", None),
                        (K.EXPERT_SHARED_COUNT, "n_shared_experts", 0),
                        (K.EXPERT_WEIGHTS_SCALE, "routed_scaling_factor", None),
                        (K.EXPERT_WEIGHTS_NORM, "norm_topk_prob", None),
                        (K.EXPERT_GATING_FUNC, None, K.GATING_SIGMOID),
                        (K.EXPERT_GROUP_COUNT, "n_group", None), (K.EXPERT_GROUP_USED_COUNT, "topk_group", None)),
           required_keys=(K.KV_LORA_RANK, K.EXPERT_SHARED_COUNT, K.EXPERT_FEED_FORWARD_LENGTH),
           requires=(("rope_interleave", True, "llama.cpp's deepseek2 rotates interleaved pairs (no permutation is "
                                               "written for rotate_half weights)"),
                     ("attention_bias", False, "llama.cpp's deepseek2 has no attention biases"),
                     ("scoring_func", "sigmoid", "llama.cpp's deepseek2 is written with DeepSeek V3's sigmoid routing"),
                     ("topk_method", "noaux_tc", "llama.cpp's grouped routing is DeepSeek V3's noaux_tc (the sum of each "
                                                 "group's top two scores)"),
                     ("moe_layer_freq", 1, "llama.cpp's deepseek2 makes every layer after the dense ones a mixture"),
                     ("hidden_act", "silu", "llama.cpp's deepseek2 uses SiLU"))),
)})


# GLM-4.5 / 4.6 / 4.7 (glm4moe, Glm4MoeForCausalLM): rope on the first half of each head (partial_rotary_factor 0.5,
# NEOX pairs, no permutation: llama.cpp's converter writes the weights as they are), q/k/v biases, optional per-head q/k
# norms (use_qk_norm), the feed-forward normed by post_attention_layernorm (llama.cpp's attn_post_norm);
# first_k_dense_replace dense layers, then a mixture with n_shared_experts ungated shared experts and sigmoid routing
# with a selection bias (exp_probs_b, required in every mixture layer), groups, renormalisation and scaling, all read
# from keys (src/models/glm4-moe.cpp); the MTP layers (num_nextn_predict_layers) are left out.
FAMILIES.update({f.arch: f for f in (
    Family("glm4moe", ("Glm4MoeForCausalLM",), "rms", "swiglu", moe="always", moe_norm_topk=None,
           dense_lead_key="first_k_dense_replace", shared_experts_key="n_shared_experts",
           moe_tensors=("exp_probs_b.bias",),
           renames=((".mlp.gate.e_score_correction_bias", ".mlp.gate.e_score_correction.bias"),),
           block_tensors=("attn_norm.weight", "attn_output.weight", "post_attention_norm.weight") + _QKV + _DENSE_FFN,
           reference=False,
           config_keys=((K.LEADING_DENSE_BLOCK_COUNT, "first_k_dense_replace", 0),
                        (K.EXPERT_SHARED_COUNT, "n_shared_experts", 0),
                        (K.EXPERT_WEIGHTS_SCALE, "routed_scaling_factor", None),
                        (K.EXPERT_WEIGHTS_NORM, "norm_topk_prob", None),
                        (K.EXPERT_GATING_FUNC, None, K.GATING_SIGMOID),
                        (K.EXPERT_GROUP_COUNT, "n_group", None), (K.EXPERT_GROUP_USED_COUNT, "topk_group", None)),
           required_keys=(K.EXPERT_SHARED_COUNT, K.EXPERT_FEED_FORWARD_LENGTH),
           requires=(("hidden_act", "silu", "llama.cpp's glm4moe uses SiLU"),)),
)})


# Qwen 3.5 (qwen35, qwen35moe; issue 25): three Gated DeltaNet linear-attention layers per attention layer (config.json's
# layer_types, written as attention.recurrent_layers; else every full_attention_interval-th layer attends), the rope on
# a quarter of each head (partial_rotary_factor 0.25) as an interleaved multi-section rope (IMROPE: mrope_section as
# rope.dimension_sections, which llama.cpp requires; text tokens take the same position in every section), the attention
# output gated by a second half of q_proj per head, q/k norms, every norm stored as 1 + w but the linear attention's
# gated one (llama.cpp's converter adds 1: conversion/qwen.py, Qwen3NextModel.modify_tensors); the recurrent layers'
# tensors as that converter writes them (A_log as -exp(A_log), dt_bias as ssm_dt.bias, the convolution squeezed, the
# value heads reordered from grouped to tiled where there are fewer key heads: _LinearAttentionVReorderBase).  The
# released checkpoints are Qwen3_5ForConditionalGeneration: the text model under text_config and
# model.language_model., a vision tower (model.visual., left out: llama.cpp's mmproj) and MTP layers (mtp., left out).
_QWEN35_COMMON = ("attn_norm.weight", "post_attention_norm.weight") + _DENSE_FFN
_QWEN35_ATTENTION = _QKV + ("attn_output.weight", "attn_q_norm.weight", "attn_k_norm.weight")
_GATED_DELTA_NET = ("attn_qkv.weight", "attn_gate.weight", "ssm_conv1d.weight", "ssm_dt.bias", "ssm_a", "ssm_beta.weight",
                    "ssm_alpha.weight", "ssm_norm.weight", "ssm_out.weight")
_GATED_DELTA_NET_KEYS = (K.SSM_CONV_KERNEL, K.SSM_INNER_SIZE, K.SSM_STATE_SIZE, K.SSM_TIME_STEP_RANK, K.SSM_GROUP_COUNT)
_QWEN35_REQUIRES = (
    ("attention_bias", False, "llama.cpp's qwen35 loads no attention biases"),
    ("hidden_act", "silu", "llama.cpp's qwen35 uses SiLU"),
    ("attn_output_gate", True, "llama.cpp's qwen35 always gates the attention output"),
    ("rope_parameters.mrope_interleaved", True, "llama.cpp's qwen35 always interleaves the rope's sections (IMROPE)"),
)
_QWEN35 = dict(norm_shift=1.0, norm_shift_skip=("ssm_norm",), linear_attention="qwen35", attn_output_gate=True,
               text_config=True, hf_prefixes=(("model.language_model.", "model."),), skip_prefixes=("model.visual.", "mtp."),
               bare_tensors=("ssm_a",), renames=((".linear_attn.dt_bias", ".linear_attn.dt_proj.bias"),),
               attention_tensors=_QWEN35_ATTENTION, recurrent_tensors=_GATED_DELTA_NET, reference=False,
               required_keys=(K.ROPE_DIMENSION_SECTIONS,) + _GATED_DELTA_NET_KEYS, requires=_QWEN35_REQUIRES, extend=_QWEN_YARN)
FAMILIES.update({f.arch: f for f in (
    Family("qwen35", ("Qwen3_5ForConditionalGeneration", "Qwen3_5ForCausalLM"), "rms", "swiglu",
           block_tensors=_QWEN35_COMMON + _QWEN35_ATTENTION, **_QWEN35),
    # qwen35moe: a mixture in every layer (top-k renormalised, a shared expert with a sigmoid gate: src/models/
    # qwen35moe.cpp), the released checkpoints' experts stacked (gate_up_proj [E, 2 ff, n_embd], down_proj).
    Family("qwen35moe", ("Qwen3_5MoeForConditionalGeneration", "Qwen3_5MoeForCausalLM"), "rms", "swiglu", moe="always",
           shared_expert=True, experts_layout="gate-up-stacked", block_tensors=_QWEN35_COMMON + _QWEN35_ATTENTION,
           **_QWEN35),
)})


# Qwen3-Next (qwen3next; issue 25): Qwen 3.5's layer pattern and gated attention (three Gated DeltaNet layers per
# attention layer, the rope on a quarter of each head, but NEOX: no sections), a mixture in every layer (renormalised
# top-k, a shared expert with a sigmoid gate, as qwen2moe's), the linear attention's projections fused per key head:
# in_proj_qkvz split into attn_qkv and attn_gate, in_proj_ba written whole as ssm_ba (llama.cpp's converter:
# Qwen3NextModel.modify_tensors; its graph splits ssm_ba itself, and repeats the key heads per key head, so the
# value heads keep their order).
_QWEN3NEXT_RECURRENT = ("attn_qkv.weight", "attn_gate.weight", "ssm_conv1d.weight", "ssm_dt.bias", "ssm_a",
                        "ssm_ba.weight", "ssm_norm.weight", "ssm_out.weight")
FAMILIES.update({f.arch: f for f in (
    Family("qwen3next", ("Qwen3NextForCausalLM",), "rms", "swiglu", moe="always", shared_expert=True,
           block_tensors=_QWEN35_COMMON + _QWEN35_ATTENTION,
           **{**_QWEN35, "linear_attention": "qwen3next", "text_config": False, "hf_prefixes": (), "skip_prefixes": ("mtp.",),
              "recurrent_tensors": _QWEN3NEXT_RECURRENT, "required_keys": _GATED_DELTA_NET_KEYS,
              "requires": _QWEN35_REQUIRES[:3]}),
)})


# LFM2 (lfm2; issue 25): gated short-convolution layers and attention layers (config.json's layer_types, "conv" and
# "full_attention"; older releases: full_attn_idxs), marked for llama.cpp by a per-layer head_count_kv of 0 (its
# converter writes it so: conversion/lfm2.py), the rope (NEOX, whole head) only on the attention layers, q/k norms
# (q_layernorm, k_layernorm), the final norm named token_embd_norm (llama.cpp's LLM_TENSOR_OUTPUT_NORM_LFM2), the
# convolution [n_embd, 1, L] squeezed to [n_embd, L] and kept f32, conv_L_cache as shortconv.l_cache
# (src/models/lfm2.cpp).
_LFM2_COMMON = ("attn_norm.weight", "ffn_norm.weight") + _DENSE_FFN
_LFM2_ATTENTION = _QKV + ("attn_output.weight", "attn_q_norm.weight", "attn_k_norm.weight")
_SHORT_CONV = ("shortconv.conv.weight", "shortconv.in_proj.weight", "shortconv.out_proj.weight")
_LFM2 = dict(hf_eps_key="norm_eps", tied_default=True, short_conv=True, reference=False,
             model_tensors=("token_embd.weight", "token_embd_norm.weight"),
             attention_tensors=_LFM2_ATTENTION, recurrent_tensors=_SHORT_CONV,
             config_aliases=(("block_ff_dim", "intermediate_size"), ("tie_embedding", "tie_word_embeddings")),
             config_keys=((K.SHORTCONV_L_CACHE, "conv_L_cache", 3),), required_keys=(K.SHORTCONV_L_CACHE,))
FAMILIES.update({f.arch: f for f in (
    Family("lfm2", ("Lfm2ForCausalLM",), "rms", "swiglu", block_tensors=_LFM2_COMMON + _LFM2_ATTENTION, ffn_dim_rule="lfm2",
           requires=(("conv_bias", False, "llama.cpp's lfm2 loads no convolution biases"),), **_LFM2),
    # lfm2moe (Lfm2MoeForCausalLM): num_dense_layers dense layers, then a mixture in every layer, sigmoid routing with a
    # selection bias (expert_bias as exp_probs_b, required), the chosen weights renormalised and never scaled (its loader
    # reads no expert_weights_scale: llama.cpp ignores a routed_scaling_factor, measured in tests/test_hybrid.py); the
    # stacked experts named as llama.cpp's converter names them (layers.N.feed_forward.experts.w1: conversion/lfm2.py).
    Family("lfm2moe", ("Lfm2MoeForCausalLM",), "rms", "swiglu", moe="always", dense_lead_key="num_dense_layers",
           moe_tensors=("exp_probs_b.bias",), stacked_prefix=("model.layers.", "layers."),
           renames=((".feed_forward.expert_bias", ".feed_forward.expert_bias.bias"),),
           block_tensors=_LFM2_COMMON + _LFM2_ATTENTION,
           requires=(("conv_bias", False, "llama.cpp's lfm2moe loads no convolution biases"),
                     ("use_expert_bias", True, "llama.cpp's lfm2moe requires the experts' selection bias"),
                     ("norm_topk_prob", True, "llama.cpp's lfm2moe always renormalises the chosen experts' weights"),
                     ("routed_scaling_factor", 1.0, "llama.cpp's lfm2moe never scales the chosen experts' weights (its "
                                                    "loader reads no expert_weights_scale)")),
           **{**_LFM2, "config_keys": _LFM2["config_keys"] + (
               (K.LEADING_DENSE_BLOCK_COUNT, "num_dense_layers", 0), (K.EXPERT_GATING_FUNC, None, K.GATING_SIGMOID)),
              "required_keys": _LFM2["required_keys"] + (K.EXPERT_FEED_FORWARD_LENGTH, K.EXPERT_GATING_FUNC)}),
)})



# Llama 4 (llama4, Llama4ForCausalLM: the text model): no rope in every 4th layer, which llama.cpp's graph hard-codes
# (LoaderArch.no_rope_layers; config.json's no_rope_layers must say the same), q and k L2-normalised after rope in the
# other layers (use_qk_norm: llama.cpp leaves it out exactly on 128-expert models, Maverick), chunked attention of 8192
# in the rope layers (archs.SLIDING_WINDOWS) and the attention temperature of the no-rope layers (0.1 over 8192,
# archs.ATTN_TEMPERATURES), both hard-coded; pairs interleaved as ggml's NORMAL rope (transformers' complex rotation:
# no permutation, as llama.cpp's converter writes them, undo_permute False).  A mixture every interleave_moe_layer_step
# layers (dense ones between, of intermediate_size_mlp), the experts stacked as x @ W (gate_up_proj [E, n_embd, 2 ff]:
# gate the first half of the columns) and routed by a sigmoid of the top scores that scales each expert's input, an
# ungated shared expert as wide as one (src/models/llama4.cpp; conversion/llama.py, Llama4Model).
FAMILIES.update({f.arch: f for f in (
    Family("llama4", ("Llama4ForCausalLM",), "rms", "swiglu", moe="always", moe_norm_topk=False,
           experts_layout="gate-up-transposed-halves", shared_experts=1, moe_step_key="interleave_moe_layer_step",
           hf_moe_layers="moe_layers", hf_no_rope_layers="no_rope_layers", reference=False,
           config_moves=(("intermediate_size", "moe_intermediate_size"), ("intermediate_size_mlp", "intermediate_size")),
           config_keys=((K.INTERLEAVE_MOE_LAYER_STEP, "interleave_moe_layer_step", 1),),
           required_keys=(K.INTERLEAVE_MOE_LAYER_STEP, K.EXPERT_FEED_FORWARD_LENGTH),
           requires=(("attention_bias", False, "llama.cpp's llama4 loads no attention output bias"),
                     ("hidden_act", "silu", "llama.cpp's llama4 uses SiLU"),
                     ("attention_chunk_size", 8192, "llama.cpp's llama4 hard-codes chunked attention of 8192 tokens"),
                     ("attn_temperature_tuning", True, "llama.cpp's llama4 always scales the no-rope layers' queries by "
                                                       "the attention temperature"),
                     ("floor_scale", 8192, "llama.cpp's llama4 hard-codes the temperature's period, 8192"),
                     ("attn_scale", 0.1, "llama.cpp's llama4 hard-codes the temperature's scale, 0.1"),
                     ("use_qk_norm", lambda c: c.get("num_local_experts") != 128,
                      "llama.cpp's llama4 L2-normalises q and k exactly on models without 128 experts"))),
)})


# Gemma 4 (gemma4, Gemma4ForCausalLM: the text model; the 31B layout): sliding-window layers and global ones
# (config.json's layer_types, written as attention.sliding_window_pattern, which the loader requires); the global layers'
# "proportional" rope (rope_parameters.full_attention: partial_rotary_factor 0.25, base 1e6 released) over their own,
# larger head, as llama.cpp's converter writes it: rope.dimension_count the whole head and a rope_freqs tensor of 1e30
# on the pairs past the rotated quarter (only the global layers take it); the sliding layers' own head size and rotary
# count (key_length_swa, rope.dimension_count_swa) and base (rope.freq_base_swa), never scaled; q/k norms, the values
# RMS-normed without a weight, no query scaling (llama.cpp's f_attention_scale 1, transformers' scaling 1.0), the global
# layers' values their keys where attention_k_eq_v (no v_proj: llama.cpp's loader takes attn_v as optional), norms
# stored as they are (Gemma4RMSNorm multiplies by w, not 1 + w), the per-layer output scale (layer_scalar, as
# layer_output_scale), a final soft-cap.  Per-layer embeddings (E2B, E4B), shared key/value layers, mixture blocks
# (26B-A4B) and the double-wide MLP are refused (src/models/gemma4.cpp; conversion/gemma.py, Gemma4Model).
_GEMMA4_BLOCK = ("attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_output.weight", "attn_q_norm.weight",
                 "attn_k_norm.weight", "post_attention_norm.weight", "ffn_norm.weight", "post_ffw_norm.weight") + _DENSE_FFN
FAMILIES.update({f.arch: f for f in (
    Family("gemma4", ("Gemma4ForCausalLM",), "rms", "geglu", tied_default=True, embed_scale=True, softcaps="final",
           writes_head_dim=True, global_heads=True, reference=False,
           model_tensors=_MODEL + (K.ROPE_FREQS_TENSOR,), block_tensors=_GEMMA4_BLOCK,
           config_keys=((K.EMBEDDING_LENGTH_PER_LAYER, None, 0),),
           required_keys=(K.SLIDING_WINDOW, K.SLIDING_WINDOW_PATTERN, K.EMBEDDING_LENGTH_PER_LAYER, K.KEY_LENGTH_SWA,
                          K.VALUE_LENGTH_SWA),
           requires=(("attention_bias", False, "llama.cpp's gemma4 loads no attention biases"),
                     ("hidden_size_per_layer_input", 0, "ropetool converts Gemma 4 without per-layer embeddings (the "
                                                        "31B layout; E2B and E4B have them)", 256),
                     ("num_kv_shared_layers", 0, "ropetool converts Gemma 4 without shared key/value layers"),
                     ("enable_moe_block", False, "ropetool converts Gemma 4 without mixture blocks (26B-A4B has them)"),
                     ("use_double_wide_mlp", False, "ropetool converts Gemma 4 without the double-wide MLP"))),
)})


def family_for_config(config: dict) -> Family:
    """The family of a config.json, by its ``architectures`` (else its ``model_type``)."""
    names = config.get("architectures") or []
    if not isinstance(names, list):
        names = [names]
    for family in FAMILIES.values():
        if any(n in family.hf_architectures for n in names):
            return family
    model_type = config.get("model_type")
    for family in FAMILIES.values():
        if model_type and any(n.lower().startswith(str(model_type).lower()) for n in family.hf_architectures):
            return family
    known = ", ".join(n for f in FAMILIES.values() for n in f.hf_architectures)
    raise RopetoolError(f"unknown architecture {names or model_type!r}; ropetool converts: {known}")


def family_for_arch(name: str | None) -> Family | None:
    """The family whose llama.cpp architecture is ``name`` (None: the reference cannot run it)."""
    return FAMILIES.get(name)


__all__ = ["Dims", "Family", "FAMILIES", "EXTEND_DEFAULT", "family_for_config", "family_for_arch", "config_value"]
