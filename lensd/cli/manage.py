"""``lensd delete`` and ``lensd tag``: change stored fits, always through the single writer.

When a daemon owns the database (it holds ``<db>.lock``), the change is sent to it as a ``delete``
or ``tag`` op and is committed in its writer's next batch; otherwise this process takes the writer
lock itself and commits with a ``BatchWriter``, as ``lensd ingest`` does. There is never a second
writer of a sqlite file. A PostgreSQL database takes several writers: this process writes it
itself, unless --socket or --address names a daemon.
Both are idempotent (a second run answers ``duplicate``) and logged by whoever writes.

A fit id may be given as a unique prefix (``lensd jobs`` shows short ids), here and wherever an id
is accepted on the command line: ``resolve_id`` is the one rule.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from lensd import settings
from lensd.client.address import Target
from lensd.errors import AlreadyRunning, InvalidRecord, LensdError
from lensd.query.state import QueryState
from lensd.store import writerlock

PREFIX_END = "\U0010ffff"  # above every character: [prefix, prefix + PREFIX_END) holds the ids it starts


def _ids(state: QueryState, db: settings.Database | None, target: Target) -> list[str]:
    from lensd.cli import export as exporting

    return [str(row["id"]) for row in exporting.query_rows(state, db, target if target.explicit else None)]


def resolve_id(given: str, db: settings.Database | None, target: Target) -> str:
    """The fit id ``given`` names: itself, or the one id it is a unique prefix of."""
    from lensd.query.fields import QueryFields

    fields = QueryFields()
    exact = _ids(QueryState(predicate=fields.id == given, top_level_only=False), db, target)
    if exact:
        return exact[0]
    prefixed = QueryState(predicate=(fields.id >= given) & (fields.id < given + PREFIX_END),
                          top_level_only=False, limit=11)
    found = _ids(prefixed, db, target)
    if not found:
        raise LensdError(f"no fit has an id starting with {given!r}")
    if len(found) > 1:
        shown = ", ".join(found[:10]) + (", ..." if len(found) > 10 else "")
        raise LensdError(f"{given!r} starts {len(found) if len(found) <= 10 else 'more than 10'} fit ids "
                         f"({shown}): give more of it")
    return found[0]


def parse_assignments(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as info entries: VALUE is JSON when it parses (``3``, ``true``, ``null``
    removes the key, ``"x"``), else the text itself."""
    info: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise InvalidRecord(f"{pair!r}: write KEY=VALUE (VALUE may be JSON: 3, true, null, \"text\")")
        try:
            info[key] = json.loads(text)
        except ValueError:
            info[key] = text
    return info


def write(op: str, fields: dict[str, Any], db: settings.Database | None, target: Target) -> str:
    """Commit one admin op through the single writer; its outcome ("applied" or "duplicate")."""
    if target.explicit:
        return _through_daemon(target, op, fields)
    path = settings.resolve_db(db)
    if isinstance(path, str):  # PostgreSQL takes several writers (pgwriter.py): this process is one
        return anyio.run(_direct, path, op, fields, backend="asyncio")
    if not path.exists():
        raise LensdError(f"no database at {path}")
    try:
        lock = writerlock.acquire(path)
    except AlreadyRunning:
        holder = writerlock.read_holder(path)
        if holder is None or not holder.socket:
            raise
        return _through_daemon(Target(socket=Path(holder.socket)), op, fields)
    try:
        return anyio.run(_direct, path, op, fields, backend="asyncio")
    finally:
        writerlock.release(lock, path)


async def _direct(path: settings.Database, op: str, fields: dict[str, Any]) -> str:
    import logging

    from lensd.store.writeops import admin_from_request
    from lensd.store.writers import open_writer

    logging.getLogger("lensd").info("%s through this process's writer (no daemon owns %s)", op,
                                    settings.shown(path))
    writer = await open_writer(path)
    try:
        outcome = (await writer.apply([admin_from_request(op, fields)]))[0]
    finally:
        await writer.close()
    if isinstance(outcome, LensdError):
        raise outcome
    return outcome


def _through_daemon(target: Target, op: str, fields: dict[str, Any]) -> str:
    from lensd.client.blocking import BlockingClient

    with BlockingClient(target) as client:
        return str(client.request(op, **fields).get("outcome", "applied"))
