"""``ropetool check``: which rope setting llama.cpp computes for a file, against the numpy reference."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ropetool.errors import RopetoolError


@click.command()
@click.argument("gguf_file", type=click.Path(path_type=Path))
@click.option("--device", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="gpu: whatever backend this llama-cpp-python was built with (CUDA or Metal).")
@click.option("--tokens", "n_tokens", type=int,
              help="Number of tokens (default: the original context plus a quarter, at most 2048).")
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Evaluate this text (tokenized by llama.cpp) instead of a fixed token sequence.")
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Take the reference's weights from this Hugging Face folder instead of the GGUF.")
@click.option("--json", "as_json", is_flag=True, help="Print the report (or the error) as JSON.")
@click.option("--verbose", is_flag=True, help="Show llama.cpp's log.")
def check(gguf_file, device, n_tokens, text_file, source, as_json, verbose):
    """Check which rope setting llama.cpp computes for GGUF_FILE.

    llama.cpp's next-token distributions are compared with the numpy reference's under the setting the
    file means and under the nearest wrong readings (no extension, each parameter moved x2 and /2, keys
    llama.cpp ignores).  Exit code 0: llama.cpp computes the meant setting; 1: it computes something
    closer to an alternative (fail, which is named) or the difference is below its rounding
    (inconclusive); 2: bad input.
    """
    from ropetool.check import check_gguf
    from ropetool.io.files import read_text

    try:
        if not gguf_file.exists():
            raise RopetoolError(f"no such file: {gguf_file}")
        text = read_text(text_file, "--text file") if text_file else None
        from ropetool.cli.options import notify

        report = check_gguf(gguf_file, device=device, n_tokens=n_tokens, text=text, source=source, verbose=verbose,
                            progress=notify)
    except RopetoolError as e:
        if not as_json:
            raise
        click.echo(json.dumps({"error": " ".join(str(e).split())}))
        sys.exit(2)
    click.echo(report.to_json() if as_json else report.summary())
    sys.exit(0 if report.passed else 1)
