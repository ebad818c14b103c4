"""What the CLI commands compute, kept apart from click so it can be tested and reused.

Tables are plain aligned text (``table``); ``lensd query`` and ``lensd export`` live in export.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from lensd.client.address import Target, TargetLike
from lensd.errors import InvalidRecord, LensdError
from lensd.settings import Database
from lensd.store.flatrows import cell_text

JOB_COLUMNS: Final = ("id", "unique_tag", "name", "status", "progress", "max_log_likelihood", "age",
                      "seen", "slurm")


def daemon_status(target: TargetLike) -> dict[str, Any]:
    from lensd.client.blocking import BlockingClient

    with BlockingClient(target) as client:
        return dict(client.request("status")["status"])


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_status(report: dict[str, Any]) -> str:
    by_status = report.get("fits_by_status") or {}
    lines = [
        f"lensd {report.get('version', '')} up {_duration(report.get('uptime'))}, pid {report.get('pid')}",
        f"database   {report.get('database')} ({_size(float(report.get('database_bytes') or 0))}, "
        f"durability {report.get('durability')})",
        f"socket     {report.get('socket')} ({report.get('connections')} connections"
        + (f", {report['held_back']} held back by flow control)" if report.get("held_back")
           else ")"),
        *([f"tcp        {', '.join(report['tcp'])}{' (TLS)' if report.get('tls') else ''}"]
          if report.get("tcp") else []),
        f"queue      {report.get('queue_depth')} waiting, mean batch {report.get('mean_batch', 0):.1f}, "
        f"{report.get('records_per_s', 0):.1f} records/s over the last minute",
        "fits       " + (", ".join(f"{k} {v}" for k, v in sorted(by_status.items())) or "none"),
        "watching   " + (", ".join(report.get("watched") or []) or "nothing"),
    ]
    if report.get("spool"):
        lines.append(f"spool      {report['spool']} ({report.get('spool_backlog', 0)} waiting)")
    if report.get("backup"):
        lines.append("backup     " + _backup_line(report["backup"]))
    return "\n".join(lines)


def _backup_line(backup: dict[str, Any]) -> str:
    """When and where the daemon last copied its database (what losing its node would lose)."""
    if not backup.get("every_minutes"):
        return "off: losing this node loses the database (lensd start --backup-every)"
    line = f"every {backup['every_minutes']:g} min to {backup.get('to')}; "
    last = backup.get("last_at")
    if last is None:
        line += "none yet"
    else:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last))
        line += (f"last {stamp} ({_duration(time.time() - last)} ago, "
                 f"{_size(float(backup.get('last_bytes') or 0))} in {backup.get('last_seconds', 0):.1f}s)")
    if backup.get("error"):
        line += f"; last attempt failed: {backup['error']}"
    return line


def database_jobs(db: Database, status: str | None, limit: int) -> list[dict[str, Any]]:
    """``lensd jobs --db``: the daemon's jobs rows, read from the database itself (either engine)."""
    from lensd.daemon.reads import job_dict, jobs_sql
    from lensd.store.sources import open_source

    sql, params = jobs_sql({"status": status, "limit": limit})
    source = open_source(db)
    try:
        return [job_dict(tuple(row)) for row in source.stream(sql, params)]
    finally:
        source.close()


def daemon_jobs(target: TargetLike, status: str | None, limit: int) -> list[dict[str, Any]]:
    from lensd.client.blocking import BlockingClient

    fields: dict[str, Any] = {"limit": limit}
    if status:
        fields["status"] = status
    with BlockingClient(target) as client:
        return [dict(row) for row in client.stream("jobs", **fields)]


def _slurm(job: dict[str, Any]) -> str:
    """``<array job>_<task>`` as SLURM prints array tasks, else the job id."""
    array = job.get("SLURM_ARRAY_JOB_ID")
    if array:
        task = job.get("SLURM_ARRAY_TASK_ID")
        return f"{array}_{task}" if task not in (None, "") else str(array)
    return str(job.get("SLURM_JOB_ID") or "")


def _job_row(row: dict[str, Any], now: float) -> dict[str, Any]:
    progress, n_samples, max_ll = row.get("progress"), row.get("n_samples"), row.get("max_log_likelihood")
    shown = [f"{progress:.0%}"] if isinstance(progress, (int, float)) else []
    if n_samples:
        shown.append(f"{n_samples} samples")
    error = str(row.get("error") or "").strip().splitlines()
    return {"id": row["id"], "unique_tag": row.get("unique_tag") or "", "name": row.get("name") or "",
            "status": row["status"], "progress": " ".join(shown),
            "max_log_likelihood": "" if max_ll is None else f"{max_ll:.6g}",
            "age": _duration(now - row["created_at"]) if row.get("created_at") else "",
            "seen": _duration(now - row["last_event_at"]) if row.get("last_event_at") else "",
            "slurm": _slurm(row.get("job") or {}), "error": error[0] if error else ""}


SHORT_ID: Final = 8  # the shortest id prefix shown; lensd tag and co. take any unique prefix
JOBS_WIDTH: Final = 80
SHRINKABLE: Final = ("unique_tag", "name", "slurm", "progress")  # never the id: it is what you type
MIN_CELL: Final = 5
HEADINGS: Final = {"max_log_likelihood": "max_log_L"}


def short_ids(ids: Sequence[str]) -> dict[str, str]:
    """Each id cut to the shortest prefix (at least SHORT_ID long) no other shown id starts with."""
    ordered = sorted(set(ids))
    short = {}
    for i, fit_id in enumerate(ordered):
        neighbours = [n for n in (ordered[i - 1] if i else None, ordered[i + 1] if i + 1 < len(ordered) else None) if n]
        common = max((len(_common_prefix(fit_id, n)) for n in neighbours), default=0)
        short[fit_id] = fit_id[:max(SHORT_ID, common + 1)]
    return short


def _common_prefix(a: str, b: str) -> str:
    size = 0
    while size < min(len(a), len(b)) and a[size] == b[size]:
        size += 1
    return a[:size]


def format_jobs(rows: list[dict[str, Any]], width: int = JOBS_WIDTH) -> str:
    """The aligned ``lensd jobs`` table, ``width`` columns wide: ids as unique prefixes, the
    expendable columns shortened (with …) until it fits; an ``error`` column (last, never
    shortened) when a fit failed."""
    now = time.time()
    shown = [_job_row(row, now) for row in rows]
    if not shown:
        return "no fits\n"
    prefixes = short_ids([r["id"] for r in shown])
    for row in shown:
        row["id"] = prefixes[row["id"]]
    for row in shown:
        row["max_log_L"] = row.pop("max_log_likelihood")  # "max log L", SPEC §5's name, as one word
    columns = [HEADINGS.get(c, c) for c in JOB_COLUMNS]
    columns += ["error"] if any(r["error"] for r in shown) else []
    return table(shown, columns, full=("error",), width=width, shrinkable=SHRINKABLE)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
          full: Sequence[str] = (), width: int | None = None, shrinkable: Sequence[str] = ()) -> str:
    """An aligned text table (long cells are shortened to keep it readable, except ``full`` columns).

    With ``width``, the ``shrinkable`` columns give up characters, the widest first, until the
    table without its ``full`` columns fits (a cell cut short ends in …).
    """
    columns = list(columns or dict.fromkeys(c for row in rows for c in row))
    cells = [[cell_text(row.get(c)) for c in columns] for row in rows]
    cells = [[c if len(c) <= 40 or name in full else c[:37] + "..." for c, name in zip(line, columns, strict=True)]
             for line in cells]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]
    if width is not None:
        fixed = [i for i, name in enumerate(columns) if name not in full]
        excess = sum(widths[i] for i in fixed) + 2 * (len(fixed) - 1) - width
        for name in shrinkable:  # the most expendable column first, down to MIN_CELL, then the next
            if excess <= 0 or name not in columns:
                continue
            i = columns.index(name)
            cut = min(excess, max(widths[i] - MIN_CELL, 0))
            widths[i] -= cut
            excess -= cut
        columns = [c if len(c) <= w else c[:w - 1] + "…" for c, w in zip(columns, widths, strict=True)]
        cells = [[c if len(c) <= w else c[:w - 1] + "…" for c, w in zip(line, widths, strict=True)]
                 for line in cells]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    return "\n".join(out) + "\n"


def submit_path(path: Path, target: Target, spool: Path | None) -> Iterator[str]:
    """Send a PyAutoFit folder (every fit in it) or a record file to the daemon."""
    from lensd.client.delivery import submit_blocking
    from lensd.ingest import pyautofit
    from lensd.wire import spoolfile as spooling

    records: list[dict[str, Any]] = []
    if path.is_dir():
        for item in pyautofit.scan([path], plain=True):  # arrays without numpy: sent, not used here
            if isinstance(item, pyautofit.FolderFailure):
                raise LensdError(f"{item.path}: {item.reason}")
            records += pyautofit.fit_records(item)  # as read: the daemon validates what it receives
        if not records:
            raise LensdError(f"no PyAutoFit fit in {path}")
    elif path.suffix == ".json":
        from lensd.domain.records import validate_record

        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise LensdError(f"{path}: not a JSON record: {exc}") from None
        records = loaded if isinstance(loaded, list) else [loaded]
        for index, record in enumerate(records):  # refused here, in one line, before any is sent
            if not isinstance(record, dict):
                raise InvalidRecord(f"{path}: a record is a JSON object, not {type(record).__name__}")
            try:
                validate_record(record)
            except InvalidRecord as exc:
                where = f" (record {index})" if len(records) > 1 else ""
                raise InvalidRecord(f"{path}{where}: {exc}") from None
    elif path.suffix == spooling.SUFFIX:
        op, fields = spooling.read(path)
        records = [fields["record"]] if "record" in fields else []
        if not records:
            raise LensdError(f"{path} holds a {op} event, not a whole record")
    else:
        raise LensdError(f"{path}: give a PyAutoFit output folder, a .json record or a .lensd file")
    for record, outcome in zip(records, submit_blocking(records, target, spool), strict=False):
        yield f"{outcome} {record.get('id') or ''}".rstrip()
