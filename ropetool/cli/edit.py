"""The commands that edit or compare GGUF files: set-rope, set, unset, diff.

Exit codes: ``diff`` exits 1 when the files differ (0 when identical), like diff(1).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ropetool.cli.options import chosen_rope_options, rope_options
from ropetool.io.gguf_file import dumps

_PATH = click.Path(path_type=Path, dir_okay=False)


def _fmt_value(entry: dict | None) -> str:
    if entry is None:
        return ""
    v = entry["value"]
    if "count" in entry:
        items = ", ".join(json.dumps(x, ensure_ascii=False) if isinstance(x, str) else str(x) for x in v)
        return f"[{items}{', ...' if entry.get('truncated') else ''}] ({entry['count']} items)"
    if isinstance(v, str):
        s = json.dumps(v, ensure_ascii=False)
        return s if len(s) <= 100 else s[:100] + f'..." ({len(v):,} chars)'
    return str(v)


def _print_key_changes(changes: list[dict]) -> None:
    if not changes:
        click.echo("keys: no changes")
        return
    click.echo("keys:")
    for c in changes:
        if c["change"] == "added":
            click.echo(f"  + {c['key']} = {c['new']['type']}:{_fmt_value(c['new'])}")
        elif c["change"] == "removed":
            click.echo(f"  - {c['key']} ({c['old']['type']}:{_fmt_value(c['old'])})")
        else:
            click.echo(f"  ~ {c['key']}: {c['old']['type']}:{_fmt_value(c['old'])} -> {c['new']['type']}:{_fmt_value(c['new'])}")


def _print_tensor_changes(changes: list[dict]) -> None:
    if not changes:
        return
    click.echo("tensors:")
    for c in changes:
        sign = {"added": "+", "removed": "-", "changed": "~"}[c["change"]]
        e = c["new"] or c["old"]
        click.echo(f"  {sign} {c['name']} {e['type']} {e['shape']}")


def _report_edit(result, as_json: bool, dry_run: bool) -> None:
    for w in result.warnings:
        click.echo(f"Warning: {w}", err=True)
    if as_json:
        click.echo(dumps(result.as_dict()))
        return
    if result.rope is not None:
        r = result.rope
        rest = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k != "method" and not isinstance(v, list))
        click.echo(f"rope: {r['method']}{' (' + rest + ')' if rest else ''}, "
                   f"{'exact' if r['exact'] else 'approximate'}, context_length {r['context_length']}")
        for n in result.notes:
            click.echo(f"  note: {n}")
    _print_key_changes(result.keys)
    _print_tensor_changes(result.tensors)
    if dry_run:
        click.echo("dry run: nothing written")
    else:
        click.echo(f"wrote {result.output}")


def _edit_options(f):
    options = [
        click.argument("file", type=_PATH),
        click.option("-o", "--outfile", type=_PATH, help="Write the edited copy here (the input is left untouched)."),
        click.option("--in-place", is_flag=True, help="Replace the input (through a temporary file and an atomic rename)."),
        click.option("--force", is_flag=True, help="Overwrite an existing OUTFILE."),
        click.option("--dry-run", is_flag=True, help="Show the key and tensor changes; write nothing."),
        click.option("--json", "as_json", is_flag=True, help="Print the changes as JSON."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.command("set-rope")
@_edit_options
@rope_options("the file")
def set_rope_command(file, outfile, in_place, force, dry_run, as_json, method, approximate, **rope):
    """Change the position-encoding method of FILE without reconverting.

    Takes the same rope options as convert.  The original base comes from ropetool.rope.params
    (else rope.freq_base) and the trained context from rope.scaling.original_context_length (else
    context_length), unless --freq-base / --original-context say otherwise.
    """
    from ropetool.edit import set_rope

    values = chosen_rope_options(method, rope)
    result = set_rope(file, method, outfile, in_place=in_place, force=force, dry_run=dry_run,
                      approximate=approximate, **values)
    _report_edit(result, as_json, dry_run)


@click.command("set")
@_edit_options
@click.argument("assignments", nargs=-1, required=True, metavar="KEY=TYPE:VALUE...")
def set_command(file, assignments, outfile, in_place, force, dry_run, as_json):
    """Add or replace typed keys in FILE.

    \b
    TYPE: u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool str, or arr[TYPE].
      llama.rope.freq_base=f32:1000000
      llama.rope.scaling.type=str:yarn
      general.tags=arr[str]:a,b,c        (JSON list for strings with commas: arr[str]:["a,b","c"])
      llama.rope.dimension_sections=arr[i32]:16,24,24,0
      tokenizer.chat_template=str@template.jinja   (a string read from a file)
    """
    from ropetool.edit import set_keys

    result = set_keys(file, list(assignments), outfile, in_place=in_place, force=force, dry_run=dry_run)
    _report_edit(result, as_json, dry_run)


@click.command("unset")
@_edit_options
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
def unset_command(file, keys, outfile, in_place, force, dry_run, as_json):
    """Remove keys from FILE."""
    from ropetool.edit import unset_keys

    result = unset_keys(file, list(keys), outfile, in_place=in_place, force=force, dry_run=dry_run)
    _report_edit(result, as_json, dry_run)


@click.command("diff")
@click.argument("a", type=_PATH)
@click.argument("b", type=_PATH)
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@click.option("--no-data", is_flag=True, help="Do not compare tensor bytes (names, types and shapes only).")
@click.pass_context
def diff_command(ctx, a, b, as_json, no_data):
    """Compare two GGUFs: metadata and tensors (bytes by streamed sha256). Exit 0 if identical, 1 if not."""
    from ropetool.edit import diff_gguf

    d = diff_gguf(a, b, tensor_data=not no_data)
    if as_json:
        click.echo(dumps(d))
    else:
        for k, v in d["file"].items():
            click.echo(f"~ file {k}: {v[0]} -> {v[1]}")
        md = d["metadata"]
        for k, e in md["removed"].items():
            click.echo(f"- {k} = {e['type']}:{_fmt_value(e)}")
        for k, e in md["added"].items():
            click.echo(f"+ {k} = {e['type']}:{_fmt_value(e)}")
        for k, e in md["changed"].items():
            click.echo(f"~ {k}: {e['old']['type']}:{_fmt_value(e['old'])} -> {e['new']['type']}:{_fmt_value(e['new'])}")
        td = d["tensors"]
        for t in td["removed"]:
            click.echo(f"- tensor {t['name']} {t['type']} {t['shape']}")
        for t in td["added"]:
            click.echo(f"+ tensor {t['name']} {t['type']} {t['shape']}")
        for t in td["changed"]:
            what = ", ".join(f"{k} {v[0]} -> {v[1]}" for k, v in t.items() if k in ("type", "shape"))
            if t.get("data"):
                what = (what + ", " if what else "") + "data differs"
            click.echo(f"~ tensor {t['name']}: {what}")
        if td["order_changed"]:
            click.echo("~ tensor order differs")
        summary = "identical" if d["identical"] else "differ"
        data = "" if td["data_compared"] else " (tensor data not compared)"
        click.echo(f"{d['a']} and {d['b']} {summary}{data}; {td['unchanged']} tensors unchanged")
    if not d["identical"]:
        ctx.exit(1)
