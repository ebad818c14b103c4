"""The writer for a database: sqlite's ``BatchWriter`` for a file, ``PgBatchWriter`` for a URL."""

from __future__ import annotations

from pathlib import Path

from lensd.settings import Database
from lensd.store.writer import BatchWriter, Writer


async def open_writer(db: Database, durability: str = "full", max_db_mb: int | None = None) -> Writer:
    """The writer of ``db``, its schema created or migrated (``max_db_mb`` is sqlite's quota)."""
    if isinstance(db, Path):
        return await BatchWriter.open(db, durability, max_db_mb)
    from lensd.store.pgwriter import PgBatchWriter

    return await PgBatchWriter.open(db, durability)
