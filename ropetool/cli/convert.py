"""``ropetool convert``: a Hugging Face folder to GGUF."""

from __future__ import annotations

from pathlib import Path

import click

from ropetool.cli.options import chosen_rope_options, notify, outtypes, progress, rope_options
from ropetool.errors import RopetoolError
from ropetool.io.gguf_file import dumps


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("-o", "--outfile", type=click.Path(path_type=Path),
              help="Output GGUF, or a folder to put MODEL-TYPE.gguf in (default: MODEL-TYPE.gguf here).")
@click.option("--outtype", type=click.Choice(outtypes(), case_sensitive=False), default="auto", show_default=True,
              help="auto: f16, or bf16 when the checkpoint is bf16.  f32/f16/bf16/q8_0 are written by ropetool; the "
                   "K-quants and the other legacy types by llama.cpp's own quantizer, from the auto conversion.")
@rope_options("config.json")
@click.option("--pre-tokenizer", help="llama.cpp pre-tokenizer name, when it cannot be told from tokenizer.json.")
@click.option("--dry-run", is_flag=True, help="Print the plan (keys, tensors, types, sizes) and write nothing.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def convert(model_dir, outfile, outtype, method, approximate, pre_tokenizer, dry_run, force, as_json, **rope):
    """Convert the Hugging Face model in MODEL_DIR to GGUF."""
    from ropetool.convert import plan_conversion, write_gguf

    rope_values = chosen_rope_options(method, rope)
    plan = plan_conversion(model_dir, outtype.lower(), method, approximate, pre_tokenizer, **rope_values)
    default_name = f"{Path(model_dir).resolve().name}-{plan.type_name}.gguf"
    if outfile is None:
        outfile = Path(default_name)
    elif outfile.is_dir():
        outfile = outfile / default_name
    if outfile.exists() and not force and not dry_run:
        raise RopetoolError(f"{outfile} exists; pass --force to overwrite it")
    for warning in plan.lowered.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if not plan.lowered.exact and plan.lowered.approx_error and approximate:
        click.echo(f"Warning: approximate: {'; '.join(plan.lowered.notes)}", err=True)
    if dry_run:
        desc = plan.describe()
        if as_json:
            click.echo(dumps(desc))
        else:
            _print_plan(desc, plan)
        return
    write_gguf(plan, outfile, force=force, progress=progress(f"writing {outfile.name}"), notify=notify)
    if as_json:
        click.echo(dumps({**plan.describe(), "output": str(outfile)}))
    else:
        click.echo(f"wrote {outfile} ({outfile.stat().st_size / 1e6:.1f} MB, {plan.arch}, {plan.type_name}, "
                   f"rope {rope_words(plan.rope)})")


def rope_words(params) -> str:
    """A method and its parameters in one line: ``yarn (factor 4, original_context 64)``."""
    rest = params.words()
    return params.method + (f" ({rest})" if rest else "")


def _print_plan(desc: dict, plan) -> None:
    click.echo(f"source:        {desc['source']}")
    click.echo(f"architecture:  {desc['architecture']}")
    via = f" (llama.cpp's quantizer, from a {desc['intermediate']} intermediate)" if "intermediate" in desc else ""
    click.echo(f"output type:   {desc['outtype']}{via}")
    click.echo(f"rope:          {rope_words(plan.rope)}  ({'exact' if desc['exact'] else 'not exact'} in llama.cpp)")
    for note in desc["notes"]:
        click.echo(f"  note: {note}")
    click.echo(f"context:       {desc['context_length']}")
    click.echo("keys:")
    for k, v in desc["keys"].items():
        click.echo(f"  {k} = {v}")
    total = desc["total_bytes"] / 1e6
    click.echo(f"tensors ({len(desc['tensors'])}, {total:.2f} MB{' before quantizing' if via else ''}):")
    for t in desc["tensors"]:
        shape = "x".join(str(n) for n in t["shape"])  # ggml's order, as inspect shows it
        click.echo(f"  {t['name']:<32} {t['type']:<6} {shape:<16} {t['bytes']:>12,}")
    if desc["skipped"]:
        click.echo(f"skipped: {', '.join(desc['skipped'])}")
