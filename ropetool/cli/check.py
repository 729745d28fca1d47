"""``ropetool check``: llama.cpp against the numpy reference."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ropetool.errors import RopetoolError


@click.command()
@click.argument("gguf_file", type=click.Path(path_type=Path))
@click.option("--device", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="gpu: whatever backend this llama-cpp-python was built with (CUDA or Metal).")
@click.option("--tokens", "n_tokens", type=int, help="Number of tokens (default: past the original context).")
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Evaluate this text (tokenized by llama.cpp) instead of a fixed token sequence.")
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Take the reference's weights from this Hugging Face folder instead of the GGUF.")
@click.option("--tolerance", type=float, help="Relative tolerance (x max|logit|); default by weight type.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--verbose", is_flag=True, help="Show llama.cpp's log.")
def check(gguf_file, device, n_tokens, text_file, source, tolerance, as_json, verbose):
    """Run llama.cpp on GGUF_FILE and compare its logits with the numpy reference.

    Exit code 0: llama.cpp matches the reference, and the rope setting moves the logits enough for the
    match to mean something; 1: it does not (fail or inconclusive).
    """
    from ropetool.check import check_gguf

    if not gguf_file.is_file():
        raise RopetoolError(f"no such file: {gguf_file}")
    text = text_file.read_text(encoding="utf-8") if text_file else None
    report = check_gguf(gguf_file, device=device, n_tokens=n_tokens, text=text, source=source,
                        tolerance=tolerance, verbose=verbose)
    click.echo(report.to_json() if as_json else report.summary())
    sys.exit(0 if report.passed else 1)
