"""Which file system a path is on, from the mount table: sqlite's locks cannot be trusted on a
network one, and ``flock`` there is emulated with byte-range locks."""

from __future__ import annotations

import re
from pathlib import Path

NETWORK_FILE_SYSTEMS = frozenset({"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs",
                                  "fuse", "fuse.sshfs", "ceph", "glusterfs", "panfs", "afs", "9p"})


MOUNTS = Path("/proc/mounts")
_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")


def file_system_type(path: Path, mounts: Path = MOUNTS) -> str:
    """The type of the mount holding ``path``, from a mounts table (longest matching mount point).

    ``mounts`` is in /proc/mounts form; "" when it cannot be read or nothing matches.
    """
    target = str(path.resolve())
    best, kind = "", ""
    try:
        with open(mounts, encoding="utf-8", errors="replace") as table:
            for line in table:
                parts = line.split()
                if len(parts) >= 3:
                    point = _MOUNT_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), parts[1])
                    inside = target == point or target.startswith(point.rstrip("/") + "/")
                    if inside and len(point) >= len(best):
                        best, kind = point, parts[2]
    except OSError:
        return ""
    return kind


def is_network_file_system(path: Path, mounts: Path = MOUNTS) -> bool:
    kind = file_system_type(path, mounts)
    return kind in NETWORK_FILE_SYSTEMS or kind.startswith("fuse.")
