"""PNG plots for ``ropetool eval --plot`` and ``ropetool inspect --plot`` (matplotlib, the ``plot`` extra:
``pip install 'ropetool[plot]'``; imported only when a plot is asked for)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ropetool.errors import RopetoolError

DPI = 100


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RopetoolError("plotting needs matplotlib: pip install 'ropetool[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, plt, out) -> Path:
    out = Path(out)
    try:
        fig.savefig(out, dpi=DPI, format="png")
    except OSError as e:
        raise RopetoolError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return out


def plot_eval(report, out) -> Path:
    """Perplexity against length per setting (log scale, the trained context marked) and, when the passkey was
    run, a grid of its accuracy per setting x length x depth.  1500 x 600 pixels."""
    plt = pyplot()
    with_passkey = any(r.passkey_trials for r in report.records)
    fig, axes = plt.subplots(1, 2 if with_passkey else 1, figsize=(15, 6) if with_passkey else (15, 6),
                             gridspec_kw={"width_ratios": [3, 2]} if with_passkey else None)
    ax = axes[0] if with_passkey else axes
    mark = " [reference]" if report.engine == "reference" else ""
    for s in report.settings:
        pts = [(r.length, r.perplexity) for r in report.records if r.setting == s and r.perplexity is not None]
        if pts:
            xs, ys = zip(*sorted(pts))
            ax.plot(xs, ys, marker="o", label=s + mark)
    if report.trained_context:
        ax.axvline(report.trained_context, color="grey", linestyle="--", label=f"trained context {report.trained_context}")
    ax.set_yscale("log")
    ax.set_xlabel("length (tokens)")
    ax.set_ylabel("perplexity (second half of the window)")
    ax.set_title(Path(report.path).name + (" (partial)" if report.partial else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if with_passkey:
        gx = axes[1]
        cols = [(L, d) for L in report.lengths for d in report.passkey_depths]
        grid = np.full((len(report.settings), len(cols)), np.nan)
        for i, s in enumerate(report.settings):
            for j, (L, d) in enumerate(cols):
                r = report.record(s, L)
                if r is not None and r.passkey_by_depth.get(d):
                    found, n = r.passkey_by_depth[d]
                    grid[i, j] = found / n if n else np.nan
        gx.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        gx.set_yticks(range(len(report.settings)), [s + mark for s in report.settings], fontsize=8)
        gx.set_xticks(range(len(cols)), [f"{L}\n{d:.0%}" for L, d in cols], fontsize=7)
        gx.set_xlabel("length / key depth")
        gx.set_title("passkey accuracy (green: found)")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not math.isnan(grid[i, j]):
                    gx.text(j, i, f"{grid[i, j]:.0%}", ha="center", va="center", fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, out)


def plot_wavelengths(data: dict, out) -> Path:
    """Per rotary pair: the wavelength (2 pi / inverse frequency, in tokens) under the file's method and under
    plain RoPE, PI and NTK-aware scaling by the same factor; the trained (and extended) context marked.
    ``data`` is :func:`ropetool.inspect.wavelengths`.  1000 x 600 pixels."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 6))
    pairs = np.arange(len(data["file"]))
    for label, style in (("plain", ":"), ("pi", "--"), ("ntk", "-."), ("file", "-")):
        if data.get(label) is not None:
            ax.plot(pairs, data[label], style, label=data["labels"][label], linewidth=2 if label == "file" else 1.2)
    if data.get("trained_context"):
        ax.axhline(data["trained_context"], color="grey", linestyle="--", label=f"trained context {data['trained_context']}")
    if data.get("context") and data.get("context") != data.get("trained_context"):
        ax.axhline(data["context"], color="black", linestyle=":", label=f"context_length {data['context']}")
    ax.set_yscale("log")
    ax.set_xlabel("rotary pair j")
    ax.set_ylabel("wavelength (tokens)")
    ax.set_title(data["title"])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, plt, out)


__all__ = ["plot_eval", "plot_wavelengths", "pyplot"]
