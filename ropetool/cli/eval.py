"""``ropetool eval``: perplexity by length and passkey retrieval for the file's setting and tried ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ropetool.errors import RopetoolError


def _lengths(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RopetoolError(f"--lengths: {text!r} is not a comma-separated list of token counts") from None


@click.command("eval")
@click.argument("gguf_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--lengths", default="4096,8192,12288", show_default=True,
              help="Window lengths in tokens, comma-separated.")
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Score this UTF-8 text (default: Shakespeare from karpathy/char-rnn's tinyshakespeare, public "
                   "domain, shipped with ropetool: about 300 KB).")
@click.option("--try", "tries", multiple=True, metavar="SETTING",
              help="A setting in set-rope's language, e.g. none, linear:factor=4, ntk:alpha=4, "
                   "yarn:factor=2,original_context=8192, dynamic-ntk:factor=2 (repeatable).")
@click.option("--passkey", type=int, default=0, show_default=True, metavar="TRIALS",
              help="Passkey retrieval trials per setting, length and depth (llama.cpp's passkey prompt).")
@click.option("--depths", default="0.1,0.5,0.9", show_default=True, help="Where the passkey sits in the filler.")
@click.option("--lines", type=int, default=0, show_default=True, metavar="TRIALS",
              help="LongChat LongEval 'lines' retrieval trials per setting and length (the prompt sized to each length).")
@click.option("--bins", type=int, default=8, show_default=True,
              help="Perplexity by position: bins of position over the longest length.")
@click.option("--cache-type", type=click.Choice(["f16", "q8_0", "f32"]), default="f16", show_default=True,
              help="llama.cpp's KV cache type (f16, as llama.cpp's tools run; q8_0 turns on flash attention).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the passkeys, the lines records and the bootstrap.")
@click.option("--engine", type=click.Choice(["llama.cpp", "reference"]), default="llama.cpp", show_default=True,
              help="reference: ropetool's numpy forward pass, for settings llama.cpp cannot compute (small models).")
@click.option("--approximate", is_flag=True, help="Evaluate a setting llama.cpp can only approximate, as set-rope "
                                                  "--approximate would write it.")
@click.option("--device", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the records as a JSON list.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG: perplexity by position per setting, and the retrieval grid (needs ropetool[plot]).")
@click.option("--verbose", is_flag=True, help="Show llama.cpp's log.")
def eval_command(gguf_file, lengths, text_file, tries, passkey, depths, lines, bins, cache_type, seed, engine,
                 approximate, device, as_json, plot_file, verbose):
    """Evaluate GGUF_FILE's rope setting and tried ones: perplexity by position and length, passkey and lines retrieval.

    Perplexity by position: one pass per setting over the longest length, every position scored, reported in
    --bins bins with the trained context marked.  Perplexity at length L: the text's first L tokens, the
    second half scored as llama.cpp's perplexity tool scores a window.  A tried setting is the one `ropetool set-rope` would write, applied at load
    time (or from a temporary file when it changes rope tensors).  The last line recommends the setting
    with the best perplexity at the longest length whose perplexity at the shortest stays within 5% of the
    file's own, and says whether the next best is distinguishable from it (a paired block bootstrap over
    positions).  Ctrl-C prints the results so far (exit 130).
    """
    from ropetool.cli.options import notify
    from ropetool.eval import Evaluation
    from ropetool.io.files import read_text

    try:
        depth_list = [float(x) for x in depths.split(",") if x.strip()]
    except ValueError:
        raise RopetoolError(f"--depths: {depths!r} is not a comma-separated list of fractions") from None
    text = read_text(text_file, "--text file") if text_file else None
    if plot_file is not None:
        from ropetool.plot import pyplot

        pyplot()  # a missing matplotlib is said before the long work
    ev = Evaluation(gguf_file, _lengths(lengths), list(tries), text=text,
                    text_source=str(text_file) if text_file else None, passkey=passkey, depths=depth_list, seed=seed,
                    device=device, engine=engine, approximate=approximate, verbose=verbose, progress=notify,
                    lines=lines, bins=bins, cache_type=cache_type)
    interrupted = False
    try:
        report = ev.run()
    except KeyboardInterrupt:
        interrupted = True
        report = ev.report
        report.partial = True
    click.echo(json.dumps(report.to_list(), indent=1) if as_json else report.summary())
    if plot_file is not None and report.records:
        from ropetool.plot import plot_eval

        plot_eval(report, plot_file)
        if not as_json:
            click.echo(f"plot: {plot_file}")
    if interrupted:
        sys.exit(130)
