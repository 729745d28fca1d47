"""``ropetool check``: probe llama.cpp's own rope ops (default), or compare its logits with the reference (--end-to-end)."""

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
@click.option("--positions", type=int,
              help="The farthest position the probe reaches (default: 1.25 x the extended context).")
@click.option("--end-to-end", "end_to_end", is_flag=True,
              help="Instead of probing the rope ops, compare llama.cpp's next-token distributions with the numpy "
                   "reference's under the meant setting and its nearest alternatives (slower; sees the whole model).")
@click.option("--tokens", "n_tokens", type=int,
              help="--end-to-end: number of tokens (default: the original context plus a quarter, at most 2048).")
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="--end-to-end: evaluate this text (tokenized by llama.cpp) instead of a fixed token sequence.")
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="--end-to-end: take the reference's weights from this Hugging Face folder instead of the GGUF.")
@click.option("--json", "as_json", is_flag=True, help="Print the report (or the error) as JSON.")
@click.option("--verbose", is_flag=True, help="Show llama.cpp's log.")
def check(gguf_file, device, positions, end_to_end, n_tokens, text_file, source, as_json, verbose):
    """Check that llama.cpp computes the rope setting GGUF_FILE means.

    By default llama.cpp decodes one small batch of sequences at positions spread past the extended
    context, and every rope op of its graph is read: its parameters and its output (against the meant
    rotation of its own input, within float32 rounding) must be the meant setting's, ALiBi's slopes the
    meant ones.  --end-to-end compares next-token distributions with the numpy reference instead.
    Exit code 0: llama.cpp computes the meant setting; 1: it does not (what differs is named; with
    --end-to-end also when the difference is below its rounding); 2: bad input.
    """
    try:
        if not gguf_file.exists():
            raise RopetoolError(f"no such file: {gguf_file}")
        if end_to_end:
            if positions is not None:
                raise RopetoolError("--positions applies to the probe, not to --end-to-end (use --tokens)")
            from ropetool.check import check_gguf
            from ropetool.cli.options import notify
            from ropetool.io.files import read_text

            text = read_text(text_file, "--text file") if text_file else None
            report = check_gguf(gguf_file, device=device, n_tokens=n_tokens, text=text, source=source, verbose=verbose,
                                progress=notify)
        else:
            given = [name for name, value in (("--tokens", n_tokens), ("--text", text_file), ("--source", source)) if value]
            if given:
                raise RopetoolError(f"{given[0]} applies to --end-to-end only")
            from ropetool.probe import probe_gguf

            report = probe_gguf(gguf_file, positions=positions, device=device, verbose=verbose)
    except RopetoolError as e:
        if not as_json:
            raise
        click.echo(json.dumps({"error": " ".join(str(e).split())}))
        sys.exit(2)
    click.echo(report.to_json() if as_json else report.summary())
    sys.exit(0 if report.passed else 1)
