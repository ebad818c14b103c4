"""The ``lensd`` command (click). Every LensdError becomes one line on stderr and its exit code.

Exit codes (SPEC §5): 0 ok, 1 user error, 2 usage (click's own, and query syntax), 3 daemon
unavailable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from lensd import settings as config
from lensd.errors import LensdError, QuerySyntaxError

F = TypeVar("F", bound=Callable[..., Any])

db_option = click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), default=None,
                         help="Database file [default: $LENSD_DB, else ./lensd.sqlite].")
socket_option = click.option("--socket", "socket", type=click.Path(path_type=Path), default=None,
                             help="Daemon socket [default: $LENSD_SOCKET, else $XDG_RUNTIME_DIR/lensd.sock].")


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lensd")
def main() -> None:
    """lensd: track and query many model fits through one daemon that owns one sqlite file."""


@main.command()
@db_option
@socket_option
@click.option("--watch", "watch", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Watch this PyAutoFit output folder (repeatable).")
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Ingest and delete record files that clients drop in this folder.")
@click.option("--poll", is_flag=True, help="Poll watched folders (automatic on network file systems).")
@click.option("--poll-interval", type=click.FloatRange(min=0.05), default=2.0, show_default=True,
              help="Seconds between polls.")
@click.option("--lost-after", type=click.FloatRange(min=0.1), default=config.DEFAULT_LOST_AFTER,
              show_default=True, help="Seconds without an event before a running fit is lost.")
@click.option("--durability", type=click.Choice(["full", "normal"]), default="full", show_default=True,
              help="full: acknowledged records survive power loss; normal: they survive a crash.")
@click.option("--batch-max", type=click.IntRange(min=1), default=512, show_default=True,
              help="Most writes committed in one transaction.")
@click.option("--batch-ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Longest wait for more writes before a commit.")
@click.option("--max-connections", type=click.IntRange(min=1), default=512, show_default=True,
              help="Most client connections at once; more are refused with a 'busy' error.")
@click.option("--handshake-timeout", type=click.FloatRange(min=0.01), default=10.0, show_default=True,
              help="Seconds a new connection has to say hello before it is closed.")
@click.option("--max-db-mb", type=click.IntRange(min=1), default=None,
              help="Quota guard: writes that would grow the database past this many MiB fail "
                   "with a 'full' error (no limit by default).")
@click.option("--foreground", is_flag=True, help="Stay attached, log to stderr (systemd, SLURM).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@reports_errors
def start(db: Path | None, socket: Path | None, watch: Sequence[Path], spool: Path | None, poll: bool,
          poll_interval: float, lost_after: float, durability: str, batch_max: int, batch_ms: float,
          max_connections: int, handshake_timeout: float, max_db_mb: int | None, foreground: bool,
          log_level: str) -> None:
    """Start the daemon; refuses if another daemon holds the database."""
    from lensd.daemon.launch import start_daemon

    options = config.Settings(
        db=config.resolve_db(db), socket=config.resolve_socket(socket), watch=tuple(watch), spool=spool,
        poll=poll, poll_interval=poll_interval, lost_after=lost_after, durability=durability,
        batch_max=batch_max, batch_ms=batch_ms, max_connections=max_connections,
        handshake_timeout=handshake_timeout, max_db_mb=max_db_mb, foreground=foreground,
    )
    if durability == "normal":
        click.echo("lensd: --durability normal: acknowledged records survive a crash of the daemon, "
                   "not a power loss", err=True)
    start_daemon(options, log_level)


@main.command()
@socket_option
@reports_errors
def stop(socket: Path | None) -> None:
    """Stop the daemon gracefully: commit everything queued, then exit."""
    from lensd.daemon.launch import stop_daemon

    stop_daemon(config.resolve_socket(socket))
    click.echo("lensd stopped")


@main.command()
@socket_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@reports_errors
def status(socket: Path | None, fmt: str) -> None:
    """Is the daemon up? pid, uptime, database, queue, rates, fits by status. Exit 3 when down."""
    from lensd.cli import render

    report = render.daemon_status(config.resolve_socket(socket))
    click.echo(json.dumps(report, indent=2, default=str) if fmt == "json" else render.format_status(report))


@main.command()
@socket_option
@click.option("--status", "status_", type=click.Choice(["running", "completed", "failed", "lost"]),
              default=None, help="Only fits with this status.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@reports_errors
def jobs(socket: Path | None, status_: str | None, limit: int, fmt: str) -> None:
    """Fits newest first: id, unique_tag, name, status, progress, max log L, age, SLURM ids."""
    from lensd.cli import render

    rows = render.daemon_jobs(config.resolve_socket(socket), status_, limit)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        click.echo(render.format_jobs(rows), nl=False)


@main.command()
@click.argument("dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@db_option
@socket_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@reports_errors
def ingest(dirs: Sequence[Path], db: Path | None, socket: Path | None, quiet: bool) -> None:
    """Ingest PyAutoFit output folders (through the daemon when one owns the database)."""
    from lensd.ingest import run as ingesting

    with click.progressbar(length=0, label="ingesting", file=sys.stderr,
                           hidden=quiet or not sys.stderr.isatty()) as bar:
        def total(n: int) -> None:
            bar.length = n

        report = ingesting.ingest(dirs, config.resolve_db(db), socket, progress=bar.update, total=total)
    click.echo(f"ingested {len(report.ingested)}, unchanged {len(report.unchanged)}, "
               f"failed {len(report.failed)} ({report.via})")
    for failure in report.failed:
        click.echo(f"  failed {failure.path}: {failure.reason}")
    if report.failed:
        sys.exit(1)


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@socket_option
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write to this spool folder when the daemon cannot be reached.")
@reports_errors
def submit(path: Path, socket: Path | None, spool: Path | None) -> None:
    """Send one finished PyAutoFit output folder, or a record file (.json, .lensd), to the daemon."""
    from lensd.cli import render

    for line in render.submit_path(path, config.resolve_socket(socket), spool):
        click.echo(line)


@main.command()
@click.argument("expression", required=False, default="")
@db_option
@socket_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None)
@click.option("--order-by", "order_by", default=None,
              help="A column or model path; prefix with - for descending (e.g. -max_log_likelihood).")
@click.option("--all", "all_fits", is_flag=True, help="Include grid cells and sensitivity fits.")
@reports_errors
def query(expression: str, db: Path | None, socket: Path | None, fmt: str, limit: int | None,
          order_by: str | None, all_fits: bool) -> None:
    """Fits matching EXPRESSION, e.g. 'model.galaxies.lens.mass.einstein_radius > 1.0 & unique_tag == "a"'."""
    from lensd.cli import export as exporting

    state = exporting.state_of(expression, limit, order_by, all_fits)
    rows = exporting.query_rows(state, db, socket)
    exporting.emit(lambda out: exporting.write(rows, fmt, out, exporting.QUERY_COLUMNS))


@main.command()
@click.option("--query", "expression", default="", help="Only fits matching this expression.")
@db_option
@socket_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--median", is_flag=True, help="Median PDF values instead of max likelihood.")
@click.option("--all", "all_fits", is_flag=True, help="Include grid cells and sensitivity fits.")
@reports_errors
def export(expression: str, db: Path | None, socket: Path | None, fmt: str, median: bool,
           all_fits: bool) -> None:
    """A flat table: fit columns, a column per parameter path, info.<key> columns."""
    from lensd.cli import export as exporting

    rows = exporting.export_rows(exporting.state_of(expression, all_fits=all_fits), db, socket, median)
    exporting.emit(lambda out: exporting.write(rows, fmt, out))


@main.command()
@click.argument("expression", required=False, default="")
@db_option
@socket_option
@click.option("--status", "statuses", default="lost,failed", show_default=True,
              help="Comma-separated statuses whose array tasks to re-run.")
@click.option("--script", default=None, help="The batch script to resubmit [default: what the fits' "
              "job facts say, see docs/web.md].")
@click.option("--submit", "run", is_flag=True, help="Run the sbatch lines instead of printing them.")
@reports_errors
def retry(expression: str, db: Path | None, socket: Path | None, statuses: str, script: str | None,
          run: bool) -> None:
    """The sbatch --array lines that re-run exactly the lost and failed array tasks (of EXPRESSION)."""
    from lensd.cli import retrying

    plan = retrying.plan(expression, [s.strip() for s in statuses.split(",") if s.strip()], db, socket, script)
    for line in retrying.report(plan, run):
        click.echo(line)
