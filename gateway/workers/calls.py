"""The machine's calls in progress, for ``[overload] max_calls`` with workers.

``max_calls`` bounds what the machine carries, and the kernel spreads sources, not
calls, over the workers: a PBX's trunk is one source, and all its calls reach one
worker. A share of ``max_calls`` per worker would refuse that PBX's calls at
``max_calls / workers`` while the other workers sit idle. So each worker admits
against the machine's count: its own calls plus its siblings', which each worker
publishes in its slot of a file every worker maps (:data:`FILE_NAME` in the state
directory, 8 bytes a worker), written on every change and read by a call's
admission: no system call and no lock on the call path.

Bound: two workers admitting in the same instant, each before it sees the other's
new call, may carry the machine past ``max_calls`` by at most ``workers - 1``
calls; one worker alone (one source) never does. A slot of a worker that died
holds its last count until the worker starts again and writes 0 (its calls died
with it): the supervisor restarts it after ``restart_delay``, and meanwhile the
machine admits a little less, never more.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

#: The slots' file, in ``[gateway] state_dir``.
FILE_NAME = "worker-calls"
_SLOT = struct.Struct("<q")


class MachineCalls:
    """Worker ``index``'s view of the machine's calls in progress.

    Args:
        state_dir: ``[gateway] state_dir`` (the file is created there).
        workers: ``[server] workers``.
        index: this worker, from 1.
    """

    def __init__(self, state_dir: Path, workers: int, index: int) -> None:
        if not 1 <= index <= workers:
            raise ValueError(f"worker {index} of {workers}")
        self.index = index
        self.workers = workers
        size = workers * _SLOT.size
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        fd = os.open(Path(state_dir) / FILE_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Every worker grows it to the same size; a grown file reads as zeros.
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)  # the mapping keeps the file
        self.publish(0)  # whatever a previous run of this worker left

    def publish(self, count: int) -> None:
        """Writes this worker's count of calls in progress."""
        _SLOT.pack_into(self._map, (self.index - 1) * _SLOT.size, count)

    def siblings(self) -> int:
        """The calls the other workers published."""
        return sum(
            _SLOT.unpack_from(self._map, i * _SLOT.size)[0]
            for i in range(self.workers)
            if i != self.index - 1
        )

    def close(self) -> None:
        """Writes 0 (a worker that stops carries nothing) and unmaps the file."""
        self.publish(0)
        self._map.close()
