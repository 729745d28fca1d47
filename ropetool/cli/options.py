"""Options and helpers shared by the command modules: the rope-method options, a progress bar."""

from __future__ import annotations

import sys

import click

from ropetool.errors import RopetoolError
from ropetool.rope import METHODS


def rope_options(source: str):
    """The options that choose a position-encoding method, shared by convert and set-rope; ``source`` says
    where the defaults come from ("config.json" for convert, "the file" for set-rope)."""

    def decorate(f):
        default_method = "config.json's" if source == "config.json" else "required"
        options = [
            click.option("--rope", "method", type=click.Choice(METHODS),
                         help=f"Method to embed (default: {default_method})."),
            click.option("--factor", type=float, help="Scale factor s (linear, yarn, llama3, dynamic-ntk...)."),
            click.option("--alpha", type=float, help="NTK-aware alpha; ALiBi interpolation/NTK-ALiBi a; dynamic a0."),
            click.option("--original-context", type=int, help=f"Trained context length L0 (default: {source}'s)."),
            click.option("--target-context", type=int, help="Length a dynamic method is baked at; the extended context."),
            click.option("--beta-fast", type=float, help="YaRN/NTK-by-parts beta_fast (default 32)."),
            click.option("--beta-slow", type=float, help="YaRN/NTK-by-parts beta_slow (default 1)."),
            click.option("--attn-factor", "attention_factor", type=float, help="YaRN/LongRoPE attention factor."),
            click.option("--freq-base", "base", type=float, help=f"RoPE base frequency theta (default: {source}'s)."),
            click.option("--approximate", is_flag=True,
                         help="Write a method llama.cpp cannot compute exactly, recording the error."),
        ]
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


ROPE_OPTION_NAMES = ("factor", "alpha", "original_context", "target_context", "beta_fast", "beta_slow",
                     "attention_factor", "base")


def chosen_rope_options(method: str | None, values: dict) -> dict:
    """The rope options given on the command line; an option the chosen method does not read is an error."""
    from ropetool.convert import OPTION_FLAGS
    from ropetool.rope import unused_parameters

    given = {k: values[k] for k in ROPE_OPTION_NAMES if values.get(k) is not None}
    if method is not None:
        unused = unused_parameters(method, given)
        if unused:
            flags = ", ".join(OPTION_FLAGS.get(n, "--" + n.replace("_", "-")) for n in unused)
            raise RopetoolError(f"{flags} does not apply to --rope {method}")
    return {k: values[k] for k in ROPE_OPTION_NAMES}


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
