"""``ropetool quantize``: a GGUF to a K-quant or legacy type, by llama.cpp's own quantizer."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ropetool.cli.options import notify


def _types() -> list[str]:
    from ropetool.llamacpp.quantize import FILE_TYPES

    return list(FILE_TYPES)


@click.command("quantize")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--outfile", type=click.Path(path_type=Path),
              help="Output GGUF, or a folder (default: FILE-TYPE.gguf here).")
@click.option("--type", "type_name", type=click.Choice(_types(), case_sensitive=False), required=True,
              help="llama.cpp's file type: the K-quants (q4_k_m, q5_k_m, q6_k, ...) and the legacy ones.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def quantize_command(file, outfile, type_name, force, as_json):
    """Quantize FILE with llama.cpp's own quantizer, keeping every key (the rope settings and ropetool's record)."""
    from ropetool.quantize import default_name, quantize

    out = quantize(file, outfile or Path(default_name(file, type_name)), type_name, force=force, notify=notify)
    size = out.stat().st_size
    if as_json:
        click.echo(json.dumps({"source": str(file), "output": str(out), "type": type_name.upper(), "bytes": size}))
    else:
        click.echo(f"wrote {out} ({size / 1e6:.1f} MB, {type_name.upper()})")
