"""What a job or a CLI command imports before it does anything (docs/performance.md: start-up).

The start-up figures themselves are measured by bench/startup.py; these tests hold the structure
that makes them small: ``import lensd``, the status path of the CLI and ``lensd submit`` of a
folder load neither numpy nor the store nor asyncio, and the public names still resolve, lazily, to the same objects.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import lensd

HEAVY = ("numpy", "sqlite3", "lensd.store.reader", "lensd.query.compiler", "lensd.aggregator", "asyncio")


def _loaded_after(code: str) -> set[str]:
    """Which of HEAVY a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_lensd_loads_nothing_heavy() -> None:
    assert _loaded_after("import lensd") == set()


def test_lensd_status_answers_over_the_blocking_client(daemon) -> None:  # type: ignore[no-untyped-def]
    from lensd.cli import render

    report = render.daemon_status(daemon.socket)
    assert report["pid"] == daemon.process.pid
    assert render.daemon_jobs(daemon.socket, None, 10) == []


def test_the_cli_status_path_loads_nothing_heavy() -> None:
    # status and jobs ask one question over a blocking socket: no event loop to import
    assert _loaded_after("import lensd.cli.commands, lensd.cli.render, lensd.client.blocking") == set()


def test_lensd_submit_of_a_folder_loads_nothing_heavy(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A folder is parsed without numpy and sent over the blocking client: no event loop either."""
    from lensd.demo.synthetic import write_fit

    write_fit(tmp_path / "tree", 0, 50)
    code = ("import contextlib, io, sys\nfrom lensd.cli.commands import main\n"
            f"sys.argv = ['lensd', 'submit', {str(tmp_path / 'tree')!r}, '--socket', {str(daemon.socket)!r}]\n"
            "out = io.StringIO()\n"
            "try:\n    with contextlib.redirect_stdout(out):\n        main()\n"
            "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
            "assert out.getvalue().startswith('applied '), out.getvalue()\n")
    assert _loaded_after(code) == set()
    assert len(lensd.Aggregator.from_database(daemon.db)) == 1


def test_public_names_resolve_to_their_modules_objects() -> None:
    from lensd.aggregator import Aggregator
    from lensd.client.sync import connect_sync
    from lensd.store.reader import Fit

    assert lensd.Aggregator is Aggregator and lensd.Fit is Fit and lensd.connect_sync is connect_sync
    for name in lensd.__all__:
        assert getattr(lensd, name) is not None
        assert name in dir(lensd)
    assert lensd.Fit.__module__ == "lensd" and lensd.Samples.__module__ == "lensd"
    assert "numpy" in _loaded_after("import lensd; lensd.Samples")


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        lensd.NoSuchThing  # noqa: B018
