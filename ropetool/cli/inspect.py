"""``ropetool inspect``: metadata, tensors, the rope summary and lint."""

from __future__ import annotations

from pathlib import Path

import click

PATH = click.Path(path_type=Path, dir_okay=False)


@click.command("inspect")
@click.argument("file", type=PATH)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema: docs/inspect.md).")
@click.option("--full", is_flag=True, help="Print whole arrays and long strings (default: abbreviated).")
@click.option("--strict", is_flag=True, help="Exit 1 when lint finds a warning or an error.")
@click.option("--context", "context", type=click.IntRange(min=1), metavar="N",
              help="Size the KV cache at N tokens (default: the file's context_length).")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a PNG: each rotary pair's wavelength under the file's method, plain RoPE, PI and "
                   "NTK, with the trained context marked (needs ropetool[plot]).")
@click.pass_context
def inspect_command(ctx, file, as_json, full, strict, context, plot_file):
    """Show a GGUF's metadata, tensors, RoPE/ALiBi settings in plain words, and lint findings."""
    from ropetool.inspect import inspect_model, render_text, wavelengths
    from ropetool.io.gguf_file import dumps
    from ropetool.model import ModelFile

    with ModelFile.open(file) as model:
        if plot_file is not None:
            from ropetool.plot import plot_wavelengths

            plot_wavelengths(wavelengths(model), plot_file)
        report = inspect_model(model, full=full, context=context)
    click.echo(dumps(report) if as_json else render_text(report, full=full))
    bad = [x for x in report["lint"] if x["severity"] in ("error", "warning")]
    if strict and bad:
        click.echo(f"lint: {len(bad)} warning(s)/error(s) with --strict", err=True)
        ctx.exit(1)
