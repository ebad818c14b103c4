"""The dashboard in a real headless browser (Debian's chromium through Playwright), served by a
real ``lensd web`` process or by the daemon (``lensd start --web``), over a real sqlite file.

Pages are waited on through their DOM (Playwright's waits), never by sleeping: the overview
refreshes itself, and a test waits until the page shows what the database holds.
"""

from __future__ import annotations

import html
import json
import math
import re
import sqlite3
import sys
from pathlib import Path
from urllib.parse import quote

import anyio
import pytest
from conftest import lensd_cli
from records_factory import PATHS, record
from test_jobs import workers  # noqa: F401 - the fixture of client processes
from webtools import browser, get, url_line, web_process

import lensd
from lensd.errors import QuerySyntaxError
from lensd.query import text
from lensd.store.writeops import op_from_request
from lensd.store.writer import BatchWriter
from lensd.web.auth import check_bind


def _counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        found = dict(conn.execute("SELECT status, count(*) FROM fits GROUP BY status").fetchall())
    finally:
        conn.close()
    return {s: int(found.get(s, 0)) for s in ("running", "completed", "failed", "lost")}


def _write(db: Path, requests: list[tuple[str, dict[str, object]]]) -> None:
    async def run() -> None:
        writer = await BatchWriter.open(db)
        outcomes = await writer.apply([op_from_request(op, fields) for op, fields in requests])
        assert all(o == "applied" for o in outcomes), outcomes
        await writer.close()
    anyio.run(run)


@pytest.fixture
def survey(tmp_path: Path) -> Path:
    """30 completed fits, two failed, one running with a convergence history of 9 points."""
    db = tmp_path / "lensd.sqlite"
    requests: list[tuple[str, dict[str, object]]] = [("submit", {"record": record(i)}) for i in range(30)]
    requests += [("submit", {"record": record(i, status="failed", error=f"diverged {i}")}) for i in (40, 41)]
    requests.append(("start", {"record": {**record(50), "status": "running"}}))
    requests += [("progress", {"id": "fit-50", "max_log_likelihood": -90.0 + 5 * i, "n_samples": 100 * i,
                               "progress": i / 10}) for i in range(1, 10)]
    _write(db, requests)
    return db


def test_overview_counts_are_the_databases_and_a_live_fit_shows_up_and_completes(make_daemon, workers) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    daemon = make_daemon("--web", "127.0.0.1:0")  # the daemon serves the dashboard itself
    url = url_line(daemon.process)
    for i in (300, 301, 302):
        submitted = workers("submit", daemon.socket, i, wait=False)
        submitted.expect("ack")
    failing = workers("script", daemon.socket, 310)
    assert failing.do("fail", message="out of memory") == "applied"
    assert failing.finish() == 0

    with browser() as page:
        page.goto(url)
        counts = _counts(daemon.db)
        assert counts == {"running": 0, "completed": 3, "failed": 1, "lost": 0}
        for status, n in counts.items():
            assert page.text_content(f'[data-status="{status}"]') == str(n)
        assert "out of memory" in page.text_content("table.failed")
        page.evaluate("window.lensdMarker = 42")  # gone if the page were reloaded

        live = workers("script", daemon.socket, 7)  # a real client process opens fit-7
        page.locator("table.running a", has_text=re.compile(r"^fit-7$")).wait_for()
        assert page.text_content('[data-status="running"]') == "1"
        assert live.do("progress", max_log_likelihood=-12.5, progress=0.5, n_samples=40) == "applied"
        page.wait_for_function("() => document.querySelector('table.running').textContent.includes('-12.5')")
        assert live.do("complete", samples_of=7) == "applied"
        page.wait_for_function("() => document.querySelector('[data-status=completed]').textContent === '4'"
                               " && !document.querySelector('table.running').textContent.includes('fit-7')")
        assert page.evaluate("window.lensdMarker") == 42
        for status, n in _counts(daemon.db).items():
            assert page.text_content(f'[data-status="{status}"]') == str(n)
        assert live.finish() == 0
    reply = lensd_cli("status", "--socket", str(daemon.socket), "--format", "json")
    assert json.loads(reply.stdout)["web"] == url.split("?")[0]  # where it serves, never the token
    assert url.rsplit("token=", 1)[1] not in reply.stdout
    assert daemon.stop() == 0


def test_the_query_box_filters_to_the_apis_answer_and_shows_grammar_errors(survey: Path) -> None:
    expression = 'model.galaxies.lens.mass.einstein_radius > 1.2 & unique_tag != "lens_3"'
    agg = lensd.Aggregator.from_database(survey)
    wanted = [fit.id for fit in agg.query(text.parse(expression)).fits()]
    by_likelihood = [fit.id for fit in agg.order_by(agg.max_log_likelihood, reverse=True).fits()]
    agg.close()
    assert 0 < len(wanted) < 33
    with web_process(survey) as web, browser() as page:
        page.goto(web.url)
        with page.expect_navigation():
            page.click("text=Fits")
        page.fill("#q", expression)
        with page.expect_navigation():
            page.press("#q", "Enter")
        assert "/fits?q=" in page.url
        assert page.locator("table.fits tbody tr td:first-child").all_text_contents() == wanted
        assert page.text_content("#total") == str(len(wanted))

        exported = page.request.get(web.base + (page.get_attribute("#export-json", "href") or ""))
        assert [row["id"] for row in json.loads(exported.text())] == wanted
        csv_lines = page.request.get(web.base + (page.get_attribute("#export-csv", "href") or "")).text().splitlines()
        assert len(csv_lines) == len(wanted) + 1 and csv_lines[0].startswith("id,")

        page.fill("#q", "")
        with page.expect_navigation():
            page.press("#q", "Enter")
        with page.expect_navigation():  # ascending, then descending
            page.click("table.fits th >> text=max_log_likelihood")
        assert "desc=1" not in page.url
        with page.expect_navigation():
            page.click("table.fits th >> text=max_log_likelihood")
        assert "desc=1" in page.url
        assert page.locator("table.fits tbody tr td:first-child").all_text_contents() == by_likelihood

        bad = "model.galaxies.lens.mass.einstein_radius > & unique_tag"
        with pytest.raises(QuerySyntaxError) as grammar:
            text.parse(bad)
        page.fill("#q", bad)
        with page.expect_navigation():
            page.press("#q", "Enter")
        assert page.text_content("#query-error") == grammar.value.pointed()
        assert page.locator("table.fits").count() == 0
        api = page.request.get(f"{web.base}/api/fits?q=" + bad.replace("&", "%26"))
        assert api.status == 400 and api.json()["error"] == grammar.value.pointed()


def test_a_fit_page_has_a_corner_panel_per_pair_and_a_point_per_progress_event(survey: Path) -> None:
    agg = lensd.Aggregator.from_database(survey)
    [fit] = list(agg.query(agg.id == "fit-50").fits())
    assert fit.samples is not None
    history, free = fit.progress_history, fit.samples.paths
    agg.close()
    assert len(history) == 9 and len(free) == len(PATHS) == 3
    with web_process(survey) as web, browser() as page:
        page.goto(web.url)
        page.goto(f"{web.base}/fit/fit-50")
        pairs = page.locator('#corner-plot svg g[id^="pair-"]')
        assert pairs.count() == len(free) * (len(free) - 1) // 2
        assert sorted(pairs.evaluate_all("nodes => nodes.map(n => n.id)")) == ["pair-0-1", "pair-0-2", "pair-1-2"]
        assert page.locator('#corner-plot svg g[id^="marginal-"]').count() == len(free)
        assert page.locator("#convergence-plot svg g#convergence-points use").count() == len(history)
        assert page.text_content("#history-points") == str(len(history))
        for path in PATHS:
            assert path.split(".")[-1] in page.text_content("table.instance")

        page.goto(f"{web.base}/fit/fit-40")  # a failed fit: its message, no history
        assert "diverged 40" in page.text_content("table.facts")
        assert "no progress events" in page.text_content("#convergence")


def test_across_fits_counts_in_sql_what_the_api_selects_coloured_by_class(survey: Path) -> None:
    agg = lensd.Aggregator.from_database(survey)
    chosen = agg.query(agg.info["survey"] == "SLACS")
    classes = [fit.model["arguments"]["galaxies"]["arguments"]["lens"]["arguments"]["mass"]["class_path"]
               for fit in chosen.fits()]
    agg.close()
    with web_process(survey) as web, browser() as page:
        page.goto(web.url)
        page.goto(f"{web.base}/plot")
        page.fill("#q", 'info["survey"] == "SLACS"')
        page.fill("#x", "model.galaxies.lens.mass.einstein_radius")
        page.fill("#colour", "model.galaxies.lens.mass")
        with page.expect_navigation():
            page.press("#q", "Enter")
        page.locator("#plot svg").wait_for()
        assert page.text_content("#plotted") == str(len(classes))
        for name in {c.rsplit(".", 1)[-1] for c in classes}:
            assert page.locator(f'#plot svg g[id="series-{name}"]').count() == 1
        histogram = page.request.get(f"{web.base}/api/histogram?q=" + 'info["survey"] == "SLACS"'
                                     + "&x=model.galaxies.lens.mass.einstein_radius&colour=model.galaxies.lens.mass")
        series = histogram.json()["series"]
        assert {k: sum(v) for k, v in series.items()} == {
            n: sum(c.endswith("." + n) for c in classes) for n in {c.rsplit(".", 1)[-1] for c in classes}}


def test_every_page_and_endpoint_needs_the_token(survey: Path) -> None:
    with web_process(survey) as web:
        for path in ("/", "/fits", "/api/overview", "/api/fits", "/fit/fit-1", "/export.csv", "/plot",
                     "/static/app.js", "/partial/overview", "/nowhere"):
            status, _, body = get(web.base + path)
            assert status == 401, path
            assert b"token" in body
            assert get(web.base + path, {"Authorization": "Bearer not-the-token"})[0] == 403, path
            assert get(web.base + path, {"Cookie": "lensd_token=" + web.token[:-1] + "x"})[0] == 403, path
            assert get(web.base + path + "?token=guess")[0] == 403, path
        assert get(web.base + "/api/overview", {"Authorization": f"Bearer {web.token}"})[0] == 200
        status, headers, _ = get(f"{web.base}/fits?q=x&token={web.token}")
        assert status == 303 and headers["location"] == "/fits?q=x"  # the token leaves the address bar
        assert headers["set-cookie"].startswith(f"lensd_token={web.token};") and "HttpOnly" in headers["set-cookie"]
        cookie = {"Cookie": f"lensd_token={web.token}"}
        status, headers, body = get(web.base + "/api/overview", cookie)
        assert status == 200 and json.loads(body)["counts"] == _counts(survey)
        assert "default-src 'self'" in headers["content-security-policy"]
        with browser() as page:
            page.goto(web.base + "/")
            assert "needs the token" in page.content()
            page.goto(web.url)
            assert page.text_content('[data-status="completed"]') == "30"


def test_nothing_is_served_beyond_loopback_without_tls_or_the_flag(survey: Path, make_daemon) -> None:  # type: ignore[no-untyped-def]
    refused = lensd_cli("web", "--db", str(survey), "--bind", "0.0.0.0:0", timeout=60)
    assert refused.returncode == 1
    assert "not a loopback address" in refused.stderr and "--insecure-bind" in refused.stderr
    assert "lensd web: http" not in refused.stdout
    daemon = make_daemon("--web", "0.0.0.0:0", start=False)
    with pytest.raises(RuntimeError, match="not a loopback address"):
        daemon.start()
    assert check_bind("127.0.0.1", tls=False, insecure=False) is None
    assert check_bind("localhost", tls=False, insecure=False) is None
    assert check_bind("::1", tls=False, insecure=False) is None
    assert "WARNING" in (check_bind("10.1.2.3", tls=False, insecure=True) or "")
    assert "TLS" in (check_bind("10.1.2.3", tls=True, insecure=False) or "")
    assert sys.executable  # the refusals above ran the real command line


def test_the_overviews_hourly_throughput_counts_each_fit_in_its_five_minutes(survey: Path) -> None:
    """Completions and failures per 5 minutes over the last hour: each fit in the bucket its last
    event falls in, [start, end), the hour's own start included and its end (now) not."""
    import math

    from lensd.web.data import BUCKETS, LocalSource

    now = 1_900_000_000.0
    start = now - BUCKETS * 300
    conn = sqlite3.connect(survey)
    try:
        ended = conn.execute("SELECT id, status FROM fits WHERE status IN ('completed', 'failed') "
                             "ORDER BY id").fetchall()
        times = [start, start + 299.999, start + 300, now - 1e-3, now, start - 1e-3]  # edges first
        times += [start + 117.0 * i for i in range(len(ended) - len(times))]
        with conn:
            conn.executemany("UPDATE fits SET last_event_at = ? WHERE id = ?",
                             [(t, fit_id) for t, (fit_id, _) in zip(times, ended, strict=True)])
    finally:
        conn.close()
    expected = {s: [0] * BUCKETS for s in ("completed", "failed")}
    for t, (_, status) in zip(times, ended, strict=True):
        if start <= t < now:
            expected[status][math.floor((t - start) / 300)] += 1
    assert sum(map(sum, expected.values())) == len(ended) - 2 and expected["failed"] != [0] * BUCKETS
    source = LocalSource(survey)
    try:
        assert source.overview(now)["throughput"] == expected
    finally:
        source.close()


def test_histogram_and_scatter_counts_match_the_values_the_api_reads(survey: Path) -> None:
    import numpy as np

    from lensd.web.data import LocalSource, parse_query

    x, y = "model.galaxies.lens.mass.einstein_radius", "model.galaxies.lens.mass.centre.centre_0"
    expression = 'unique_tag != "lens_2"'
    agg = lensd.Aggregator.from_database(survey)
    fits = list(agg.query(text.parse(expression)).fits())
    agg.close()
    xs = np.array([f.to_dict()["instance"]["galaxies.lens.mass.einstein_radius"] for f in fits])
    ys = np.array([f.to_dict()["instance"]["galaxies.lens.mass.centre.centre_0"] for f in fits])
    surveys = [f.info["survey"] for f in fits]
    source = LocalSource(survey)
    try:
        state = parse_query(expression).state
        one = source.histogram(state, x, 'info["survey"]', bins=10)
        assert one["total"] == len(fits)
        for name in set(surveys):
            chosen = xs[[s == name for s in surveys]]
            edges = one["edges"][0]
            counts = [int(((chosen >= lo) & (chosen < hi)).sum()) for lo, hi in zip(edges, edges[1:], strict=False)]
            counts[-1] += int((chosen == one["edges"][0][-1]).sum())  # the top edge belongs to the last bin
            assert one["series"][name] == counts
        two = source.histogram(state, x, "", y, bins=5)
        cells: dict[str, int] = two["series"]["all"]
        assert sum(cells.values()) == len(fits)
        ex, ey = (np.asarray(e) for e in two["edges"])
        expected, _, _ = np.histogram2d(xs, ys, bins=[ex, ey])
        assert cells == {f"{i},{j}": int(expected[i, j]) for i in range(5) for j in range(5)
                                                   if expected[i, j]}
        every = [f.to_dict()["instance"]["galaxies.lens.mass.einstein_radius"] for f in
                 lensd.Aggregator.from_database(survey).fits()]
        plain = source.histogram(parse_query("").state, x, bins=10)  # every fit: counted by index ranges
        assert sum(plain["series"]["all"]) == len(every)
        assert plain["series"]["all"] == np.histogram(every, bins=np.asarray(plain["edges"][0]))[0].tolist()
        with pytest.raises(QuerySyntaxError):
            source.histogram(state, "model.", "")
    finally:
        source.close()


def test_values_near_the_largest_float_are_binned_and_drawn(tmp_path: Path) -> None:
    """Any finite values have bins and a plot: 1.0 and 1.7e308 (matplotlib's tick arithmetic
    overflowed on them), -1.5e308 and 1.5e308 (their span overflows) and a lone largest float (steps
    of 1 left its edges equal, and stepping up from it overflows); they were an empty plot. By index
    ranges, by the query's SQL and from the blocks, and as a binned scatter; each axis past 1e300 is
    drawn in units of a power of ten that its label names."""
    db = tmp_path / "big.sqlite"
    largest = sys.float_info.max
    infos = [{"big": 1.0, "wide": -1.5e308, "lone": largest}, {"big": 1.7e308, "wide": 1.5e308}]
    _write(db, [("submit", {"record": record(i, info=info)}) for i, info in enumerate(infos)])
    ends = {'info["big"]': (1.0, 1.7e308), 'info["wide"]': (-1.5e308, 1.5e308), 'info["lone"]': (None, largest)}
    with web_process(db) as web:
        auth = {"Authorization": f"Bearer {web.token}"}
        for x, (low, high) in ends.items():
            for q in ("", 'status == "completed"'):
                wanted = f"x={quote(x)}&q={quote(q)}"
                status, _, body = get(f"{web.base}/plot?{wanted}", auth)
                page = body.decode()
                assert status == 200 and 'id="series-all"' in page, (x, q, status, body[-300:])
                assert "(× 1e308)" in page and f'<span id="plotted">{1 if low is None else 2}</span>' in page
                status, _, body = get(f"{web.base}/api/histogram?{wanted}", auth)
                answer = json.loads(body)
                edges, counts = answer["edges"][0], answer["series"]["all"]
                assert status == 200 and edges[-1] == high and len(edges) == 41, (x, q)
                assert all(math.isfinite(e) for e in edges) and edges == sorted(set(edges)), (x, q)
                assert (counts[0], counts[-1]) == ((0, 1) if low is None else (1, 1)) and sum(counts) == answer["total"]
                assert low is None or edges[0] == low
        scatter = "x=" + quote('info["big"]') + "&y=" + quote('info["wide"]')
        for q in ("", 'status == "completed"'):
            status, _, body = get(f"{web.base}/api/histogram?{scatter}&q={quote(q)}", auth)
            assert status == 200 and json.loads(body)["series"] == {"all": {"0,0": 1, "39,39": 1}}, body


def test_the_plot_page_says_how_many_fits_an_infinite_value_left_out(tmp_path: Path) -> None:
    """A fit with an inf or -inf is left out of the bins (one used to empty the plot); the page says
    how many beside the fits plotted, and /api/histogram gives the same count."""
    db = tmp_path / "infinite.sqlite"
    values = [1.0, 2.0, float("inf"), 3.0, float("-inf")]
    _write(db, [("submit", {"record": record(i, info={"v": v})}) for i, v in enumerate(values)])
    with web_process(db) as web:
        auth, x = {"Authorization": f"Bearer {web.token}"}, quote('info["v"]')
        status, _, body = get(f"{web.base}/plot?x={x}", auth)
        assert status == 200, body[-300:]
        page = body.decode()
        assert '<span id="plotted">3</span>' in page and '<span id="left-out">2</span> left out' in page
        status, _, body = get(f"{web.base}/api/histogram?x={x}", auth)
        answer = json.loads(body)
        edges = answer["edges"][0]
        assert (answer["total"], answer["left_out"], edges[0], edges[-1]) == (3, 2, 1.0, 3.0)


def test_a_dollar_in_stored_data_or_the_axes_is_drawn_as_text_not_mathtext(tmp_path: Path) -> None:
    """Legend entries, axis labels and the legend's title show ``$`` as typed: none is mathtext
    (an unmatched ``$\\frac$`` used to raise in matplotlib, an error 500)."""
    db = tmp_path / "dollar.sqlite"
    _write(db, [("submit", {"record": record(i, info={"v$": float(i), "survey$": s})})
                for i, s in enumerate(["$\\frac$", "SLACS", "$x$"])])
    x, colour = 'info["v$"]', 'info["survey$"]'
    with web_process(db) as web:
        auth = {"Authorization": f"Bearer {web.token}"}
        for y in ("", x):
            wanted = f"x={quote(x)}&colour={quote(colour)}&y={quote(y)}"
            status, _, body = get(f"{web.base}/plot?{wanted}", auth)
            assert status == 200, (y, status, body[-300:])
            svg = body.decode()
            for shown in ("$\\frac$ (1)", "$x$ (1)", 'info["survey$"]', 'info["v$"]'):
                assert html.escape(shown, quote=False) in svg, (y, shown)


def test_a_fits_link_opens_its_own_page_whatever_slashes_and_dots_its_id_holds(tmp_path: Path) -> None:
    """Each link of the fits table, resolved as a browser does (dot segments removed), serves the
    fit it names: ids with ``/`` and ``..`` segments, and ``..`` itself."""
    from urllib.parse import urljoin

    ids = ["a/b", "../../etc", "..", "fit-1"]
    db = tmp_path / "odd-ids.sqlite"
    _write(db, [("submit", {"record": record(i, n_samples=5, id=fit_id)}) for i, fit_id in enumerate(ids)])
    with web_process(db) as web:
        auth = {"Authorization": f"Bearer {web.token}"}
        status, _, body = get(f"{web.base}/fits", auth)
        assert status == 200
        hrefs = [html.unescape(h) for h in re.findall(r'<a href="(/fit[/?][^"]*)">', body.decode())]
        assert len(hrefs) == len(ids), hrefs
        shown = []
        for href in hrefs:
            status, _, page = get(urljoin(f"{web.base}/fits", href), auth)
            assert status == 200, (href, status)
            shown.append(html.unescape(re.findall(r"<h1>Fit <code>([^<]*)</code>", page.decode())[0]))
        assert sorted(shown) == sorted(ids), (hrefs, shown)


def test_a_real_pyautofit_fit_shows_its_posterior_files_and_output_images(tmp_path: Path) -> None:
    import shutil

    from conftest import DIR_OUTPUT
    from matplotlib.figure import Figure

    fit_id = "48506b369efedcc1d11c16167caa5bc6"
    folder = tmp_path / "output" / fit_id
    shutil.copytree(DIR_OUTPUT / "howtofit" / "single" / "gaussian_b" / "emcee" / fit_id, folder)
    (folder / "image").mkdir(exist_ok=True)
    figure = Figure(figsize=(2, 2))
    figure.add_subplot().plot([0, 1], [1, 0])
    figure.savefig(folder / "image" / "fit.png")  # a real PNG, as PyAutoLens's plotters write
    db = tmp_path / "lensd.sqlite"
    ingested = lensd_cli("ingest", str(tmp_path / "output"), "--db", str(db), "--quiet")
    assert ingested.returncode == 0, ingested.stderr
    agg = lensd.Aggregator.from_database(db)
    [fit] = list(agg.fits())
    assert fit.samples is not None
    free = fit.samples.paths
    agg.close()
    with web_process(db) as web, browser() as page:
        page.goto(web.url)
        page.goto(f"{web.base}/fit/{fit_id}")
        assert page.locator('#corner-plot svg g[id^="pair-"]').count() == len(free) * (len(free) - 1) // 2
        image = page.locator("#images img")
        assert image.count() == 1
        page.wait_for_function("() => document.querySelector('#images img').complete")
        assert page.evaluate("document.querySelector('#images img').naturalWidth") > 0
        links = page.locator("#files a")
        assert links.count() > 0
        first = page.request.get(web.base + (links.first.get_attribute("href") or ""))
        assert first.status == 200 and first.headers["content-type"] == "application/json"
        escape = page.request.get(f"{web.base}/fitimage?id={fit_id}&path=../model.info")
        assert escape.status == 404
