"""Other system users for attack tests: created by the test setup, switched to with ``setpriv``.

CI runs the suite as root, so a test can make real users (``useradd --system``) and run an
attacker, or a daemon that is not root, as one of them. Where that is impossible (not root, no
``setpriv``), ``can_switch`` is False and the tests show the same by permission bits instead.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ATTACKER = "lensd-attacker"
RUNNER = "lensd-runner"  # a daemon that is not root: root would bypass every permission check


def can_switch() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None and shutil.which("useradd") is not None


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    def command(self, *argv: str) -> list[str]:
        """``argv`` run as this user (no supplementary groups)."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", *argv]

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*argv), capture_output=True, text=True, timeout=timeout)

    def interpreter(self) -> list[str]:
        """A Python this user can run that imports lensd and the tests' helpers.

        The test's own interpreter may sit under a home others cannot enter (pyenv in /root):
        then a system python of the same version with this environment's packages on its path.
        """
        paths = [str(Path(__file__).parent), str(Path(__file__).parent.parent),
                 *(p for p in sys.path if p.endswith("site-packages"))]
        _traversable(paths)
        env = ["env", f"PYTHONPATH={os.pathsep.join(paths)}"]
        version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        for candidate in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
            if candidate and self.run(*env, candidate, "-c", "import lensd").returncode == 0:
                return [*env, candidate]
        raise RuntimeError(f"no Python that {self.name} can run imports lensd")

    def python(self, code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.run(*self.interpreter(), "-c", code, *args, timeout=timeout)

    def can(self, path: Path, mode: str) -> bool:
        """Whether this user may open ``path`` for ``r`` or ``w`` (really tried, as that user)."""
        flag = {"r": "-r", "w": "-w", "x": "-x"}[mode]
        return self.run("test", flag, str(path)).returncode == 0


def system_user(name: str) -> User:
    """The system user ``name``, created (no home, no login) if it does not exist yet."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       capture_output=True, check=False)
        entry = pwd.getpwnam(name)
    return User(name, entry.pw_uid, entry.pw_gid)


def open_up(path: Path) -> None:
    """Let other users pass through ``path`` and its parents below /tmp (tests' folders are 0700)."""
    for folder in (path, *path.parents):
        if str(folder) in ("/", "/tmp"):
            break
        os.chmod(folder, os.stat(folder).st_mode | 0o711)


def _traversable(paths: list[str]) -> None:
    """Let other users pass through (never list) the folders above the checkout and its venv.

    A clone made in ``mktemp -d`` sits under a 0700 folder, which no other user can enter, so the
    daemon or job run as another user could not import lensd at all. Only the search bit is added,
    and only to folders owned by the user running the suite (root, in CI); /root itself is left alone.
    """
    home = Path.home().resolve()
    for path in paths:
        for folder in Path(path).resolve().parents:
            if folder == home or home in folder.parents:
                continue
            info = folder.stat()
            if info.st_uid == os.getuid() and not info.st_mode & 0o001:
                folder.chmod(info.st_mode & 0o7777 | 0o001)
