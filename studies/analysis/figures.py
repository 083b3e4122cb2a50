"""Figures for the significance report: the GENEA-style significance matrix, violins with boxes, stacked
Likert bars, per-item means, Bradley–Terry scores and the power curve.

Every public figure function takes the data the other analysis modules produce and an output path stem,
writes `<stem>.png` and `<stem>.svg` and returns `[png_path, svg_path]` (strings). A `build_*` twin of each
returns the `matplotlib.figure.Figure` without saving it (for tests and for callers that want to adjust
it); `save_figure(fig, stem)` writes any of them.

Conditions. `order` names the conditions to show (None: every condition in the data). They are drawn by
mean descending (best on top / at the left), ties and conditions without a mean keeping the order given;
`sort_by_mean=False` draws them exactly as given.

Same bytes every time, from any thread:
- No pyplot. A figure is a `matplotlib.figure.Figure` drawn by `FigureCanvasAgg`, so this module never calls
  `matplotlib.use` (no clash with a backend pyplot already chose) and leaves nothing in pyplot's registry.
- The style is set per figure with `matplotlib.style.context(["default", STYLE])` (an `rc_context` that first
  resets to matplotlib's defaults), so a matplotlibrc or another module's rcParams changes never leak in.
  rcParams are global to the process, so building and saving hold one module lock: threads take turns
  (code elsewhere that changes rcParams while a figure is being drawn is beyond any lock here).
- DejaVu Sans (shipped with matplotlib) everywhere; `svg.hashsalt` is fixed; SVG metadata carries no date
  and PNG metadata no software version. SVG text stays text (`svg.fonttype = "none"`): a researcher can
  edit labels for a paper, search them, and the file is small and fast to write; a viewer without DejaVu
  Sans substitutes a similar sans-serif. The PNG is pixel-identical everywhere.
- The layout is computed once, not by a layout engine at every save: each plot area has a fixed size in
  inches (cells, bands, bars per condition) and the figure grows around it by the measured size of its tick
  labels, title and legend, so long condition names are never cut or squeezed.
- Files are written under a temporary name and renamed, so a retried task never leaves half a file.

Colour is colour-blind safe: conditions use the Okabe & Ito (2008) palette, each also with its own marker
shape; the significance matrix uses bluish green / vermillion / light grey (different in lightness as well
as hue, so they stay apart under deuteranopia and in greyscale); Likert answers use ColorBrewer's BrBG
diverging scheme (Harrower & Brewer 2003, marked colour-blind safe) with a neutral grey middle.

Empty input: a figure with no condition to show is still written, with a centred "No data: <why>" message
(never an exception), so a report always has its files. Input of the wrong shape (a missing column or
key, a non-numeric value, Likert answers outside 1..points) raises `AnalysisError` saying what to fix.

Speed: nothing loops over ratings. Violin densities are Gaussian KDEs (Scott's bandwidth, as matplotlib's
`violinplot`) over all ratings, computed exactly on a 200-point grid after binning the ratings to that
grid (error at most half a grid step, far below the bandwidth), so 100,000 ratings cost a few milliseconds.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import textwrap
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps, cycler
from matplotlib import style as mpl_style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PatchCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import PercentFormatter

from .errors import AnalysisError

# Okabe & Ito (2008), "Color Universal Design"; yellow last because it is weak on white.
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]

SIG_BETTER = "#009E73"  # row significantly preferred over column
SIG_WORSE = "#D55E00"  # column significantly preferred over row
SIG_NS = "#DDDDDD"  # no significant difference after correction
SIG_UNTESTED = "#FFFFFF"  # no p-value (too few data); the cell says "n/a"
VIOLIN_FACE = "#56B4E9"
BOX_FACE = "#333333"

DPI = 200
COLUMN_WIDTH_IN = 3.5  # one column of a two-column paper
LABEL_WRAP = 18  # characters per line of a condition name
_TICK_PT = 7.5
_CHAR_IN = _TICK_PT * 0.6 / 72  # average DejaVu Sans character width at the tick size, in inches
_KDE_GRID = 200

STYLE = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],  # DejaVu ships with matplotlib: always used;
    # the others are only what an SVG viewer without DejaVu Sans falls back to
    "font.size": 8.0,
    "axes.titlesize": 9.0,
    "axes.labelsize": 8.0,
    "xtick.labelsize": _TICK_PT,
    "ytick.labelsize": _TICK_PT,
    "legend.fontsize": _TICK_PT,
    "legend.title_fontsize": 8.0,
    "legend.frameon": False,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "axes.facecolor": "white",
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 3.0,
    "ytick.major.size": 3.0,
    "grid.linewidth": 0.5,
    "grid.color": "#D9D9D9",
    "lines.linewidth": 1.2,
    "figure.dpi": DPI,
    "figure.facecolor": "white",
    "savefig.dpi": DPI,
    "savefig.facecolor": "white",
    "savefig.transparent": False,
    "svg.fonttype": "none",
    "svg.hashsalt": "studies.analysis.figures",
    "svg.id": None,
    "svg.image_inline": True,
    "path.simplify": True,
}

_LOCK = threading.RLock()


@contextlib.contextmanager
def _styled():
    """The fixed style, reset from matplotlib's defaults, for as long as one figure is built or saved."""
    with _LOCK, mpl_style.context(["default", STYLE]):
        yield


# --------------------------------------------------------------------------------------------- helpers


def wrap_label(text, width: int = LABEL_WRAP) -> str:
    """A condition name broken onto lines of about `width` characters at spaces, '_', '-' or '/'.

    Separators other than spaces stay at the end of their line, so the name can still be read exactly; a
    single word longer than `width` is never cut."""
    text = str(text)
    if len(text) <= width:
        return text
    pieces = re.findall(r"[^ _\-/]+[ _\-/]*|[ _\-/]+", text)
    lines: list[str] = []
    line = ""
    for piece in pieces:
        if line and len(line) + len(piece.rstrip(" ")) > width:
            lines.append(line.rstrip(" "))
            line = piece
        else:
            line += piece
    lines.append(line.rstrip(" "))
    return "\n".join(lines)


def _label_size(labels: Sequence[str]) -> tuple[float, float]:
    """Rough (width, height) in inches of the largest tick label, to size the figure before layout."""
    if not labels:
        return 0.0, 0.0
    longest = max(len(line) for label in labels for line in label.split("\n"))
    lines = max(label.count("\n") + 1 for label in labels)
    return longest * _CHAR_IN, lines * _TICK_PT * 1.25 / 72


def _title(ax, title) -> None:
    if title:
        ax.set_title(textwrap.fill(str(title), 70))


def _new_figure() -> tuple[Figure, object]:
    """A figure with one axes; `_fit` gives both their final size."""
    fig = Figure(figsize=(COLUMN_WIDTH_IN, 3.0), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_axes((0.2, 0.2, 0.6, 0.6))


_PAD_IN = 0.06  # white border around everything
_GAP_IN = 0.08  # between the plot's decorations and the legend under it


def _fit(fig: Figure, ax, plot_w: float, plot_h: float, *, legend=None, stretch: bool = True) -> None:
    """Give the axes a plot area of plot_w × plot_h inches and the figure the size that holds it with its
    tick labels, axis labels, title and a legend centred below. Margins are measured from the text as drawn
    (one text layout, no layout engine at save time). `stretch`: widen the plot to fill a column width."""
    dpi = fig.dpi
    canvas_w, canvas_h = plot_w + 8.0, plot_h + 8.0
    fig.set_size_inches(canvas_w, canvas_h)
    ax.set_position((4.0 / canvas_w, 4.0 / canvas_h, plot_w / canvas_w, plot_h / canvas_h))
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    tight = ax.get_tightbbox(renderer)
    left, right = (box.x0 - tight.x0) / dpi, (tight.x1 - box.x1) / dpi
    bottom, top = (box.y0 - tight.y0) / dpi, (tight.y1 - box.y1) / dpi
    legend_w = legend_h = 0.0
    if legend is not None:
        extent = legend.get_window_extent(renderer)
        legend_w, legend_h = extent.width / dpi, extent.height / dpi
    if stretch:
        plot_w = max(plot_w, COLUMN_WIDTH_IN - 2 * _PAD_IN - left - right)
    content_w = left + plot_w + right
    width = max(content_w + 2 * _PAD_IN, legend_w + 2 * _PAD_IN)
    legend_block = legend_h + _GAP_IN if legend is not None else 0.0
    height = _PAD_IN + legend_block + bottom + plot_h + top + _PAD_IN
    width, height = math.ceil(width * dpi) / dpi, math.ceil(height * dpi) / dpi  # whole pixels
    x0 = (width - content_w) / 2 + left
    y0 = _PAD_IN + legend_block + bottom
    fig.set_size_inches(width, height)
    ax.set_position((x0 / width, y0 / height, plot_w / width, plot_h / height))
    if legend is not None:
        legend.set_bbox_to_anchor((0.5, _PAD_IN / height), transform=fig.transFigure)


def _legend_below(fig: Figure, handles=None, **kwargs):
    if handles is not None:
        kwargs["handles"] = handles
    return fig.legend(loc="lower center", bbox_to_anchor=(0.5, 0.0), **kwargs)


def _no_data_figure(title, reason: str) -> Figure:
    fig, ax = _new_figure()
    fig.set_size_inches(COLUMN_WIDTH_IN, 1.4)
    ax.set_position((0.05, 0.05, 0.9, 0.7))
    ax.set_axis_off()
    _title(ax, title)
    ax.text(0.5, 0.5, textwrap.fill(f"No data: {reason}", 55), ha="center", va="center", transform=ax.transAxes)
    return fig


def _as_float(value) -> float | None:
    """A finite float, or None for None/NaN/inf/anything not a number."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _order_by_mean(conditions, means: Mapping[str, float], sort_by_mean: bool) -> list[str]:
    conditions = list(dict.fromkeys(str(c) for c in conditions))
    if not sort_by_mean:
        return conditions

    def key(indexed):
        position, name = indexed
        mean = means.get(name)
        return (mean is None, -mean if mean is not None else 0.0, position)

    return [name for _, name in sorted(enumerate(conditions), key=key)]


def _frame(df, columns: Sequence[str], figure: str, what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise AnalysisError(f"{figure} needs {what} as a pandas DataFrame; got {type(df).__name__}.")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise AnalysisError(
            f"{figure} needs {what} with the columns {', '.join(columns)}; missing: {', '.join(missing)}."
        )
    return df


def _numeric(series: pd.Series, column: str, figure: str) -> np.ndarray:
    """Column as floats; NaN stays NaN (not drawn) but text that is not a number is an error."""
    numbers = pd.to_numeric(series, errors="coerce")
    bad = numbers.isna() & series.notna()
    if bad.any():
        examples = ", ".join(repr(v) for v in pd.unique(series[bad])[:3])
        raise AnalysisError(f"{figure}: column '{column}' must hold numbers; found {examples}.")
    return numbers.to_numpy(dtype=float, na_value=np.nan)


def _groups(conditions: np.ndarray, values: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Ratings split by condition (one sort, no loop over rows) and each condition's mean."""
    keep = np.isfinite(values)
    conditions, values = conditions[keep], values[keep]
    codes, names = pd.factorize(conditions)
    by_code = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(names))
    parts = np.split(values[by_code], np.cumsum(counts)[:-1]) if len(names) else []
    groups = {str(name): part for name, part in zip(names, parts)}
    means = {name: float(part.mean()) for name, part in groups.items() if part.size}
    return groups, means


def _x_tick_labels(names: Sequence[str], slot_in: float) -> tuple[list[str], float, str]:
    """Labels under slots `slot_in` inches apart: wrapped and level when they fit, else on one line at 45°
    (one line, so neighbours cannot touch: the slot × sin 45° exceeds a line's height)."""
    wrapped = [wrap_label(name) for name in names]
    if _label_size(wrapped)[0] <= slot_in * 0.95:
        return wrapped, 0.0, "center"
    return [str(name) for name in names], 45.0, "right"


# --------------------------------------------------------------------------------------------- saving


def save_figure(fig: Figure, stem) -> list[str]:
    """Write `<stem>.png` and `<stem>.svg` (temporary name, then rename); returns both paths."""
    stem = Path(stem)
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AnalysisError(f"Cannot create the folder {stem.parent} for the figures ({exc}).") from exc
    paths = []
    with _styled():
        # PNG: zlib level 1 writes ~12 % faster than the default 6 for ~5 % more bytes.
        for fmt, options in (("png", {"metadata": {"Software": None}, "pil_kwargs": {"compress_level": 1}}),
                             ("svg", {"metadata": {"Date": None}})):
            final = stem.parent / f"{stem.name}.{fmt}"
            temporary = stem.parent / f".{stem.name}.{fmt}.{os.getpid()}-{threading.get_ident()}.tmp"
            try:
                fig.savefig(temporary, format=fmt, dpi=DPI, **options)
                os.replace(temporary, final)
            except OSError as exc:
                temporary.unlink(missing_ok=True)
                raise AnalysisError(f"Cannot write the figure {final} ({exc}).") from exc
            paths.append(str(final))
    return paths


# --------------------------------------------------------------------------------- significance matrix


def _pairwise_records(pairwise_rows) -> list[Mapping]:
    if isinstance(pairwise_rows, pd.DataFrame):
        pairwise_rows = pairwise_rows.to_dict("records")
    if pairwise_rows is None:
        return []
    if isinstance(pairwise_rows, (str, bytes, Mapping)) or not hasattr(pairwise_rows, "__iter__"):
        raise AnalysisError(
            "significance_matrix needs the list of pairwise results (one dict per pair, as returned by "
            f"inferential.pairwise); got {type(pairwise_rows).__name__}."
        )
    rows = list(pairwise_rows)
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise AnalysisError(f"significance_matrix: pairwise result {number} is not a dict.")
        missing = [key for key in ("a", "b") if key not in row]
        if missing:
            raise AnalysisError(
                f"significance_matrix: pairwise result {number} has no {' or '.join(map(repr, missing))} "
                "(the two condition names); pass the rows returned by inferential.pairwise."
            )
    return rows


def significance_order(pairwise_rows, conditions_order=None, *, sort_by_mean: bool = True) -> list[str]:
    """Conditions as the significance matrix draws them: by mean descending (means from the rows'
    `mean_a`/`mean_b`), ties and conditions without a mean in `conditions_order`'s order."""
    rows = _pairwise_records(pairwise_rows)
    if conditions_order is None:
        conditions_order = sorted({str(r["a"]) for r in rows} | {str(r["b"]) for r in rows})
    means: dict[str, float] = {}
    for row in rows:
        for side in ("a", "b"):
            mean = _as_float(row.get(f"mean_{side}"))
            if mean is not None:
                means.setdefault(str(row[side]), mean)
    return _order_by_mean(conditions_order, means, sort_by_mean)


def _cell_states(rows: Sequence[Mapping], order: Sequence[str]) -> np.ndarray:
    """'better' / 'worse' / 'ns' / 'untested' for (row, column); '' on the diagonal."""
    index = {name: i for i, name in enumerate(order)}
    n = len(order)
    states = np.full((n, n), "untested", dtype=object)
    np.fill_diagonal(states, "")
    for row in rows:
        a, b = str(row["a"]), str(row["b"])
        if a not in index or b not in index or a == b:
            continue  # a condition the caller chose not to show
        i, j = index[a], index[b]
        if "p_adj" in row and _as_float(row.get("p_adj")) is None and not row.get("significant"):
            continue  # no test was possible: stays "untested"
        winner = str(row.get("direction") or "")
        if row.get("significant") and winner not in ("a", "b"):
            mean_a, mean_b = _as_float(row.get("mean_a")), _as_float(row.get("mean_b"))
            if mean_a is not None and mean_b is not None and mean_a != mean_b:
                winner = "a" if mean_a > mean_b else "b"
        if row.get("significant") and winner == "a":
            states[i, j], states[j, i] = "better", "worse"
        elif row.get("significant") and winner == "b":
            states[i, j], states[j, i] = "worse", "better"
        else:
            states[i, j] = states[j, i] = "ns"
    return states


_STATE_COLOURS = {"better": SIG_BETTER, "worse": SIG_WORSE, "ns": SIG_NS, "untested": SIG_UNTESTED}
_STATE_LEGEND = {
    "better": "Row significantly preferred over column",
    "worse": "Column significantly preferred over row",
    "ns": "No significant difference",
    "untested": "Not tested (no p-value)",
}


def build_significance_matrix(pairwise_rows, conditions_order=None, title="", *,
                              sort_by_mean: bool = True) -> Figure:
    """The significance matrix as a Figure, not saved (see `significance_matrix`)."""
    rows = _pairwise_records(pairwise_rows)
    order = significance_order(rows, conditions_order, sort_by_mean=sort_by_mean)
    with _styled():
        if not order:
            return _no_data_figure(title, "there are no conditions to compare.")
        n = len(order)
        states = _cell_states(rows, order)
        cell = 0.34 if n <= 6 else 0.3  # inches; cells are square
        x_labels, rotation, align = _x_tick_labels(order, cell)
        fig, ax = _new_figure()
        cells, colours, edges, widths = [], [], [], []
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue  # the diagonal stays blank
                untested = states[i, j] == "untested"
                cells.append(Rectangle((j - 0.5, i - 0.5), 1.0, 1.0))
                colours.append(_STATE_COLOURS[states[i, j]])
                edges.append("#BBBBBB" if untested else "white")  # a white cell still shows its outline
                widths.append(0.6 if untested else 1.5)
                if untested:
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=6, color="#666666")
        ax.add_collection(PatchCollection(cells, facecolors=colours, edgecolors=edges, linewidths=widths))
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_ylim(n - 0.5, -0.5)  # first (best) condition on top
        ax.set_xticks(range(n), x_labels, rotation=rotation, ha=align, rotation_mode="anchor")
        ax.set_yticks(range(n), [wrap_label(name) for name in order])
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        _title(ax, title)
        shown = [s for s in ("better", "worse", "ns", "untested") if s != "untested" or (states == s).any()]
        handles = [
            Patch(facecolor=_STATE_COLOURS[s], edgecolor="#999999", linewidth=0.5, label=_STATE_LEGEND[s])
            for s in shown
        ]
        legend = _legend_below(fig, handles, ncols=1)
        _fit(fig, ax, n * cell, n * cell, legend=legend, stretch=False)
        return fig


def significance_cell_centres(fig: Figure, order: Sequence[str]) -> dict[tuple[str, str], tuple[float, float]]:
    """Pixel centre (x from the left, y from the top) of each (row, column) cell in the PNG that
    `save_figure` writes for a figure from `build_significance_matrix`; `order` from `significance_order`."""
    with _styled():
        fig.canvas.draw()
        ax = fig.axes[0]
        height = fig.bbox.height
        centres = {}
        for i, row in enumerate(order):
            for j, column in enumerate(order):
                x, y = ax.transData.transform((j, i))
                centres[(str(row), str(column))] = (float(x), float(height - y))
        return centres


def significance_matrix(pairwise_rows, conditions_order, stem, title, *, sort_by_mean: bool = True) -> list[str]:
    """The pairwise-significance matrix of the GENEA challenges (Kucherenko et al. 2021, "A large,
    crowdsourced evaluation of gesture generation systems on common data", IUI; Yoon et al. 2022, "The GENEA
    Challenge 2022", ICMI): rows and columns are the conditions by mean descending; cell (row, column) is
    green when the row condition is significantly preferred over (rated higher than) the column one, red
    when the column one is preferred, light grey when the difference is not significant after correction,
    white with "n/a" when the pair has no p-value; the diagonal is blank. `pairwise_rows` are the rows of
    `inferential.pairwise` (`a`, `b`, `p_adj`, `significant`, `direction`, `mean_a`, `mean_b`); rows naming
    a condition not in `conditions_order` are left out, as that condition is."""
    with _styled():
        fig = build_significance_matrix(pairwise_rows, conditions_order, title, sort_by_mean=sort_by_mean)
        return save_figure(fig, stem)


# -------------------------------------------------------------------------------------- violin + box


def _kde(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Grid and density scaled to a maximum of 1 (None when all values are equal)."""
    low, high = float(values.min()), float(values.max())
    sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
    if high == low or sd == 0.0:
        return np.array([low, high]), None
    bandwidth = sd * values.size ** (-1.0 / 5.0)  # Scott (1992), as scipy/matplotlib use by default
    grid = np.linspace(low, high, _KDE_GRID)
    bins = np.rint((values - low) / (high - low) * (_KDE_GRID - 1)).astype(np.intp)
    counts = np.bincount(bins, minlength=_KDE_GRID).astype(float)
    distance = (grid[:, None] - grid[None, :]) / bandwidth
    density = np.exp(-0.5 * distance * distance) @ counts
    return grid, density / density.max()


def _draw_violins(ax, violins: Sequence[tuple[np.ndarray, float, float, str]]) -> None:
    """Draw (values, x position, half width, colour) violins with their boxes and means as five artists in
    all (bodies, whiskers, boxes, medians, means), not five per violin: artists, not ratings, cost time."""
    bodies, body_colours, flats, flat_colours = [], [], [], []
    whiskers, boxes, medians, mean_x, mean_y = [], [], [], [], []
    for values, x, half, colour in violins:
        grid, density = _kde(values)
        if density is None:  # every rating the same: a line at that value
            flats.append([(x - half, grid[0]), (x + half, grid[0])])
            flat_colours.append(colour)
        else:
            outline = np.concatenate([np.column_stack([x - half * density, grid]),
                                      np.column_stack([x + half * density, grid])[::-1]])
            bodies.append(outline)
            body_colours.append(colour)
        q1, median, q3 = np.percentile(values, [25.0, 50.0, 75.0])
        reach = 1.5 * (q3 - q1)
        whiskers.append([(x, values[values >= q1 - reach].min()), (x, values[values <= q3 + reach].max())])
        box = max(0.05, half * 0.22)
        boxes.append([(x - box / 2, q1), (x + box / 2, q1), (x + box / 2, q3), (x - box / 2, q3)])
        medians.append([(x - box / 2, median), (x + box / 2, median)])
        mean_x.append(x)
        mean_y.append(float(values.mean()))
    if bodies:
        ax.add_collection(PolyCollection(bodies, facecolors=body_colours, edgecolors="#4D4D4D",
                                         linewidths=0.5, alpha=0.85, zorder=2))
    if flats:
        ax.add_collection(LineCollection(flats, colors=flat_colours, linewidths=2.0, zorder=2))
    ax.add_collection(LineCollection(whiskers, colors=BOX_FACE, linewidths=0.8, zorder=3))
    ax.add_collection(PolyCollection(boxes, facecolors=BOX_FACE, edgecolors=BOX_FACE, linewidths=0.6, zorder=4))
    ax.add_collection(LineCollection(medians, colors="white", linewidths=1.0, zorder=5))
    ax.plot(mean_x, mean_y, linestyle="none", marker="D", markersize=3.5, markerfacecolor="white",
            markeredgecolor="black", markeredgewidth=0.7, zorder=6)
    ax.autoscale_view()


def build_box_violin(df, order=None, title="", ylabel="Rating", *, sort_by_mean: bool = True) -> Figure:
    """Violin (KDE of all ratings) per condition, with a box inside (quartiles, white median line,
    whiskers to the furthest rating within 1.5 IQR; outliers are not drawn, the violin shows the tails) and
    the mean as a white diamond. With two or more `embodiment` values the violins of one condition stand side
    by side, one colour per embodiment."""
    frame = _frame(df, ("condition", "value"), "box_violin", "the tidy frame")
    values = _numeric(frame["value"], "value", "box_violin")
    conditions = frame["condition"].astype(str).to_numpy()
    groups, means = _groups(conditions, values)
    names = _order_by_mean(groups if order is None else order, means, sort_by_mean)
    embodiments: list[str] = []
    if "embodiment" in frame.columns:
        embodiments = sorted({str(e) for e in pd.unique(frame["embodiment"].dropna()) if str(e)})
    split = len(embodiments) >= 2
    with _styled():
        if not names or not any(groups.get(name, np.empty(0)).size for name in names):
            return _no_data_figure(title, "no ratings to draw.")
        slot = 0.5 * (1.0 + 0.45 * (len(embodiments) - 1)) if split else 0.5
        labels, rotation, align = _x_tick_labels(names, slot)
        fig, ax = _new_figure()
        violins = []
        if split:
            finite = np.isfinite(values)
            split_groups = {
                (str(c), str(e)): part.to_numpy(dtype=float)
                for (c, e), part in pd.Series(values[finite]).groupby(
                    [conditions[finite], frame["embodiment"].astype(str).to_numpy()[finite]], sort=False)
            }
            step = 0.8 / len(embodiments)
            for e, name_e in enumerate(embodiments):
                for c, name in enumerate(names):
                    part = split_groups.get((name, name_e))
                    if part is not None and part.size:
                        violins.append((part, c - 0.4 + step * (e + 0.5), step * 0.45,
                                        OKABE_ITO[e % len(OKABE_ITO)]))
        else:
            for c, name in enumerate(names):
                part = groups.get(name)
                if part is not None and part.size:
                    violins.append((part, float(c), 0.4, VIOLIN_FACE))
        _draw_violins(ax, violins)
        for c, name in enumerate(names):
            if groups.get(name) is None or not groups[name].size:
                ax.text(c, 0.5, "no ratings", transform=ax.get_xaxis_transform(), ha="center", va="center",
                        rotation=90, fontsize=7, color="#666666")
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_xticks(range(len(names)), labels, rotation=rotation, ha=align, rotation_mode="anchor")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y")
        ax.set_axisbelow(True)
        _title(ax, title)
        handles = [
            Line2D([], [], linestyle="none", marker="D", markersize=3.5, markerfacecolor="white",
                   markeredgecolor="black", label="Mean"),
            Patch(facecolor=BOX_FACE, label="Quartiles, median (white)"),
        ]
        if split:
            handles += [Patch(facecolor=OKABE_ITO[e % len(OKABE_ITO)], edgecolor="#4D4D4D", linewidth=0.5,
                              label=name_e) for e, name_e in enumerate(embodiments)]
        else:
            handles.append(Patch(facecolor=VIOLIN_FACE, edgecolor="#4D4D4D", linewidth=0.5,
                                 label="Distribution"))
        legend = _legend_below(fig, handles, ncols=2 if len(handles) == 4 else min(len(handles), 3))
        _fit(fig, ax, len(names) * slot, 2.2, legend=legend)
        return fig


def box_violin(df, order, stem, title, ylabel, *, sort_by_mean: bool = True) -> list[str]:
    """Ratings per condition: violin, box and mean (see `build_box_violin`)."""
    with _styled():
        return save_figure(build_box_violin(df, order, title, ylabel, sort_by_mean=sort_by_mean), stem)


# ------------------------------------------------------------------------------------ stacked Likert


def _likert_colours(points: int) -> list:
    colours = list(colormaps["BrBG"](np.linspace(0.08, 0.92, points)))
    if points % 2:
        colours[points // 2] = (0.80, 0.80, 0.80, 1.0)  # neutral answer: grey, visible on white
    return colours


def build_likert_stacked(df, order=None, points: int = 5, title="", *, sort_by_mean: bool = True) -> Figure:
    """One horizontal bar per condition, split into the share of each answer 1..points (low answers brown,
    high answers teal), conditions by mean descending from the top, each bar's mean written at its end."""
    frame = _frame(df, ("condition", "value"), "likert_stacked", "the tidy frame")
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 2:
        raise AnalysisError(f"likert_stacked: points must be a whole number of answers ≥ 2; got {points!r}.")
    points = int(points)
    values = _numeric(frame["value"], "value", "likert_stacked")
    finite = values[np.isfinite(values)]
    bad = finite[(finite != np.round(finite)) | (finite < 1) | (finite > points)]
    if bad.size:
        examples = ", ".join(f"{v:g}" for v in np.unique(bad)[:5])
        raise AnalysisError(
            f"likert_stacked: answers must be whole numbers from 1 to {points}; found {examples}. "
            "Check the number of points, or use box_violin for sliders."
        )
    conditions = frame["condition"].astype(str).to_numpy()
    groups, means = _groups(conditions, values)
    names = _order_by_mean(groups if order is None else order, means, sort_by_mean)
    with _styled():
        if not names or not any(groups.get(name, np.empty(0)).size for name in names):
            return _no_data_figure(title, "no answers to draw.")
        n = len(names)
        counts = np.zeros((n, points))
        for c, name in enumerate(names):
            part = groups.get(name)
            if part is not None and part.size:
                counts[c] = np.bincount(part.astype(np.intp) - 1, minlength=points)
        totals = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        labels = [wrap_label(name) for name in names]
        _, label_h = _label_size(labels)
        row = max(0.26, label_h + 0.06)
        fig, ax = _new_figure()
        colours = _likert_colours(points)
        y = np.arange(n)
        right = np.cumsum(shares, axis=1)
        left = right - shares
        half = 0.35
        corner_y = np.broadcast_to(y[:, None, None] + np.array([-half, -half, half, half]), left.shape + (4,))
        corners = np.stack([np.stack([left, right, right, left], axis=-1), corner_y], axis=-1)
        # corners: (condition, answer, corner, xy)
        present = shares > 0
        ax.add_collection(PolyCollection(corners[present], facecolors=np.array(colours)[np.nonzero(present)[1]],
                                         edgecolors="white", linewidths=0.5, zorder=2))
        for c, k in zip(*np.nonzero(shares >= 0.08)):  # the share written in segments wide enough for it
            r, g, b, _ = colours[k]
            ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text((left[c, k] + right[c, k]) / 2, c, f"{shares[c, k] * 100:.0f}", ha="center", va="center",
                    fontsize=6, color=ink, zorder=3)
        for c, name in enumerate(names):
            text = f"{means[name]:.2f}" if name in means else "no answers"
            ax.text(1.02, c, text, ha="left", va="center", fontsize=_TICK_PT)
        ax.text(1.02, -0.75, "mean", ha="left", va="bottom", fontsize=_TICK_PT, color="#444444")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(n - 0.5, -0.5)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("Share of answers")
        ax.set_yticks(y, labels)
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)
        _title(ax, title)
        handles = [Patch(facecolor=colours[k], label=str(k + 1)) for k in range(points)]
        legend = _legend_below(fig, handles, ncols=points, title="Answer (%)", handlelength=1.2,
                               columnspacing=1.0)
        _fit(fig, ax, 2.4, n * row, legend=legend)
        return fig


def likert_stacked(df, order, points, stem, title, *, sort_by_mean: bool = True) -> list[str]:
    """Share of each Likert answer per condition (see `build_likert_stacked`)."""
    with _styled():
        return save_figure(build_likert_stacked(df, order, points, title, sort_by_mean=sort_by_mean), stem)


# ----------------------------------------------------------------------------------------- per item


def _natural_key(text: str):
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def build_per_item(summary_df, title="", *, order=None, sort_by_mean: bool = True,
                   xlabel: str = "Mean rating (bootstrap CI)") -> Figure:
    """Mean ± bootstrap CI per item (one band per item, items in natural order from the top) with the
    conditions as differently coloured and shaped markers side by side in each band."""
    frame = _frame(summary_df, ("condition", "item", "mean", "ci_boot_low", "ci_boot_high"),
                   "per_item", "the summary table (descriptive.summarize by condition and item)")
    conditions = frame["condition"].astype(str).to_numpy()
    items = frame["item"].fillna("").astype(str).to_numpy()
    mean = _numeric(frame["mean"], "mean", "per_item")
    low = _numeric(frame["ci_boot_low"], "ci_boot_low", "per_item")
    high = _numeric(frame["ci_boot_high"], "ci_boot_high", "per_item")
    _, condition_means = _groups(conditions, mean)  # mean over items of the item means
    names = _order_by_mean(condition_means if order is None else order, condition_means, sort_by_mean)
    item_names = sorted(set(items), key=_natural_key)
    with _styled():
        if not names or not item_names or not np.isfinite(mean).any():
            return _no_data_figure(title, "no per-item means to draw.")
        n_items, n_conditions = len(item_names), len(names)
        item_labels = [wrap_label(i) if i else "(all)" for i in item_names]
        band = max(0.24, 0.05 * n_conditions)
        band = min(band, max(0.12, 8.0 / n_items))  # many items: keep the figure within a page
        fig, ax = _new_figure()
        item_index = {name: k for k, name in enumerate(item_names)}
        row_item = np.array([item_index[i] for i in items], dtype=float) if items.size else np.empty(0)
        for k in range(1, n_items, 2):
            ax.axhspan(k - 0.5, k + 0.5, color="#F2F2F2", zorder=0, linewidth=0)
        step = 0.8 / n_conditions
        position = {name: c for c, name in enumerate(names)}
        shown = np.array([name in position for name in conditions], dtype=bool)
        slot = np.array([position.get(name, 0) for name in conditions], dtype=float)
        y = row_item - 0.4 + step * (slot + 0.5)
        drawn = shown & np.isfinite(mean) & np.isfinite(low) & np.isfinite(high)
        segments = np.stack([np.column_stack([low, y]), np.column_stack([high, y])], axis=1)[drawn]
        colours = [OKABE_ITO[position[name] % len(OKABE_ITO)] for name in conditions[drawn]]
        ax.add_collection(LineCollection(segments, colors=colours, linewidths=0.8, zorder=2))
        for c, name in enumerate(names):  # one marker artist per condition (it is also the legend entry)
            rows = shown & (conditions == name)
            ax.plot(mean[rows], y[rows], linestyle="none", marker=MARKERS[c % len(MARKERS)], markersize=3.5,
                    color=OKABE_ITO[c % len(OKABE_ITO)], markeredgecolor="#333333", markeredgewidth=0.4,
                    label=name, zorder=3)
        ax.set_ylim(n_items - 0.5, -0.5)
        ax.set_yticks(range(n_items), item_labels)
        ax.tick_params(axis="y", length=0)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x")
        ax.set_axisbelow(True)
        _title(ax, title)
        legend = _legend_below(fig, ncols=min(n_conditions, 2), title="Condition")
        _fit(fig, ax, 2.4, n_items * band, legend=legend)
        return fig


def per_item(summary_df, stem, title, *, order=None, sort_by_mean: bool = True) -> list[str]:
    """Mean ± CI per item × condition (see `build_per_item`)."""
    with _styled():
        return save_figure(build_per_item(summary_df, title, order=order, sort_by_mean=sort_by_mean), stem)


# ------------------------------------------------------------------------------------- Bradley–Terry


def build_bradley_terry_plot(bt_df, title="Bradley–Terry scores") -> Figure:
    """Score (log strength, 0 = the average condition) ± bootstrap CI, best condition on top."""
    frame = _frame(bt_df, ("condition", "score", "ci_low", "ci_high"), "bradley_terry_plot",
                   "the Bradley–Terry table (preference.bradley_terry)")
    conditions = frame["condition"].astype(str).to_numpy()
    score = _numeric(frame["score"], "score", "bradley_terry_plot")
    low = _numeric(frame["ci_low"], "ci_low", "bradley_terry_plot")
    high = _numeric(frame["ci_high"], "ci_high", "bradley_terry_plot")
    _, means = _groups(conditions, score)
    names = _order_by_mean(conditions, means, True)
    with _styled():
        if not names:
            return _no_data_figure(title, "no conditions were compared.")
        n = len(names)
        labels = [wrap_label(name) for name in names]
        _, label_h = _label_size(labels)
        fig, ax = _new_figure()
        position = {name: k for k, name in enumerate(names)}
        y = np.array([position[c] for c in conditions], dtype=float)
        error = np.vstack([np.clip(np.nan_to_num(score - low), 0, None),
                           np.clip(np.nan_to_num(high - score), 0, None)])
        ax.axvline(0.0, color="#999999", linestyle=":", linewidth=0.8, zorder=1)
        ax.errorbar(score, y, xerr=error, linestyle="none", marker="o", markersize=4, color=OKABE_ITO[0],
                    elinewidth=1.0, capsize=2, zorder=3)
        for k in np.flatnonzero(~np.isfinite(score)):
            ax.text(0.0, y[k], "not estimable", ha="center", va="center", fontsize=6.5, color="#666666")
        ax.set_ylim(n - 0.5, -0.5)
        ax.set_yticks(range(n), labels)
        ax.tick_params(axis="y", length=0)
        ax.set_xlabel("Score (log strength; 0 = average condition)")
        ax.grid(axis="x")
        ax.set_axisbelow(True)
        _title(ax, title)
        _fit(fig, ax, 2.4, n * max(0.24, label_h + 0.06))
        return fig


def bradley_terry_plot(bt_df, stem, *, title="Bradley–Terry scores") -> list[str]:
    """Bradley–Terry scores with their CIs (see `build_bradley_terry_plot`)."""
    with _styled():
        return save_figure(build_bradley_terry_plot(bt_df, title), stem)


# -------------------------------------------------------------------------------------------- power


def build_power_curve(curve, title="Statistical power", *, target: float | None = None,
                      n_needed: int | None = None) -> Figure:
    """Simulated power against the number of participants, with the target as a dashed line and, when
    known, the smallest n that reaches it as a dotted line. `curve` is `simulate_power`'s list of
    {"n", "power"} or its whole result (then `target` and `n_needed` are read from it)."""
    if isinstance(curve, Mapping):
        target = curve.get("target") if target is None else target
        n_needed = curve.get("n_needed") if n_needed is None else n_needed
        curve = curve.get("curve")
    if curve is None:
        curve = []
    if isinstance(curve, (str, bytes)) or not hasattr(curve, "__iter__"):
        raise AnalysisError("power_curve needs a list of {'n': …, 'power': …} points (power.simulate_power).")
    points = []
    for number, point in enumerate(curve, start=1):
        if not isinstance(point, Mapping) or "n" not in point or "power" not in point:
            raise AnalysisError(f"power_curve: point {number} must be a dict with 'n' and 'power'.")
        n, power = _as_float(point["n"]), _as_float(point["power"])
        if n is None:
            raise AnalysisError(f"power_curve: point {number} has no number of participants ('n').")
        points.append((n, power if power is not None else math.nan))
    target = 0.8 if _as_float(target) is None else float(target)
    with _styled():
        if not points:
            return _no_data_figure(title, "no power was simulated.")
        points.sort()
        n_values = np.array([p[0] for p in points])
        power = np.array([p[1] for p in points])
        fig, ax = _new_figure()
        ax.axhline(target, color=OKABE_ITO[1], linestyle="--", linewidth=1.0, label=f"Target {target:.0%}")
        if _as_float(n_needed) is not None:
            ax.axvline(float(n_needed), color="#666666", linestyle=":", linewidth=1.0,
                       label=f"n needed = {int(n_needed)}")
        ax.plot(n_values, power, marker="o", markersize=3.5, color=OKABE_ITO[0], label="Simulated power")
        ax.set_ylim(0.0, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("Participants")
        ax.set_ylabel("Power")
        ax.grid(True)
        ax.set_axisbelow(True)
        _title(ax, title)
        _fit(fig, ax, 2.8, 1.9, legend=_legend_below(fig, ncols=1))
        return fig


def power_curve(curve, stem, *, title="Statistical power", target: float | None = None,
                n_needed: int | None = None) -> list[str]:
    """Power against n with the target line (see `build_power_curve`)."""
    with _styled():
        return save_figure(build_power_curve(curve, title, target=target, n_needed=n_needed), stem)
