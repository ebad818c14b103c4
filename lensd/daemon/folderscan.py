"""Which watched fits changed, and their records: the blocking half of the folder watcher.

Everything here is plain file-system work, run by ``watcher.py`` in worker threads.

Finding changes without watchfiles' poller: on a tree of 10,000 fits (100,000 files) it stats every
file on every pass, ~10 CPU seconds a minute at a 2 s interval (bench/watch_poll.py). ``TreeWalker``
remembers each directory's listing and lists a directory again only when its mtime moved (an entry
was added, removed or renamed), so a settled fit costs one ``stat`` a pass, ~6x less. inotify
events are mapped to their fits by ``affected``.

Deciding: ``examine`` reads a fit only when its ``folder_signature`` differs from the remembered one
and has held still for a poll interval, so a folder half copied in is not read.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lensd.domain.records import Record
from lensd.errors import LensdError
from lensd.ingest.folders import HEX_ID, NOT_FITS, is_fit_folder, marks_fit
from lensd.ingest.pyautofit import discover, folder_signature, read_fit
from lensd.ingest.run import validate_fit

SETTLE = 30.0  # seconds after a fit's folder changed during which it is checked in full each pass
RACY_NS = 2 * 10**9  # a listing younger than this may hide a change made within its mtime's tick


@dataclass(frozen=True)
class _Listing:
    mtime_ns: int
    files: frozenset[str]
    dirs: frozenset[str]
    trusted: bool  # old enough that an equal mtime means equal entries (no same-tick change)


class TreeWalker:
    """The light poller of one root: which fits may have changed since the last walk.

    A fit is dirty when it is new, its folder's mtime moved, it has no ``.completed`` (running),
    or it is *settling*: its folder changed less than ``SETTLE`` seconds ago, by its mtime or by
    what this walker saw. Files landing in ``files/`` after the folder itself (cp, rsync) move no
    mtime the walker looks at, so a settling fit is checked in full on every pass. A settled fit
    costs one ``stat``: the one that also tells whether its listing is still good.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._listings: dict[str, _Listing] = {}
        self._seen: dict[str, tuple[int, float]] = {}  # fit -> (folder mtime, when it moved)

    @property
    def fits(self) -> int:
        return len(self._seen)

    def _listing(self, folder: str, kept: dict[str, _Listing], racy_ns: int) -> _Listing | None:
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            return None
        listing = self._listings.get(folder)
        if listing is None or listing.mtime_ns != mtime or not listing.trusted:
            files: set[str] = set()
            dirs: set[str] = set()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        (dirs if entry.is_dir(follow_symlinks=False) else files).add(entry.name)
            except OSError:
                return None
            listing = _Listing(mtime, frozenset(files), frozenset(dirs), mtime < racy_ns)
        kept[folder] = listing
        return listing

    def walk(self, everything: bool = False) -> set[str]:
        """Fit folders and zip-only fits to check (all of them with ``everything``).

        A dirty fit inside a grid or sensitivity root makes the root dirty too: its record
        summarises the fits nested in it.
        """
        now, wall_ns = time.monotonic(), time.time_ns()
        settled_ns = wall_ns - int(SETTLE * 1e9)
        dirty: set[str] = set()
        seen: dict[str, tuple[int, float]] = {}
        listings: dict[str, _Listing] = {}
        stack: list[tuple[str, tuple[str, ...]]] = [(self.root, ())]

        def check(path: str, mtime: int, running: bool, grids: tuple[str, ...]) -> None:
            before = self._seen.get(path)
            if before is None:
                since = -math.inf  # first sight: only its own mtime can say it is settling
            else:
                since = before[1] if before[0] == mtime else now
            moved = before is None or before[0] != mtime
            seen[path] = (mtime, since)
            if everything or running or moved or mtime > settled_ns or now - since < SETTLE:
                dirty.add(path)
                dirty.update(grids)

        while stack:
            folder, grids = stack.pop()
            listing = self._listing(folder, listings, wall_ns - RACY_NS)
            if listing is None:
                continue
            files = listing.files
            if marks_fit(files):
                check(folder, listing.mtime_ns, ".completed" not in files, grids)
                if ".is_grid_search" in files:
                    grids = (*grids, folder)
            for name in files:
                if name.endswith(".zip") and name[:-4] not in listing.dirs:  # a fit left only as a zip
                    check(f"{folder}/{name}", listing.mtime_ns, False, grids)
            stack.extend((f"{folder}/{name}", grids) for name in listing.dirs
                         if name not in NOT_FITS and not name.startswith("."))
        self._seen, self._listings = seen, listings  # vanished folders are forgotten
        return dirty


def affected(paths: Iterable[str], root: str) -> set[str]:
    """Where changed paths (inotify events) lead: their fit, its enclosing grids, or a new subtree."""
    dirty: set[str] = set()
    is_fit: dict[str, tuple[bool, bool]] = {}

    def kind(folder: str) -> tuple[bool, bool]:
        if folder not in is_fit:
            grid = os.path.isfile(f"{folder}/.is_grid_search")
            is_fit[folder] = (grid or is_fit_folder(folder), grid)
        return is_fit[folder]

    for path in paths:
        found = False
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        while folder == root or folder.startswith(root + "/"):
            fit, grid = kind(folder)
            if (fit and not found) or grid:
                dirty.add(folder)
                found = True
            if folder == root:
                break
            folder = os.path.dirname(folder)
        if path.endswith(".zip") and not os.path.isdir(path[:-4]):
            dirty.add(path)
        elif not found and os.path.isdir(path):
            dirty.add(path)  # a copied-in tree: files made before its watch was added raise no event
    return dirty


@dataclass(frozen=True)
class Seen:
    """One fit whose signature differs from the remembered one: its records, why it failed, or
    ``waiting`` while it has not kept still long enough to be read."""

    path: str
    source: str
    signature: str
    records: tuple[Record, ...] = ()
    reason: str | None = None
    running: bool = False
    waiting: bool = False


def exists(path: str) -> bool:
    """Whether a fit path is still there (``<id>.zip/analyses/analysis_0`` lives in its zip)."""
    head, zipped, _ = path.partition(".zip/")
    return os.path.lexists(head + ".zip" if zipped else path)


def expand(dirty: Iterable[str]) -> list[str]:
    """Every fit at or under the dirty paths, each once, parents first."""
    fits: dict[str, None] = {}
    for path in sorted(dirty):
        if os.path.lexists(path):
            fits.update((str(fit), None) for fit in discover(path))
    return list(fits)


def encloser(path: str) -> str | None:
    """For a fit not named by a PyAutoFit identifier, the fit or grid folder its id comes from
    ("" when none encloses it); None when the folder name (or its owner's) is the id."""
    name, parent = os.path.basename(path).removesuffix(".zip"), os.path.dirname(path)
    if HEX_ID.fullmatch(name) or os.path.basename(parent) == "analyses":
        return None
    folder = parent
    while not is_fit_folder(folder):
        if os.path.dirname(folder) == folder:
            return ""
        folder = os.path.dirname(folder)
    return folder


def examine(fits: Iterable[str], root: Path, known: Mapping[str, str],
            waiting: dict[str, tuple[tuple[str, str | None], float]], quiet: float) -> list[Seen]:
    """Read the fits whose signature changed once it kept still ``quiet`` seconds (blocking).

    Waiting for stillness avoids reading a fit half copied in. Its key also holds the folder its
    id comes from: a grid cell copied before its grid's ``.is_grid_search`` would otherwise be
    stored under a wrong id for good; a fit with no such folder waits ``SETTLE`` seconds.
    """
    found: list[Seen] = []
    for path in fits:
        source = str(Path(path).resolve())
        try:
            signature = folder_signature(path)
        except OSError:
            continue  # vanished while we looked
        if known.get(source) == signature:
            waiting.pop(source, None)
            continue
        key, now = (signature, encloser(path)), time.monotonic()
        since = waiting.get(source)
        if since is None or since[0] != key:
            waiting[source] = (key, now)
        if since is None or since[0] != key or now - since[1] < (SETTLE if key[1] == "" else quiet):
            found.append(Seen(path, source, signature, waiting=True))
            continue
        waiting.pop(source, None)
        running = os.path.isdir(path) and not os.path.exists(f"{path}/.completed")
        try:
            records = tuple(validate_fit(read_fit(path, root)))
            found.append(Seen(path, source, signature, records, running=running))
            continue
        except LensdError as exc:
            reason = str(exc)
        except OSError as exc:
            reason = f"cannot read: {exc}"
        except Exception as exc:  # one odd folder must never stop the watcher
            reason = f"unexpected {type(exc).__name__}: {exc}"
        found.append(Seen(path, source, signature, reason=reason, running=running))
    return found
