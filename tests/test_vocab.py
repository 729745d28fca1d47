"""ropetool.io.vocab: tokenizer files -> GGUF tokenizer keys, checked by running llama.cpp.

Every expected token id comes from an independent implementation: the Hugging Face tokenizer
(transformers / tokenizers) and, for the SentencePiece fixture, the sentencepiece library. The GGUF
files written here hold the vocabulary only (no tensors) and are loaded with llama-cpp-python's
``Llama(vocab_only=True)``.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import unicodedata
from pathlib import Path

import gguf
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ropetool import RopetoolError  # noqa: E402
from ropetool.io.vocab import LLAMA_CPP_PRE_TOKENIZERS, Vocab, load_vocab, vocab_records  # noqa: E402

llama_cpp = pytest.importorskip("llama_cpp")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
sentencepiece = pytest.importorskip("sentencepiece")
transformers.logging.set_verbosity_error()

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "models"

# The pre-tokenizer each fixture family was built with (fixtures/make_fixtures.py copies the real
# family's tokenizer.json pre-tokenizer); None for the SentencePiece fixture.
EXPECTED_PRE = {
    "llama": "llama-bpe",
    "llama-linear": "llama-bpe",
    "llama-dynamic": "llama-bpe",
    "llama3": "llama-bpe",
    "llama-yarn": "llama-bpe",
    "qwen2": "qwen2",
    "qwen3": "qwen2",
    "phi3": "qwen2",
    "bloom": "bloom",
    "mistral": None,
}
FIXTURES = list(EXPECTED_PRE)

# NFC text (llama.cpp does not normalise; Qwen2's tokenizer NFC-normalises).
TEXT = (
    "Hello world! Don't panic; I'LL be there, you're late & we've won. She'd say it's fine, I'm sure.\n"
    "Café déjà vu, naïve façade, crème brûlée, Größe, Straße, Ærøskøbing, Ångström, ĳssel.\n"
    "Привет, мир! Съешь же ещё этих мягких французских булок. ПРИВЕТ Мир.\n"
    "Ελληνικά: Καλημέρα κόσμε, αβγδεζηθ ΑΒΓΔ.\n"
    "中文分词很有意思。你好，世界！東京は日本の首都です。こんにちは、カタカナ。한국어 텍스트입니다.\n"
    "مرحبا بالعالم، هذا اختبار۔ नमस्ते दुनिया। עברית.\n"
    "Emoji: 😀🚀🔥 ✨ 👍🏽 👩‍💻 👨‍👩‍👧‍👦 🏳️‍🌈 🇩🇪🇫🇷 ❤️ ☕🍕🎉🎉🎉\n"
    "Numbers: 1234567 12 123 1234 12345678901 3.14159 1,000,000 2024-01-15 0x1F -17 +23 1e-5 ١٢٣٤ ²½ Ⅻ\n"
    "Spaces:  two   three    four     five\ttab\t\ttwo tabs \t mixed\n\n\nthree newlines\r\nCRLF\n"
    "    def f(x):\n\treturn x  +  1   # comment   \n"
    "'quoted' \"double\" (paren) [bracket] {brace} <angle> a/b\\c ... !!! ??? --- ___ @#$%^&*\n"
    " leading space, trailing spaces   "
)
assert unicodedata.is_normalized("NFC", TEXT)

# Pieces that stress one thing each (checked on their own: no surrounding context to hide a bug).
SNIPPETS = [
    "don't DON'T I'LL i'll we'Re",
    "1234567",
    "     ",
    "\n\n\n",
    "\t\t",
    "a  b   c    d",
    " x",
    "👩‍💻",
    "👨‍👩‍👧‍👦",
    "é",
    "ПриветМир",
    "end.",
]


# --------------------------------------------------------------------------- #
# Helpers.
# --------------------------------------------------------------------------- #

# config.json model_type -> llama.cpp architecture (Mistral checkpoints are "llama" in GGUF).
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3", "bloom": "bloom"}


def write_vocab_only_gguf(path: Path, vocab: Vocab, config: dict | None = None) -> Path:
    """A GGUF with the architecture's minimal hparams (from config.json) and the vocabulary; no tensors."""
    config = config or {}
    arch = GGUF_ARCH.get(config.get("model_type", "llama"), "llama")
    hidden = config.get("hidden_size", 64)
    heads = config.get("num_attention_heads") or config.get("n_head") or 4
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(config.get("num_hidden_layers") or config.get("n_layer") or 1)
    writer.add_context_length(config.get("max_position_embeddings", 64))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(config.get("intermediate_size", 4 * hidden))
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_rope_dimension_count(config.get("head_dim", hidden // heads))
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    writer.add_layer_norm_eps(config.get("layer_norm_epsilon", 1e-5))
    for v in vocab_records(vocab):
        writer.add_key_value(v.key, v.value, v.type, sub_type=v.sub_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def load_llama(path: Path):
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, n_ctx=64, verbose=False)


def config_of(model_dir: Path) -> dict:
    return json.loads((model_dir / "config.json").read_text())


_CACHE: dict[str, tuple] = {}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> (vocab, llama.cpp Llama, HF tokenizer, model dir), built once per fixture."""

    def get(name: str):
        if name not in _CACHE:
            model_dir = FIXTURES_DIR / name
            if not (model_dir / "config.json").is_file():
                pytest.skip(f"fixture {name} not generated (run fixtures/make_fixtures.py)")
            vocab = load_vocab(model_dir)
            out = tmp_path_factory.mktemp("gguf") / f"{name}.gguf"
            write_vocab_only_gguf(out, vocab, config_of(model_dir))
            hf = transformers.AutoTokenizer.from_pretrained(model_dir)
            _CACHE[name] = (vocab, load_llama(out), hf, model_dir)
        return _CACHE[name]

    yield get
    _CACHE.clear()


def llama_ids(llm, text: str, add_bos: bool = False) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)


def hf_ids(hf, text: str, add_special_tokens: bool = False) -> list[int]:
    return hf(text, add_special_tokens=add_special_tokens)["input_ids"]


def copy_fixture(name: str, dest: Path) -> Path:
    src = FIXTURES_DIR / name
    if not (src / "config.json").is_file():
        pytest.skip(f"fixture {name} not generated")
    target = dest / name
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("*.safetensors*"))
    return target


# --------------------------------------------------------------------------- #
# The fixtures, through llama.cpp.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", FIXTURES)
def test_detected_tokenizer(name, converted):
    vocab, llm, hf, model_dir = converted(name)
    assert vocab.pre == EXPECTED_PRE[name]
    assert vocab.model == ("llama" if EXPECTED_PRE[name] is None else "gpt2")
    config = config_of(model_dir)
    assert len(vocab.tokens) == config["vocab_size"] == llm.n_vocab()
    assert llm.metadata["tokenizer.ggml.model"] == vocab.model


def all_texts() -> list[str]:
    return [TEXT, *TEXT.splitlines(keepends=True), *SNIPPETS]


@pytest.mark.parametrize("name", FIXTURES)
def test_tokenize_matches_hf(name, converted):
    _, llm, hf, _ = converted(name)
    assert len(hf_ids(hf, TEXT)) > 150  # the text really is cut into many tokens
    for text in all_texts():
        if EXPECTED_PRE[name] is None and text.startswith(" "):
            continue  # transformers' LlamaTokenizer drops a leading space: see test_hf_llama_tokenizer_leading_space
        assert llama_ids(llm, text) == hf_ids(hf, text), repr(text)


@pytest.mark.parametrize("name", FIXTURES)
def test_add_bos_matches_hf(name, converted):
    """llama.cpp's default tokenize (add_bos=True: add the model's special tokens) == HF add_special_tokens=True."""
    _, llm, hf, _ = converted(name)
    assert llama_ids(llm, TEXT, add_bos=True) == hf_ids(hf, TEXT, add_special_tokens=True)


@pytest.mark.parametrize("name", FIXTURES)
def test_special_tokens_match_hf(name, converted):
    vocab, llm, hf, model_dir = converted(name)
    config = config_of(model_dir)
    assert llm.token_eos() == hf.eos_token_id
    # BOS: the tokenizer's, else config.json's (Qwen-style configs name <|endoftext|>), as
    # convert_hf_to_gguf.py writes it.
    expected_bos = hf.bos_token_id if hf.bos_token_id is not None else config.get("bos_token_id")
    assert llm.token_bos() == expected_bos
    expected_pad = hf.pad_token_id if hf.pad_token_id is not None else config.get("pad_token_id")
    assert vocab.special_ids.get("pad") == expected_pad
    if hf.unk_token_id is not None:
        assert vocab.special_ids["unk"] == hf.unk_token_id
    # Every HF special token is a control token: parsed by llama.cpp only with special=True (as HF
    # always does), else tokenized as plain text (as HF does with split_special_tokens=True).
    for token in hf.all_special_tokens:
        token_id = hf.convert_tokens_to_ids(token)
        # SentencePiece keeps its own piece types: <unk> is UNKNOWN there.
        is_spm_unk = vocab.model == "llama" and token_id == hf.unk_token_id
        expected_type = gguf.TokenType.UNKNOWN if is_spm_unk else gguf.TokenType.CONTROL
        assert vocab.token_types[token_id] == expected_type
        text = f"a{token}"
        parsed = llm.tokenize(text.encode(), add_bos=False, special=True)
        assert parsed == hf_ids(hf, text) == [*hf_ids(hf, "a"), token_id]
        split = hf(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert llama_ids(llm, text) == split
        if EXPECTED_PRE[name] is not None:  # SentencePiece: see test_sentencepiece_text_after_special_token
            text = f"a{token}b c"
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == hf_ids(hf, text)


def test_sentencepiece_text_after_special_token(converted):
    """Text after a special token: llama.cpp gives it a dummy-prefix space like a new sentence (as
    sentencepiece encodes each piece of text, and HF's legacy LlamaTokenizer does); transformers'
    legacy=False LlamaTokenizer (this fixture) does not. No GGUF key selects between the two."""
    _, llm, hf, model_dir = converted("mistral")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    eos = sp.piece_to_id("</s>")
    assert llm.tokenize(b"a</s>b c", add_bos=False, special=True) == [*sp.encode("a"), eos, *sp.encode("b c")]
    assert hf_ids(hf, "a</s>b c") == [*sp.encode("a"), eos, sp.piece_to_id("b"), *sp.encode("b c")[1:]]


@pytest.mark.parametrize("name", FIXTURES)
def test_token_texts_match_hf(name, converted):
    """The token list is HF's vocabulary in id order (byte-level BPE: GPT-2 byte-encoded text)."""
    vocab, _, hf, _ = converted(name)
    hf_vocab = hf.get_vocab()
    n = len(hf)
    assert {t: i for i, t in enumerate(vocab.tokens[:n])} == hf_vocab


def llama_detokenize(llm, ids: list[int], remove_special: bool = False) -> str:
    """llama.cpp's own llama_detokenize (llama-cpp-python's Llama.detokenize joins pieces itself)."""
    tokens = (llama_cpp.llama_token * len(ids))(*ids)
    size = 16 * len(ids) + 16
    buffer = ctypes.create_string_buffer(size)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n = llama_cpp.llama_detokenize(vocab, tokens, len(ids), buffer, size, remove_special, False)
    assert 0 <= n <= size
    return buffer.raw[:n].decode("utf-8")


# llama.cpp's detokenizer applies clean_up_tokenization_spaces (" ." -> ".", " 's" -> "'s", ...)
# by pre-tokenizer name (llama-vocab.cpp: clean_spaces is true for BPE vocabularies except qwen2 and
# some others, false for SentencePiece); no GGUF key sets it. transformers 5 never cleans up for BPE
# tokenizers, so for llama-bpe / bloom the reference is HF's decode passed through HF's own
# clean_up_tokenization.
CLEAN_SPACES = {"llama-bpe": True, "bloom": True, "qwen2": False, None: False}


@pytest.mark.parametrize("name", FIXTURES)
def test_detokenize_round_trips(name, converted):
    _, llm, hf, _ = converted(name)
    clean = CLEAN_SPACES[EXPECTED_PRE[name]]
    for text in all_texts():
        if EXPECTED_PRE[name] is None and text.startswith(" "):
            continue  # HF drops the space (see test_hf_llama_tokenizer_leading_space)
        ids = hf_ids(hf, text)
        assert hf.decode(ids) == text, repr(text)
        expected = hf.clean_up_tokenization(text) if clean else text
        assert llama_detokenize(llm, ids) == expected, repr(text)
        if not clean:
            assert llama_detokenize(llm, ids) == text
    with_bos = hf_ids(hf, TEXT, add_special_tokens=True)
    assert hf.decode(with_bos, skip_special_tokens=True) == TEXT
    expected = hf.clean_up_tokenization(TEXT) if clean else TEXT
    detokenized = llama_detokenize(llm, with_bos, remove_special=True)
    if EXPECTED_PRE[name] is None:
        # After a leading BOS llama.cpp keeps the dummy-prefix space (llama_vocab::impl::detokenize).
        detokenized = detokenized.removeprefix(" ")
    assert detokenized == expected


@pytest.mark.parametrize("name", FIXTURES)
def test_chat_template_written(name, converted):
    vocab, llm, _, model_dir = converted(name)
    expected = json.loads((model_dir / "tokenizer_config.json").read_text()).get("chat_template")
    assert vocab.chat_template == expected
    assert llm.metadata.get("tokenizer.chat_template") == expected


def test_sentencepiece_fixture_matches_sentencepiece(converted):
    """The SentencePiece fixture: llama.cpp == the sentencepiece library itself, on every text."""
    vocab, llm, _, model_dir = converted("mistral")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    for text in all_texts():
        assert llama_ids(llm, text) == sp.encode(text), repr(text)
    assert vocab.add_space_prefix is True and vocab.remove_extra_whitespaces is False


def test_hf_llama_tokenizer_leading_space(converted):
    """Texts that start with a space: transformers 5's LlamaTokenizer (legacy=False, Metaspace
    prepend_scheme "first") encodes " x" as "x" would be, losing the space; sentencepiece, which
    trained the model, keeps it, and llama.cpp agrees with sentencepiece."""
    _, llm, hf, model_dir = converted("mistral")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    for text in [t for t in all_texts() if t.startswith(" ")]:
        assert llama_ids(llm, text) == sp.encode(text), repr(text)
        assert sp.decode(sp.encode(text)) == text
        assert hf.decode(hf_ids(hf, text)) == text[1:], repr(text)


def test_sentencepiece_protobuf_parse_matches_library(converted):
    """Pieces, scores and types read from the protobuf here == what sentencepiece reports."""
    vocab, _, _, model_dir = converted("mistral")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    assert sp.get_piece_size() == len(vocab.tokens)
    for i in range(sp.get_piece_size()):
        assert vocab.tokens[i] == sp.id_to_piece(i)
        assert vocab.scores[i] == pytest.approx(sp.get_score(i), abs=0)
        expected = (
            gguf.TokenType.UNKNOWN if sp.is_unknown(i)
            else gguf.TokenType.CONTROL if sp.is_control(i)
            else gguf.TokenType.UNUSED if sp.is_unused(i)
            else gguf.TokenType.BYTE if sp.is_byte(i)
            else gguf.TokenType.NORMAL
        )  # fmt: skip
        assert vocab.token_types[i] == expected, (i, sp.id_to_piece(i))
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((model_dir / "tokenizer.model").read_bytes())
    assert proto.trainer_spec.model_type == sentencepiece_model_pb2.TrainerSpec.BPE
    assert vocab.add_space_prefix == proto.normalizer_spec.add_dummy_prefix
    assert vocab.remove_extra_whitespaces == proto.normalizer_spec.remove_extra_whitespaces


def test_merges_match_tokenizer_json(converted):
    vocab, _, _, model_dir = converted("llama")
    merges = json.loads((model_dir / "tokenizer.json").read_text())["model"]["merges"]
    assert vocab.merges == [m if isinstance(m, str) else " ".join(m) for m in merges]


# --------------------------------------------------------------------------- #
# Pre-tokenizers beyond the fixtures: tokenizers trained here with each family's exact
# tokenizer.json pre-tokenizer, checked against the tokenizers library.
# --------------------------------------------------------------------------- #

from ropetool.io import vocab as vocab_module  # noqa: E402

CORPUS = [line for line in TEXT.splitlines() if line] + [
    "The quick brown fox jumps over the lazy dog. It's HelloWorld and helloWORLD in camelCase.",
    "Der schnelle braune Fuchs springt über den faulen Hund. Le cœur a ses raisons.",
    "def rotate_half(x):\n    x1, x2 = x[..., : x.shape[-1] // 2]\n    return torch.cat((-x2, x1), dim=-1)",
    "人工智能和机器学习正在改变世界。私はガラスを食べられます。",
    "Numbers 0 1 2 3 42 100 256 1024 65536 1234567890 3.14 ٣٤٥",
]


def _split(regex: str):
    return tokenizers.pre_tokenizers.Split(tokenizers.Regex(regex), behavior="isolated", invert=False)


def _byte_level(use_regex: bool = False):
    return tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=use_regex)


SYNTHETIC = {
    # name: (pre-tokenizer steps, ignore_merges)
    "gpt-2": (lambda: [_byte_level(use_regex=True)], False),
    "starcoder": (
        lambda: [tokenizers.pre_tokenizers.Digits(individual_digits=True), _byte_level(use_regex=True)],
        False,
    ),
    "smaug-bpe": (lambda: [_split(vocab_module.LLAMA3_PATTERN), _byte_level()], False),
    "llama-bpe": (lambda: [_split(vocab_module.LLAMA3_PATTERN), _byte_level()], True),
    "qwen35": (lambda: [_split(vocab_module.QWEN35_PATTERN), _byte_level()], False),
    "deepseek-v3": (lambda: [*(_split(p) for p in vocab_module.DEEPSEEK3_PATTERNS), _byte_level()], False),
    "gpt-4o": (lambda: [_split(vocab_module.GPT4O_PATTERN), _byte_level()], False),
    "tekken": (lambda: [_split(vocab_module.TEKKEN_PATTERN), _byte_level()], True),
}
# llama.cpp runs the o200k / Tekken regexes through a stand-in for their case classes
# (llama-vocab.cpp: "((?=[\\p{L}])([^a-z]))*" for [\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*, etc.): only
# ASCII case is seen, and combining marks (\\p{M}) are not letters. Words that change case outside
# ASCII ("ПриветМир") or carry combining marks (Devanagari) split differently there, so those
# texts are left out for these two names.
CASE_APPROXIMATED = {"gpt-4o", "tekken"}


def approximation_safe(text: str) -> bool:
    return "ПриветМир" not in text and not any(unicodedata.category(c).startswith("M") for c in text)


def build_synthetic(name: str, dest: Path) -> tuple[Path, "tokenizers.Tokenizer"]:
    steps, ignore_merges = SYNTHETIC[name]
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    pre = steps()
    tok.pre_tokenizer = pre[0] if len(pre) == 1 else tokenizers.pre_tokenizers.Sequence(pre)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=2,
        show_progress=False,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    tok.model.ignore_merges = ignore_merges
    out = dest / name
    out.mkdir(parents=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "bos_token": None}))
    return out, tok


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_synthetic_pre_tokenizer_detected_and_exact(name, tmp_path):
    model_dir, tok = build_synthetic(name, tmp_path)
    vocab = load_vocab(model_dir)
    assert vocab.pre == name
    llm = load_llama(write_vocab_only_gguf(tmp_path / "v.gguf", vocab))
    lines = TEXT.splitlines(keepends=True) + SNIPPETS
    if name in CASE_APPROXIMATED:
        lines = [line for line in lines if approximation_safe(line)]
    for line in lines:
        assert llama_ids(llm, line) == tok.encode(line, add_special_tokens=False).ids, repr(line)


def test_every_known_pre_tokenizer_name_loads_in_llama_cpp(tmp_path, converted):
    vocab, _, _, _ = converted("llama")
    for name in sorted(LLAMA_CPP_PRE_TOKENIZERS):
        override = Vocab(**{**vocab.__dict__, "pre": name})
        llm = load_llama(write_vocab_only_gguf(tmp_path / "n.gguf", override))
        assert llm.metadata["tokenizer.ggml.pre"] == name
        del llm


# --------------------------------------------------------------------------- #
# Errors, override, padding.
# --------------------------------------------------------------------------- #


def _edit_tokenizer_json(model_dir: Path, edit) -> None:
    path = model_dir / "tokenizer.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_unknown_pre_tokenizer_raises_and_override_works(tmp_path, converted):
    model_dir = copy_fixture("llama", tmp_path)

    def digits_first(data):
        data["pre_tokenizer"]["pretokenizers"].insert(0, {"type": "Digits", "individual_digits": True})

    _edit_tokenizer_json(model_dir, digits_first)
    with pytest.raises(RopetoolError, match="--pre-tokenizer") as excinfo:
        load_vocab(model_dir)
    assert "\n" not in str(excinfo.value)
    vocab = load_vocab(model_dir, pre_tokenizer="llama-bpe")
    assert vocab.pre == "llama-bpe"
    reference, _, _, _ = converted("llama")
    assert vocab.tokens == reference.tokens and vocab.merges == reference.merges


def test_override_replaces_detected_name(converted):
    vocab = load_vocab(FIXTURES_DIR / "qwen2", pre_tokenizer="deepseek-r1-qwen")
    assert vocab.pre == "deepseek-r1-qwen"


def test_override_name_is_validated():
    with pytest.raises(RopetoolError, match="unknown pre-tokenizer 'llama-9'"):
        load_vocab(FIXTURES_DIR / "llama", pre_tokenizer="llama-9")


def test_override_rejected_for_sentencepiece(tmp_path):
    with pytest.raises(RopetoolError, match="SentencePiece"):
        load_vocab(copy_fixture("mistral", tmp_path), pre_tokenizer="llama-bpe")


def test_ignore_merges_mismatch_is_not_guessed(tmp_path):
    model_dir = copy_fixture("qwen2", tmp_path)
    _edit_tokenizer_json(model_dir, lambda d: d["model"].update(ignore_merges=True))
    with pytest.raises(RopetoolError, match="ignore_merges"):
        load_vocab(model_dir)


def test_unsupported_normalizer_is_not_guessed(tmp_path):
    model_dir = copy_fixture("qwen2", tmp_path)
    _edit_tokenizer_json(model_dir, lambda d: d.update(normalizer={"type": "Lowercase"}))
    with pytest.raises(RopetoolError, match="normalizer"):
        load_vocab(model_dir)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\x01\x02garbage", b"\x0a\xff\xff\xff\xff\x0f", b"IQ== 0\nIg== 1\n", b"\x0a\x05\x0a\x03ab"],
    ids=["empty", "garbage", "overlong-length", "tiktoken-text", "truncated"],
)
def test_corrupt_tokenizer_model_raises(tmp_path, content):
    model_dir = copy_fixture("mistral", tmp_path)
    (model_dir / "tokenizer.json").unlink()
    (model_dir / "tokenizer.model").write_bytes(content)
    with pytest.raises(RopetoolError, match="tokenizer.model"):
        load_vocab(model_dir)


def test_truncated_tokenizer_model_raises(tmp_path):
    model_dir = copy_fixture("mistral", tmp_path)
    data = (model_dir / "tokenizer.model").read_bytes()
    (model_dir / "tokenizer.model").write_bytes(data[: len(data) // 2])
    with pytest.raises(RopetoolError, match="not a valid SentencePiece model"):
        load_vocab(model_dir)


def test_sentencepiece_without_tokenizer_json_matches(tmp_path, converted):
    """tokenizer.model alone (no tokenizer.json) gives the same vocabulary."""
    model_dir = copy_fixture("mistral", tmp_path)
    (model_dir / "tokenizer.json").unlink()
    reference, _, _, _ = converted("mistral")
    vocab = load_vocab(model_dir)
    assert vocab == reference


def test_unigram_sentencepiece_is_rejected(tmp_path):
    import io

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([line for line in CORPUS if line.isascii()] * 5), model_writer=model,
        model_type="unigram", vocab_size=100, hard_vocab_limit=False,
        minloglevel=2, num_threads=1,
    )  # fmt: skip
    (tmp_path / "tokenizer.model").write_bytes(model.getvalue())
    with pytest.raises(RopetoolError, match="unigram"):
        load_vocab(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "decoder": {"type": "ByteLevel"}}),
    ],
    ids=["syntax", "not-object", "no-merges"],
)
def test_corrupt_tokenizer_json_raises(tmp_path, content):
    (tmp_path / "tokenizer.json").write_text(content)
    with pytest.raises(RopetoolError, match="tokenizer.json"):
        load_vocab(tmp_path)


def test_malformed_merge_raises(tmp_path):
    model_dir = copy_fixture("bloom", tmp_path)
    _edit_tokenizer_json(model_dir, lambda d: d["model"]["merges"].append(["only-one"]))
    with pytest.raises(RopetoolError, match="malformed merge"):
        load_vocab(model_dir)


def test_no_tokenizer_raises(tmp_path):
    with pytest.raises(RopetoolError, match="neither tokenizer.json nor tokenizer.model"):
        load_vocab(tmp_path)


def test_string_merges_equal_list_merges(tmp_path, converted):
    model_dir = copy_fixture("llama", tmp_path)
    _edit_tokenizer_json(model_dir, lambda d: d["model"].update(merges=[" ".join(m) for m in d["model"]["merges"]]))
    reference, _, _, _ = converted("llama")
    assert load_vocab(model_dir).merges == reference.merges


@pytest.mark.parametrize("name", ["llama", "mistral"])
def test_padding_to_vocab_size(name, tmp_path, converted):
    reference, _, hf, model_dir = converted(name)
    n = len(reference.tokens)
    vocab = load_vocab(model_dir, vocab_size=n + 7)
    assert vocab.tokens[:n] == reference.tokens
    assert vocab.tokens[n:] == [f"[PAD{i}]" for i in range(n, n + 7)]
    assert vocab.token_types[n:] == [gguf.TokenType.UNUSED] * 7
    llm = load_llama(write_vocab_only_gguf(tmp_path / "p.gguf", vocab, config_of(model_dir)))
    assert llm.n_vocab() == n + 7
    assert llama_ids(llm, TEXT) == hf_ids(hf, TEXT)


def test_padding_from_config_json(tmp_path, converted):
    model_dir = copy_fixture("qwen2", tmp_path)
    config = config_of(model_dir)
    config["vocab_size"] = 416  # larger embedding matrix than tokenizer, as Qwen2 checkpoints have
    (model_dir / "config.json").write_text(json.dumps(config))
    vocab = load_vocab(model_dir)
    assert len(vocab.tokens) == 416 and vocab.tokens[400] == "[PAD400]"


def test_vocab_size_smaller_than_tokenizer_raises():
    with pytest.raises(RopetoolError, match="vocab_size"):
        load_vocab(FIXTURES_DIR / "llama", vocab_size=100)


def test_added_tokens_beyond_sentencepiece_vocab(tmp_path, converted):
    """added_tokens.json / added_tokens_decoder entries past the SentencePiece pieces are appended."""
    model_dir = copy_fixture("mistral", tmp_path)
    (model_dir / "tokenizer.json").unlink()
    (model_dir / "added_tokens.json").write_text(json.dumps({"<tool>": 401}))
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    tok_config["added_tokens_decoder"] = {"400": {"content": "<|im_start|>", "special": True}}
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tok_config))
    vocab = load_vocab(model_dir, vocab_size=404)
    assert vocab.tokens[400:] == ["<|im_start|>", "<tool>", "[PAD402]", "[PAD403]"]
    assert vocab.token_types[400:] == [
        gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED, gguf.TokenType.UNUSED, gguf.TokenType.UNUSED
    ]  # fmt: skip
    llm = load_llama(write_vocab_only_gguf(tmp_path / "a.gguf", vocab, config_of(model_dir)))
    assert llm.tokenize(b"a<|im_start|>", add_bos=False, special=True)[-1] == 400
    assert llama_ids(llm, "x <tool> y").count(401) == 1  # user-defined tokens match in plain text


@pytest.mark.parametrize("name", FIXTURES)
def test_agrees_with_gguf_special_vocab(name, converted):
    """Special ids, merges and chat template == gguf-py's SpecialVocab (what convert_hf_to_gguf.py
    writes); the add-BOS flag too where SpecialVocab sets one."""
    vocab, _, _, model_dir = converted(name)
    special = gguf.SpecialVocab(model_dir, load_merges=vocab.model == "gpt2", n_vocab=len(vocab.tokens))
    assert vocab.special_ids == special.special_token_ids
    assert vocab.merges == special.merges
    assert vocab.chat_template == special.chat_template
    for kind in ("bos", "eos"):
        if kind in special.add_special_token:
            assert getattr(vocab, f"add_{kind}") == special.add_special_token[kind]
