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
    """Perplexity against position per setting (a step per bin of positions, its block bootstrap 95% interval
    shaded, log scale, the trained context marked; the window scores as crosses at their length) and, when the
    passkey or lines were run, a grid of their accuracy per setting x length (x depth).  1500 x 600 pixels."""
    plt = pyplot()
    cols = []  # (label, setting -> (found, trials) or None)
    for L in report.lengths:
        for d in report.passkey_depths if report.passkey_trials else ():
            cols.append((f"{L}\npk {d:.0%}", L, ("passkey", d)))
        if report.lines_trials:
            cols.append((f"{L}\nlines", L, ("lines", None)))
    cols = [c for c in cols if any(_cell(report, s, c[1], c[2]) is not None for s in report.settings)]
    with_grid = bool(cols)
    fig, axes = plt.subplots(1, 2 if with_grid else 1, figsize=(15, 6),
                             gridspec_kw={"width_ratios": [3, 2]} if with_grid else None)
    ax = axes[0] if with_grid else axes
    mark = " [reference]" if report.engine == "reference" else ""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = set()
    for i, s in enumerate(report.settings):
        color = colors[i % len(colors)]
        p = report.profiles.get(s)
        if p is not None and p.bins:
            key = id(p.by_position)
            style = ":" if key in drawn else "-"  # a setting computed as another (the file's own pass reused)
            drawn.add(key)
            xs = [b.start for b in p.bins] + [p.bins[-1].end]
            ys = [b.perplexity for b in p.bins]
            ax.stairs(ys, xs, baseline=None, color=color, linestyle=style, linewidth=2, label=s + mark)
            ax.stairs([b.interval[1] for b in p.bins], xs, baseline=[b.interval[0] for b in p.bins], fill=True,
                      color=color, alpha=0.08)
        pts = [(r.length, r.perplexity) for r in report.records if r.setting == s and r.perplexity is not None]
        if pts:
            px, py = zip(*sorted(pts))
            ax.plot(px, py, linestyle="none", marker="x", markersize=8, color=color)
    ax.plot([], [], linestyle="none", marker="x", color="black", label="window score at L (second half)")
    if report.trained_context:
        ax.axvline(report.trained_context, color="grey", linestyle="--", label=f"trained context {report.trained_context}")
    ax.set_yscale("log")
    ax.set_xlabel("position (tokens)")
    ax.set_ylabel("perplexity (bins of position)")
    cache = f", KV cache {report.cache_type}" if report.engine == "llama.cpp" else ""
    ax.set_title(Path(report.path).name + cache + (" (partial)" if report.partial else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if with_grid:
        gx = axes[1]
        grid = np.full((len(report.settings), len(cols)), np.nan)
        for i, s in enumerate(report.settings):
            for j, (_, L, what) in enumerate(cols):
                c = _cell(report, s, L, what)
                if c is not None and c[1]:
                    grid[i, j] = c[0] / c[1]
        gx.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        gx.set_yticks(range(len(report.settings)), [s + mark for s in report.settings], fontsize=8)
        gx.set_xticks(range(len(cols)), [c[0] for c in cols], fontsize=7)
        gx.set_xlabel("length / test")
        gx.set_title("retrieval accuracy (green: found)")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not math.isnan(grid[i, j]):
                    gx.text(j, i, f"{grid[i, j]:.0%}", ha="center", va="center", fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, out)


def _cell(report, setting, length, what):
    r = report.record(setting, length)
    if r is None:
        return None
    kind, depth = what
    if kind == "passkey":
        return tuple(r.passkey_by_depth[depth]) if r.passkey_by_depth.get(depth) else None
    return (r.lines_found, r.lines_trials) if r.lines_trials else None


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
