"""The ``lensd`` command (click). Every LensdError becomes one line on stderr and its exit code.

Exit codes (SPEC §5): 0 ok, 1 user error, 2 usage (click's own, and query syntax), 3 daemon
unavailable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from lensd import settings as config
from lensd.cli.params import DatabaseParam, Minutes
from lensd.client.address import Target
from lensd.errors import LensdError, QuerySyntaxError

F = TypeVar("F", bound=Callable[..., Any])


def settings_option(option: config.StartOption) -> Callable[[F], F]:
    """The click option of one start option (``lensd.settings.Settings`` declares them)."""
    form = option.cli
    extra: dict[str, Any] = {}
    if form.kind == "flag":
        extra["is_flag"] = True
    elif form.kind == "database":
        extra["type"] = DatabaseParam()
    elif form.kind in ("file", "path", "dir"):
        extra["type"] = click.Path(dir_okay=form.kind != "file", file_okay=form.kind != "dir", path_type=Path)
        extra["multiple"] = isinstance(option.default, tuple)
    elif form.kind == "choice":
        extra["type"] = click.Choice(list(form.choices))
    elif form.kind == "float":
        extra["type"] = click.FloatRange(min=form.low)
    elif form.kind == "minutes":
        extra["type"] = Minutes()
    elif form.kind == "text":
        extra["type"] = str
        extra["multiple"] = isinstance(option.default, tuple)
    else:
        extra["type"] = click.IntRange(min=None if form.low is None else int(form.low))
    shown = form.kind in ("float", "int", "choice", "minutes") and option.default is not None
    return click.option(option.flag, option.name, default=option.default, show_default=shown,
                        help=form.help, **extra)


def settings_from(given: dict[str, Any]) -> config.Settings:
    """The settings of parsed start options (db and socket resolved from the environment)."""
    return config.Settings(**{**given, "db": config.resolve_db(given["db"]),
                              "socket": config.resolve_socket(given["socket"]), "watch": tuple(given["watch"]),
                              "listen": tuple(given["listen"])})


def start_options(command: F) -> F:
    """Every start option, in the order ``Settings`` declares them."""
    for option in reversed(list(config.start_options())):
        command = settings_option(option)(command)
    return command


_BY_NAME = {option.name: option for option in config.start_options()}
db_option = settings_option(_BY_NAME["db"])
socket_option = settings_option(_BY_NAME["socket"])


def daemon_options(command: F) -> F:
    """``--socket``, ``--address``, ``--secret-file`` and ``--tls-ca``, given to the command as one
    ``target`` (``lensd.client.address.Target``): where the daemon is and how to reach it."""
    from lensd.client.address import Target

    @wraps(command)
    def wrapper(*args: Any, socket: Path | None, address: str | None, secret_file: Path | None,
                tls_ca: Path | None, **kwargs: Any) -> Any:
        target = Target(address=address, socket=socket, secret_file=secret_file, tls_ca=tls_ca)
        return command(*args, target=target, **kwargs)

    for option in reversed((
        socket_option,
        click.option("--address", default=None, metavar="ADDRESS",
                     help="tcp://HOST:PORT, tls://HOST:PORT or a socket path [default: $LENSD_ADDRESS, "
                          "else the contact file, else the socket]."),
        click.option("--secret-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="The secret for TCP [default: $LENSD_SECRET_FILE, else ~/.lensd/secret]."),
        click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                     help="Verify the daemon's TLS certificate with this CA [default: $LENSD_TLS_CA, else the "
                          "contact file's fingerprint]."),
    )):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def reports_errors(command: F) -> F:
    """Run a command, turning LensdError into a one-line message and its exit code."""
    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except QuerySyntaxError as exc:
            click.echo(f"lensd: {exc.pointed()}", err=True)
            sys.exit(exc.exit_code)
        except LensdError as exc:
            click.echo(f"lensd: {exc}", err=True)
            sys.exit(exc.exit_code)
    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(label: str, quiet: bool) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """A bar on stderr (hidden when quiet or not a terminal) with fits per second; yields
    ``(total, advance)``: set the number of fits, count some as done."""
    import time

    started, done = time.monotonic(), [0]

    def rate(_: object) -> str | None:
        """The bar's last field: fits per second so far (click adds the count and the ETA)."""
        elapsed = time.monotonic() - started
        return f"{done[0] / elapsed:.1f} fits/s" if done[0] and elapsed > 0 else None

    with click.progressbar(length=0, label=label, file=sys.stderr, show_pos=True, show_eta=True,
                           item_show_func=rate, hidden=quiet or not sys.stderr.isatty()) as bar:
        def total(n: int) -> None:
            bar.length = n

        def advance(n: int) -> None:
            done[0] += n
            bar.update(n)

        yield total, advance


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lensd")
def main() -> None:
    """lensd: track and query many model fits through one daemon that owns one sqlite file."""
    import warnings

    from lensd.errors import LensdWarning

    def note(message: Warning | str, category: type[Warning], *rest: Any, **more: Any) -> None:
        if issubclass(category, LensdWarning):
            click.echo(f"lensd: note: {message}", err=True)  # a note on stderr, never a traceback
        else:
            shown(message, category, *rest, **more)

    shown = warnings.showwarning
    warnings.showwarning = note


@main.command()
@start_options
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@reports_errors
def start(log_level: str, **given: Any) -> None:
    """Start the daemon; refuses if another daemon holds the database."""
    from lensd.daemon.launch import start_daemon

    options = settings_from(given)
    if options.durability == "normal":
        click.echo("lensd: --durability normal: acknowledged records survive a crash of the daemon, "
                   "not a power loss", err=True)
    start_daemon(options, log_level)


@main.command()
@daemon_options
@reports_errors
def stop(target: Target) -> None:
    """Stop the daemon gracefully: commit everything queued, then exit."""
    from lensd.daemon.launch import stop_daemon

    stop_daemon(target)
    click.echo("lensd stopped")


@main.command()
@daemon_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@reports_errors
def status(target: Target, fmt: str) -> None:
    """Is the daemon up? pid, uptime, database, queue, rates, fits by status. Exit 3 when down."""
    from lensd.cli import render

    report = render.daemon_status(target)
    click.echo(json.dumps(report, indent=2, default=str) if fmt == "json" else render.format_status(report))


@main.command()
@daemon_options
@click.option("--status", "status_", type=click.Choice(["running", "completed", "failed", "lost"]),
              default=None, help="Only fits with this status.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--db", type=DatabaseParam(), default=None,
              help="Read this database directly (a sqlite file or a postgresql:// URL) instead of asking the daemon.")
@reports_errors
def jobs(target: Target, status_: str | None, limit: int, fmt: str, db: config.Database | None) -> None:
    """Fits newest first: id, unique_tag, name, status, progress, max log L, age, SLURM ids."""
    from lensd.cli import render

    rows = render.daemon_jobs(target, status_, limit) if db is None else render.database_jobs(db, status_, limit)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        click.echo(render.format_jobs(rows), nl=False)


@main.command()
@click.argument("dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@db_option
@daemon_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
@reports_errors
def ingest(dirs: Sequence[Path], db: config.Database | None, target: Target, quiet: bool) -> None:
    """Ingest PyAutoFit output folders (through the daemon when one owns the database)."""
    from lensd.ingest import run as ingesting

    with progress_bar("ingesting", quiet) as (total, advance):
        report = ingesting.ingest(dirs, config.resolve_db(db), target, progress=advance, total=total)
    skipped = f", skipped {len(report.skipped)}" if report.skipped else ""
    click.echo(f"ingested {len(report.ingested)}, unchanged {len(report.unchanged)}{skipped}, "
               f"failed {len(report.failed)} ({report.via})")
    for folder in report.skipped:
        click.echo(f"  skipped {folder.path}: {folder.reason}")
    for failure in report.failed:
        click.echo(f"  failed {failure.path}: {failure.reason}")
    if report.failed:
        sys.exit(1)


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@daemon_options
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write to this spool folder when the daemon cannot be reached.")
@reports_errors
def submit(path: Path, target: Target, spool: Path | None) -> None:
    """Send one finished PyAutoFit output folder, or a record file (.json, .lensd), to the daemon."""
    from lensd.cli import render

    for line in render.submit_path(path, target, spool):
        click.echo(line)


@main.command()
@click.argument("expression", required=False, default="")
@db_option
@daemon_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None)
@click.option("--order-by", "order_by", default=None,
              help="A column or model path; prefix with - for descending (e.g. -max_log_likelihood).")
@click.option("--all", "all_fits", is_flag=True, help="Include grid cells and sensitivity fits.")
@reports_errors
def query(expression: str, db: config.Database | None, target: Target, fmt: str, limit: int | None,
          order_by: str | None, all_fits: bool) -> None:
    """Fits matching EXPRESSION, e.g. 'model.galaxies.lens.mass.einstein_radius > 1.0 & unique_tag == "a"'."""
    from lensd.cli import export as exporting

    state = exporting.state_of(expression, limit, order_by, all_fits)
    rows = exporting.query_rows(state, db, target)
    exporting.emit(lambda out: exporting.write(rows, fmt, out, exporting.QUERY_COLUMNS))


@main.command()
@click.option("--query", "expression", default="", help="Only fits matching this expression.")
@db_option
@daemon_options
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--median", is_flag=True, help="Median PDF values instead of max likelihood.")
@click.option("--all", "all_fits", is_flag=True, help="Include grid cells and sensitivity fits.")
@reports_errors
def export(expression: str, db: config.Database | None, target: Target, fmt: str, median: bool,
           all_fits: bool) -> None:
    """A flat table: fit columns, a column per parameter path, info.<key> columns."""
    from lensd.cli import export as exporting

    rows = exporting.export_rows(exporting.state_of(expression, all_fits=all_fits), db, target, median)
    exporting.emit(lambda out: exporting.write(rows, fmt, out))


@main.command()
@click.argument("expression", required=False, default="")
@db_option
@daemon_options
@click.option("--status", "statuses", default="lost,failed", show_default=True,
              help="Comma-separated statuses whose array tasks to re-run.")
@click.option("--script", default=None, help="The batch script to resubmit [default: what the fits' "
              "job facts say, see docs/web.md].")
@click.option("--submit", "run", is_flag=True, help="Run the sbatch lines instead of printing them.")
@reports_errors
def retry(expression: str, db: config.Database | None, target: Target, statuses: str, script: str | None,
          run: bool) -> None:
    """The sbatch --array lines that re-run exactly the lost and failed array tasks (of EXPRESSION)."""
    from lensd.cli import retrying

    plan = retrying.plan(expression, [s.strip() for s in statuses.split(",") if s.strip()], db, target, script)
    for line in retrying.report(plan, run):
        click.echo(line)


@main.command()
@click.argument("expression")
@db_option
@daemon_options
@click.option("--all", "all_fits", is_flag=True, help="Include grid cells and sensitivity fits.")
@click.option("--yes", is_flag=True, help="Do not ask before deleting.")
@reports_errors
def delete(expression: str, db: config.Database | None, target: Target, all_fits: bool, yes: bool) -> None:
    """Remove the fits matching EXPRESSION (through the daemon when one owns the database)."""
    from lensd.cli import export as exporting
    from lensd.cli import manage

    source = target if target.explicit else None
    ids = [str(row["id"]) for row in exporting.query_rows(exporting.state_of(expression, all_fits=all_fits),
                                                          db, source)]
    click.echo(f"{len(ids)} fit(s) match {expression!r}")
    if not ids:
        return
    if not yes and not click.confirm(f"delete {len(ids)} fit(s)?", default=False, err=True):
        raise LensdError("nothing deleted")
    outcome = manage.write("delete", {"ids": ids}, db, target)
    click.echo(f"deleted {len(ids)} fit(s)" if outcome == "applied" else "nothing to delete (already gone)")


@main.command()
@click.argument("fit_id", metavar="ID")
@click.argument("pairs", metavar="KEY=VALUE", nargs=-1, required=True)
@db_option
@daemon_options
@reports_errors
def tag(fit_id: str, pairs: tuple[str, ...], db: config.Database | None, target: Target) -> None:
    """Set info keys of one fit (ID or a unique prefix of it); VALUE is JSON when it parses, null removes."""
    from lensd.cli import manage

    info = manage.parse_assignments(pairs)
    full = manage.resolve_id(fit_id, db, target)
    outcome = manage.write("tag", {"id": full, "info": info}, db, target)
    click.echo(f"{outcome} {full}")


@main.command()
@click.option("--bind", default="127.0.0.1:8321", show_default=True,
              help="HOST:PORT to serve on; a non-loopback address needs TLS or --insecure-bind.")
@db_option
@click.option("--address", default=None, help="Ask this daemon (tcp://HOST:PORT or a socket path) where "
              "its database is, "
              "and read that [default: --db].")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Serve HTTPS with this certificate (with --tls-key).")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The certificate's private key.")
@click.option("--insecure-bind", is_flag=True, help="Allow a non-loopback address without TLS.")
@reports_errors
def web(bind: str, db: config.Database | None, address: str | None, tls_cert: Path | None, tls_key: Path | None,
        insecure_bind: bool) -> None:
    """The read-only web dashboard: overview, fits, one fit, plots across fits (docs/web.md)."""
    try:
        from lensd.web import serve
    except ImportError as exc:
        raise LensdError(f"the dashboard needs the web extra: pip install 'lensd[web]' ({exc.name} is missing)") \
            from None
    if db is not None and address is not None:
        raise LensdError("give --db or --address, not both")
    path = serve.database_of(address) if address is not None else config.resolve_db(db)
    serve.run(path, serve.WebOptions(bind, tls_cert, tls_key, insecure_bind))


@main.command()
@click.option("--from", "source", required=True, metavar="DB", help="The database to copy: a sqlite file or a "
              "postgresql:// URL.")
@click.option("--to", "target", required=True, metavar="DB", help="An empty database to copy into (made when "
              "missing; a sqlite file or a postgresql:// URL).")
@click.option("--chunk", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Fits a transaction; an interrupted run resumes after the last whole chunk.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@reports_errors
def migrate(source: str, target: str, chunk: int, quiet: bool) -> None:
    """Copy a database between sqlite and PostgreSQL: same ids, keys, values and bytes; resumable."""
    from lensd.store import migrate as migrating
    from lensd.store.pgstore import redact

    with progress_bar("migrating", quiet) as (total, advance):
        report = migrating.migrate(source, target, chunk, total=total, progress=advance)
    resumed = f", {report.resumed} of them copied before (resumed)" if report.resumed else ""
    click.echo(f"migrated {report.fits} fits from {redact(source)} to {redact(target)}{resumed} "
               f"in {report.seconds:.1f} s")
