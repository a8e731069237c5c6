"""Figures: matplotlib (Agg, object API, no pyplot state), saved as SVG and PNG.

Each ``*_figure`` function takes rows of the report's one table (or the products' records)
and returns a :class:`matplotlib.figure.Figure`; :class:`FigureStore` writes it as
``figures/<name>.svg`` and ``.png`` and returns the HTML that embeds the SVG (a data URI:
the page stays one file). Output is deterministic: a fixed ``svg.hashsalt``, no date in the
metadata, text drawn as paths, so a rerun writes identical bytes.

Colours are Okabe and Ito's colour-blind-safe set, with a marker per model as a second cue;
the heat maps use cividis (readable with any colour-vision deficiency and in greyscale).
"""

from __future__ import annotations

import html
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before anything else of matplotlib is imported: no display needed

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .. import cas  # noqa: E402
from .collect import ci_bounds, label, tie_bounds, wide_tie  # noqa: E402

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
HEATMAP = "cividis"
KS = (1, 5, 10)
STYLE = {
    "svg.hashsalt": "rsm-eval",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e5e5",
    "axes.axisbelow": True,
    "figure.dpi": 100,
    "savefig.dpi": 150,
}


def wrap(title: str, width: int = 90) -> str:
    return "\n".join(textwrap.wrap(title, width))


def style(i: int) -> dict[str, Any]:
    return {"color": OKABE_ITO[i % len(OKABE_ITO)], "marker": MARKERS[i % len(MARKERS)]}


class FigureStore:
    """Saves figures under ``out_dir`` and remembers their names (the report's figure list)."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.names: list[str] = []

    def save(self, name: str, fig: Figure, caption: str) -> tuple[str, str]:
        """Write ``name``.svg and .png; return (Markdown, HTML) that show the figure."""
        if name in self.names:
            raise ValueError(f"figure {name} saved twice")
        svg = io.BytesIO()
        with matplotlib.rc_context(STYLE):
            fig.savefig(svg, format="svg", metadata={"Date": None})
            png = io.BytesIO()
            fig.savefig(png, format="png", metadata={"Software": None})
        for ext, data in (("svg", svg.getvalue()), ("png", png.getvalue())):
            with cas.atomic_path(self.out_dir / f"{name}.{ext}") as tmp:
                tmp.write_bytes(data)
        self.names.append(name)
        text = svg.getvalue().decode("utf-8")
        inline = text[text.index("<svg") :]  # the element without the XML prolog and DOCTYPE
        esc = html.escape(caption)
        md = f"![{caption}](figures/{name}.svg)\n\n*{caption}* ([PNG](figures/{name}.png))"
        page = (
            f'<figure class="fig" id="fig-{html.escape(name)}" role="img" aria-label="{esc}">'
            f"{inline}<figcaption>{esc} <small>(figures/{html.escape(name)}.svg, .png)"
            "</small></figcaption></figure>"
        )
        return md, page


def _new(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def recall_at_k_figure(rows: Sequence[dict[str, Any]], title: str) -> Figure:
    """R@1/5/10 per direction, one line per model, its bootstrap interval as a band and
    its tie interval (where wider than 0.01) as a bar."""
    with matplotlib.rc_context(STYLE):
        fig, axes = _new(8.0, 3.4, 2)
        for ax, (direction, name) in zip(
            axes, (("i2t", "image → text"), ("t2i", "text → image")), strict=True
        ):
            for i, row in enumerate(rows):
                ms = [f"{direction}_r{k}" for k in KS]
                y = [row[m] for m in ms]
                st = style(i)
                ax.plot(KS, y, label=label(row), **st, markersize=5, linewidth=1.5)
                bands = [ci_bounds(row, m) for m in ms]
                if all(bands):
                    ax.fill_between(
                        KS, [b[0] for b in bands], [b[1] for b in bands], color=st["color"],
                        alpha=0.18, linewidth=0,
                    )  # fmt: skip
                for k, m in zip(KS, ms, strict=True):
                    if wide_tie(row, m):
                        low, high = tie_bounds(row, m)
                        ax.vlines(k, low, high, color=st["color"], linewidth=4, alpha=0.6)
            ax.set_xscale("log")
            ax.set_xticks(KS, [f"R@{k}" for k in KS])
            ax.minorticks_off()
            ax.set_ylim(0, 100)
            ax.set_xlabel("k")
            ax.set_ylabel(f"{name} recall@k (%)")
            ax.set_title(name)
        axes[1].legend(loc="lower right", fontsize=8)
        fig.suptitle(wrap(title, 110), fontsize=9)
    return fig


def heatmap_figure(
    values: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], title: str,
    cbar: str, fmt: str = "{:.2f}", vmax: float | None = 100.0, annotate: bool = True,
    xlabel: str = "", ylabel: str = "",
) -> Figure:  # fmt: skip
    """A matrix of values (NaN = not evaluated) with each cell's value written in it."""
    n_rows, n_cols = values.shape
    with matplotlib.rc_context({**STYLE, "axes.grid": False}):
        fig, (ax,) = _new(max(4.0, 1.1 * n_cols + 3.0), max(2.4, 0.45 * n_rows + 1.6))
        ax.grid(False)
        masked = np.ma.masked_invalid(values)
        im = ax.imshow(masked, cmap=HEATMAP, vmin=0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(n_cols), col_labels, rotation=30 if n_cols > 4 else 0, ha="right"
                      if n_cols > 4 else "center")  # fmt: skip
        ax.set_yticks(range(n_rows), row_labels)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if annotate:
            top = np.nanmax(values) if vmax is None and np.isfinite(values).any() else vmax
            for i in range(n_rows):
                for j in range(n_cols):
                    v = values[i, j]
                    if np.isfinite(v):
                        dark = top is not None and v > 0.6 * top
                        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                                color="#000" if dark else "#fff")  # fmt: skip
        fig.colorbar(im, ax=ax, label=cbar, shrink=0.9)
        ax.set_title(wrap(title, 80), fontsize=9)
    return fig


def published_figure(compared: Sequence[dict[str, Any]], tolerance: float, title: str) -> Figure:
    """Published (x) against reproduced (y), one point per row and metric; the bootstrap
    interval as a thin bar, the tie interval as a thick one; y = x and the tolerance band."""
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = _new(5.6, 5.0)
        names = sorted({c["model"] for c in compared})
        seen: set[str] = set()
        for c in compared:
            i = names.index(c["model"])
            st = style(i)
            for m, ours in c["ours"].items():
                pub = c["published"][m]
                ci = c["ci"].get(m)
                yerr = None if ci is None else [[ours - ci[0]], [ci[1] - ours]]
                lab = c["model"] if c["model"] not in seen else None
                seen.add(c["model"])
                ax.errorbar(pub, ours, yerr=yerr, fmt=st["marker"], color=st["color"],
                            markersize=5, elinewidth=1, capsize=2, label=lab)  # fmt: skip
                low, high = c["tie_interval"].get(m, (ours, ours))
                if round(high - low, 2) > 0.01:
                    ax.vlines(pub, low, high, color=st["color"], linewidth=4, alpha=0.5)
                if m in c["flagged"]:
                    ax.annotate(m, (pub, ours), textcoords="offset points", xytext=(4, 4),
                                fontsize=7)  # fmt: skip
        lim = max([0.0] + [max(c["ours"][m], c["published"][m]) for c in compared
                           for m in c["ours"]]) * 1.08 + 1  # fmt: skip
        grid = np.array([0, lim])
        ax.plot(grid, grid, color="#555", linewidth=1, label="reproduced = published")
        ax.fill_between(grid, grid - tolerance, grid + tolerance, color="#999", alpha=0.2,
                        linewidth=0, label=f"± {tolerance:g} points")  # fmt: skip
        ax.set_xlim(0, lim)
        ax.set_ylim(0, lim)
        ax.set_aspect("equal")
        ax.set_xlabel("published (%)")
        ax.set_ylabel("reproduced (%), 95% bootstrap interval")
        ax.legend(loc="upper left", fontsize=7)
        ax.set_title(wrap(title, 80), fontsize=9)
    return fig


def forest_figure(paired: Sequence[dict[str, Any]], title: str) -> Figure:
    """Paired-bootstrap differences A - B with their intervals; filled when the interval
    excludes 0 (larger than the noise), open otherwise."""
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = _new(6.5, max(2.2, 0.42 * len(paired) + 1.3))
        for y, p in enumerate(reversed(paired)):
            low, high = p["ci"]
            clear = low > 0 or high < 0
            color = OKABE_ITO[0] if clear else OKABE_ITO[3]
            ax.errorbar(p["diff"], y, xerr=[[p["diff"] - low], [high - p["diff"]]], fmt="o",
                        color=color, mfc=color if clear else "white", capsize=3,
                        markersize=6)  # fmt: skip
        labels = [f"{p['a']} − {p['b']}  ({p['dataset']})" for p in reversed(paired)]
        ax.set_yticks(range(len(paired)), labels)
        ax.axvline(0, color="#555", linewidth=1)
        metric = paired[0]["metric"] if paired else "mean_recall"
        ax.set_xlabel(f"difference in {metric} (points), 95% paired-bootstrap interval")
        ax.set_title(wrap(title, 80), fontsize=9)
        ax.grid(axis="y", visible=False)
    return fig


def grouped_bars_figure(
    groups: Sequence[str], series: Sequence[tuple[str, Sequence[float], Sequence[Any]]],
    title: str, ylabel: str, horizontal: bool = False,
) -> Figure:  # fmt: skip
    """Bars per group (metric or class), one colour per series; ``series`` is
    (name, values, intervals) with an interval (low, high) or None per value."""
    n, k = len(groups), max(1, len(series))
    width = 0.8 / k
    long = max(3.5, (0.14 * n * k + 1.5) if horizontal else 0.35 * n * k + 2.0)
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = _new(6.5, long) if horizontal else _new(long + 1.5, 3.6)
        pos = np.arange(n)
        for i, (name, values, intervals) in enumerate(series):
            at = pos + (i - (k - 1) / 2) * width
            err = None
            if any(iv is not None for iv in intervals):
                err = np.array([[v - iv[0], iv[1] - v] if iv else [0, 0]
                                for v, iv in zip(values, intervals, strict=True)]).T  # fmt: skip
            bar = ax.barh if horizontal else ax.bar
            kw = {"xerr" if horizontal else "yerr": err}
            bar(at, values, width * 0.95, label=name, color=OKABE_ITO[i % len(OKABE_ITO)],
                capsize=2, error_kw={"elinewidth": 1}, **kw)  # fmt: skip
        if horizontal:
            ax.set_yticks(pos, groups)
            ax.invert_yaxis()
            ax.set_xlim(0, 100)
            ax.set_xlabel(ylabel)
            ax.grid(axis="y", visible=False)
        else:
            ax.set_xticks(pos, groups, rotation=30 if n > 6 else 0, ha="right" if n > 6 else
                          "center")  # fmt: skip
            ax.set_ylim(0, 100)
            ax.set_ylabel(ylabel)
            ax.grid(axis="x", visible=False)
        ax.legend(fontsize=8, loc="best")
        ax.set_title(wrap(title, 80), fontsize=9)
    return fig
