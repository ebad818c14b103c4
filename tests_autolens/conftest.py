"""The trusted bridge against real PyAutoLens: run by ``make test-autolens`` in .venv-autolens.

These tests import autolens and autofit, which the project's .venv never has; pytest's default
``testpaths`` (tests/) never collects them. Each session ingests the fixture folders into a real
lensd database and opens PyAutoFit's own aggregator on a copy of the same folders (PyAutoFit
unzips zip-only fits in place; the fixture tree stays untouched).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AUTOLENS = ROOT / "tests" / "fixtures" / "autolens"
os.environ.setdefault("PYAUTO_SKIP_WORKSPACE_VERSION_CHECK", "1")
warnings.filterwarnings("ignore")


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with PyAutoFit's quiet config and a writable copy of the fixture output."""
    base = tmp_path_factory.mktemp("autolens")
    (base / "config").mkdir()
    (base / "config" / "general.yaml").write_text(
        "version:\n  python_version_check: False\n  workspace_version_check: False\n")
    shutil.copytree(AUTOLENS / "output", base / "output", copy_function=shutil.copyfile)
    return base


@pytest.fixture(scope="session")
def db(workspace: Path) -> Path:
    path = workspace / "lensd.sqlite"
    result = subprocess.run([sys.executable, "-m", "lensd", "ingest", str(AUTOLENS / "output"), "--db", str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def lensd_agg(db: Path) -> Iterator[object]:
    import lensd

    agg = lensd.Aggregator.from_database(db)
    yield agg
    agg.close()


@pytest.fixture(scope="session")
def pyautofit_agg(workspace: Path) -> object:
    """PyAutoFit's own directory aggregator on the same folders (the results tutorials' way)."""
    from autofit.aggregator.aggregator import Aggregator

    return Aggregator.from_directory(directory=workspace / "output")
