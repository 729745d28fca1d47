"""Methods transformers lacks, and shared formulas, against published values (rope-methods.md, papers)."""

import math

import numpy as np
import pytest
import torch
from transformers.models.bloom.modeling_bloom import build_alibi_tensor

from ropetool.rope import (
    alibi_slopes,
    make_params,
    ntk_base,
    rope_frequencies,
    yarn_correction_range,
    yarn_mscale,
)


@pytest.mark.parametrize("alpha,expected", [(2.0, 20221), (8.0, 82685)])
def test_ntk_aware_base_published(alpha, expected):
    # bloc97's NTK-aware scaling, d=128: the YaRN paper's "NTK theta=20k" for alpha 2.
    assert round(ntk_base(10000.0, alpha, 128)) == expected
    inv, attn = rope_frequencies(make_params("ntk", alpha=alpha), 128)
    inv0, _ = rope_frequencies(make_params("none"), 128)
    assert inv[0] == pytest.approx(inv0[0], rel=1e-12)  # the highest frequency is kept
    assert inv[-1] == pytest.approx(inv0[-1] / alpha, rel=1e-12)  # the lowest is divided by alpha
    assert attn == 1.0


@pytest.mark.parametrize(
    "base,orig,dim,truncate,expected",
    [
        (1e4, 4096, 128, False, (20.944, 45.027)),  # Llama-2
        (1e4, 4096, 128, True, (20, 46)),
        (1e6, 32768, 128, False, (23.596, 39.651)),  # Qwen2.5
        (1e6, 32768, 128, True, (23, 40)),
        (150000.0, 4096, 64, False, (8.0928, 17.398)),  # gpt-oss, truncate: false
    ],
)
def test_yarn_correction_range_published(base, orig, dim, truncate, expected):
    p = make_params("yarn", base=base, factor=4, original_context=orig, truncate=truncate)
    low, high = yarn_correction_range(p, dim)
    assert low == pytest.approx(expected[0], abs=6e-4)
    assert high == pytest.approx(expected[1], abs=6e-4)


@pytest.mark.parametrize(
    "s,expected", [(2, 1.0693), (4, 1.1386), (8, 1.2079), (16, 1.2773), (32, 1.3466), (40, 1.3689), (64, 1.4159)]
)
def test_yarn_mscale_published(s, expected):
    assert yarn_mscale(s) == pytest.approx(expected, abs=5e-5)
    _, attn = rope_frequencies(make_params("yarn", factor=s, original_context=4096), 128)
    assert attn == pytest.approx(expected, abs=5e-5)


def test_ntk_by_parts_is_yarn_without_attention_factor():
    by_parts = rope_frequencies(make_params("ntk-by-parts", factor=8, original_context=4096), 128)
    yarn = rope_frequencies(make_params("yarn", factor=8, original_context=4096), 128)
    np.testing.assert_array_equal(by_parts[0], yarn[0])
    assert by_parts[1] == 1.0 and yarn[1] == pytest.approx(1.2079, abs=5e-5)


def test_longrope_attention_factor_published():
    # Phi-3-mini-128k: 131072 / 4096 = 32 gives sqrt(1 + ln 32 / ln 4096) = 1.19024.
    dim = 96
    p = make_params("longrope", factor=32, original_context=4096, short_factor=[1.0] * 48, long_factor=[2.0] * 48)
    _, attn = rope_frequencies(p, dim)
    assert attn == pytest.approx(1.19024, abs=5e-6)


@pytest.mark.parametrize("length,expected", [(8192, 30527.7), (16384, 72195.9)])
def test_dynamic_ntk_worked_values(length, expected):
    # d=128, base 1e4, s=2, L0=4096: the effective base at a given length.
    p = make_params("dynamic-ntk", factor=2, original_context=4096)
    inv, _ = rope_frequencies(p, 128, seq_len=length)
    base_eff = inv[1] ** (-128 / 2)
    assert base_eff == pytest.approx(expected, abs=0.05)


def test_dynamic_yarn_grows_with_length():
    p = make_params("dynamic-yarn", original_context=4096)
    inv_short, attn_short = rope_frequencies(p, 128, seq_len=2048)
    plain, _ = rope_frequencies(make_params("none"), 128)
    np.testing.assert_allclose(inv_short, plain, rtol=1e-12)  # below L0: plain RoPE, mscale 1
    assert attn_short == 1.0
    inv_long, attn_long = rope_frequencies(p, 128, seq_len=4096 * 16)
    static, attn_static = rope_frequencies(make_params("yarn", factor=16, original_context=4096), 128)
    np.testing.assert_allclose(inv_long, static, rtol=1e-12)  # at 16 x L0: static YaRN s=16
    assert attn_long == pytest.approx(1.2773, abs=5e-5) and attn_static == attn_long


def paper_slopes(n):
    """Press et al.'s get_slopes, written out: 2^(-8h/n) and the odd-power rule for other head counts."""
    def power_of_2(k):
        start = 2 ** (-(2 ** -(math.log2(k) - 3)))
        return [start * start**i for i in range(k)]
    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + power_of_2(2 * closest)[0::2][: n - closest]


@pytest.mark.parametrize("n", [8, 12, 16, 32, 40])
def test_alibi_slopes_published(n):
    ours = alibi_slopes(make_params("alibi"), n)
    np.testing.assert_allclose(ours, paper_slopes(n), rtol=1e-12)
    if math.log2(n).is_integer():
        np.testing.assert_allclose(ours, 2.0 ** (-8.0 * np.arange(1, n + 1) / n), rtol=1e-12)


def test_alibi_twelve_heads_odd_powers():
    ours = alibi_slopes(make_params("alibi"), 12)
    expected = [2.0**-k for k in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5]
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


@pytest.mark.parametrize("n", [4, 8, 12, 16])
def test_alibi_slopes_match_bloom(n):
    # transformers' BLOOM builds slope * position; at position 1 the value is the slope itself.
    alibi = build_alibi_tensor(torch.ones(1, 2), n, torch.float64)  # [heads, 1, 2]
    # (BLOOM computes the slopes in float32.)
    np.testing.assert_allclose(alibi_slopes(make_params("alibi"), n), alibi[:, 0, 1].numpy(), rtol=1e-6)


def test_alibi_interp_divides_by_a():
    base = alibi_slopes(make_params("alibi"), 16)
    np.testing.assert_allclose(alibi_slopes(make_params("alibi-interp", alpha=4), 16), base / 4, rtol=1e-12)


@pytest.mark.parametrize("n,a", [(8, 2.0), (16, 4.0), (32, 8.0)])
def test_ntk_alibi_head_one_kept_last_divided(n, a):
    base = alibi_slopes(make_params("alibi"), n)
    ntk = alibi_slopes(make_params("ntk-alibi", alpha=a), n)
    assert ntk[0] == pytest.approx(base[0], rel=1e-12)
    assert ntk[-1] == pytest.approx(base[-1] / a, rel=1e-12)
    # keezen: m_h = 2^(-8h/n) * a^(-(h-1)/(n-1))
    h = np.arange(1, n + 1)
    np.testing.assert_allclose(ntk, 2.0 ** (-8.0 * h / n) * a ** (-(h - 1) / (n - 1)), rtol=1e-12)


def published_ntk_alibi(n_heads: int, a: float) -> list[float]:
    """NTK-ALiBi as seanzhang-zhichen/baichuan-Dynamic-NTK-ALiBi's modeling_baichuan.py (@ 2714494c,
    build_dynamically_alibi_tensor) computes it for Baichuan-13B's 40 heads: b = a^(1/(num_heads-1)); the power-of-two
    heads' base divided by b, each slope then multiplied by b; the remaining heads keep ALiBi's slopes."""
    scale = a ** (1.0 / (n_heads - 1))
    n = 2 ** math.floor(math.log2(n_heads))
    base = 2 ** (-(2 ** -(math.log2(n) - 3))) / scale
    extra_base = 2 ** (-(2 ** -(math.log2(2 * n) - 3)))
    return [base**p * scale for p in range(1, n + 1)] + [extra_base**p for p in range(1, 1 + 2 * (n_heads - n), 2)]


@pytest.mark.parametrize("n,a", [(3, 4.0), (12, 8.0), (40, 2.0), (16, 4.0)])
def test_ntk_alibi_any_head_count_is_the_published_code(n, a):
    np.testing.assert_allclose(alibi_slopes(make_params("ntk-alibi", alpha=a), n), published_ntk_alibi(n, a), rtol=1e-6)


@pytest.mark.parametrize("a0,length,expected_a", [(2.0, 1024, 1.0), (2.0, 2048, 2.0), (1.5, 8192, 6.0), (1.0, 512, 1.0)])
def test_dynamic_ntk_alibi_ratio(a0, length, expected_a):
    p = make_params("dynamic-ntk-alibi", alpha=a0, original_context=2048)
    ours = alibi_slopes(p, 16, seq_len=length)
    np.testing.assert_allclose(ours, alibi_slopes(make_params("ntk-alibi", alpha=expected_a), 16), rtol=1e-12)
