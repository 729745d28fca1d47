"""``ropetool extend``: a model to a file that runs at N tokens, proven, with its memory cost and how to run it."""

from __future__ import annotations

import sys
from pathlib import Path

import click


def _outtypes() -> list[str]:
    from ropetool.llamacpp.quantize import FILE_TYPES

    return ["auto", "f32", "f16", "bf16", "q8_0", *FILE_TYPES]


@click.command("extend")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--context", "-c", "context", type=click.IntRange(min=1), required=True, metavar="N",
              help="The context to reach, in tokens (context_length becomes N).")
@click.option("-o", "--outfile", type=click.Path(path_type=Path),
              help="Output GGUF, or a folder to put NAME-Nk.gguf in (default: NAME-Nk.gguf here).")
@click.option("--outtype", type=click.Choice(_outtypes(), case_sensitive=False),
              help="MODEL a Hugging Face folder: the type to convert to, as convert's --outtype (default auto).")
@click.option("--measure", is_flag=True,
              help="Evaluate YaRN, NTK-aware and Dynamic NTK (baked at N) with eval at the trained context and the "
                   "longest length this machine affords, and write eval's recommendation (a GGUF; slow on a CPU).")
@click.option("--approximate", is_flag=True,
              help="Write a setting llama.cpp cannot compute exactly on the architecture, recording the error.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def extend_command(model, context, outfile, outtype, measure, approximate, force, as_json):
    """Extend MODEL (a GGUF or a Hugging Face folder) to N tokens: the file, proven, its memory, how to run it.

    The setting follows the rule in docs/extend.md: the model's own recipe re-targeted at N (a file
    or config.json already YaRN, linear, ...), else its family's (Qwen: YaRN over the original
    context), else ropetool's measured default; --measure asks eval instead.  The file's
    context_length becomes N and it holds ropetool's record, as set-rope and convert write them.
    llama.cpp's own rope ops are then probed on it at positions up to N: without PASS nothing is
    put at the output (the file is kept under its temporary name) and the exit code is 1.
    Printed: the KV cache at N for f16, q8_0 and q4_0 next to the weights, and the llama-server,
    llama-cli and ollama lines that run it.  Exit 0: written and proven (or nothing to do);
    1: the probe failed; 2: refused (nothing written).

    \b
    Examples:
      ropetool extend SmolLM2-135M-Instruct.Q4_1.gguf --context 32768
      ropetool extend Qwen2.5-7B-Instruct/ --context 131072 --outtype q4_k_m -o qwen-128k.gguf
      ropetool extend model.gguf --context 12288 --measure
    """
    from ropetool.cli.options import notify, progress
    from ropetool.extend import extend
    from ropetool.io.gguf_file import dumps

    result = extend(model, context, outfile, outtype=outtype.lower() if outtype else None, measure=measure, force=force,
                    approximate=approximate, progress=progress(f"writing {model.name}"), notify=notify)
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(dumps(result.as_dict()) if as_json else result.summary())
    sys.exit(0 if result.passed else 1)
