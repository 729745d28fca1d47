"""Each invalid parameter raises a RopetoolError that names the parameter."""

import pytest

from ropetool import RopetoolError
from ropetool.rope import make_params, rope_frequencies, rope_from_hf_config

CASES = [
    (dict(method="linear", factor=0.5), "factor"),
    (dict(method="yarn", factor=0.9, original_context=4096), "factor"),
    (dict(method="yarn", factor=4), "original_context"),
    (dict(method="ntk-by-parts", factor=4), "original_context"),
    (dict(method="llama3", factor=8), "original_context"),
    (dict(method="dynamic-ntk", factor=2), "original_context"),
    (dict(method="yarn", factor=4, original_context=4096, beta_fast=1, beta_slow=32), "beta_fast"),
    (dict(method="yarn", factor=4, original_context=4096, beta_fast=4, beta_slow=4), "beta_fast"),
    (dict(method="yarn", factor=4, original_context=4096, extrapolation_factor=2), "extrapolation_factor"),
    (dict(method="yarn", factor=4, original_context=4096, attention_factor=-1), "attention_factor"),
    (dict(method="ntk", alpha=-2), "alpha"),
    (dict(method="ntk"), "alpha"),
    (dict(method="alibi-interp", alpha=0.5), "alpha"),
    (dict(method="ntk-alibi"), "alpha"),
    (dict(method="dynamic-ntk-alibi", alpha=2), "original_context"),
    (dict(method="llama3", factor=8, original_context=8192, low_freq_factor=4, high_freq_factor=1), "high_freq_factor"),
    (dict(method="longrope", original_context=4096, short_factor=[1.0] * 4), "long_factor"),
    (dict(method="linear", factor=float("nan")), "factor"),
    (dict(method="linear", factor=float("inf")), "factor"),
    (dict(method="none", base=-1.0), "base"),
    (dict(method="yarn", factor=4, original_context=0), "original_context"),
    (dict(method="yarn", factor=4, original_context=100.5), "original_context"),
    (dict(method="linear", factor="two"), "factor"),
    (dict(method="none", bogus=1), "bogus"),
    (dict(method="spiral"), "spiral"),
]


@pytest.mark.parametrize("values,name", CASES, ids=[f"{c[0]['method']}-{c[1]}" for c in CASES])
def test_invalid_parameter_named(values, name):
    values = dict(values)
    method = values.pop("method")
    with pytest.raises(RopetoolError) as e:
        make_params(method, **values)
    assert name in str(e.value)


def test_longrope_wrong_length_named():
    p = make_params("longrope", original_context=4096, short_factor=[1.0] * 4, long_factor=[1.0] * 4)
    with pytest.raises(RopetoolError, match="short_factor must have rotary_dim/2 = 8 entries"):
        rope_frequencies(p, 16)


def test_odd_rotary_dim_named():
    with pytest.raises(RopetoolError, match="rotary dimension"):
        rope_frequencies(make_params("none"), 15)


@pytest.mark.parametrize(
    "rope,name",
    [
        ({"rope_type": "yarn", "factor": 0.5, "original_max_position_embeddings": 64}, "factor"),
        ({"type": "linear"}, "factor"),
        ({"type": "warp"}, "warp"),
        ({"rope_type": "longrope", "short_factor": [1.0] * 3, "long_factor": [1.0] * 8}, "short_factor"),
    ],
)
def test_hf_config_errors_name_parameter(rope, name):
    cfg = {"hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 128, "rope_scaling": rope}
    with pytest.raises(RopetoolError) as e:
        rope_from_hf_config(cfg)
    assert name in str(e.value)
