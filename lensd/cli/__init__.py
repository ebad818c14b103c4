"""The ``lensd`` command: click commands, their rendering, and ``lensd query``/``export`` output."""

from lensd.cli.commands import main

__all__ = ["main"]
