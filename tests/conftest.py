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
# The fixtures transformers runs (the oracle of most tests).  A config.json with an auto_map names modeling code of
# its own, as Baichuan's do: transformers has no class for those, and tests/test_baichuan.py runs their oracle.
ALL_FIXTURES = sorted(p.name for p in FIXTURES.iterdir()
                      if (p / "config.json").exists() and "auto_map" not in json.loads((p / "config.json").read_text()))


def fixture_dir(name: str) -> Path:
    return FIXTURES / name


def edited_fixture(name: str, folder: Path, **changes) -> Path:
    """A copy of fixture ``name`` at ``folder`` with config.json's fields changed (bad_inputs.ABSENT removes one)."""
    import shutil

    from bad_inputs import set_config

    shutil.copytree(fixture_dir(name), folder)
    set_config(folder, **changes)
    return folder


def convert_refusal(name: str, changes: dict, tmp_path: Path, *options: str) -> str:
    """convert's refusal of fixture ``name`` with config.json changed: exit 2, one line, nothing written; the line."""
    from click.testing import CliRunner

    from ropetool.cli import cli

    folder, out = edited_fixture(name, tmp_path / "m", **changes), tmp_path / "o.gguf"
    result = CliRunner().invoke(cli, ["convert", str(folder), "-o", str(out), *options])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and not out.exists(), result.output
    return result.output


def fixture_config(name: str) -> dict:
    """A fixture's config.json; a composite one (Qwen 3.5's released layout) with its text model's values on top."""
    config = json.loads((FIXTURES / name / "config.json").read_text())
    return {**config, **config["text_config"]} if isinstance(config.get("text_config"), dict) else config


def token_ids(n: int, vocab: int, seed: int = 0) -> list[int]:
    """A fixed, deterministic token sequence (no special tokens at the low ids)."""
    return [int((i * 37 + 11 + seed * 101) % (vocab - 8)) + 4 for i in range(n)]


def is_moe(name: str) -> bool:
    config = fixture_config(name)
    return bool(config.get("num_local_experts") or config.get("num_experts"))


def _stored_as(w, stored: str):
    """A float32 weight matrix rounded as a GGUF of type ``stored`` holds it: torch's bf16/f16 rounding, or
    gguf-py's Q8_0 quantizer and dequantizer (rows of 32 along the last dimension, as ggml blocks them)."""
    import gguf
    import torch

    if stored in ("bf16", "f16"):
        return w.to(torch.bfloat16 if stored == "bf16" else torch.float16).float()
    if stored == "q8_0" and w.shape[-1] % 32 == 0:
        q = gguf.quants.quantize(w.numpy(), gguf.GGMLQuantizationType.Q8_0)
        return torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).astype(np.float32))
    if stored == "q8_0":  # llama.cpp's converter keeps such a matrix in f16
        return w.to(torch.float16).float()
    return w


def is_gemma(name: str) -> bool:
    return str(fixture_config(name).get("model_type", "")).startswith("gemma")


def post_normed(name: str) -> bool:
    """Whether each block's output is normed before the residual (gemma's post-norms, olmo2's only norms): a
    weight's rounding then reaches the logits undiluted."""
    return is_gemma(name) or fixture_config(name).get("model_type") == "olmo2"


class _GgmlGelu:
    """GELU as llama.cpp computes it on the CPU: through a table of float16 inputs and outputs (GGML_GELU_FP16,
    ggml-cpu/vec.h), so the input and the result are rounded to float16 (tanh approximation)."""

    def __new__(cls):
        import torch

        class Gelu(torch.nn.Module):
            def forward(self, x):
                return torch.nn.functional.gelu(x.half().float(), approximate="tanh").half().float()

        return Gelu()


def tanh_gelu_(model) -> None:
    """Swap every exact GELU in a transformers model for the tanh approximation llama.cpp computes (GPT-NeoX,
    Falcon and MPT use the exact one; llama.cpp's graph for them, and so ropetool's reference, the tanh one)."""
    import torch
    from transformers.activations import GELUActivation

    for module in list(model.modules()):
        for attr, child in list(module.named_children()):
            exact = isinstance(child, GELUActivation) or (
                isinstance(child, torch.nn.GELU) and child.approximate == "none")
            if exact:
                setattr(module, attr, torch.nn.GELU(approximate="tanh"))


# Kept float32 in a GGUF of any type (routers; biases, 2-D for a stack of experts), as llama.cpp's converter keeps them.
UNROUNDED = ("mlp.gate.weight", "block_sparse_moe.gate.weight", "mlp.router.weight", "feed_forward.router.weight", "bias")
# gpt-oss's and llama4's experts, x @ W
TRANSPOSED_EXPERTS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj", "feed_forward.experts.gate_up_proj",
                      "feed_forward.experts.down_proj")


@functools.lru_cache(maxsize=64)
def _hf_logits(name: str, ids: tuple[int, ...], rope_json: str | None, weights_as: str | None,
               ggml_gelu: bool = False) -> np.ndarray:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(FIXTURES / name)
    if getattr(config, "max_seq_len", None) is not None:  # MPT builds its ALiBi bias for max_seq_len positions only
        config.max_seq_len = max(config.max_seq_len, len(ids))
    if rope_json is not None:
        config = getattr(config, "text_config", None) or config  # a composite config: its text model's rope
        config.rope_parameters = json.loads(rope_json)
        # MixtralConfig keeps head_dim None, which yarn's init multiplies (read from the config's own attributes: Gemma
        # 4's per-layer head_dim refuses a global read)
        if vars(config).get("head_dim", 0) is None:
            config.head_dim = config.hidden_size // config.num_attention_heads
    model = AutoModelForCausalLM.from_pretrained(FIXTURES / name, config=config, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        if ggml_gelu:
            for layer in model.model.layers:
                layer.mlp.act_fn = _GgmlGelu()
        if weights_as is not None:
            for pname, param in model.named_parameters():
                if pname.endswith(TRANSPOSED_EXPERTS):  # stored [in, out] per expert: ggml's rows are the columns
                    param.copy_(_stored_as(param.data.transpose(-1, -2), weights_as).transpose(-1, -2))
                elif param.ndim >= 2 and not pname.endswith(UNROUNDED):
                    param.copy_(_stored_as(param.data, weights_as))
        return model(torch.tensor([list(ids)])).logits[0].double().numpy()


@functools.lru_cache(maxsize=16)
def hf_bf16_spread(name: str, ids: tuple[int, ...]) -> float:
    """How far transformers computing in bfloat16 lands from itself in float32, relative to the logits' range:
    the rounding a bf16 computation brings to this model, measured by the oracle."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(FIXTURES / name, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        low = model(torch.tensor([list(ids)])).logits[0].double().numpy()
    full = hf_logits(name, ids)
    return float(np.abs(low - full).max() / np.abs(full).max())


def hf_logits(name: str, ids, rope_parameters: dict | None = None, weights_as: str | None = None,
              ggml_gelu: bool = False) -> np.ndarray:
    """transformers' float32 logits for fixture ``name``, optionally with other rope_parameters.

    ``weights_as`` ("bf16", "f16", "q8_0"): with every matrix rounded as a GGUF of that type stores it (the
    routers of a mixture of experts stay float32, as llama.cpp keeps them).  A mixture of experts routes
    each token to its top experts, a decision a weight's rounding can flip where two experts score alike;
    for those fixtures the oracle computes with the weights llama.cpp computes with, so the comparison
    measures llama.cpp's computation, not the rounding of the routing.

    ``ggml_gelu``: the feed-forward's GELU rounded through float16 as llama.cpp's CPU backend computes it
    (gemma's GeGLU over six layers otherwise differs from float32 by up to 0.7% of the logits' range)."""
    key = json.dumps(rope_parameters, sort_keys=True) if rope_parameters is not None else None
    return _hf_logits(name, tuple(ids), key, weights_as, ggml_gelu)


def hf_folder_logits(folder, ids, **config_changes) -> np.ndarray:
    """transformers' float32 logits of any model folder (a fixture edited in tmp_path), with config.json's fields
    changed as given."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    for k, v in config_changes.items():
        setattr(config, k, v)
    model = AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits[0].double().numpy()


def _plain_weight_buffers() -> None:
    """The tests' own llama_cpp.Llama objects load weights as ropetool's runner does (runner.no_extra_buffers:
    the AMX kernels of a native build crash on some CPUs)."""
    import llama_cpp.llama_cpp as C

    from ropetool.llamacpp.runner import no_extra_buffers

    if not getattr(C.llama_model_default_params, "plain_buffers", False):
        default = C.llama_model_default_params

        def params():
            return no_extra_buffers(default())

        params.plain_buffers = True
        C.llama_model_default_params = params


def llama_cpp_logits(path, ids, f32_kv: bool = True, n_ctx: int = 512, **context) -> np.ndarray:
    """llama.cpp's logits for every position (CPU); ``context``: more llama_cpp.Llama parameters (the runtime rope
    flags: rope_freq_base, rope_freq_scale)."""
    import llama_cpp

    from ropetool.llamacpp import runner

    _plain_weight_buffers()
    runner.RAN_IN_PROCESS = True  # llama.cpp's OpenMP pool now lives here: a probe must not fork (llamacpp/isolate.py)

    kwargs = dict(type_k=0, type_v=0) if f32_kv else {}
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=max(n_ctx, len(ids)), n_batch=max(n_ctx, len(ids)),
                          logits_all=True, verbose=False, n_threads=2, **kwargs, **context)
    try:
        llm.eval(list(ids))
        return np.array(llm.scores[: len(ids)], dtype=np.float64)
    finally:
        llm.close()


def extended_files(root: Path, name: str, extensions: dict) -> dict[str, Path]:
    """The fixture ``name`` converted to f32 (``plain``) and one file per entry of ``extensions`` ({which: (args,
    ...)}, args a convert of the fixture or a set-rope of the plain file, the command first), written under ``root``."""
    from click.testing import CliRunner

    from ropetool.cli import cli

    made = {"plain": root / "plain.gguf"}
    result = CliRunner().invoke(cli, ["convert", str(fixture_dir(name)), "-o", str(made["plain"]), "--outtype", "f32"])
    assert result.exit_code == 0, result.output
    for which, (args, *_) in extensions.items():
        made[which] = root / f"{which}.gguf"
        source = str(fixture_dir(name)) if args[0] == "convert" else str(made["plain"])
        extra = ["--outtype", "f32"] if args[0] == "convert" else []
        result = CliRunner().invoke(cli, [args[0], source, "-o", str(made[which]), *extra, *args[1:]])
        assert result.exit_code == 0, result.output
    return made


def pytest_report_header(config):
    """What the tests ran against (versions of llama.cpp's binding, gguf, numpy and the oracles)."""
    from pins import versions_line

    return versions_line()


@pytest.fixture
def tmp_gguf(tmp_path):
    return tmp_path / "out.gguf"
