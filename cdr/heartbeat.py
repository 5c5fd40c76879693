"""The gateway's liveness file: the last moment it was known alive, durable on disk.

After a crash the calls it had in progress are closed at that moment
(``EndedBy.GATEWAY_RESTART``), so a crash costs each of them at most one heartbeat
interval of duration. The file lives in the spool directory, which belongs to one
gateway instance (the spool locks it), and holds one fixed-width line, the Unix time in
seconds::

    1767225600.123456

It is rewritten in place (``pwrite`` at offset 0) and ``fdatasync``\\ ed: one small
write and one flush per interval, with no directory entry to make durable after the
first. A line of 18 bytes never straddles a disk sector, so a power cut leaves the old
line or the new one; anything unreadable counts as no heartbeat.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

_log = logging.getLogger(__name__)

FILE_NAME = "alive"
"""Name of the liveness file in the spool directory."""

_WIDTH = 17
"""Characters of the time: 10 digits of seconds (until 2286), a point, 6 decimals."""


class Heartbeat:
    """The liveness file of one gateway instance.

    Args:
        directory: the instance's spool directory (created by the spool).
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / FILE_NAME
        self._fd: int | None = None

    def last(self) -> float | None:
        """Returns the time of the last heartbeat (Unix seconds), None if there is none."""
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            value = float(text.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            _log.warning("liveness file %s is unreadable (%r); ignoring it", self.path, text)
            return None
        return value

    def beat(self, now: float) -> None:
        """Records that the gateway is alive at ``now`` (returns after the flush).

        Args:
            now: wall-clock time, Unix seconds.

        Raises:
            OSError: the write or flush failed.
        """
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            parent = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                # The new directory entry must survive a power cut as well as the line.
                os.fsync(parent)
            finally:
                os.close(parent)
        os.pwrite(self._fd, f"{now:{_WIDTH}.6f}\n".encode("ascii"), 0)
        os.fdatasync(self._fd)

    def close(self) -> None:
        """Closes the file (the last heartbeat stays)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
