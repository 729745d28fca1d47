"""GGUF files of the real trained model (SmolLM2-135M-Instruct, fixtures/real_model.py) for check's tests and
benchmarks: what a user makes with ropetool, a plain file written by llama.cpp's own tools, and files that
llama.cpp reads differently from what they say.

Each entry: name -> (path, the verdict check must give).  Building them takes about a minute; they are
cached in ``work`` (a later call reuses what is there).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

FLOAT32 = gguf.GGUFValueType.FLOAT32


def _rewrite(src: Path, dst: Path, drop_prefix: str, add: dict) -> Path:
    """Copy a GGUF with gguf-py, dropping keys by prefix and adding float32 keys (as another tool writes it)."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(str(dst), reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        name = field.name
        if name.startswith("GGUF.") or name == "general.architecture" or name.startswith(drop_prefix):
            continue
        vtype = field.types[0]
        writer.add_key_value(name, field.contents(), vtype, sub_type=field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None)
    for key, value in add.items():
        writer.add_key_value(key, value, FLOAT32)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)  # gguf-py derives the shape from the bytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def _quantize(src: Path, dst: Path, ftype: int) -> Path:
    """llama.cpp's own quantizer (llama-quantize's code), as llama-cpp-python binds it."""
    import llama_cpp

    from ropetool.llamacpp.runner import quiet_log

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    with quiet_log():
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize returned {rc}")
    return dst


def build_real_files(source_gguf: Path, work: Path, with_kquant: bool = False) -> dict[str, tuple[Path, str]]:
    import real_model

    from ropetool.convert import convert
    from ropetool.edit import set_keys

    work.mkdir(parents=True, exist_ok=True)
    hf = work / "hf-bf16"
    if not (hf / "model.safetensors").exists():
        real_model.rebuild_hf_folder(source_gguf, hf, "bf16")

    def converted(name, **options):
        path = work / f"{name}.gguf"
        if not path.exists():
            convert(hf, path, **options)
        return path

    files = {
        "llama.cpp's Q4_1 (plain, no ropetool keys)": (Path(source_gguf), "pass"),
        "f32": (converted("f32", outtype="f32"), "pass"),
        "f16": (converted("f16", outtype="f16"), "pass"),
        "bf16": (converted("bf16", outtype="bf16"), "pass"),
        "q8_0": (converted("q8_0", outtype="q8_0"), "pass"),
        "bf16 dynamic-ntk x2 (baked at 16384)": (converted("dynamic-ntk", outtype="bf16", method="dynamic-ntk", factor=2.0), "pass"),
        "bf16 yarn x4": (converted("yarn4", outtype="bf16", method="yarn", factor=4.0), "pass"),
    }
    yarn = files["bf16 yarn x4"][0]
    beta = work / "yarn4-beta8-plain.gguf"
    if not beta.exists():  # as a converter writes HF's beta_fast = 8: llama's loader ignores the key
        _rewrite(yarn, beta, "ropetool.", {"llama.rope.scaling.yarn_beta_fast": 8.0})
    files["yarn x4 + yarn_beta_fast 8 (plain, llama ignores the key)"] = (beta, "fail")
    changed = work / "yarn4-factor8-behind-record.gguf"
    if not changed.exists():
        set_keys(yarn, ["llama.rope.scaling.factor=f32:8"], changed)
    files["yarn x4 record, rope.scaling.factor set to 8"] = (changed, "fail")
    if with_kquant:
        kq = work / "q4_k_m-llama-quantize.gguf"
        if not kq.exists():
            import llama_cpp

            _quantize(files["f16"][0], kq, llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M)
        files["Q4_K_M by llama.cpp's quantizer"] = (kq, "pass")
    return files
