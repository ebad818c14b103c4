"""The count-block entries of a batch's new fits, taken from its plan (store/blocks.py).

Its own module because it joins two that must not know each other: the plan's statements
(store/batchplan.py) and the block names (store/blocks.py, which the schema's migration imports).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Sequence
from itertools import chain
from typing import Any

from lensd.store import blocks
from lensd.store.batchplan import INSERT_FACT_SQL, INSERT_NODE_SQL, UPSERT_FIT_SQL
from lensd.store.schema import FIT_COLUMNS


def planned_entries(statements: Iterable[tuple[str, Sequence[Sequence[Any]]]], keys: Container[int],
                    signed_zero: bool = True) -> blocks.Entries:
    """``blocks.entries`` of the new fits ``keys`` taken from the batch's planned rows, not read back.

    A new fit's rows are all inserts (its ``fits`` row, facts, nodes), so what the batch stores
    for it is what the plan holds; reading it back after the batch was a third of the upkeep at
    batches of 32 (docs/performance.md). Only keys whose ``fits`` row the plan writes are
    answered; the caller reads any other back. ``signed_zero``: False for sqlite, which stores a
    REAL -0.0 as the integer 0 and gives back 0.0 (PostgreSQL keeps -0.0).
    """
    tag_at, parent_at = 1 + FIT_COLUMNS.index("unique_tag"), 1 + FIT_COLUMNS.index("parent_id")
    found: blocks.Entries = {}
    statements = list(statements)

    def rows_of(statement: str) -> Iterator[Sequence[Any]]:
        return chain.from_iterable(rows for sql, rows in statements if sql == statement)

    for row in rows_of(UPSERT_FIT_SQL):
        if row[0] in keys:
            own = found.setdefault(int(row[0]), {})
            own[blocks.FITS] = None
            if row[parent_at] is None:
                own[blocks.TOP] = None
            if row[tag_at] is not None:
                own[blocks.column_name("unique_tag", row[tag_at])] = None
    for key, kind, fact_key, num, txt, _ in rows_of(INSERT_FACT_SQL):
        held = found.get(key)
        if held is None:
            continue
        if num is not None and num == num:
            held[blocks.number_name(int(kind), fact_key)] = float(num) if signed_zero else float(num) + 0.0
        if txt is not None:
            held[blocks.text_name(int(kind), fact_key, txt)] = None
    for key, path, class_path, name in rows_of(INSERT_NODE_SQL):
        held = found.get(key)
        if held is not None:
            held[blocks.class_name("class_path", path, class_path)] = None
            held[blocks.class_name("class_name", path, name)] = None
    return found
