"""The daemon's log format, set once by whoever runs a daemon in this process (CLI or launcher)."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    """Log lines go to stderr (systemd's journal, or ``<db>.log`` for a detached daemon)."""
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
