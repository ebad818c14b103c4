"""The seam between lensd's SQL and the engine that runs it: sqlite, or PostgreSQL.

lensd writes each statement once, in one SQL with ``?`` placeholders; what differs between the
engines is a handful of spellings, and a ``Dialect`` holds exactly those. The compiler asks it for
them while it builds a statement, and the code that runs a statement passes the text through
``Dialect.sql`` (PostgreSQL's driver, psycopg, wants ``%s``). Values are never part of the text
in either dialect: they stay parameters.

Why so few differences: lensd stores JSON as text and payloads as bytes, and declares every text
column with byte-wise ordering on PostgreSQL (``COLLATE "C"``, like sqlite's BINARY), so that
comparisons, ``contains`` and ordering of strings mean the same on both (schema.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Dialect:
    """The spellings that differ between the SQL engines lensd runs on."""

    name: str
    false: str  # a condition that is always false
    contains: str  # "{}" holds the column, "?" the string looked for, case-sensitive and literal
    is_not: str  # null-safe inequality
    no_limit: int | None  # the LIMIT parameter that means "no limit"
    subquery_alias: str  # what must follow a subquery in FROM
    # The ordering key of a fact: numbers before strings (sqlite's type order), NULL when the fit
    # has no number or string for the key. "{}" is the facts lookup condition.
    fact_order: str
    placeholder: str
    truth: str = "({})"  # a condition as the number 1 or 0 (sqlite's booleans are those numbers)
    # What ends a probe's subquery (``EXISTS (SELECT 1 ... WHERE fit_key = f.fit_key ...)``) so that
    # the engine runs it as one index seek per fit, stopping with the page. PostgreSQL otherwise
    # turns it into a hashed subplan that reads every match of the leaf before the first row (26 ms
    # against 2.2 ms for the first page of a 50 % leaf at 10^5 fits); OFFSET 0 keeps it correlated.
    probe_fence: str = ""
    # A blob column, fetched only when its length is at most the ``?`` parameter; else its length
    # (sqlite: length() of a blob reads no content) or, on PostgreSQL (one type per column), NULL.
    bounded_blob: str = "CASE WHEN length({0}) > ? THEN length({0}) ELSE {0} END"

    def sql(self, text: str) -> str:
        """``text`` with the driver's placeholder in place of ``?``.

        lensd's SQL text is only ever its own constants, so it holds no ``?`` or ``%`` other than
        placeholders; PostgreSQL's driver reads ``%`` as the start of one, so it is doubled.
        """
        if self.placeholder == "?":
            return text
        return text.replace("%", "%%").replace("?", self.placeholder)


SQLITE: Final = Dialect(
    name="sqlite", false="0", contains="instr({}, ?) > 0", is_not="IS NOT", no_limit=-1, subquery_alias="",
    fact_order="(SELECT coalesce(num, txt) FROM facts WHERE fit_key = f.fit_key AND {})", placeholder="?",
)
# A row sorts by its fields in turn, so (num IS NULL, num, txt) puts numbers before strings both
# ways round, as sqlite's coalesce(num, txt) does; facts holding neither (lists, None, NaN) give no
# row, so they sort with the fits that lack the key.
POSTGRESQL: Final = Dialect(
    name="postgresql", false="FALSE", contains="strpos({}, ?) > 0", is_not="IS DISTINCT FROM", no_limit=None,
    subquery_alias=" AS sub",
    fact_order=("(SELECT ROW(num IS NULL, num, txt) FROM facts WHERE fit_key = f.fit_key AND {} "
                "AND (num IS NOT NULL OR txt IS NOT NULL))"),
    placeholder="%s", truth="({})::integer",
    probe_fence=" OFFSET 0",
    bounded_blob="CASE WHEN length({0}) > ? THEN NULL ELSE {0} END",
)
DIALECTS: Final = {SQLITE.name: SQLITE, POSTGRESQL.name: POSTGRESQL}
