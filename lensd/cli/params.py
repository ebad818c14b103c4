"""Option value types of the CLI that click does not have."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lensd import settings as config


class Minutes(click.ParamType[float]):
    """A number of minutes (fractions allowed), ``off`` or ``0`` for never."""

    name = "minutes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            minutes = float(value)
        elif str(value).strip().lower() in ("off", "never", "no"):
            return 0.0
        else:
            try:
                minutes = float(str(value))
            except ValueError:
                self.fail(f"{value!r} is not a number of minutes (or off)", param, ctx)
        if not 0 <= minutes < float("inf"):
            self.fail(f"{value!r} is not a number of minutes (or off)", param, ctx)
        return minutes


class DatabaseParam(click.ParamType[config.Database, Any]):
    """``--db``: a sqlite file's path, or a ``postgresql://`` URL kept as written."""

    name = "database"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> config.Database:
        return value if isinstance(value, Path) else config.database(value)
