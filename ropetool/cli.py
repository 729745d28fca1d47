"""The ``ropetool`` command line: a thin Click layer over the library.

Every command turns a RopetoolError (bad input) into a one-line ``Error: ...`` and exit code 2;
set ROPETOOL_DEBUG=1 to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import RopetoolError
from .rope import METHODS


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RopetoolError as e:
            _fail(str(e), 2)
        except OSError as e:
            _fail(f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''}", 2)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:  # pragma: no cover - a bug, reported in one line unless debugging
            if os.environ.get("ROPETOOL_DEBUG"):
                raise
            _fail(f"internal error ({type(e).__name__}: {e}); rerun with ROPETOOL_DEBUG=1 and report it", 70)


def _fail(message: str, code: int):
    click.echo(f"Error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ropetool")
def cli():
    """Convert Hugging Face checkpoints to GGUF with RoPE/ALiBi context extension, and check them."""


def rope_options(f):
    """The options that choose a position-encoding method, shared by convert and set-rope."""
    options = [
        click.option("--rope", "method", type=click.Choice(METHODS), help="Method to embed (default: config.json's)."),
        click.option("--factor", type=float, help="Scale factor s (linear, yarn, llama3, dynamic-ntk...)."),
        click.option("--alpha", type=float, help="NTK-aware alpha; ALiBi interpolation/NTK-ALiBi a; dynamic a0."),
        click.option("--original-context", type=int, help="Trained context length L0 (default: config.json's)."),
        click.option("--target-context", type=int, help="Length a dynamic method is baked at; the extended context."),
        click.option("--beta-fast", type=float, help="YaRN/NTK-by-parts beta_fast (default 32)."),
        click.option("--beta-slow", type=float, help="YaRN/NTK-by-parts beta_slow (default 1)."),
        click.option("--attn-factor", "attention_factor", type=float, help="YaRN/LongRoPE attention factor."),
        click.option("--freq-base", "base", type=float, help="RoPE base frequency theta."),
        click.option("--approximate", is_flag=True, help="Write a method llama.cpp cannot compute exactly, recording the error."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


ROPE_OPTION_NAMES = ("factor", "alpha", "original_context", "target_context", "beta_fast", "beta_slow",
                     "attention_factor", "base")
_FLAGS = {"attention_factor": "--attn-factor", "base": "--freq-base"}


def chosen_rope_options(method: str | None, values: dict) -> dict:
    """The rope options given on the command line; an option the chosen method does not read is an error."""
    from .rope.params import unused_parameters

    given = {k: values[k] for k in ROPE_OPTION_NAMES if values.get(k) is not None}
    if method is not None:
        unused = unused_parameters(method, given)
        if unused:
            flags = ", ".join(_FLAGS.get(n, "--" + n.replace("_", "-")) for n in unused)
            raise RopetoolError(f"{flags} does not apply to --rope {method}")
    return {k: values[k] for k in ROPE_OPTION_NAMES}


def _progress(label: str):
    if not sys.stderr.isatty():
        return None

    def wrap(items):
        items = list(items)
        with click.progressbar(items, label=label, file=sys.stderr) as bar:
            yield from bar

    return wrap


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("-o", "--outfile", type=click.Path(path_type=Path), help="Output GGUF (default: MODEL-OUTTYPE.gguf here).")
@click.option("--outtype", type=click.Choice(["auto", "f32", "f16", "bf16", "q8_0"]), default="auto", show_default=True)
@rope_options
@click.option("--pre-tokenizer", help="llama.cpp pre-tokenizer name, when it cannot be told from tokenizer.json.")
@click.option("--dry-run", is_flag=True, help="Print the plan (keys, tensors, types, sizes) and write nothing.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def convert(model_dir, outfile, outtype, method, approximate, pre_tokenizer, dry_run, force, as_json, **rope):
    """Convert the Hugging Face model in MODEL_DIR to GGUF."""
    from .convert import plan_conversion, write_gguf

    rope_values = chosen_rope_options(method, rope)
    outfile = outfile or Path(f"{Path(model_dir).resolve().name}-{outtype}.gguf")
    if outfile.exists() and not force and not dry_run:
        raise RopetoolError(f"{outfile} exists; pass --force to overwrite it")
    plan = plan_conversion(model_dir, outtype, method, approximate, pre_tokenizer, **rope_values)
    for warning in plan.lowered.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if not plan.lowered.exact and plan.lowered.approx_error and approximate:
        click.echo(f"Warning: approximate: {'; '.join(plan.lowered.notes)}", err=True)
    if dry_run:
        desc = plan.describe()
        if as_json:
            click.echo(json.dumps(desc, indent=2, default=str))
        else:
            _print_plan(desc)
        return
    write_gguf(plan, outfile, force=force, progress=_progress(f"writing {outfile.name}"))
    if as_json:
        click.echo(json.dumps({**plan.describe(), "output": str(outfile)}, indent=2, default=str))
    else:
        click.echo(f"wrote {outfile} ({plan.total_bytes / 1e6:.1f} MB of tensors, {plan.arch.name}, "
                   f"{plan.outtype.name}, rope {_rope_words(plan.rope)})")


def _rope_words(params) -> str:
    d = params.as_dict()
    rest = ", ".join(f"{k}={v}" for k, v in d.items() if k not in ("method", "short_factor", "long_factor"))
    return f"{d['method']}" + (f" ({rest})" if rest else "")


def _print_plan(desc: dict) -> None:
    click.echo(f"source:        {desc['source']}")
    click.echo(f"architecture:  {desc['architecture']}")
    click.echo(f"output type:   {desc['outtype']}")
    click.echo(f"rope:          {desc['rope']}  ({'exact' if desc['exact'] else 'not exact'})")
    for note in desc["notes"]:
        click.echo(f"  note: {note}")
    click.echo(f"context:       {desc['context_length']}")
    click.echo("keys:")
    for k, v in desc["keys"].items():
        click.echo(f"  {k} = {v}")
    click.echo(f"tensors ({len(desc['tensors'])}, {desc['total_bytes'] / 1e6:.2f} MB):")
    for t in desc["tensors"]:
        click.echo(f"  {t['name']:<32} {t['type']:<6} {str(t['shape']):<16} {t['bytes']:>12,}")
    if desc["skipped"]:
        click.echo(f"skipped: {', '.join(desc['skipped'])}")


@cli.command()
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
    from .check import check_gguf

    if not gguf_file.is_file():
        raise RopetoolError(f"no such file: {gguf_file}")
    text = text_file.read_text(encoding="utf-8") if text_file else None
    report = check_gguf(gguf_file, device=device, n_tokens=n_tokens, text=text, source=source,
                        tolerance=tolerance, verbose=verbose)
    click.echo(report.to_json() if as_json else report.summary())
    sys.exit(0 if report.passed else 1)


from . import cli_gguf  # noqa: E402,F401  (registers inspect, set-rope, set, unset, diff)


def main():
    if os.name != "posix":  # positional reads and writes, flock, rename of an open file
        sys.exit("Error: ropetool runs on Linux and macOS (on Windows, inside WSL)")
    cli(prog_name="ropetool")


if __name__ == "__main__":  # pragma: no cover
    main()
