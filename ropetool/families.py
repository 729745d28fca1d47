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

import gguf

from ropetool.errors import RopetoolError
from ropetool.llamacpp.archs import LoaderArch, loader


@dataclass(frozen=True)
class Family:
    arch: str  # llama.cpp's architecture name
    hf_architectures: tuple[str, ...]
    norm: str  # "rms" or "layer"
    ffn: str  # "swiglu" (separate gate), "swiglu-fused" (gate and up in one tensor, gate first), "gelu"
    permute_qk: bool = False  # HF rotate_half rows -> llama.cpp's NORMAL pairs (llama's converter permutes)
    qkv_layout: str | None = None  # fused QKV as HF stores it: "concat" ([q; k; v]) or "per-head" (BLOOM)
    strip_prefix: str = ""  # prefix llama.cpp's converter removes from HF names
    hf_eps_key: str = "rms_norm_eps"
    tied_default: bool = False  # tie_word_embeddings when config.json does not say
    writes_tied_output: bool = False  # the converter writes the tied output matrix as output.weight

    @property
    def loader(self) -> LoaderArch:
        return loader(self.arch)

    @property
    def alibi(self) -> bool:
        """Whether llama.cpp runs this family with ALiBi (for any layer count) rather than rope."""
        return self.loader.alibi_bias(None, None) is not None or bool(self.loader.alibi_by_layers)

    @property
    def model_arch(self) -> gguf.MODEL_ARCH:
        return next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == self.arch)


FAMILIES: dict[str, Family] = {
    f.arch: f
    for f in (
        Family("llama", ("LlamaForCausalLM", "MistralForCausalLM"), "rms", "swiglu", permute_qk=True),
        Family("qwen2", ("Qwen2ForCausalLM",), "rms", "swiglu"),
        Family("qwen3", ("Qwen3ForCausalLM",), "rms", "swiglu"),
        Family("phi3", ("Phi3ForCausalLM",), "rms", "swiglu-fused", qkv_layout="concat"),
        Family("bloom", ("BloomForCausalLM", "BloomModel"), "layer", "gelu", qkv_layout="per-head",
               strip_prefix="transformer.", hf_eps_key="layer_norm_epsilon", tied_default=True,
               writes_tied_output=True),
    )
}


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


__all__ = ["Family", "FAMILIES", "family_for_config", "family_for_arch"]
