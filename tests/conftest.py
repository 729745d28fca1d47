"""Shared test helpers: the fixture checkpoints, transformers' logits (the oracle) and llama.cpp's."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "models"
ALL_FIXTURES = sorted(p.name for p in FIXTURES.iterdir() if (p / "config.json").exists())


def fixture_dir(name: str) -> Path:
    return FIXTURES / name


def fixture_config(name: str) -> dict:
    return json.loads((FIXTURES / name / "config.json").read_text())


def token_ids(n: int, vocab: int, seed: int = 0) -> list[int]:
    """A fixed, deterministic token sequence (no special tokens at the low ids)."""
    return [int((i * 37 + 11 + seed * 101) % (vocab - 8)) + 4 for i in range(n)]


@functools.lru_cache(maxsize=64)
def _hf_logits(name: str, ids: tuple[int, ...], rope_json: str | None) -> np.ndarray:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(FIXTURES / name)
    if rope_json is not None:
        config.rope_parameters = json.loads(rope_json)
    model = AutoModelForCausalLM.from_pretrained(FIXTURES / name, config=config, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits[0].double().numpy()


def hf_logits(name: str, ids, rope_parameters: dict | None = None) -> np.ndarray:
    """transformers' float32 logits for fixture ``name``, optionally with other rope_parameters."""
    key = json.dumps(rope_parameters, sort_keys=True) if rope_parameters is not None else None
    return _hf_logits(name, tuple(ids), key)


def llama_cpp_logits(path, ids, f32_kv: bool = True, n_ctx: int = 512) -> np.ndarray:
    """llama.cpp's logits for every position (CPU)."""
    import llama_cpp

    kwargs = dict(type_k=0, type_v=0) if f32_kv else {}
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=max(n_ctx, len(ids)), n_batch=max(n_ctx, len(ids)),
                          logits_all=True, verbose=False, n_threads=2, **kwargs)
    try:
        llm.eval(list(ids))
        return np.array(llm.scores[: len(ids)], dtype=np.float64)
    finally:
        llm.close()


def pytest_report_header(config):
    """What the tests ran against (versions of llama.cpp's binding, gguf, numpy and the oracles)."""
    from pins import versions_line

    return versions_line()


@pytest.fixture
def tmp_gguf(tmp_path):
    return tmp_path / "out.gguf"
