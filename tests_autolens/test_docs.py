"""docs/pyautolens.md runs as written: its bash block, then its python blocks in order, in one
namespace, in a folder holding a copy of the fixture output (as a user's ``output/``)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "pyautolens.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", flags=re.S | re.M)


def blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(PAGE.read_text()) if lang == kind]


def test_the_page_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT / "tests" / "fixtures" / "autolens" / "output", tmp_path / "output",
                    copy_function=shutil.copyfile)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "general.yaml").write_text(
        "version:\n  python_version_check: False\n  workspace_version_check: False\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    shell = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(blocks("bash"))], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300)
    assert shell.returncode == 0, shell.stdout + shell.stderr
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    printed = io.StringIO()
    python = blocks("python")
    assert len(python) >= 8
    with contextlib.redirect_stdout(printed):
        for number, body in enumerate(python, 1):
            try:
                exec(compile(body, f"docs/pyautolens.md python block {number}", "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"block {number} failed: {type(exc).__name__}: {exc}\n{body}") from exc
    out = printed.getvalue()
    assert "fits: 6" in out
    assert "Isothermal: 3" in out and "disk is None: 5" in out
    assert "best cell:" in out
