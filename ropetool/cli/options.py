"""Options and helpers shared by the command modules: the rope-method options, a progress bar."""

from __future__ import annotations

import sys

import click

from ropetool.rope import METHODS, OPTIONS, refuse_unused


def rope_options(source: str):
    """The options that choose a position-encoding method, shared by convert and set-rope; ``source`` says
    where the defaults come from ("config.json" for convert, "the file" for set-rope)."""

    def decorate(f):
        default_method = "config.json's" if source == "config.json" else "required"
        options = [
            click.option("--rope", "method", type=click.Choice(METHODS),
                         help=f"Method to embed (default: {default_method})."),
            *(click.option(o.flag, o.name, type=o.kind, help=o.help.format(source=source)) for o in OPTIONS.values()),
            click.option("--approximate", is_flag=True,
                         help="Write a method llama.cpp cannot compute exactly, recording the error."),
        ]
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def chosen_rope_options(method: str | None, values: dict) -> dict:
    """The rope options given on the command line; an option the chosen method does not read is an error."""
    if method is not None:
        refuse_unused(method, [k for k in OPTIONS if values.get(k) is not None])
    return {k: values[k] for k in OPTIONS}


def outtypes() -> list[str]:
    """What convert (and extend, from a Hugging Face folder) writes: ropetool's own types, llama.cpp's quantizer's."""
    from ropetool.llamacpp.quantize import FILE_TYPES

    return ["auto", "f32", "f16", "bf16", "q8_0", *FILE_TYPES]


def notify(message: str) -> None:
    """A progress message, on a terminal only."""
    if sys.stderr.isatty():
        click.echo(message, err=True)


def progress(label: str):
    if not sys.stderr.isatty():
        return None

    def wrap(items):
        items = list(items)
        with click.progressbar(items, label=label, file=sys.stderr) as bar:
            yield from bar

    return wrap
