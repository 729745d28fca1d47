"""``ropetool convert``: a Hugging Face folder to GGUF."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ropetool.cli.options import chosen_rope_options, progress, rope_options
from ropetool.errors import RopetoolError


@click.command()
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
    from ropetool.convert import plan_conversion, write_gguf

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
    write_gguf(plan, outfile, force=force, progress=progress(f"writing {outfile.name}"))
    if as_json:
        click.echo(json.dumps({**plan.describe(), "output": str(outfile)}, indent=2, default=str))
    else:
        click.echo(f"wrote {outfile} ({plan.total_bytes / 1e6:.1f} MB of tensors, {plan.arch}, "
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
