"""The rope core against transformers' own ROPE_INIT_FUNCTIONS (the independent oracle).

Every rope type transformers implements, over a grid of head dims, partial rotary factors,
factors 2..64 and both config schemas (transformers 4.x rope_scaling, 5.x rope_parameters).
"""

import itertools

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from ropetool.rope import rope_frequencies, rope_from_hf_config

HEAD_DIMS = (32, 64, 128)
PARTIAL = (1.0, 0.5)
FACTORS = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
SCHEMAS = ("rope_parameters", "rope_scaling")


def hf_config(schema, head_dim, prf, rope, theta=10000.0, max_pos=4096):
    """A config.json dict in one of the two schemas."""
    cfg = {
        "model_type": "llama",
        "hidden_size": head_dim * 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "head_dim": head_dim,
        "max_position_embeddings": max_pos,
        "partial_rotary_factor": prf,
    }
    rope = dict(rope)
    if schema == "rope_parameters":
        rope["rope_theta"] = theta
        cfg["rope_parameters"] = rope
    else:
        cfg["rope_theta"] = theta
        # 4.x used "type"; later 4.x releases wrote "rope_type": use both spellings across the grid.
        kind = rope.pop("rope_type")
        rope["type" if head_dim == 64 else "rope_type"] = kind
        cfg["rope_scaling"] = rope if kind != "default" else None
    return cfg


class Float64(TorchFunctionMode):
    """Run transformers' own rope code with float64 tensors wherever it asks for float32.

    transformers evaluates base ** (2j/d) in float32, which is off by up to ~2e-6 relative; in
    float64 the same code is an exact oracle for the 1e-6 comparison.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.float:
            return args[0].double()
        if kwargs.get("dtype") is torch.float32:
            kwargs["dtype"] = torch.float64
        args = tuple(torch.float64 if a is torch.float32 else a for a in args)
        return func(*args, **kwargs)


def transformers_freqs(cfg, rope_type, seq_len=None):
    with Float64():
        inv, attn = _transformers_freqs(cfg, rope_type, seq_len)
    assert inv.dtype == np.float64
    # The float32 result transformers really computes is within its own rounding of the float64 one.
    inv32, attn32 = _transformers_freqs(cfg, rope_type, seq_len)
    assert np.max(np.abs(inv32 - inv) / inv) < 1e-5 and attn32 == pytest.approx(attn, rel=1e-6)
    return inv, attn


def _transformers_freqs(cfg, rope_type, seq_len=None):
    config = LlamaConfig(**cfg)
    if rope_type == "default":
        head_dim = cfg["head_dim"]
        dim = int(head_dim * cfg["partial_rotary_factor"])
        theta = config.rope_parameters["rope_theta"]
        inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        return inv.numpy().astype(np.float64) if inv.dtype == torch.float32 else inv.numpy(), 1.0
    fn = ROPE_INIT_FUNCTIONS[rope_type]
    kwargs = {"seq_len": seq_len} if seq_len is not None else {}
    inv, attn = fn(config, "cpu", **kwargs)
    return inv.numpy().astype(np.float64) if inv.dtype == torch.float32 else inv.numpy(), float(attn)


def assert_close(ours, theirs):
    inv, attn = ours
    inv_t, attn_t = theirs
    assert inv.shape == inv_t.shape
    rel = np.max(np.abs(inv - inv_t) / np.abs(inv_t))
    assert rel <= 1e-6, rel
    assert abs(attn - attn_t) / abs(attn_t) <= 1e-6


def grid():
    return itertools.product(SCHEMAS, HEAD_DIMS, PARTIAL)


@pytest.mark.parametrize("schema,head_dim,prf", list(grid()))
def test_default(schema, head_dim, prf):
    for theta in (10000.0, 500000.0, 1e6):
        cfg = hf_config(schema, head_dim, prf, {"rope_type": "default"}, theta=theta)
        hf = rope_from_hf_config(cfg)
        assert hf.params.method == "none"
        assert hf.rotary_dim == int(head_dim * prf)
        assert_close(rope_frequencies(hf.params, hf.rotary_dim), transformers_freqs(cfg, "default"))


@pytest.mark.parametrize("schema,head_dim,prf", list(grid()))
def test_linear(schema, head_dim, prf):
    for factor in FACTORS:
        cfg = hf_config(schema, head_dim, prf, {"rope_type": "linear", "factor": factor})
        hf = rope_from_hf_config(cfg)
        assert hf.params.method == "linear"
        assert_close(rope_frequencies(hf.params, hf.rotary_dim), transformers_freqs(cfg, "linear"))


@pytest.mark.parametrize("schema,head_dim,prf", list(grid()))
def test_dynamic(schema, head_dim, prf):
    for factor, seq_len in itertools.product(FACTORS, (None, 100, 4096, 5000, 16384, 100000)):
        cfg = hf_config(schema, head_dim, prf, {"rope_type": "dynamic", "factor": factor})
        hf = rope_from_hf_config(cfg)
        assert hf.params.method == "dynamic-ntk"
        ours = rope_frequencies(hf.params, hf.rotary_dim, seq_len=seq_len)
        assert_close(ours, transformers_freqs(cfg, "dynamic", seq_len=seq_len))


YARN_VARIANTS = (
    {},
    {"beta_fast": 8, "beta_slow": 2},
    {"attention_factor": 0.9},
    {"mscale": 0.707, "mscale_all_dim": 0.707},
    {"mscale": 1.0, "mscale_all_dim": 0.5},
    {"truncate": False},
)


@pytest.mark.parametrize("schema,head_dim,prf", list(grid()))
def test_yarn(schema, head_dim, prf):
    for factor, variant, (theta, orig) in itertools.product(
        FACTORS, YARN_VARIANTS, ((10000.0, 4096), (1e6, 32768), (150000.0, 4096))
    ):
        rope = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": orig, **variant}
        cfg = hf_config(schema, head_dim, prf, rope, theta=theta, max_pos=int(orig * factor))
        hf = rope_from_hf_config(cfg)
        assert hf.params.method == "yarn"
        assert_close(rope_frequencies(hf.params, hf.rotary_dim), transformers_freqs(cfg, "yarn"))


@pytest.mark.parametrize("schema,head_dim,prf", list(grid()))
def test_llama3(schema, head_dim, prf):
    for factor, (low, high), orig in itertools.product(FACTORS, ((1.0, 4.0), (2.0, 8.0)), (8192, 2048)):
        rope = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                "original_max_position_embeddings": orig}
        cfg = hf_config(schema, head_dim, prf, rope, theta=500000.0, max_pos=131072)
        hf = rope_from_hf_config(cfg)
        assert hf.params.method == "llama3"
        assert_close(rope_frequencies(hf.params, hf.rotary_dim), transformers_freqs(cfg, "llama3"))


@pytest.mark.parametrize("schema,head_dim,prf", list(grid()))
def test_longrope(schema, head_dim, prf):
    dim = int(head_dim * prf)
    rng = np.random.default_rng(head_dim)
    short = [float(x) for x in np.sort(rng.uniform(1.0, 2.0, dim // 2))]
    long = [float(x) for x in np.sort(rng.uniform(1.0, 60.0, dim // 2))]
    for factor, seq_len in itertools.product(FACTORS, (None, 2048, 4096, 4097, 100000)):
        rope = {"rope_type": "longrope", "short_factor": short, "long_factor": long, "factor": factor,
                "original_max_position_embeddings": 4096}
        cfg = hf_config(schema, head_dim, prf, rope, max_pos=int(4096 * factor))
        hf = rope_from_hf_config(cfg)
        assert hf.params.method == "longrope"
        ours = rope_frequencies(hf.params, hf.rotary_dim, seq_len=seq_len)
        assert_close(ours, transformers_freqs(cfg, "longrope", seq_len=seq_len))


def test_longrope_phi3_top_level_original():
    """Phi-3 keeps original_max_position_embeddings at the top level; the attention factor uses max_pos / original."""
    dim = 32
    short = [1.0 + 0.01 * i for i in range(dim // 2)]
    long = [1.0 + 0.5 * i for i in range(dim // 2)]
    cfg = hf_config("rope_scaling", dim, 1.0, {"rope_type": "longrope", "short_factor": short,
                                                "long_factor": long}, max_pos=131072)
    cfg["original_max_position_embeddings"] = 4096
    hf = rope_from_hf_config(cfg)
    for seq_len in (None, 5000):
        assert_close(rope_frequencies(hf.params, hf.rotary_dim, seq_len=seq_len),
                     transformers_freqs(cfg, "longrope", seq_len=seq_len))
