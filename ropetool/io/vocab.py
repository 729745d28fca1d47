"""Tokenizer files of a Hugging Face checkpoint -> the ``tokenizer.ggml.*`` keys of a GGUF file.

Two tokenizer families are supported, the two llama.cpp implements for decoder-only models:

* byte-level BPE (``tokenizer.json`` of the ``tokenizers`` library, GPT-2 / Llama 3 / Qwen2 /
  BLOOM style), written as tokenizer model ``"gpt2"`` plus the name of the pre-tokenizer
  (``tokenizer.ggml.pre``) by which llama.cpp picks its splitting regexes;
* SentencePiece BPE (``tokenizer.model``, Llama 2 / Mistral style), written as model ``"llama"``.
  The protobuf is parsed here, without the ``sentencepiece`` package.

Special tokens, the add-BOS/EOS flags and the chat template come from ``tokenizer_config.json``,
``special_tokens_map.json``, the ``tokenizer.json`` post-processor and ``config.json``, with the
precedence gguf-py's ``gguf.SpecialVocab`` uses.  The token list is padded to the model's
``vocab_size`` with ``[PAD{id}]`` tokens, as llama.cpp's ``convert_hf_to_gguf.py`` does.

This module reads files only: it never imports ``transformers``, ``tokenizers`` or
``sentencepiece``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from ropetool.errors import RopetoolError
from ropetool.io.files import read_regular, read_text
from ropetool.io.gguf_constants import constants as gguf  # gguf-py's Keys and TokenType, without the rest of gguf-py
from ropetool.io.gguf_file import NewValue, T

logger = logging.getLogger(__name__)

__all__ = [
    "Vocab",
    "load_vocab",
    "vocab_records",
    "detect_pre_tokenizer",
    "LLAMA_CPP_PRE_TOKENIZERS",
    "SPECIAL_TOKEN_TYPES",
]

# --------------------------------------------------------------------------- #
# Pre-tokenizers.
#
# llama.cpp does not read the pre-tokenizer from the GGUF file; it hard-codes one list of
# splitting regexes per name in ``tokenizer.ggml.pre`` (src/llama-vocab.cpp: the name -> type
# chain in ``llama_vocab::impl::load`` and the type -> regexes switch in ``llm_tokenizer_bpe``).
# We recognise a tokenizer.json by reducing its pre-tokenizer to the sequence of regexes it
# splits on, each in its original tokenizer.json spelling (the one llama-vocab.cpp quotes as
# "original regex from tokenizer.json"), and comparing with the table below.
# --------------------------------------------------------------------------- #

#: GPT-2's pattern, built into the ``ByteLevel`` pre-tokenizer of ``tokenizers`` (use_regex=true).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
#: Llama 3 (tiktoken cl100k): digits in runs of up to three.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: Qwen2: as Llama 3 but single digits.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: BLOOM, as its tokenizer.json writes it (a nested character class) ...
BLOOM_PATTERN = r" ?[^(\s|[.,!?…。，、।۔،])]+"
#: ... and the same character set as llama-vocab.cpp spells it.
BLOOM_PATTERN_FLAT = r" ?[^(\s|.,!?…。，、।۔،)]+"
#: GPT-4o (tiktoken o200k); llama.cpp runs an ASCII-case approximation of it.
GPT4O_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: Mistral's Tekken (Nemo and later); llama.cpp runs an ASCII-case approximation of it.
TEKKEN_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: llama.cpp's "qwen35": as Qwen2, with combining marks (\p{M}) kept with letters.
QWEN35_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: DeepSeek V3: three splits (digit triples, CJK runs, the rest). The third contains literal CR/LF
#: characters, as tokenizer.json and llama-vocab.cpp both spell it.
DEEPSEEK3_PATTERNS = (
    r"\p{N}{1,3}",
    "[一-龥\u3040-ゟ゠-ヿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
)
#: ``Digits(individual_digits=true)`` / ``Digits(individual_digits=false)`` as regexes
#: (tokenizers tests ``char::is_numeric``, i.e. \p{N}).
DIGIT_PATTERN = r"\p{N}"
DIGITS_PATTERN = r"\p{N}+"


@dataclass(frozen=True)
class _PreTokenizerRule:
    """One llama.cpp pre-tokenizer name and the tokenizer.json it reproduces exactly."""

    name: str
    patterns: tuple[str, ...]  # regexes split on, in order (HF "Isolated" behaviour)
    ignore_merges: bool  # llama.cpp sets ignore_merges for this name; the BPE model must agree
    clean_spaces: bool | None = None  # llama.cpp's clean_spaces for this name, where two names split alike


_RULES: tuple[_PreTokenizerRule, ...] = (
    _PreTokenizerRule("llama-bpe", (LLAMA3_PATTERN,), ignore_merges=True),
    _PreTokenizerRule("smaug-bpe", (LLAMA3_PATTERN,), ignore_merges=False),
    _PreTokenizerRule("qwen2", (QWEN2_PATTERN,), ignore_merges=False),
    _PreTokenizerRule("bloom", (BLOOM_PATTERN,), ignore_merges=False),
    _PreTokenizerRule("bloom", (BLOOM_PATTERN_FLAT,), ignore_merges=False),
    _PreTokenizerRule("gpt-2", (GPT2_PATTERN,), ignore_merges=False),
    # The same splitting; llama.cpp cleans spaces when decoding for starcoder, not for smollm
    # (src/llama-vocab.cpp): tokenizer_config.json's clean_up_tokenization_spaces picks between them.
    _PreTokenizerRule("starcoder", (DIGIT_PATTERN, GPT2_PATTERN), ignore_merges=False, clean_spaces=True),
    _PreTokenizerRule("smollm", (DIGIT_PATTERN, GPT2_PATTERN), ignore_merges=False, clean_spaces=False),
    _PreTokenizerRule("qwen35", (QWEN35_PATTERN,), ignore_merges=False),
    _PreTokenizerRule("deepseek-v3", DEEPSEEK3_PATTERNS, ignore_merges=False),
    _PreTokenizerRule("gpt-4o", (GPT4O_PATTERN,), ignore_merges=False),
    _PreTokenizerRule("tekken", (TEKKEN_PATTERN,), ignore_merges=True),
)

#: Names whose regexes llama.cpp only approximates (it sees ASCII case only, and no \p{M} in its
#: letter classes): words that change case outside ASCII or carry combining marks may split
#: differently from the Hugging Face tokenizer.
_APPROXIMATED_BY_LLAMA_CPP = frozenset({"gpt-4o", "tekken"})

#: Every ``tokenizer.ggml.pre`` name llama.cpp's llama-vocab.cpp accepts for a "gpt2" vocabulary
#: and that the bundled llama.cpp (llama-cpp-python 0.3.36) loads; ``pre_tokenizer=`` overrides
#: are checked against it.
LLAMA_CPP_PRE_TOKENIZERS: frozenset[str] = frozenset(
    """
    default llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2 jina-v5-nano minicpm5
    deepseek-llm deepseek-coder deepseek-v3 spark2_5 youtu falcon mpt starcoder gpt-2 phi-2 jina-es
    jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert jais-2 gemma4
    granite-embed-multi-311m sarvam-moe jina-v1-en jina-v2-code roberta-bpe whitespace refact
    command-r qwen2 deepseek-r1-qwen kormo f2llmv2 qwen35 stablelm2 olmo dbrx smaug-bpe poro-chat
    glm4 glm5 chatglm-bpe viking jais tekken smollm codeshell bloom gpt3-finnish exaone exaone4
    exaone-moe chameleon minerva-7b megrez gpt-4o llama4 kanana2 talkie granite-embed-multi-97m
    tiny_aya cohere2moe superbpe trillion granite-docling bailingmoe bailingmoe2 llada-moe
    seed-coder hunyuan hunyuan-dense hy_v4 joyai-llm kimi-k2 ufakzeka grok-2 afmoe laguna
    minimax-m2 solar-open mellum2
    """.split()
)

#: Special-token kinds read from the tokenizer files (gguf.SpecialVocab's names; "cls" and
#: "sep" stand in for a missing BOS / EOS as SpecialVocab does).
SPECIAL_TOKEN_TYPES: tuple[str, ...] = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
_WRITABLE_SPECIAL_TYPES = ("bos", "eos", "eot", "eom", "unk", "sep", "pad", "mask")

_PAD_SCORE = -10000.0  # score of padding tokens in SentencePiece vocabularies (as convert_hf_to_gguf.py)
_ADDED_SCORE = -1000.0  # score of added tokens in SentencePiece vocabularies (as convert_hf_to_gguf.py)


@dataclass
class Vocab:
    """A tokenizer, in the form the GGUF ``tokenizer.ggml.*`` keys store it."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str | None  # llama.cpp pre-tokenizer name (tokenizer.ggml.pre), for gpt2 models
    tokens: list[str]
    scores: list[float] | None
    token_types: list[int]  # gguf.TokenType values
    merges: list[str]  # "a b" strings, BPE only
    special_ids: dict[str, int] = field(default_factory=dict)  # bos, eos, unk, pad, ... as gguf's SpecialVocab names them
    add_bos: bool | None = None
    add_eos: bool | None = None
    add_space_prefix: bool | None = None  # SentencePiece
    chat_template: str | None = None
    remove_extra_whitespaces: bool | None = None  # SentencePiece
    source: str = field(default="", compare=False)  # the file the vocabulary was read from


# --------------------------------------------------------------------------- #
# Entry points.
# --------------------------------------------------------------------------- #


def load_vocab(model_dir: Path, vocab_size: int | None = None, pre_tokenizer: str | None = None) -> Vocab:
    """Read the tokenizer of the Hugging Face checkpoint in ``model_dir``.

    ``vocab_size``: the number of rows of the embedding matrix; the token list is padded to it.
    ``None`` takes config.json's ``vocab_size`` (or ``text_config.vocab_size``) when there is one.
    ``pre_tokenizer``: a llama.cpp pre-tokenizer name to write instead of the detected one
    (byte-level BPE tokenizers only).

    A byte-level BPE ``tokenizer.json`` is used when present; otherwise ``tokenizer.model``
    (SentencePiece), which is also what Llama/Mistral-style folders with a SentencePiece-derived
    ``tokenizer.json`` (Metaspace, byte fallback) get.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise RopetoolError(f"{model_dir} is not a directory")
    if pre_tokenizer is not None and pre_tokenizer not in LLAMA_CPP_PRE_TOKENIZERS:
        raise RopetoolError(
            f"unknown pre-tokenizer {pre_tokenizer!r}; llama.cpp knows: {', '.join(sorted(LLAMA_CPP_PRE_TOKENIZERS))}"
        )
    config = _read_json(model_dir / "config.json") or {}
    if vocab_size is None:
        vocab_size = _config_vocab_size(config)
    if vocab_size is not None and (not isinstance(vocab_size, int) or vocab_size <= 0):
        raise RopetoolError(f"vocab_size must be a positive integer, got {vocab_size!r}")

    tokenizer_json_path = model_dir / "tokenizer.json"
    spm_path = model_dir / "tokenizer.model"
    tokenizer_json = _read_json(tokenizer_json_path)
    if tokenizer_json is not None:
        _check_tokenizer_json(tokenizer_json, tokenizer_json_path)

    if tokenizer_json is not None and _is_byte_level_bpe(tokenizer_json):
        vocab = _load_byte_level_bpe(tokenizer_json, tokenizer_json_path, vocab_size, pre_tokenizer)
    elif os.path.exists(spm_path):
        if pre_tokenizer is not None:
            raise RopetoolError(
                "--pre-tokenizer applies to byte-level BPE tokenizers, not to SentencePiece tokenizer.model"
            )
        vocab = _load_sentencepiece(model_dir, spm_path, tokenizer_json, vocab_size)
    elif tokenizer_json is not None:
        model_type = (tokenizer_json.get("model") or {}).get("type")
        raise RopetoolError(
            f"{tokenizer_json_path}: unsupported tokenizer (model {model_type!r}, not byte-level BPE) "
            "and no tokenizer.model"
        )
    else:
        raise RopetoolError(f"{model_dir} has neither tokenizer.json nor tokenizer.model")

    _fill_special_tokens(vocab, model_dir, tokenizer_json, config)
    return vocab


def vocab_records(vocab: Vocab) -> list[NewValue]:
    """The tokenizer keys (``tokenizer.ggml.*``) and the chat template, with the types gguf-py's writer gives them."""
    n = len(vocab.tokens)
    if len(vocab.token_types) != n or (vocab.scores is not None and len(vocab.scores) != n):
        raise RopetoolError("vocabulary is inconsistent: tokens, scores and token types differ in length")
    tk = gguf.Keys.Tokenizer
    out = [
        NewValue(tk.MODEL, T.STRING, vocab.model),
        NewValue(tk.PRE, T.STRING, vocab.pre if vocab.pre is not None else "default"),
        NewValue(tk.LIST, T.ARRAY, vocab.tokens, T.STRING),
    ]
    if vocab.scores is not None:
        out.append(NewValue(tk.SCORES, T.ARRAY, vocab.scores, T.FLOAT32))
    out.append(NewValue(tk.TOKEN_TYPE, T.ARRAY, vocab.token_types, T.INT32))
    if vocab.merges:
        out.append(NewValue(tk.MERGES, T.ARRAY, vocab.merges, T.STRING))
    for kind in _WRITABLE_SPECIAL_TYPES:
        if kind in vocab.special_ids:
            out.append(NewValue(getattr(tk, f"{kind.upper()}_ID"), T.UINT32, int(vocab.special_ids[kind])))
    for flag, value in ((tk.ADD_BOS, vocab.add_bos), (tk.ADD_EOS, vocab.add_eos), (tk.ADD_PREFIX, vocab.add_space_prefix),
                        (tk.REMOVE_EXTRA_WS, vocab.remove_extra_whitespaces)):
        if value is not None:
            out.append(NewValue(flag, T.BOOL, bool(value)))
    if vocab.chat_template is not None:
        out.append(NewValue(tk.CHAT_TEMPLATE, T.STRING, vocab.chat_template))
    return out


def detect_pre_tokenizer(tokenizer_json: dict, clean_up_spaces: bool | None = None) -> str:
    """The llama.cpp pre-tokenizer name whose regexes reproduce this tokenizer.json's splitting; where two
    names split alike, the one whose decoding cleans spaces as ``clean_up_spaces`` says (tokenizer_config.json's
    ``clean_up_tokenization_spaces``), else the first.

    Raises a RopetoolError naming what was not recognised (and suggesting ``--pre-tokenizer``).
    """
    model = tokenizer_json.get("model") or {}
    normalizer = tokenizer_json.get("normalizer")
    # llama.cpp applies no normalizer to BPE text; NFC (Qwen2) only changes non-NFC input.
    if normalizer is not None and not _is_noop_or_nfc_normalizer(normalizer):
        _cannot_tell(f"its normalizer ({_describe(normalizer)}) has no llama.cpp equivalent")
    patterns = _split_patterns(tokenizer_json.get("pre_tokenizer"))
    ignore_merges = bool(model.get("ignore_merges", False))
    matching = [rule for rule in _RULES if rule.patterns == patterns and rule.ignore_merges == ignore_merges]
    if clean_up_spaces is not None:
        matching.sort(key=lambda rule: rule.clean_spaces is not None and rule.clean_spaces != clean_up_spaces)
    if matching:
        rule = matching[0]
        if rule.name in _APPROXIMATED_BY_LLAMA_CPP:
            logger.warning(
                "pre-tokenizer %s: llama.cpp approximates its regex (ASCII case only, no combining marks); "
                "some non-ASCII words may tokenize differently from the Hugging Face tokenizer",
                rule.name,
            )
        return rule.name
    if any(rule.patterns == patterns for rule in _RULES):
        _cannot_tell(f"its regexes are known, but not with ignore_merges={str(ignore_merges).lower()}")
    shown = " then ".join(repr(p) for p in patterns) or "none"
    _cannot_tell(f"its split regexes ({shown}) match no pre-tokenizer known here")


# --------------------------------------------------------------------------- #
# Byte-level BPE (tokenizer.json).
# --------------------------------------------------------------------------- #


def _is_byte_level_bpe(tokenizer_json: dict) -> bool:
    """True for a BPE tokenizer.json that byte-encodes its input (GPT-2's ByteLevel step)."""
    model = tokenizer_json.get("model")
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE" or "merges" not in model:
        return False
    if model.get("byte_fallback"):
        return False
    return _has_type(tokenizer_json.get("pre_tokenizer"), "ByteLevel") or _has_type(
        tokenizer_json.get("decoder"), "ByteLevel"
    )


def _has_type(component: Any, type_name: str) -> bool:
    if not isinstance(component, dict):
        return False
    if component.get("type") == type_name:
        return True
    children = component.get("pretokenizers") or component.get("decoders") or component.get("processors") or []
    return any(_has_type(child, type_name) for child in children)


def _split_patterns(pre_tokenizer: Any) -> tuple[str, ...]:
    """The regexes a tokenizer.json pre-tokenizer splits on, in order; raises when it cannot say."""
    if not isinstance(pre_tokenizer, dict):
        _cannot_tell("it has no pre-tokenizer")
    steps = pre_tokenizer.get("pretokenizers") if pre_tokenizer.get("type") == "Sequence" else [pre_tokenizer]
    if not isinstance(steps, list) or not steps:
        _cannot_tell("its pre-tokenizer is empty")
    *splits, last = steps
    if not isinstance(last, dict) or last.get("type") != "ByteLevel":
        _cannot_tell(f"its pre-tokenizer does not end with a ByteLevel step ({_describe(last)})")
    if last.get("add_prefix_space", False):
        _cannot_tell("its ByteLevel step adds a prefix space, which llama.cpp does not")
    patterns: list[str] = []
    for step in splits:
        patterns.append(_step_pattern(step))
    if last.get("use_regex", True):
        patterns.append(GPT2_PATTERN)
    return tuple(patterns)


def _step_pattern(step: Any) -> str:
    """One pre-tokenizer step (before the final ByteLevel) as the regex it splits on."""
    if not isinstance(step, dict):
        _cannot_tell(f"a pre-tokenizer step is not an object ({step!r})")
    kind = step.get("type")
    if kind == "Split":
        pattern = step.get("pattern") or {}
        if "Regex" not in pattern:
            _cannot_tell(f"it splits on a plain string ({_describe(pattern)})")
        if step.get("behavior") != "Isolated" or step.get("invert", False):
            _cannot_tell(f"a Split step has behavior {step.get('behavior')!r} / invert {step.get('invert')!r}")
        return str(pattern["Regex"])
    if kind == "Digits":
        return DIGIT_PATTERN if step.get("individual_digits", False) else DIGITS_PATTERN
    _cannot_tell(f"its pre-tokenizer has a {kind!r} step")


def _is_noop_or_nfc_normalizer(normalizer: Any) -> bool:
    if not isinstance(normalizer, dict):
        return False
    if normalizer.get("type") == "NFC":
        return True
    if normalizer.get("type") == "Sequence":
        return all(_is_noop_or_nfc_normalizer(n) for n in normalizer.get("normalizers") or [])
    return False


def _load_byte_level_bpe(tokenizer_json: dict, path: Path, vocab_size: int | None, pre_tokenizer: str | None) -> Vocab:
    """Tokens (model vocab + added tokens, in id order), types and merges of a byte-level BPE tokenizer.json."""
    model = tokenizer_json["model"]
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise RopetoolError(f"{path}: BPE {key} {model[key]!r} is not supported by llama.cpp")
    base = model.get("vocab")
    if not isinstance(base, dict) or not base:
        raise RopetoolError(f"{path}: model.vocab is missing or empty")

    by_id: dict[int, tuple[str, int]] = {}
    for text, token_id in base.items():
        if not isinstance(token_id, int) or token_id < 0:
            raise RopetoolError(f"{path}: token {text!r} has an invalid id {token_id!r}")
        if token_id in by_id:
            raise RopetoolError(f"{path}: id {token_id} is used by {by_id[token_id][0]!r} and {text!r}")
        by_id[token_id] = (text, gguf.TokenType.NORMAL)
    for added in _added_tokens(tokenizer_json, path):
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)  # raw text, as llama.cpp matches it

    tokens, types = _fill_ids(by_id, vocab_size, path)
    pre = pre_tokenizer if pre_tokenizer is not None else _detect_or_explain(tokenizer_json, path)
    return Vocab(
        model="gpt2",
        pre=pre,
        tokens=tokens,
        scores=None,
        token_types=types,
        merges=_merges(model.get("merges"), path),
        source=str(path),
    )


def _detect_or_explain(tokenizer_json: dict, path: Path) -> str:
    config = path.parent / "tokenizer_config.json"
    clean_up = None
    settings = _read_json(config)
    if isinstance(settings, dict):
        value = settings.get("clean_up_tokenization_spaces")
        clean_up = value if isinstance(value, bool) else None
    try:
        return detect_pre_tokenizer(tokenizer_json, clean_up)
    except RopetoolError as exc:
        raise RopetoolError(f"{path}: {exc}") from None


def _cannot_tell(reason: str) -> NoReturn:
    raise RopetoolError(
        f"cannot tell which llama.cpp pre-tokenizer this tokenizer needs: {reason}; "
        f"pass --pre-tokenizer NAME (e.g. llama-bpe, qwen2, gpt-2)"
    )


def _added_tokens(tokenizer_json: dict, path: Path) -> list[dict]:
    added = tokenizer_json.get("added_tokens") or []
    if not isinstance(added, list):
        raise RopetoolError(f"{path}: added_tokens is not a list")
    for entry in added:
        if not (isinstance(entry, dict) and isinstance(entry.get("id"), int) and entry["id"] >= 0):
            raise RopetoolError(f"{path}: malformed added token {entry!r}")
        if not isinstance(entry.get("content"), str) or not entry["content"]:
            raise RopetoolError(f"{path}: added token {entry['id']} has no content")
    return added


def _fill_ids(by_id: dict[int, tuple[str, int]], vocab_size: int | None, path: Path) -> tuple[list[str], list[int]]:
    """Token texts and types for ids 0..n-1, holes and the tail up to vocab_size as [PAD{id}] / UNUSED."""
    n_tokenizer = max(by_id) + 1
    if vocab_size is not None and n_tokenizer > vocab_size:
        raise RopetoolError(
            f"{path}: the tokenizer has ids up to {n_tokenizer - 1}, beyond the model's vocab_size {vocab_size}"
        )
    n = vocab_size if vocab_size is not None else n_tokenizer
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n):
        text, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(text)
        types.append(int(kind))
    _check_unique(tokens, path)
    return tokens, types


def _merges(merges: Any, path: Path) -> list[str]:
    """BPE merges as "a b" strings, from either tokenizer.json form ("a b" or ["a", "b"])."""
    if not isinstance(merges, list) or not merges:
        raise RopetoolError(f"{path}: model.merges is missing or empty (llama.cpp needs merges)")
    out: list[str] = []
    for merge in merges:
        if isinstance(merge, str) and merge.find(" ", 1) > 0:
            out.append(merge)  # llama.cpp splits at the first space after the first character
        elif isinstance(merge, list) and len(merge) == 2 and all(isinstance(p, str) and p for p in merge):
            # A space inside a part is written as U+0120, as gguf-py does (byte-level
            # vocabularies never contain a raw space anyway).
            out.append(" ".join(p.replace(" ", chr(ord(" ") + 256)) for p in merge))
        else:
            raise RopetoolError(f"{path}: malformed merge {merge!r}")
    return out


def _check_unique(tokens: list[str], path: Path) -> None:
    seen: dict[str, int] = {}
    for i, text in enumerate(tokens):
        if text in seen:
            raise RopetoolError(
                f"{path}: token {text!r} appears twice (ids {seen[text]} and {i}); llama.cpp rejects that"
            )
        seen[text] = i


# --------------------------------------------------------------------------- #
# SentencePiece (tokenizer.model, parsed as protobuf).
# --------------------------------------------------------------------------- #

_SPM_UNIGRAM, _SPM_BPE = 1, 2
_SPM_MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}


@dataclass
class _SentencePieceModel:
    pieces: list[tuple[str, float, int]]  # (piece, score, type)
    model_type: int = _SPM_UNIGRAM
    normalizer_name: str = ""
    has_charsmap: bool = False
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True


def _load_sentencepiece(model_dir: Path, path: Path, tokenizer_json: dict | None, vocab_size: int | None) -> Vocab:
    spm = _parse_sentencepiece(read_regular(path, path.name), path)
    if spm.model_type != _SPM_BPE:
        kind = _SPM_MODEL_TYPES.get(spm.model_type, str(spm.model_type))
        raise RopetoolError(
            f"{path} is a SentencePiece {kind} model; llama.cpp's 'llama' tokenizer reproduces only BPE models"
        )
    if spm.has_charsmap and spm.normalizer_name not in ("identity", ""):
        logger.warning(
            "%s: SentencePiece normalizer %r is not applied by llama.cpp; "
            "text that it would change tokenizes differently",
            path, spm.normalizer_name,
        )  # fmt: skip

    n_spm = len(spm.pieces)
    by_id: dict[int, tuple[str, float, int]] = {i: piece for i, piece in enumerate(spm.pieces)}
    for token_id, content, special in _spm_added_tokens(model_dir, tokenizer_json):
        if token_id < n_spm and by_id[token_id][0] == content:
            continue  # already in the SentencePiece vocabulary: keep its own type and score
        if vocab_size is not None and token_id >= vocab_size:
            logger.warning(
                "%s: added token %r (id %d) is beyond vocab_size %d; skipped", path, content, token_id, vocab_size
            )
            continue
        kind = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
        by_id[token_id] = (content, _ADDED_SCORE, kind)

    n_tokenizer = max(by_id) + 1
    if vocab_size is not None and n_spm > vocab_size:
        raise RopetoolError(f"{path} has {n_spm} pieces, more than the model's vocab_size {vocab_size}")
    n = vocab_size if vocab_size is not None else n_tokenizer
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    for i in range(n):
        text, score, kind = by_id.get(i, (f"[PAD{i}]", _PAD_SCORE, gguf.TokenType.UNUSED))
        tokens.append(text)
        scores.append(float(score))
        types.append(int(kind))
    _check_unique(tokens, path)
    return Vocab(
        model="llama",
        pre=None,
        tokens=tokens,
        scores=scores,
        token_types=types,
        merges=[],
        add_space_prefix=spm.add_dummy_prefix,
        remove_extra_whitespaces=spm.remove_extra_whitespaces,
        source=str(path),
    )


def _spm_added_tokens(model_dir: Path, tokenizer_json: dict | None) -> list[tuple[int, str, bool]]:
    """(id, content, special) of the tokens added on top of tokenizer.model, from every file that lists them."""
    found: dict[int, tuple[str, bool]] = {}
    added_json = _read_json(model_dir / "added_tokens.json")
    if isinstance(added_json, dict):
        for content, token_id in added_json.items():
            if isinstance(token_id, int) and token_id >= 0:
                found[token_id] = (content, False)
    if tokenizer_json is not None:
        for entry in _added_tokens(tokenizer_json, model_dir / "tokenizer.json"):
            found[entry["id"]] = (entry["content"], bool(entry.get("special")))
    tok_config = _read_json(model_dir / "tokenizer_config.json")
    decoder = tok_config.get("added_tokens_decoder") if isinstance(tok_config, dict) else None
    if isinstance(decoder, dict):
        for key, entry in decoder.items():
            if isinstance(entry, dict) and isinstance(entry.get("content"), str) and str(key).isdigit():
                found[int(key)] = (entry["content"], bool(entry.get("special")))
    return [(token_id, content, special) for token_id, (content, special) in sorted(found.items())]


class _ProtobufError(Exception):
    pass


def _parse_sentencepiece(data: bytes, path: Path) -> _SentencePieceModel:
    """Decode a SentencePiece ModelProto (sentencepiece_model.proto) from its wire format."""
    try:
        spm = _SentencePieceModel(pieces=[])
        for number, value in _protobuf_fields(data):
            if number == 1:
                spm.pieces.append(_parse_piece(_as_bytes(value)))
            elif number == 2:
                for sub, sub_value in _protobuf_fields(_as_bytes(value)):
                    if sub == 3:
                        spm.model_type = _as_int(sub_value)
            elif number == 3:
                for sub, sub_value in _protobuf_fields(_as_bytes(value)):
                    if sub == 1:
                        spm.normalizer_name = _as_bytes(sub_value).decode("utf-8")
                    elif sub == 2:
                        spm.has_charsmap = len(_as_bytes(sub_value)) > 0
                    elif sub == 3:
                        spm.add_dummy_prefix = bool(_as_int(sub_value))
                    elif sub == 4:
                        spm.remove_extra_whitespaces = bool(_as_int(sub_value))
    except (_ProtobufError, UnicodeDecodeError) as exc:
        raise RopetoolError(f"{path} is not a valid SentencePiece model ({exc})") from None
    if not spm.pieces:
        raise RopetoolError(f"{path} is not a valid SentencePiece model (no pieces)")
    return spm


def _parse_piece(data: bytes) -> tuple[str, float, int]:
    piece, score, kind = None, 0.0, 1  # proto defaults: score 0, type NORMAL
    for number, value in _protobuf_fields(data):
        if number == 1:
            piece = _as_bytes(value).decode("utf-8")
        elif number == 2:
            if not isinstance(value, float):
                raise _ProtobufError("piece score is not a float")
            score = value
        elif number == 3:
            kind = _as_int(value)
    if piece is None:
        raise _ProtobufError("a piece has no text")
    if kind not in (1, 2, 3, 4, 5, 6):  # SentencePiece's Type enum numbers equal gguf.TokenType's
        raise _ProtobufError(f"piece {piece!r} has unknown type {kind}")
    return piece, score, kind


def _protobuf_fields(data: bytes) -> list[tuple[int, int | float | bytes]]:
    """(field number, value) pairs of one message: varints as int, fixed32 as float, fixed64 as int."""
    fields: list[tuple[int, int | float | bytes]] = []
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _ProtobufError(f"field number 0 at byte {pos}")
        if wire == 0:
            value, pos = _varint(data, pos)
            fields.append((number, value))
        elif wire in (1, 5):  # fixed64 (as an int), fixed32 (as a float)
            size, fmt = (8, "<Q") if wire == 1 else (4, "<f")
            if pos + size > end:
                raise _ProtobufError(f"truncated fixed{8 * size}")
            fields.append((number, struct.unpack_from(fmt, data, pos)[0]))
            pos += size
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise _ProtobufError(f"field {number} runs past the end of the data")
            fields.append((number, data[pos : pos + length]))
            pos += length
        else:
            raise _ProtobufError(f"unsupported wire type {wire}")
    return fields


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise _ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _ProtobufError("varint too long")


def _as_bytes(value: int | float | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise _ProtobufError("expected a length-delimited field")
    return value


def _as_int(value: int | float | bytes) -> int:
    if not isinstance(value, int):
        raise _ProtobufError("expected a varint field")
    return value


# --------------------------------------------------------------------------- #
# Special tokens, add-BOS/EOS flags, chat template.
# --------------------------------------------------------------------------- #


def _fill_special_tokens(vocab: Vocab, model_dir: Path, tokenizer_json: dict | None, config: dict) -> None:
    """Set ``special_ids``, ``add_bos``/``add_eos`` and ``chat_template`` like gguf.SpecialVocab.

    Ids come from the token strings of tokenizer_config.json (else special_tokens_map.json),
    then from config.json's ``*_token_id``; the flags from the tokenizer.json post-processor,
    overridden by tokenizer_config.json's ``add_bos_token`` / ``add_eos_token``.
    """
    tok_config = _read_json(model_dir / "tokenizer_config.json")
    tok_config = tok_config if isinstance(tok_config, dict) else {}
    special_map = _read_json(model_dir / "special_tokens_map.json")
    special_map = special_map if isinstance(special_map, dict) else {}
    ids = _token_ids(vocab)

    strings: dict[str, str] = {}
    for kind in SPECIAL_TOKEN_TYPES:
        text = _token_content(tok_config.get(f"{kind}_token"))
        if text is None:
            text = _token_content(special_map.get(f"{kind}_token"))
        if text is not None:
            strings[kind] = text
    # SpecialVocab: a CLS token stands in for a missing BOS, a SEP token for a missing EOS.
    if "bos" not in strings and "cls" in strings:
        strings["bos"] = strings["cls"]
    if "eos" not in strings and "sep" in strings:
        strings["eos"] = strings["sep"]

    add: dict[str, bool] = {}
    if tokenizer_json is not None:
        _read_post_processor(tokenizer_json.get("post_processor"), strings, add)

    special_ids: dict[str, int] = {}
    for kind in SPECIAL_TOKEN_TYPES:
        if kind in strings and strings[kind] in ids:
            special_ids[kind] = ids[strings[kind]]
    for kind in SPECIAL_TOKEN_TYPES:
        token_id = config.get(f"{kind}_token_id")
        if token_id is None and isinstance(config.get("text_config"), dict):
            token_id = config["text_config"].get(f"{kind}_token_id")
        if kind not in special_ids and isinstance(token_id, int) and not isinstance(token_id, bool):
            special_ids[kind] = token_id
    for kind, token_id in list(special_ids.items()):
        if not 0 <= token_id < len(vocab.tokens):
            n = len(vocab.tokens)
            logger.warning("special token %s id %d is outside the vocabulary (%d tokens); skipped", kind, token_id, n)
            del special_ids[kind]
    special_ids.pop("cls", None)  # llama.cpp has no CLS key; it served as BOS above
    vocab.special_ids = special_ids

    for kind in ("bos", "eos"):
        entry = tok_config.get(f"add_{kind}_token")
        if isinstance(entry, bool):
            add[kind] = entry
    if vocab.model == "gpt2":
        # BPE: say it explicitly, else llama.cpp falls back to a per-pre-tokenizer default
        # (add_bos=true for llama-bpe) that the Hugging Face tokenizer does not follow.
        add.setdefault("bos", False)
        add.setdefault("eos", False)
    vocab.add_bos = add.get("bos")
    vocab.add_eos = add.get("eos")
    for kind in ("bos", "eos"):
        if getattr(vocab, f"add_{kind}") and kind not in special_ids:
            raise RopetoolError(f"the tokenizer adds a {kind.upper()} token but none is defined")
    vocab.chat_template = _chat_template(model_dir, tok_config)


def _token_ids(vocab: Vocab) -> dict[str, int]:
    """Token text -> id; control and user-defined tokens first, as they are stored as raw text."""
    ids: dict[str, int] = {}
    order = sorted(range(len(vocab.tokens)), key=lambda i: vocab.token_types[i] == gguf.TokenType.NORMAL)
    for i in order:
        ids.setdefault(vocab.tokens[i], i)
    return ids


def _token_content(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    return None


def _read_post_processor(processor: Any, strings: dict[str, str], add: dict[str, bool]) -> None:
    """Whether the tokenizer.json post-processor adds BOS / EOS (single-sequence template).

    A ``TemplateProcessing`` whose template starts with the BOS (or CLS) token adds BOS; one that
    ends with the EOS (or SEP) token adds EOS; when tokenizer_config.json names no BOS/EOS the
    template's first/last special token is taken as it (as gguf.SpecialVocab does).
    """
    if not isinstance(processor, dict):
        return
    if processor.get("type") == "Sequence":
        for child in processor.get("processors") or []:
            _read_post_processor(child, strings, add)
        return
    if processor.get("type") == "RobertaProcessing":
        add["bos"] = add["eos"] = True
        for kind, key in (("bos", "cls"), ("eos", "sep")):
            token = processor.get(key)
            if isinstance(token, list) and token and isinstance(token[0], str):
                strings.setdefault(kind, token[0])
        return
    if processor.get("type") != "TemplateProcessing":
        return
    single = processor.get("single") or []
    if len(single) < 2:
        return
    first = (single[0].get("SpecialToken") or {}).get("id") if isinstance(single[0], dict) else None
    last = (single[-1].get("SpecialToken") or {}).get("id") if isinstance(single[-1], dict) else None
    if first is not None:
        strings.setdefault("bos", first)
        add["bos"] = first in (strings.get("bos"), strings.get("cls"))
    if last is not None:
        strings.setdefault("eos", last)
        add["eos"] = last in (strings.get("eos"), strings.get("sep"))


def _chat_template(model_dir: Path, tok_config: dict) -> str | None:
    """tokenizer_config.json's chat_template (a string, or the "default" of a named list), else
    chat_template.jinja, else chat_template.json."""
    template = tok_config.get("chat_template")
    if template is None:
        jinja = model_dir / "chat_template.jinja"
        if os.path.exists(jinja):
            return read_text(jinja, jinja.name)
        template_json = _read_json(model_dir / "chat_template.json")
        template = template_json.get("chat_template") if isinstance(template_json, dict) else None
    if template is None or isinstance(template, str):
        return template
    if isinstance(template, list):
        for entry in template:
            if isinstance(entry, dict) and entry.get("name") == "default" and isinstance(entry.get("template"), str):
                return entry["template"]
        return None
    raise RopetoolError(
        f"chat_template must be a string or a list of {{name, template}}, got {type(template).__name__}"
    )


# --------------------------------------------------------------------------- #
# Helpers.
# --------------------------------------------------------------------------- #


# The parts of tokenizer.json read here and the JSON type each must have (None: absent or null is fine too).
_COMPONENTS = ("normalizer", "pre_tokenizer", "decoder", "post_processor")
_COMPONENT_LISTS = ("normalizers", "pretokenizers", "decoders", "processors", "single", "pair")


def _check_tokenizer_json(data: Any, path: Path) -> None:
    """tokenizer.json's schema, as far as ropetool reads it: a wrong type is a one-line error naming the field
    (before anything is read from it)."""
    def need(ok: bool, where: str, what: str, value: Any) -> None:
        if not ok:
            raise RopetoolError(f"{path}: {where} must be {what}, got {_json_type(value)}")

    need(isinstance(data, dict), "the file", "a tokenizers JSON object", data)
    model = data.get("model")
    need(model is None or isinstance(model, dict), "model", "an object", model)
    if model is not None:
        for key, kind, what in (("type", str, "a string"), ("vocab", (dict, list), "an object or a list"),
                                ("merges", list, "a list"), ("ignore_merges", bool, "true or false"),
                                ("byte_fallback", bool, "true or false")):
            need(model.get(key) is None or isinstance(model[key], kind), f"model.{key}", what, model.get(key))
    added = data.get("added_tokens")
    need(added is None or isinstance(added, list), "added_tokens", "a list", added)
    for i, entry in enumerate(added or []):
        need(isinstance(entry, dict), f"added_tokens[{i}]", "an object", entry)
        token_id, content = entry.get("id"), entry.get("content")
        need(isinstance(token_id, int) and not isinstance(token_id, bool) and token_id >= 0, f"added_tokens[{i}].id",
             "a non-negative integer", token_id)
        need(isinstance(content, str) and content != "", f"added_tokens[{i}].content", "a non-empty string", content)
        need(entry.get("special") is None or isinstance(entry["special"], bool), f"added_tokens[{i}].special",
             "true or false", entry.get("special"))

    def component(value: Any, where: str, depth: int = 0) -> None:
        need(value is None or isinstance(value, dict), where, "an object", value)
        if value is None or depth > 16:
            return
        need(value.get("type") is None or isinstance(value["type"], str), f"{where}.type", "a string", value.get("type"))
        for key in _COMPONENT_LISTS:
            items = value.get(key)
            need(items is None or isinstance(items, list), f"{where}.{key}", "a list", items)
            if key not in ("single", "pair"):
                for i, child in enumerate(items or []):
                    component(child, f"{where}.{key}[{i}]", depth + 1)

    for name in _COMPONENTS:
        component(data.get(name), name)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


_SURROGATE_ESCAPE = re.compile(r"\\[uU][dD][89a-fA-F][0-9a-fA-F]{2}")


def _lone_surrogate(value: Any, where: str) -> str | None:
    """The JSON path of the first string holding a lone UTF-16 surrogate (which no UTF-8 file can hold)."""
    stack = [(value, where)]
    while stack:
        v, at = stack.pop()
        if isinstance(v, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in v):
                return at
        elif isinstance(v, dict):
            stack += [(k, f"{at} (a key)" if at else "a top-level key") for k in v] + [(x, f"{at}.{k}" if at else str(k)) for k, x in v.items()]
        elif isinstance(v, list):
            stack += [(x, f"{at}[{i}]") for i, x in enumerate(v)]
    return None


def _read_json(path: Path) -> Any:
    """The parsed JSON file, None when it does not exist; a RopetoolError when it is not JSON, or holds a lone
    surrogate (a ``\\ud800`` escape: not text, so no GGUF string can hold it)."""
    if not os.path.exists(path):
        return None
    try:
        text = read_text(path, path.name)
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RopetoolError(f"{path} is not valid JSON ({exc})") from None
    except RecursionError:
        raise RopetoolError(f"{path} is nested too deeply to be a tokenizer file") from None
    if _SURROGATE_ESCAPE.search(text):
        where = _lone_surrogate(data, "")
        if where is not None:
            raise RopetoolError(f"{path}: {where or 'the file'} holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape "
                                "without its pair), which is not text: GGUF strings are UTF-8")
    return data


def _config_vocab_size(config: dict) -> int | None:
    size = config.get("vocab_size")
    if size is None and isinstance(config.get("text_config"), dict):
        size = config["text_config"].get("vocab_size")
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _describe(component: Any) -> str:
    if isinstance(component, dict):
        return str(component.get("type") or next(iter(component), "?"))
    return repr(component)
