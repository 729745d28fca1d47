"""The hostile inputs of issue #16, as corpus cases (tests/test_bad_inputs.py runs them with the rest).

* numbers nothing range-checked: non-finite or impossible values written by ``set``; config.json sizes,
  rope bases and contexts that are huge; ``--original-context`` / ``--target-context`` beyond a u32;
* special files where a file is expected: FIFOs (opening one blocks until a writer comes) and
  ``/dev/zero`` (never ends) as config.json, index, GGUF argument or ``str@`` value;
* files llama.cpp aborts on (block_count 0, alignment 16, a negative rms epsilon): ``check`` must refuse
  them in one line, and ``set`` must refuse to write them;
* a safetensors header missing one tensor the architecture needs.

Each case must end in one ``Error:`` line, exit 1 or 2, within seconds, with nothing written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bad_inputs import Case, _convert_case, _model, _st_read, _st_write, set_config

NAN, INF = float("nan"), float("inf")


def _gguf_case(root: Path, name: str, argv_for, words, inputs) -> Case:
    folder = root / name
    folder.mkdir(parents=True)
    out_dir = folder / "out"
    out_dir.mkdir()
    out = out_dir / "edited.gguf"
    return Case(name, argv_for(out, folder), tuple(words), list(inputs), out_dir, out)


def hostile_cases(root: Path, base: Path) -> list[Case]:
    """``base``: the llama fixture converted to f16."""
    from ropetool.edit import set_keys

    root.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    # -- set: values llama.cpp refuses, aborts on, or computes NaN from ---------------------------
    refused = ["llama.cpp refuses or cannot run", "must be a u32 power of two"]
    for name, assignment in [
        ("set-factor-minus-inf", "llama.rope.scaling.factor=f32:-inf"),
        ("set-factor-inf", "llama.rope.scaling.factor=f32:inf"),
        ("set-freq-base-minus-inf", "llama.rope.freq_base=f32:-inf"),
        ("set-block-count-0", "llama.block_count=u32:0"),
        ("set-block-count-u32-max", "llama.block_count=u32:4294967295"),
        ("set-rms-eps-nan", "llama.attention.layer_norm_rms_epsilon=f32:nan"),
        ("set-rms-eps-negative", "llama.attention.layer_norm_rms_epsilon=f32:-1"),
        ("set-alignment-1", "general.alignment=u32:1"),
        ("set-alignment-16", "general.alignment=u32:16"),
        ("set-alignment-2-31", "general.alignment=u32:2147483648"),
        ("set-head-count-3", "llama.attention.head_count=u32:3"),
        ("set-embedding-length-wrong", "llama.embedding_length=u32:65"),
    ]:
        cases.append(_gguf_case(root, name, lambda out, folder, a=assignment: ["set", str(base), "-o", str(out), a],
                                refused, []))

    # -- check: files llama.cpp aborts on (written with --force, as a user could) -----------------
    for name, assignment, words in [
        ("check-block-count-0", "llama.block_count=u32:0", ["block_count"]),
        ("check-alignment-16", "general.alignment=u32:16", ["alignment"]),
        ("check-rms-eps-negative", "llama.attention.layer_norm_rms_epsilon=f32:-1", ["epsilon"]),
    ]:
        folder = root / name
        folder.mkdir(parents=True)
        bad = folder / "bad.gguf"
        set_keys(base, [assignment], bad, force=True)
        out_dir = folder / "out"
        out_dir.mkdir()
        cases.append(Case(name, ["check", str(bad)], tuple(words), [bad], out_dir))

    # -- convert: huge or impossible numbers ---------------------------------------------------
    def config_case(name, words, extra=(), **changes):
        folder = _model(root, name)
        set_config(folder, **changes)
        cases.append(_convert_case(root, name, folder, words, *extra))

    config_case("convert-max-position-embeddings-2-40", ["max_position_embeddings"], max_position_embeddings=2**40)
    config_case("convert-head-dim-2-40", ["head_dim"], head_dim=2**40)
    config_case("convert-rope-theta-1e308", ["freq_base"], rope_parameters={"rope_type": "default", "rope_theta": 1e308})
    config_case("convert-original-context-2-40", ["original_context"],
                rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                 "original_max_position_embeddings": 2**40})
    config_case("convert-layers-1e30", ["num_hidden_layers"], num_hidden_layers=10**30)
    config_case("convert-option-original-context-2-40", ["--original-context"],
                ["--rope", "linear", "--factor", "2", "--original-context", str(2**40)])
    config_case("convert-option-target-context-2-62", ["--target-context"],
                ["--rope", "dynamic-ntk", "--factor", "2", "--target-context", str(2**62)])

    # -- a safetensors header without one tensor the architecture needs --------------------------
    folder = _model(root, "convert-missing-ffn-up")
    pairs, payload = _st_read(folder / "model.safetensors")
    _st_write(folder / "model.safetensors", [(k, v) for k, v in pairs if k != "model.layers.1.mlp.up_proj.weight"], payload)
    cases.append(_convert_case(root, "convert-missing-ffn-up", folder, ["blk.1.ffn_up.weight"]))

    # -- special files where a file is expected --------------------------------------------------
    def fifo(path: Path) -> None:
        if path.exists() or path.is_symlink():
            path.unlink()
        os.mkfifo(path)

    def zero(path: Path) -> None:
        if path.exists() or path.is_symlink():
            path.unlink()
        path.symlink_to("/dev/zero")

    for kind, make, words in (("fifo", fifo, ["FIFO"]), ("dev-zero", zero, ["character device"])):
        folder = _model(root, f"convert-config-{kind}")
        make(folder / "config.json")
        cases.append(_convert_case(root, f"convert-config-{kind}", folder, words))
        folder = _model(root, f"convert-index-{kind}", "qwen3")
        make(folder / "model.safetensors.index.json")
        cases.append(_convert_case(root, f"convert-index-{kind}", folder, words))
        folder = root / f"special-{kind}"
        folder.mkdir(parents=True)
        special = folder / "special"
        make(special)
        for command, argv_for in {
            "inspect": lambda out, f, s=special: ["inspect", str(s)],
            "diff": lambda out, f, s=special: ["diff", str(base), str(s)],
            "set-str-at": lambda out, f, s=special: ["set", str(base), "-o", str(out), f"general.x=str@{s}"],
            "set-rope": lambda out, f, s=special: ["set-rope", str(s), "-o", str(out), "--rope", "linear", "--factor", "2"],
            "check": lambda out, f, s=special: ["check", str(s)],
        }.items():
            cases.append(_gguf_case(root, f"{command}-{kind}", argv_for, words, []))

    # -- a folder where a GGUF file is expected ----------------------------------------------------
    cases.append(_gguf_case(root, "inspect-a-folder", lambda out, f: ["inspect", str(f)], ["folder", "directory"], []))
    return cases + third_round_cases(root / "round3", base)


def _renamed(base: Path, out: Path, old: str, new: str) -> Path:
    """``base`` with one tensor renamed (any bytes: the writer takes the name as given)."""
    from ropetool.io.gguf_file import GGUFFile, TensorOut, write_gguf

    with GGUFFile(base) as gf:
        tensors = []
        for t in gf.tensors:
            copied = TensorOut.copy_of(t)
            if t.name == old:
                copied.name = new
            tensors.append(copied)
        write_gguf(out, list(gf.fields.values()), tensors, source=gf)
    return out


def third_round_cases(root: Path, base: Path) -> list[Case]:
    """Issue #23: tensor names without a dot, tokenizer.json of the wrong shape, tokenizer edits llama.cpp
    refuses, and --tokens past what the file and the machine allow."""
    root.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    # -- tensor names lint's family check used to split: check refuses the file in one line ---------------
    for name, new in (("check-tensor-name-no-dot", "outputxweight"), ("check-tensor-name-nul", "output\x00weight")):
        folder = root / name
        folder.mkdir(parents=True)
        bad = _renamed(base, folder / "bad.gguf", "output.weight", new)
        out_dir = folder / "out"
        out_dir.mkdir()
        cases.append(Case(name, ["check", str(bad)], ("unknown-tensor", "no llama.cpp loader creates"), [bad], out_dir))

    # -- tokenizer.json of the wrong shape; a lone surrogate ----------------------------------------------
    def tokenizer_case(name, words, edit, file="tokenizer.json"):
        folder = _model(root, name)
        path = folder / file
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))  # ensure_ascii: a lone surrogate is written as its \\udXXX escape
        cases.append(_convert_case(root, name, folder, words))

    tokenizer_case("convert-tokenizer-model-string", ["model must be an object"], lambda d: d.update(model="BPE"))
    tokenizer_case("convert-tokenizer-vocab-string", ["model.vocab must be"], lambda d: d["model"].update(vocab="x"))
    tokenizer_case("convert-tokenizer-added-not-objects", ["added_tokens[0] must be an object"],
                   lambda d: d.update(added_tokens=["<s>"]))
    tokenizer_case("convert-tokenizer-pre-tokenizer-string", ["pre_tokenizer must be an object"],
                   lambda d: d.update(pre_tokenizer="ByteLevel"))
    tokenizer_case("convert-tokenizer-post-processor-single-string", ["post_processor.single must be a list"],
                   lambda d: d.update(post_processor={"type": "TemplateProcessing", "single": "$A"}))
    tokenizer_case("convert-tokenizer-added-surrogate", ["lone UTF-16 surrogate"],
                   lambda d: d["added_tokens"][0].update(content="\ud800"))
    tokenizer_case("convert-tokenizer-merge-surrogate", ["lone UTF-16 surrogate"],
                   lambda d: d["model"]["merges"].__setitem__(0, "\udfff x"))
    tokenizer_case("convert-tokenizer-config-surrogate", ["lone UTF-16 surrogate"],
                   lambda d: d.update(chat_template="\udc80"), file="tokenizer_config.json")

    # -- tokenizer and general keys llama.cpp refuses: set refuses to write them ---------------------------
    refused = ["llama.cpp refuses or cannot run", "is read by llama.cpp as"]
    for name, assignment in [
        ("set-tokenizer-model-bogus", "tokenizer.ggml.model=str:bogus"),
        ("set-tokenizer-model-empty", "tokenizer.ggml.model=str:"),
        ("set-tokenizer-pre-bogus", "tokenizer.ggml.pre=str:bogus"),
        ("set-token-type-one-entry", "tokenizer.ggml.token_type=arr[i32]:1"),
        ("set-token-type-u32", "tokenizer.ggml.token_type=arr[u32]:1,2"),
        ("set-scores-one-entry", "tokenizer.ggml.scores=arr[f32]:0.5"),
        ("set-tokens-not-strings", "tokenizer.ggml.tokens=arr[i32]:1,2,3"),
        ("set-bos-i32", "tokenizer.ggml.bos_token_id=i32:-1"),
        ("set-bos-past-vocab", "tokenizer.ggml.bos_token_id=u32:384"),
        ("set-eos-u64", "tokenizer.ggml.eos_token_id=u64:2"),
        ("set-add-bos-u8", "tokenizer.ggml.add_bos_token=u8:1"),
        ("set-tokenizer-model-u32", "tokenizer.ggml.model=u32:2"),
        ("set-file-type-str", "general.file_type=str:F16"),
        ("set-file-type-i32", "general.file_type=i32:1"),
        ("set-name-u32", "general.name=u32:7"),
    ]:
        cases.append(_gguf_case(root, name, lambda out, folder, a=assignment: ["set", str(base), "-o", str(out), a],
                                refused, []))
    for name, key in (("unset-tokenizer-model", "tokenizer.ggml.model"), ("unset-tokenizer-merges", "tokenizer.ggml.merges"),
                      ("unset-tokenizer-tokens", "tokenizer.ggml.tokens")):
        cases.append(_gguf_case(root, name, lambda out, folder, k=key: ["unset", str(base), "-o", str(out), k],
                                ["llama.cpp refuses or cannot run"], []))

    # -- check --tokens past the file's context and the machine's memory -----------------------------------
    for name, n in (("check-tokens-10-12", 10**12), ("check-tokens-100000", 100000), ("check-tokens-1", 1)):
        cases.append(_gguf_case(root, name, lambda out, folder, n=n: ["check", str(base), "--end-to-end", "--tokens",
                                                                         str(n)], ["at most", "at least 2"], []))
    for name, n in (("check-positions-2-31", 2**31), ("check-positions-10-12", 10**12), ("check-positions-3", 3)):
        cases.append(_gguf_case(root, name, lambda out, folder, n=n: ["check", str(base), "--positions", str(n)],
                                ["at most", "at least 4"], []))
    return cases


__all__ = ["hostile_cases"]
