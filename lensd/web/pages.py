"""The dashboard's HTML, written by hand: every value that comes from data goes through
``html.escape`` (``e``), and the pages load only lensd's own script and style sheet."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np

from lensd.domain import modeltree

NAV = (("/", "Overview"), ("/fits", "Fits"), ("/plot", "Across fits"))
FIT_COLUMNS = ("id", "unique_tag", "name", "status", "max_log_likelihood", "log_evidence")


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def number(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return e(value)


def age(seconds: float | None, now: float | None = None) -> str:
    if seconds is None:
        return ""
    delta = max(0.0, (now or time.time()) - seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if delta >= size:
            return f"{delta / size:.1f}{unit}"
    return f"{delta:.0f}s"


def fit_href(fit_id: str) -> str:
    """The page of a fit: ``/fit/`` and its id with every ``/`` escaped, so no ``..`` in an id moves
    the link; an id that is itself a dot segment (``.``, ``..``: a browser drops it from a path,
    escaped or not) goes in the query, ``/fit?id=``."""
    if fit_id in (".", ".."):
        return "/fit?" + urlencode({"id": fit_id})
    return "/fit/" + quote(fit_id, safe="")


def fit_link(fit_id: str) -> str:
    return f'<a href="{e(fit_href(fit_id))}">{e(fit_id)}</a>'


def layout(title: str, body: str, source: str, active: str = "") -> str:
    links = "".join(f'<a href="{href}"{" class=active" if href == active else ""}>{e(name)}</a>' for href, name in NAV)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)} · lensd</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="stylesheet" href="/static/style.css"><script src="/static/app.js" defer></script></head>'
            f'<body><header><strong>lensd</strong><nav>{links}</nav><span class="source">{e(source)}</span></header>'
            f"<main>{body}</main></body></html>")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table of cells that are already HTML (escape them first)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def slurm(job: Mapping[str, Any]) -> str:
    array, task = job.get("SLURM_ARRAY_JOB_ID"), job.get("SLURM_ARRAY_TASK_ID")
    if array and task is not None:
        return e(f"{array}_{task}")
    return e(job.get("SLURM_JOB_ID") or "")


# --- overview --------------------------------------------------------------------------------
def overview_fragment(data: Mapping[str, Any]) -> str:
    """The live part of the overview; the page's script fetches it again every few seconds."""
    now = data["now"]
    counts = "".join(f'<div class="count {s}"><span class="n" data-status="{s}">{n}</span> {s}</div>'
                     for s, n in data["counts"].items())
    peak = max([1, *(a + b for a, b in zip(data["throughput"]["completed"], data["throughput"]["failed"],
                                           strict=True))])
    bars = "".join(
        f'<div class="bar" title="{c} completed, {f} failed"><span class="ok" style="height:{100 * c / peak:.0f}%">'
        f'</span><span class="bad" style="height:{100 * f / peak:.0f}%"></span></div>'
        for c, f in zip(data["throughput"]["completed"], data["throughput"]["failed"], strict=True))
    done = sum(data["throughput"]["completed"])
    running = table(["fit", "unique_tag", "name", "progress", "samples", "max log L", "age", "seen", "slurm"], (
        [fit_link(r["id"]), e(r["unique_tag"]), e(r["name"]),
         f'<progress max="1" value="{r["progress"] or 0}"></progress> {number(r["progress"], 2)}',
         e(r["n_samples"]), number(r["max_log_likelihood"]), age(r["created_at"], now), age(r["last_event_at"], now),
         slurm(r["job"])] for r in data["running"]), "running")
    failed = table(["fit", "unique_tag", "name", "error", "when", "slurm"], (
        [fit_link(r["id"]), e(r["unique_tag"]), e(r["name"]), f'<span class="error">{e(r["error"])}</span>',
         age(r["last_event_at"], now), slurm(r["job"])] for r in data["failed"]), "failed")
    lost = table(["fit", "unique_tag", "name", "last seen", "SLURM job", "array task", "host"], (
        [fit_link(r["id"]), e(r["unique_tag"]), e(r["name"]), age(r["last_event_at"], now),
         e(r["job"].get("SLURM_JOB_ID")), slurm(r["job"]), e(r["job"].get("host"))] for r in data["lost"]), "lost")
    retry = "".join(f"<pre class=retry>{e(line)}</pre>" for line in data["retry"]) or "<p>nothing to re-run</p>"
    return (f'<section class="counts" id="counts">{counts}<div class="count">{data["total"]} fits</div></section>'
            f'<section><h2>Throughput, last hour</h2><div class="bars" id="throughput">{bars}</div>'
            f"<p>{done} completed in the last hour (5-minute bars; red: failed)</p></section>"
            f'<section><h2>Running ({data["counts"]["running"]})</h2>{running}</section>'
            f'<section><h2>Failed ({data["counts"]["failed"]})</h2>{failed}</section>'
            f'<section><h2>Lost ({data["counts"]["lost"]})</h2>{lost}</section>'
            f'<section><h2>Re-run what failed</h2><p><code>lensd retry</code> prints the same lines.</p>'
            f'{retry}</section>')


def overview(data: Mapping[str, Any], source: str) -> str:
    body = f'<h1>Overview</h1><div id="live" data-refresh="/partial/overview">{overview_fragment(data)}</div>'
    return layout("Overview", body, source, "/")


# --- the fits table --------------------------------------------------------------------------
def query_form(action: str, q: str, error: str | None, extra: str = "") -> str:
    shown = f'<pre class="error" id="query-error">{e(error)}</pre>' if error else ""
    return (f'<form method="get" action="{action}" class="query"><input type="text" name="q" id="q" value="{e(q)}" '
            'placeholder=\'model.galaxies.lens.mass.einstein_radius &gt; 1.0 &amp; unique_tag == "lens_3"\' '
            f'size="80" spellcheck="false">{extra}<button type="submit">Query</button></form>{shown}')


def fits(params: Mapping[str, str], error: str | None, rows: Sequence[Any], total: int, page: int,
         size: int, source: str) -> str:
    q, sort, desc = params.get("q", ""), params.get("sort", ""), params.get("desc", "") == "1"

    def link(**change: Any) -> str:
        merged = {**{k: v for k, v in params.items() if v}, **{k: str(v) for k, v in change.items()}}
        return "?" + urlencode({k: v for k, v in merged.items() if v not in ("", "0") or k == "page"})

    headers = []
    for column in FIT_COLUMNS:
        arrow = (" ▼" if desc else " ▲") if sort == column else ""
        flip = "1" if sort == column and not desc else ""
        headers.append(f'<a href="{link(sort=column, desc=flip, page=1)}">{e(column)}{arrow}</a>')
    body = table(headers, ([fit_link(f.id), e(f.unique_tag), e(f.name), e(f.status), number(f.max_log_likelihood),
                            number(f.log_evidence)] for f in rows), "fits")
    pages = max(1, -(-total // size))
    previous = f'<a href="{link(page=page - 1)}" id="previous">‹ previous</a>' if page > 1 else ""
    following = f'<a href="{link(page=page + 1)}" id="next">next ›</a>' if page < pages else ""
    pager = (f'<p class="pager">{previous} page {page} of {pages}, <span id="total">{total}</span> fits '
             f"{following}</p>")
    export = (f'<p>Export this query: <a href="/export.csv{link()}" id="export-csv">CSV</a> · '
              f'<a href="/export.json{link()}" id="export-json">JSON</a></p>')
    hidden = (f'<input type="hidden" name="sort" value="{e(sort)}">'
              f'<input type="hidden" name="desc" value="{"1" if desc else ""}">')
    content = query_form("/fits", q, error, hidden) + ("" if error else pager + body + export)
    return layout("Fits", f"<h1>Fits</h1>{content}", source, "/fits")


# --- one fit ---------------------------------------------------------------------------------
def json_block(value: Any) -> str:
    return f"<pre>{e(json.dumps(value, indent=2, sort_keys=True, default=str))}</pre>"


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, q: Sequence[float]) -> list[float]:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    cumulative = cumulative / cumulative[-1]
    return [float(np.interp(p, cumulative, values[order])) for p in q]


def parameters(instance: Mapping[str, Any], model: Mapping[str, Any] | None, samples: Any) -> str:
    """The instance tree: each node with its class, each parameter with its max-likelihood value
    and, from the samples, the median and the 1-sigma (16 %, 84 %) errors."""
    errors: dict[str, tuple[float, float, float]] = {}
    if samples is not None and len(samples):
        w = np.asarray(samples.weight, dtype=float)
        if not np.isfinite(w).all() or w.sum() <= 0:
            w = np.ones(len(samples))
        for i, path in enumerate(samples.paths):
            column = np.asarray(samples.parameters[:, i], dtype=float)
            low, mid, high = _weighted_quantiles(column, w, (0.16, 0.5, 0.84))
            errors[path] = (mid, mid - low, high - mid)
    classes = modeltree.class_nodes(model or {})
    rows, seen = [], set()
    for path in sorted(instance):
        parts = path.split(".")
        for depth in range(1, len(parts)):
            node = ".".join(parts[:depth])
            if node not in seen:
                seen.add(node)
                rows.append([f'<span class="node" style="padding-left:{depth - 1}em">{e(parts[depth - 1])}</span>',
                             f'<span class="class">{e(classes.get(node, ""))}</span>', "", ""])
        found = errors.get(path)
        rows.append([f'<span style="padding-left:{len(parts) - 1}em">{e(parts[-1])}</span>', number(instance[path], 6),
                     "" if found is None else number(found[0], 6),
                     "" if found is None else f"−{found[1]:.3g} +{found[2]:.3g}"])
    return table(["parameter", "max likelihood", "median", "1σ errors"], rows, "instance")


def fit_page(fit: Any, sections: Mapping[str, str], source: str) -> str:
    facts = [("status", f'<span class="status {e(fit.status)}">{e(fit.status)}</span>'),
             ("unique_tag", e(fit.unique_tag)), ("name", e(fit.name)), ("path_prefix", e(fit.path_prefix)),
             ("max log likelihood", number(fit.max_log_likelihood, 8)), ("log evidence", number(fit.log_evidence, 8)),
             ("progress", number(fit.progress, 3)), ("samples", e(fit.n_samples)),
             ("created", e(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(fit.created_at or 0)))),
             ("updated", age(fit.updated_at) + " ago"), ("parent", fit_link(fit.parent_id) if fit.parent_id else ""),
             ("error", f'<span class="error">{e(fit.error)}</span>' if fit.error else ""),
             ("source", e(fit.source))]
    summary = "<table class=facts>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts if v) + "</table>"
    parts = [f'<h1>Fit <code>{e(fit.id)}</code></h1><section class="grid"><div><h2>Summary</h2>{summary}</div>'
             f'<div><h2>Job</h2>{json_block(fit.job or {})}<h2>Info</h2>{json_block(fit.info or {})}</div></section>']
    parts += [f'<section id="{e(name)}"><h2>{e(title)}</h2>{sections[name]}</section>'
              for name, title in _SECTIONS if sections.get(name)]
    return layout(f"Fit {fit.id}", "".join(parts), source)


_SECTIONS = (("parameters", "Parameters"), ("corner", "Posterior (corner plot)"), ("convergence", "Convergence"),
             ("images", "PyAutoLens images"), ("files", "Files"), ("children", "Grid cells and children"),
             ("summary-json", "samples_summary"))


# --- across fits -----------------------------------------------------------------------------
def plot_page(params: Mapping[str, str], error: str | None, svg: str, total: int, keys: Sequence[str],
              source: str, left_out: int = 0) -> str:
    options = "".join(f'<option value="{e(k)}">' for k in keys)
    fields = "".join(
        f'<label>{label} <input type="text" name="{name}" id="{name}" value="{e(params.get(name, ""))}" '
        f'list="keys" size="40" spellcheck="false"></label>'
        for name, label in (("x", "x"), ("y", "y (optional: a binned scatter)"), ("colour", "colour by")))
    extra = f'<div class="axes">{fields}</div><datalist id="keys">{options}</datalist>'
    form = query_form("/plot", params.get("q", ""), error, extra)
    unplotted = (f'; <span id="left-out">{left_out}</span> left out, a value not finite (inf or -inf)'
                 if left_out else "")
    shown = (f'<p><span id="plotted">{total}</span> fits plotted (counted in SQL){unplotted}</p>'
             f'<div class="plot" id="plot">{svg}</div>') if svg and not error else ""
    help_text = ("<p>x and y: a parameter path (<code>model.galaxies.lens.mass.einstein_radius</code>), an info key "
                 "(<code>info[\"redshift\"]</code>) or <code>max_log_likelihood</code>; colour by a model node (its "
                 "class), an info key or a text column such as <code>unique_tag</code>.</p>")
    return layout("Across fits", f"<h1>Across fits</h1>{form}{help_text}{shown}", source, "/plot")


def error_page(status: int, message: str, source: str) -> str:
    return layout(str(status), f'<h1>{status}</h1><p class="error">{e(message)}</p>', source)
