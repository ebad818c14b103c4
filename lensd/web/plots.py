"""The dashboard's plots, drawn on the server with matplotlib as SVG that the pages inline.

matplotlib is what astronomers already read (corner plots, histograms), it draws without a
display (no pyplot, no GUI backend) and it needs no JavaScript, CDN or asset beyond the page:
docs/web.md says why this was chosen over a JavaScript plotting library. Each panel and point set
carries an ``id`` (matplotlib's ``gid``), so a test can count what a person sees: ``pair-I-J`` for
each panel of a corner plot, ``convergence-points`` for the history's markers.

Samples are drawn as weighted 2-D histograms (an image per panel), never as one mark per sample,
so a fit with 10^5 samples gives a page of the same size as one with 10^2.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

MAX_CORNER: Final = 12  # free parameters drawn in a corner plot (66 panels)
COLOURS: Final = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22")
_RC: Final[dict[str, Any]] = {"svg.fonttype": "none", "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8}
_salt = itertools.count()
MAX_UNSCALED: Final = 1e300  # past this size matplotlib's tick and margin arithmetic overflows (1.0 to 1.7e308)


def _figure(width: float, height: float) -> Any:
    import matplotlib
    from matplotlib.figure import Figure

    for key, value in _RC.items():  # this process draws only lensd's figures, with no pyplot state
        matplotlib.rcParams[key] = value  # type: ignore[index]
    return Figure(figsize=(width, height), dpi=96, layout="constrained")


def _svg(figure: Any) -> str:
    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"lensd{next(_salt)}"}):  # ids unique across a page's plots
        figure.savefig(out, format="svg")
    text = out.getvalue()
    return text[text.index("<svg"):]


def plain(value: str) -> str:
    """``value`` drawn as it reads: each ``$`` escaped, so stored data or a query is never parsed
    as mathtext (an unmatched ``$\\frac$`` raised ValueError: an error 500)."""
    return value.replace("$", r"\$")


def short(path: str) -> str:
    """The last two parts of a parameter path, for axis labels."""
    return ".".join(path.split(".")[-2:])


def corner(paths: Sequence[str], parameters: np.ndarray, weight: np.ndarray, bins: int = 30) -> str:
    """A corner plot: a weighted histogram per free parameter on the diagonal, and one panel per
    pair of free parameters below it (``pair-I-J`` with I < J: column I, row J)."""
    k = min(len(paths), MAX_CORNER)
    data = np.asarray(parameters, dtype=float)[:, :k]
    w = np.asarray(weight, dtype=float)
    if w.shape != (data.shape[0],) or not np.isfinite(w).all() or w.sum() <= 0:
        w = np.ones(data.shape[0])
    size = max(2.0, 1.5 * k)
    figure = _figure(size, size)
    grid = figure.add_gridspec(k, k)
    for row in range(k):
        for column in range(row + 1):
            ax = figure.add_subplot(grid[row, column])
            x = data[:, column]
            finite = np.isfinite(x)
            if row == column:
                ax.hist(x[finite], bins=bins, weights=w[finite], color=COLOURS[0], histtype="stepfilled", alpha=0.6)
                ax.set_gid(f"marginal-{column}")
                ax.set_yticks([])
            else:
                y = data[:, row]
                both = finite & np.isfinite(y)
                counts, xe, ye = np.histogram2d(x[both], y[both], bins=bins, weights=w[both])
                ax.imshow(counts.T, origin="lower", aspect="auto", cmap="Blues", interpolation="nearest",
                          extent=(xe[0], xe[-1], ye[0], ye[-1]))
                ax.set_gid(f"pair-{column}-{row}")
            if row == k - 1:
                ax.set_xlabel(plain(short(paths[column])))
            else:
                ax.set_xticklabels([])
            if column == 0 and row > 0:
                ax.set_ylabel(plain(short(paths[row])))
            elif row != column:
                ax.set_yticklabels([])
            ax.tick_params(labelsize=6)
    return _svg(figure)


def convergence(times: Sequence[float], max_log_likelihood: Sequence[float | None],
                progress: Sequence[float | None]) -> str:
    """Max log likelihood against time since the first point (markers: ``convergence-points``),
    with the fraction done on a second axis."""
    figure = _figure(6.0, 2.6)
    ax = figure.add_subplot()
    start = times[0] if times else 0.0
    t = np.asarray([s - start for s in times], dtype=float)
    by_time = len(t) > 1 and float(t.max()) > 0  # events committed together share one time
    if not by_time:
        t = np.arange(len(t), dtype=float)
    kept = [i for i, v in enumerate(max_log_likelihood) if v is not None]
    ys = np.asarray([max_log_likelihood[i] for i in kept], dtype=float)
    ax.plot(t[kept], ys, "-", color=COLOURS[0], linewidth=1)
    ax.scatter(t[kept], ys, s=10, color=COLOURS[0], gid="convergence-points", zorder=3)
    ax.set_xlabel("seconds since the first progress event" if by_time else "progress event")
    ax.set_ylabel("max log likelihood")
    fractions = [(t[i], p) for i, p in enumerate(progress) if p is not None]
    if fractions:
        twin = ax.twinx()
        twin.plot([f[0] for f in fractions], [f[1] for f in fractions], "--", color=COLOURS[1], linewidth=1)
        twin.set_ylim(0, 1)
        twin.set_ylabel("fraction done", color=COLOURS[1])
    return _svg(figure)


def _axis(edges: list[float], label: str) -> tuple[Any, str]:
    """An axis's edges as drawn, and its label: one with a value past ``MAX_UNSCALED`` in size is
    drawn in units of a power of ten that the label names (``x (× 1e308)``); the counts and the
    API's edges are the values' own."""
    biggest = max(abs(edges[0]), abs(edges[-1]))
    if biggest <= MAX_UNSCALED:
        return np.asarray(edges), plain(label)
    power = math.floor(math.log10(biggest))
    return np.asarray(edges) / 10.0**power, plain(f"{label} (× 1e{power})")


def histogram(result: dict[str, Any]) -> str:
    """The counts of ``LocalSource.histogram``: stacked bars, or a binned scatter for two axes."""
    figure = _figure(7.0, 3.6)
    ax = figure.add_subplot()
    series = result["series"]
    labels = [result["x"], result["y"]]
    drawn = [_axis(axis, label) for axis, label in zip(result["edges"], labels, strict=False)]
    edges = [axis for axis, _ in drawn]
    if len(edges) == 1:
        bottom = np.zeros(len(edges[0]) - 1)
        for colour, (label, counts) in zip(itertools.cycle(COLOURS), series.items(), strict=False):
            ax.stairs(np.asarray(counts) + bottom, edges[0], baseline=bottom, fill=True, alpha=0.8,
                      color=colour, label=plain(f"{label} ({sum(counts)})"), gid=f"series-{label}")
            bottom = bottom + np.asarray(counts)
        ax.set_ylabel("fits")
    elif len(edges) == 2:
        xc, yc = (np.convolve(e, [0.5, 0.5], "valid") for e in edges)
        biggest = max((n for cells in series.values() for n in cells.values()), default=1)
        for colour, (label, cells) in zip(itertools.cycle(COLOURS), series.items(), strict=False):
            keys = [tuple(int(v) for v in key.split(",")) for key in cells]
            counts = np.asarray(list(cells.values()), dtype=float)
            ax.scatter([xc[i] for i, _ in keys], [yc[j] for _, j in keys], s=4 + 60 * np.sqrt(counts / biggest),
                       color=colour, alpha=0.6, label=plain(f"{label} ({int(counts.sum())})"), gid=f"series-{label}")
        ax.set_ylabel(drawn[1][1])
    ax.set_xlabel(drawn[0][1] if drawn else plain(result["x"]))
    if series and (result.get("colour") or len(series) > 1):
        ax.legend(fontsize=7, title=plain(result.get("colour") or "") or None)
    return _svg(figure)
